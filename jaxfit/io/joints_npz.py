"""Plain joint-trajectory input: a .npz with joint_names [J], joints [T,J,3], fps.

Joints are metres in the same frame as .b3d data (OpenSim: +Y up). Names are
AddBiomechanics names (mapped by the config's table) or SMPL joint names; NaN
marks missing data. Optional: contact [T,2] (left, right), subject, trial, and
segment_names [S] with segment_rotations [T,S,3,3] (body frame -> the same
world frame, column vectors; NaN = missing), both or neither.
"""

import os

import numpy as np

from jaxfit.data.trial import Trial, make_trial
from jaxfit.errors import MotionFileError
from jaxfit.runtime.files import atomic_write


def read_joints_npz(path) -> Trial:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MotionFileError(path, 'no such file')
  try:
    with np.load(path, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except Exception as e:
    raise MotionFileError(path, f'not a readable joints .npz ({type(e).__name__}: {e})') from None
  missing = [k for k in ('joint_names', 'joints', 'fps') if k not in data]
  if missing:
    raise MotionFileError(path, f'missing keys {missing}; a joints .npz needs joint_names [J], joints [T,J,3], fps')
  contact = data.get('contact')
  has = [k in data for k in ('segment_names', 'segment_rotations')]
  if any(has) and not all(has):
    raise MotionFileError(path, 'segment_names [S] and segment_rotations [T,S,3,3] come together; '
                          f'the file has only {"segment_names" if has[0] else "segment_rotations"}')
  names = data.get('segment_names')
  if names is not None and np.asarray(names).ndim != 1:
    raise MotionFileError(path, f'segment_names must be [S], got shape {list(np.shape(names))}')
  name = os.path.splitext(os.path.basename(path))[0]
  return make_trial(
      subject=str(data['subject']) if 'subject' in data else name,
      name=str(data['trial']) if 'trial' in data else name, source=path,
      joint_names=[str(n) for n in data['joint_names']], joints=data['joints'],
      fps=float(data['fps']),
      contact=None if contact is None else np.asarray(contact, bool),
      segment_names=() if names is None else [str(n) for n in names],
      segment_rotations=data.get('segment_rotations'))


def write_joints_npz(path, joint_names, joints, fps, **extra):
  """Writes a joints .npz atomically (joints [T,J,3] metres, OpenSim frame)."""
  with atomic_write(path) as tmp:
    with open(tmp, 'wb') as f:
      np.savez(f, joint_names=np.asarray(joint_names), joints=np.asarray(joints),
               fps=np.asarray(fps, np.float64), **extra)
