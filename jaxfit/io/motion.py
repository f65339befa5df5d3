"""Motion files (.b3d, joints .npz) as Trial records: finding and reading them."""

import os
from typing import List

from jaxfit.data.trial import Trial
from jaxfit.errors import MotionFileError
from jaxfit.io.b3d import read_b3d_trials
from jaxfit.io.joints_npz import read_joints_npz


def find_motion_files(path, exclude_dir='') -> List[str]:
  """`path` itself (a .b3d or joints .npz), or every one below a folder
  (sorted; never inside exclude_dir, e.g. the output folder)."""
  if os.path.isdir(path):
    out_dir = os.path.abspath(exclude_dir) if exclude_dir else None
    found = []
    for root, _, files in os.walk(path):
      if out_dir and os.path.abspath(root).startswith(out_dir):
        continue
      found += [os.path.join(root, f) for f in files
                if f.endswith('.b3d') or (f.endswith('.npz') and f != 'params.npz')]
    if not found:
      raise MotionFileError(path, 'folder holds no .b3d or joints .npz files')
    return sorted(found)
  if not os.path.exists(path):
    raise MotionFileError(path, 'no such file or folder')
  if not path.endswith(('.b3d', '.npz')):
    raise MotionFileError(path, 'expected a .b3d file, a joints .npz file, or a folder')
  return [path]


def read_trials(path, processing_pass='last', trials=None, joint_centres='auto',
                timeout_s=600.0) -> List[Trial]:
  """The trials of a .b3d file (all, or those named / indexed in `trials`;
  see jaxfit.io.b3d.read_b3d_trials) or of a joints .npz (one trial).
  Raises MotionFileError naming the file and the problem."""
  if path.endswith('.npz'):
    return [read_joints_npz(path)]
  return read_b3d_trials(path, processing_pass, list(trials) if trials else None, joint_centres,
                         timeout_s)
