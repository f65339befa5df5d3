"""Reading AddBiomechanics .b3d subjects (nimblephysics) into Trial records.

Every nimblephysics call is wrapped: its C++ chatter is captured, and any
failure becomes one MotionFileError naming the file, trial and problem.
"""

import dataclasses
import os
from typing import List, Optional

import numpy as np

from jaxfit.data import Trial, make_trial
from jaxfit.errors import MotionFileError
from jaxfit.io.nimble import import_nimble, quiet_native_output

CONTACT_FORCE_N = 10.0  # a foot is in contact above this ground force
PASS_NAMES = {'KINEMATICS': 'kinematics', 'DYNAMICS': 'dynamics',
              'LOW_PASS_FILTER': 'lowpass', 'ACC_MINIMIZING_FILTER': 'acc_minimizing'}


@dataclasses.dataclass(frozen=True)
class TrialInfo:
  index: int
  name: str
  num_frames: int
  fps: float
  passes: tuple


def _call(path, what, fn, *args):
  """Runs a nimblephysics call; failures name the file and what was tried."""
  try:
    with quiet_native_output() as out:
      result = fn(*args)
  except (RuntimeError, MemoryError, ValueError, IndexError, TypeError) as e:
    said = ' '.join(x for x in out if x) if 'out' in locals() else ''
    detail = said or str(e)
    raise MotionFileError(path, f'{what} failed: {detail[:300]} (not a valid or complete .b3d file?)') from None
  return result


class B3dSubject:
  """An open .b3d file. Reading is lazy; frames are loaded once."""

  def __init__(self, path):
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise MotionFileError(self.path, 'no such file')
    if os.path.getsize(self.path) < 16:
      raise MotionFileError(self.path, 'file is empty or truncated')
    b3d = import_nimble().biomechanics
    self._subject = _call(self.path, 'opening', b3d.SubjectOnDisk, self.path)
    self._loaded = False
    self.name = os.path.splitext(os.path.basename(self.path))[0]

  def _pass_type(self, k):
    return PASS_NAMES.get(str(self._subject.getProcessingPassType(k)).split('.')[-1], 'other')

  def trials(self) -> List[TrialInfo]:
    s = self._subject
    out = []
    for t in range(s.getNumTrials()):
      passes = tuple(self._pass_type(k) for k in range(s.getTrialNumProcessingPasses(t)))
      dt = s.getTrialTimestep(t)
      out.append(TrialInfo(t, s.getTrialName(t), s.getTrialLength(t),
                           1.0 / dt if dt > 0 else float('nan'), passes))
    return out

  def joint_names(self, pass_index=0):
    skel = _call(self.path, f'reading the skeleton of pass {pass_index}',
                 self._subject.readSkel, pass_index, '', True)
    return [skel.getJoint(i).getName() for i in range(skel.getNumJoints())]

  def _choose_pass(self, info, processing_pass):
    if not info.passes:
      raise MotionFileError(self.path, f'trial {info.name!r} has no processing passes')
    if processing_pass in (None, '', 'last', 'auto'):
      return len(info.passes) - 1  # the last pass is the most processed
    if isinstance(processing_pass, int) or str(processing_pass).lstrip('-').isdigit():
      k = int(processing_pass)
      if not -len(info.passes) <= k < len(info.passes):
        raise MotionFileError(self.path, f'trial {info.name!r} has passes {list(info.passes)}; no pass {k}')
      return k % len(info.passes)
    if processing_pass in info.passes:
      return len(info.passes) - 1 - info.passes[::-1].index(processing_pass)
    raise MotionFileError(self.path, f'trial {info.name!r} has passes {list(info.passes)}; '
                          f'no {processing_pass!r} pass')

  def read_trial(self, trial, processing_pass=None, start=0,
                 count: Optional[int] = None) -> Trial:
    """Reads one trial (index or name) as a Trial in the OpenSim frame."""
    infos = self.trials()
    if isinstance(trial, str):
      matches = [i for i in infos if i.name == trial]
      if not matches:
        raise MotionFileError(self.path, f'no trial named {trial!r}; trials are {[i.name for i in infos]}')
      info = matches[0]
    else:
      if not 0 <= trial < len(infos):
        raise MotionFileError(self.path, f'no trial {trial}; the file has {len(infos)}')
      info = infos[trial]
    if info.num_frames <= 0:
      raise MotionFileError(self.path, f'trial {info.name!r} has zero frames')
    k = self._choose_pass(info, processing_pass)
    if not self._loaded:
      _call(self.path, 'loading frames', self._subject.loadAllFrames)
      self._loaded = True
    trial_pass = _call(self.path, f'reading trial {info.name!r}',
                       lambda: self._subject.getHeaderProto().getTrials()[info.index].getPasses()[k])
    centres = np.asarray(trial_pass.getJointCenters(), np.float64)
    names = self.joint_names(k)
    if centres.size == 0 or not names:
      raise MotionFileError(self.path, f'trial {info.name!r}, pass {k} ({info.passes[k]}) has no joint '
                            'centres (a file written before AddBiomechanics stored them)')
    if centres.shape != (3 * len(names), info.num_frames):
      raise MotionFileError(self.path, f'trial {info.name!r}: joint centres have shape {centres.shape}, '
                            f'expected {(3 * len(names), info.num_frames)} (truncated file?)')
    joints = centres.T.reshape(info.num_frames, len(names), 3)
    stop = info.num_frames if count is None else min(info.num_frames, start + count)
    if not 0 <= start < stop:
      raise MotionFileError(self.path, f'trial {info.name!r}: frame range [{start}, {stop}) is empty '
                            f'(trial has {info.num_frames} frames)')
    contact = self._contact(trial_pass, info)
    s = self._subject
    sex = s.getBiologicalSex()
    return make_trial(
        subject=self.name, name=info.name, source=self.path, joint_names=names,
        joints=joints[start:stop], fps=info.fps,
        contact=None if contact is None else contact[start:stop],
        height_m=s.getHeightM() or None, mass_kg=s.getMassKg() or None,
        sex=sex if sex in ('male', 'female') else None,
        processing_pass=info.passes[k])

  def _contact(self, trial_pass, info):
    """[T,2] (left, right) from ground-body forces, or None without them."""
    bodies = list(self._subject.getGroundForceBodies())
    wrenches = np.asarray(trial_pass.getGroundBodyWrenches(), np.float64)
    if not bodies or wrenches.shape != (6 * len(bodies), info.num_frames):
      return None
    force = np.linalg.norm(wrenches.reshape(len(bodies), 6, -1)[:, 3:], axis=1)  # [bodies,T]
    sides = []
    for suffix in ('_l', '_r'):
      idx = [i for i, b in enumerate(bodies) if b.endswith(suffix)]
      if not idx:
        return None
      sides.append(force[idx].max(0) > CONTACT_FORCE_N)
    if not np.any(force > 0):
      return None  # no usable force data in this pass
    return np.stack(sides, 1)


def read_b3d_trials(path, processing_pass=None, trials=None) -> List[Trial]:
  """Reads all (or the named/indexed) trials of a .b3d file."""
  subject = B3dSubject(path)
  infos = subject.trials()
  if not infos:
    raise MotionFileError(path, 'the file holds no trials')
  selected = infos if not trials else [
      i for i in infos if i.name in trials or str(i.index) in map(str, trials)]
  if trials and not selected:
    raise MotionFileError(path, f'none of the trials {list(trials)} exist; trials are {[i.name for i in infos]}')
  return [subject.read_trial(i.index, processing_pass) for i in selected]
