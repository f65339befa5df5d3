"""Synthetic AddBiomechanics subjects written as real .b3d files.

The Rajagopal 2015 OpenSim skeleton (bundled with nimblephysics), uniformly
scaled to a chosen stature, is driven by gait kinematics whose joint-angle
amplitudes and phases follow normative walking and running data (Winter 2009;
Novacheck 1998): hip flexion/extension, the two knee-flexion peaks, ankle
plantarflexion at push-off, pelvis rotation and list, counter-phased arm swing.
The pelvis height is set each frame so that the lower foot touches the ground
(y = 0); foot contact and vertical ground forces follow from it. The file is
written with nimblephysics' own .b3d writer, so reading it exercises the same
path as real AddBiomechanics data. Deterministic for a given seed.
"""

import dataclasses
import os
import re
import tempfile
from typing import Sequence

import numpy as np

from jaxfit.io.nimble import import_nimble, quiet_native_output, rajagopal_osim_path
from jaxfit.runtime.files import atomic_write, cache_root

RAJAGOPAL_STATURE_M = 1.669  # bundled model at q = 0 (b3d-format notes)
FOOT_BODIES = ('calcn_r', 'calcn_l')


@dataclasses.dataclass(frozen=True)
class TrialSpec:
  """One synthetic trial. speed m/s; fps Hz; heading rad about +Y (0 = +X)."""
  name: str
  motion: str = 'walk'  # 'walk' or 'run'
  speed: float = 1.25
  frames: int = 300
  fps: float = 100.0
  treadmill: bool = True
  heading: float = 0.0


DEMO_TRIALS = (
    TrialSpec('walk_treadmill_1p25', 'walk', 1.25, 300, 100.0, True, 0.0),
    TrialSpec('run_overground_3p0', 'run', 3.0, 200, 200.0, False, 0.5),
)


def _scaled_osim_text(scale):
  """Rajagopal model text without muscles, markers or comments, scaled."""
  with open(rajagopal_osim_path(), encoding='utf-8') as f:
    text = f.read()
  text = re.sub(r'<!--.*?-->', '', text, flags=re.S)
  for block in ('ForceSet', 'MarkerSet'):
    text = re.sub(rf'<{block}>.*?</{block}>', f'<{block}><objects /></{block}>',
                  text, flags=re.S)
  def scale_vec(m):
    values = ' '.join(f'{float(v) * scale:.8g}' for v in m.group(2).split())
    return f'<{m.group(1)}>{values}</{m.group(1)}>'
  text = re.sub(r'<(location_in_parent|location)>([^<]*)</\1>', scale_vec, text)
  text = re.sub(r'<(scale_factors)>([^<]*)</\1>', scale_vec, text)
  return text


def _bump(phase, centre, width):
  """Periodic Gaussian bump on a gait cycle; phase, centre in cycles."""
  d = (phase - centre + 0.5) % 1.0 - 0.5
  return np.exp(-0.5 * (d / width) ** 2)


def gait_angles(motion, phase):
  """Joint angles (rad) of the right side for gait phase [T] in cycles.

  Phase 0 is right heel strike. Returns a dict of DOF suffix -> [T].
  """
  c = np.cos(2 * np.pi * phase)
  s = np.sin(2 * np.pi * phase)
  if motion == 'walk':
    return dict(
        hip_flexion=0.16 + 0.34 * c,
        hip_adduction=0.06 * s - 0.02,
        hip_rotation=0.05 * c,
        knee_angle=0.06 + 0.30 * _bump(phase, 0.14, 0.07) + 1.02 * _bump(phase, 0.72, 0.11),
        ankle_angle=0.03 + 0.17 * _bump(phase, 0.45, 0.12) - 0.38 * _bump(phase, 0.63, 0.06),
        subtalar_angle=0.03 * s,
        mtp_angle=0.45 * _bump(phase, 0.57, 0.05),
        arm_flex=-0.32 * c,
        arm_add=-0.12 + 0.03 * s,
        arm_rot=0.05 * c,
        elbow_flex=0.40 - 0.18 * c,
        pro_sup=np.full_like(c, 0.5),
    )
  if motion == 'run':
    return dict(
        hip_flexion=0.30 + 0.52 * c,
        hip_adduction=0.09 * s - 0.03,
        hip_rotation=0.08 * c,
        knee_angle=0.25 + 0.55 * _bump(phase, 0.13, 0.07) + 1.75 * _bump(phase, 0.68, 0.13),
        ankle_angle=0.05 + 0.30 * _bump(phase, 0.20, 0.08) - 0.50 * _bump(phase, 0.40, 0.06),
        subtalar_angle=0.06 * s,
        mtp_angle=0.50 * _bump(phase, 0.36, 0.05),
        arm_flex=-0.55 * c,
        arm_add=-0.18 + 0.05 * s,
        arm_rot=0.10 * c,
        elbow_flex=1.45 - 0.25 * c,
        pro_sup=np.full_like(c, 0.6),
    )
  raise ValueError(f'unknown motion {motion!r}; expected walk or run')


def _joint_centres(skel, q):
  """[T,J,3] joint centres by nimblephysics FK of poses q [ndof, T]."""
  joint_list = [skel.getJoint(i) for i in range(skel.getNumJoints())]
  centres = np.zeros((q.shape[1], len(joint_list), 3))
  for k in range(q.shape[1]):
    skel.setPositions(q[:, k])
    centres[k] = np.asarray(skel.getJointWorldPositions(joint_list)).reshape(-1, 3)
  return centres


def _trial_poses(skel, spec, scale, rng):
  """Poses [ndof, T], joint centres [T,20,3] and contact [T,2] (r, l)."""
  dof_index = {skel.getDofByIndex(i).getName(): i for i in range(skel.getNumDofs())}
  t = np.arange(spec.frames) / spec.fps
  stride_hz = (0.52 * spec.speed + 0.27) if spec.motion == 'walk' else (0.09 * spec.speed + 1.13)
  phase0 = rng.uniform(0, 1)
  phase = stride_hz * t + phase0
  q = np.zeros((skel.getNumDofs(), spec.frames))
  for side, offset in (('r', 0.0), ('l', 0.5)):
    for dof, values in gait_angles(spec.motion, phase + offset).items():
      name = f'{dof}_{side}'
      if name in dof_index:
        q[dof_index[name]] = values
  c, s = np.cos(2 * np.pi * phase), np.sin(2 * np.pi * phase)
  q[dof_index['pelvis_tilt']] = -0.05 + 0.03 * np.cos(4 * np.pi * phase)
  q[dof_index['pelvis_list']] = 0.05 * s
  q[dof_index['pelvis_rotation']] = spec.heading + 0.08 * c
  q[dof_index['lumbar_extension']] = -0.05 - 0.03 * np.cos(4 * np.pi * phase)
  q[dof_index['lumbar_rotation']] = -0.06 * c
  q[dof_index['lumbar_bending']] = -0.03 * s
  q += 0.004 * rng.standard_normal(q.shape).cumsum(1) / np.sqrt(spec.frames)
  distance = 0.0 if spec.treadmill else spec.speed
  travel = distance * t + 0.02 * np.sin(4 * np.pi * phase)
  q[dof_index['pelvis_tx']] = travel * np.cos(spec.heading)
  q[dof_index['pelvis_tz']] = -travel * np.sin(spec.heading)
  # Pelvis height: the lower foot touches the ground (y = 0) in every frame.
  centres = _joint_centres(skel, q)
  names = [skel.getJoint(i).getName() for i in range(skel.getNumJoints())]
  foot = {side: [names.index(f'subtalar_{side}'), names.index(f'mtp_{side}')]
          for side in ('r', 'l')}
  sole = 0.035 * scale
  foot_low = np.stack([centres[:, foot[sd], 1].min(1) for sd in ('r', 'l')], 1)
  lift = sole - foot_low.min(1)
  q[dof_index['pelvis_ty']] += lift
  centres[:, :, 1] += lift[:, None]
  contact = (foot_low + lift[:, None]) < sole + 0.012 * scale
  return q, centres, contact, [foot['r'][0], foot['l'][0]]


def _lowpass(q, width=9):
  """Moving average over time of poses [ndof, T] (edges held): a filter pass."""
  kernel = np.ones(width) / width
  padded = np.pad(q, ((0, 0), (width // 2, width // 2)), mode='edge')
  return np.stack([np.convolve(row, kernel, mode='valid') for row in padded])


def write_demo_subject(path, trials: Sequence[TrialSpec] = DEMO_TRIALS,
                       height_m=1.75, mass_kg=72.0, sex='male', seed=0, lowpass_pass=False):
  """Writes a synthetic subject to `path` (.b3d) atomically; returns metadata.

  lowpass_pass: add a second processing pass (LOW_PASS_FILTER, the poses
  smoothed over 9 frames) after the KINEMATICS pass, as AddBiomechanics'
  dataset processing does. Returns dict(trial name -> dict(joint_centres
  [T,20,3] OpenSim frame, contact [T,2] (right, left), poses [ndof,T], and
  with lowpass_pass lowpass_joint_centres [T,20,3])) for tests.
  """
  nimble = import_nimble()
  b3d = nimble.biomechanics
  scale = height_m / RAJAGOPAL_STATURE_M
  text = _scaled_osim_text(scale)
  rng = np.random.default_rng(seed)
  with tempfile.TemporaryDirectory() as tmp:
    osim = os.path.join(tmp, 'subject.osim')
    with open(osim, 'w', encoding='utf-8') as f:
      f.write(text)
    with quiet_native_output():
      skel = b3d.OpenSimParser.parseOsim(osim, '', True).skeleton
  header = b3d.SubjectOnDiskHeader()
  pass_types = [b3d.ProcessingPassType.KINEMATICS]
  if lowpass_pass:
    pass_types.append(b3d.ProcessingPassType.LOW_PASS_FILTER)
  for pass_type in pass_types:
    pass_header = header.addProcessingPass()
    pass_header.setProcessingPassType(pass_type)
    pass_header.setOpenSimFileText(text)
  header.setNumDofs(skel.getNumDofs())
  header.setNumJoints(skel.getNumJoints())
  header.setGroundForceBodies(list(FOOT_BODIES))
  header.setHeightM(height_m)
  header.setMassKg(mass_kg)
  header.setBiologicalSex(sex)
  header.setAgeYears(30)
  header.setNotes('jaxfit synthetic demo subject (generated, not measured)')
  truth = {}
  for spec in trials:
    q, centres, contact, subtalar = _trial_poses(skel, spec, scale, rng)
    dt = 1.0 / spec.fps
    trial = header.addTrial()
    trial.setName(spec.name)
    trial.setOriginalTrialName(spec.name)
    trial.setTimestep(dt)
    trial.setTrialLength(spec.frames)
    trial.setMarkerObservations([{} for _ in range(spec.frames)])
    trial.setForcePlates([])
    share = contact / np.maximum(contact.sum(1, keepdims=True), 1)
    forces = np.zeros((6, spec.frames))
    cops = np.zeros((6, spec.frames))
    for b in range(2):  # right, left: the order of FOOT_BODIES
      forces[3 * b + 1] = 9.81 * mass_kg * share[:, b]
      cops[3 * b:3 * b + 3] = centres[:, subtalar[b]].T
      cops[3 * b + 1] = 0.0
    truth[spec.name] = dict(joint_centres=centres, contact=contact, poses=q)
    for pass_type in pass_types:
      filtered = pass_type == b3d.ProcessingPassType.LOW_PASS_FILTER
      trial_pass = trial.addPass()
      trial_pass.setType(pass_type)
      trial_pass.setLowpassFilterOrder(1 if filtered else 0)
      trial_pass.setLowpassCutoffFrequency(spec.fps / 9 if filtered else 0.0)
      with quiet_native_output():
        trial_pass.computeValues(skel, dt, _lowpass(q) if filtered else q, list(FOOT_BODIES),
                                 forces, np.zeros((6, spec.frames)), cops)
      if filtered:
        truth[spec.name]['lowpass_joint_centres'] = _joint_centres(skel, _lowpass(q))
  with atomic_write(path) as tmp_path:
    with quiet_native_output() as out:
      b3d.SubjectOnDisk.writeB3D(tmp_path, header)
    if not os.path.getsize(tmp_path):
      raise RuntimeError(f'{path}: nimblephysics wrote nothing ({out})')
  return truth


DEMO_SUBJECT_NAME = 'jaxfit_demo_subject_v1'


def ensure_demo_subject(directory=None):
  """Writes the embedded demo subject .b3d (deterministic) if absent; returns its path."""
  directory = directory or cache_root()
  path = os.path.join(directory, DEMO_SUBJECT_NAME, DEMO_SUBJECT_NAME + '.b3d')
  if not os.path.isfile(path):
    write_demo_subject(path)
  return path
