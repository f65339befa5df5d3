"""The SMPL family's layouts (SMPL, SMPL-H, SMPL-X) and pure maths on them.

All three share SMPL's first 22 joints (pelvis .. right_wrist, same tree);
SMPL adds two hand joints, SMPL-H two 15-joint hands (fingers in MANO order
index, middle, pinky, ring, thumb, three joints each), SMPL-X a jaw and two
eyes (from the head) before the hands. jaxfit fits the 22 body joints through
a 24-joint view (`fit_joint_index`); everything else stays in the model's
neutral pose (`neutral_pose`), and `expand_poses` builds the full pose.

Poses are axis-angle in radians, joints in the file's order, so the flattened
full pose is the AMASS layout: SMPL-H [T,156] = root, body 21, left hand 15,
right hand 15; SMPL-X [T,165] = root, body 21, jaw, left eye, right eye, left
hand, right hand.
"""

from typing import Optional

import numpy as np

# fit_joint_index is here too (jaxfit.body.model needs it for joint_model).
from jaxfit.body.model import (NUM_BODY_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS,  # noqa: F401
                               fit_joint_index)
FAMILY_BY_NUM_JOINTS = {24: 'smpl', 52: 'smplh', 55: 'smplx'}
FINGERS = ('index', 'middle', 'pinky', 'ring', 'thumb')   # MANO order


def _hand_names(side):
  return tuple(f'{side}_{finger}{k}' for finger in FINGERS for k in (1, 2, 3))


def _hand_parents(wrist, first):
  """Parents of one 15-joint hand whose joints start at index `first`."""
  out = []
  for f in range(len(FINGERS)):
    base = first + 3 * f
    out += [wrist, base, base + 1]
  return tuple(out)


BODY_JOINT_NAMES = SMPL_JOINT_NAMES[:NUM_BODY_JOINTS]
SMPLH_JOINT_NAMES = BODY_JOINT_NAMES + _hand_names('left') + _hand_names('right')
SMPLH_PARENTS = SMPL_PARENTS[:NUM_BODY_JOINTS] + _hand_parents(20, 22) + _hand_parents(21, 37)
SMPLX_JOINT_NAMES = (BODY_JOINT_NAMES + ('jaw', 'left_eye_smplhf', 'right_eye_smplhf')
                     + _hand_names('left') + _hand_names('right'))
SMPLX_PARENTS = (SMPL_PARENTS[:NUM_BODY_JOINTS] + (15, 15, 15) + _hand_parents(20, 25)
                 + _hand_parents(21, 40))

JOINT_NAMES = {'smpl': SMPL_JOINT_NAMES, 'smplh': SMPLH_JOINT_NAMES, 'smplx': SMPLX_JOINT_NAMES}
PARENTS = {'smpl': SMPL_PARENTS, 'smplh': SMPLH_PARENTS, 'smplx': SMPLX_PARENTS}
# First joint of the left and of the right hand (each 15 joints) in the full layout.
HAND_START = {'smplh': (22, 37), 'smplx': (25, 40)}
# Shape columns of an SMPL-X shapedirs: v1.1 files carry 300 shape + 100
# expression components, v1.0 files 10 + 10.
SMPLX_SHAPE_COLUMNS_V11 = 300
SMPLX_SHAPE_COLUMNS_V10 = 10


def family_of(num_joints: int) -> str:
  """'smpl' | 'smplh' | 'smplx' from the number of joints (24 / 52 / 55)."""
  if num_joints not in FAMILY_BY_NUM_JOINTS:
    raise ValueError(f'{num_joints} joints: not an SMPL (24), SMPL-H (52) or SMPL-X (55) model')
  return FAMILY_BY_NUM_JOINTS[num_joints]


def smplx_shape_columns(num_columns: int) -> int:
  """How many of an SMPL-X shapedirs' columns are shape (the rest: expression)."""
  if num_columns > SMPLX_SHAPE_COLUMNS_V11:
    return SMPLX_SHAPE_COLUMNS_V11
  return min(num_columns, SMPLX_SHAPE_COLUMNS_V10)


def neutral_pose(family: str, num_joints: int, hands_mean_left=None,
                 hands_mean_right=None) -> np.ndarray:
  """[J,3] rad: the pose of the joints jaxfit does not fit. Zero (jaw, eyes,
  flat hands) except the hands, which take the file's relaxed hand mean
  (hands_mean_* [45]) where it has one."""
  pose = np.zeros((num_joints, 3))
  for start, mean in zip(HAND_START.get(family, ()), (hands_mean_left, hands_mean_right)):
    if mean is not None:
      pose[start:start + 15] = np.asarray(mean, np.float64).reshape(15, 3)
  return pose


def expand_poses(fit_poses, rest_pose: Optional[np.ndarray]) -> np.ndarray:
  """Fitted [T,24,3] poses -> full [T,J,3] poses of the model (float64).

  Body joints 0..21 from the fit, every other joint from rest_pose [J,3]
  (its neutral pose). rest_pose None (SMPL): the fitted poses themselves.
  """
  fit_poses = np.asarray(fit_poses, np.float64)
  if rest_pose is None:
    return fit_poses
  rest_pose = np.asarray(rest_pose, np.float64)
  full = np.broadcast_to(rest_pose, fit_poses.shape[:-2] + rest_pose.shape).copy()
  full[..., :NUM_BODY_JOINTS, :] = fit_poses[..., :NUM_BODY_JOINTS, :]
  return full


def rotation_matrices(axis_angle) -> np.ndarray:
  """[...,3] axis-angle rad -> [...,3,3] rotation matrices (Rodrigues, float64)."""
  v = np.asarray(axis_angle, np.float64)
  angle = np.linalg.norm(v, axis=-1)[..., None, None]
  k = np.zeros(v.shape[:-1] + (3, 3))
  k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
  k = k - np.swapaxes(k, -1, -2)                      # [v]_x
  small = angle < 1e-8
  safe = np.where(small, 1.0, angle)
  a = np.where(small, 1.0 - angle ** 2 / 6, np.sin(safe) / safe)
  b = np.where(small, 0.5 - angle ** 2 / 24, (1 - np.cos(safe)) / safe ** 2)
  return np.eye(3) + a * k + b * (k @ k)


def forward_kinematics_np(parents, rest_joints, poses, trans) -> np.ndarray:
  """Posed joints in NumPy (float64), for checks and outputs of any family.

  rest_joints [J,3] m; poses [T,J,3] rad; trans [T,3] m -> joints [T,J,3] m.
  """
  rot = rotation_matrices(poses)                                   # [T,J,3,3]
  rest = np.asarray(rest_joints, np.float64)
  glob = np.empty_like(rot)
  pos = np.empty(rot.shape[:-1])
  glob[:, 0] = rot[:, 0]
  pos[:, 0] = rest[0] + np.asarray(trans, np.float64)
  for j in range(1, len(parents)):
    p = parents[j]
    glob[:, j] = glob[:, p] @ rot[:, j]
    pos[:, j] = pos[:, p] + glob[:, p] @ (rest[j] - rest[p])
  return pos
