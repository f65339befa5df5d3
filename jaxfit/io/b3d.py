"""AddBiomechanics .b3d subjects as Trial records.

nimblephysics reads the file in an isolated child process
(`jaxfit.io.isolated`, reading code in `jaxfit.io.b3d_native`): a file that
crashes nimblephysics becomes one MotionFileError naming the file, and the
rest of a folder run goes on.
"""

import dataclasses
import os
from typing import List

from jaxfit.data.trial import Trial, make_trial
from jaxfit.io.isolated import call_isolated

_NATIVE = 'jaxfit.io.b3d_native'


@dataclasses.dataclass(frozen=True)
class TrialInfo:
  index: int
  name: str
  num_frames: int
  fps: float
  passes: tuple


def list_b3d_trials(path, timeout_s=600.0) -> List[TrialInfo]:
  """The trials of a .b3d file (name, length, rate, processing passes)."""
  path = os.fspath(path)
  return [TrialInfo(**info) for info in
          call_isolated(f'{_NATIVE}:list_trials', path, path, timeout_s=timeout_s)]


def read_b3d_trials(path, processing_pass=None, trials=None, joint_centres='auto',
                    timeout_s=600.0) -> List[Trial]:
  """Reads all (or the named / indexed) trials of a .b3d file.

  processing_pass: 'last' (most processed), an index, or a pass type
  (kinematics, dynamics, lowpass, acc_minimizing). joint_centres: 'auto'
  (stored centres, or FK on the file's skeleton for files without them) or
  'fk'. Trials carry every body's rotation per frame (segment_names,
  segment_rotations [T,S,3,3], body -> OpenSim world). Raises MotionFileError
  naming the file and the problem.
  """
  path = os.fspath(path)
  raw = call_isolated(f'{_NATIVE}:read_subject', path, path, processing_pass,
                      list(trials) if trials else None, joint_centres, timeout_s=timeout_s)
  name = os.path.splitext(os.path.basename(path))[0]
  return [make_trial(subject=name, name=t['name'], source=path, joint_names=t['joint_names'],
                     joints=t['joints'], fps=t['fps'], contact=t['contact'],
                     height_m=raw['height_m'], mass_kg=raw['mass_kg'], sex=raw['sex'],
                     processing_pass=t['processing_pass'],
                     joint_centre_source=t['joint_centre_source'],
                     segment_names=t['segment_names'], segment_rotations=t['segment_rotations'])
          for t in raw['trials']]
