"""AMASS-format motion files of fits with an SMPL-H or SMPL-X body.

SMPL-H: AMASS's SMPL+H release layout, `<trial>_poses.npz`, keys in its order
  trans [T,3] f8, gender 0-d str, mocap_framerate 0-d f8, betas [16] f8,
  dmpls [T,8] f8 (zeros: no soft-tissue model fitted), poses [T,156] f8 =
  root 0:3, body 3:66, left hand 66:111, right hand 111:156.
SMPL-X: AMASS's SMPL-X (MoSh++) `<trial>_stageii.npz` keys, in MoSh++'s
  order (no marker keys: AddBiomechanics gives joint centres, not markers):
  gender, surface_model_type 'smplx', mocap_frame_rate, mocap_time_length
  (T / fps, s), trans, poses [T,165] = root 0:3, body 3:66, jaw 66:69, eyes
  69:75, hands 75:165, betas [16], num_betas 16, root_orient [T,3],
  pose_body [T,63], pose_hand [T,90], pose_jaw [T,3], pose_eye [T,6].

Hand poses are absolute (the relaxed hand mean included, as AMASS stores
them): read them with flat_hand_mean / no PCA. Betas are zero-padded to 16.
The world frame is AMASS's Z-up mocap frame: jaxfit's Y-up world rotated by
+90 degrees about x (AMASS_FROM_JAXFIT); FK of the saved parameters gives
AMASS_FROM_JAXFIT @ the fitted joints. Written with plain np.savez, as
AMASS's writers do.
"""

from typing import Dict, Optional, Tuple

import numpy as np

from jaxfit.body import family as fam

AMASS_NUM_BETAS = 16
AMASS_NUM_DMPLS = 8
# Jaxfit's world is +Y up (SMPL's frame); AMASS's mocap world is +Z up.
AMASS_FROM_JAXFIT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
FILE_SUFFIX = {'smplh': '_poses.npz', 'smplx': '_stageii.npz'}


def _quaternion(axis_angle):
  """[...,3] -> [...,4] (w, x, y, z)."""
  angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)
  safe = np.where(angle > 1e-12, angle, 1.0)
  xyz = np.where(angle > 1e-12, axis_angle / safe * np.sin(0.5 * angle), 0.5 * axis_angle)
  return np.concatenate([np.cos(0.5 * angle), xyz], -1)


def _quaternion_product(a, b):
  aw, av = a[..., :1], a[..., 1:]
  bw, bv = b[..., :1], b[..., 1:]
  return np.concatenate([aw * bw - np.sum(av * bv, -1, keepdims=True),
                         aw * bv + bw * av + np.cross(av, bv)], -1)


def rotate_root(rotation, root_orient):
  """root_orient [T,3] rad -> the axis-angle of rotation [3,3] @ R(root),
  frame to frame continuous (no 2 pi jumps)."""
  m = np.asarray(rotation, np.float64)
  # The quaternion of a proper rotation matrix (the trace is > -1 for ours).
  w = 0.5 * np.sqrt(max(1.0 + np.trace(m), 1e-12))
  q_rot = np.array([w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w),
                    (m[1, 0] - m[0, 1]) / (4 * w)])
  q = _quaternion_product(q_rot, _quaternion(np.asarray(root_orient, np.float64)))
  # q and -q are the same rotation: keep neighbouring frames on one side.
  flips = np.sign(np.sum(q[1:] * q[:-1], -1))
  sign = np.concatenate([[1.0], np.cumprod(np.where(flips == 0, 1.0, flips))])
  q = q * sign[:, None]
  norm_v = np.linalg.norm(q[:, 1:], axis=-1, keepdims=True)
  angle = 2 * np.arctan2(norm_v, q[:, :1])                     # in [0, 2 pi)
  return np.where(norm_v > 1e-12, q[:, 1:] / np.where(norm_v > 1e-12, norm_v, 1.0) * angle,
                  2 * q[:, 1:] * np.sign(q[:, :1]))


def to_amass_world(full_poses, trans, pelvis_rest):
  """Jaxfit's world (+Y up) -> AMASS's (+Z up), for the same posed body.

  full_poses [T,J,3] rad; trans [T,3] m; pelvis_rest [3] m (the shaped root
  joint, about which the root rotates). Returns (poses [T,J,3], trans [T,3]).
  """
  r = AMASS_FROM_JAXFIT
  poses = np.array(full_poses, np.float64)
  poses[:, 0] = rotate_root(r, poses[:, 0])
  pelvis_rest = np.asarray(pelvis_rest, np.float64)
  new_trans = (np.asarray(trans, np.float64) + pelvis_rest) @ r.T - pelvis_rest
  return poses, new_trans


def _padded_betas(betas):
  betas = np.asarray(betas, np.float64).reshape(-1)
  out = np.zeros(max(AMASS_NUM_BETAS, len(betas)))
  out[:len(betas)] = betas
  return out


def smplh_poses_arrays(poses, betas, trans, gender, fps) -> Dict[str, np.ndarray]:
  """The keys of an AMASS SMPL+H `*_poses.npz`, in its order.

  poses [T,52,3] rad (AMASS world, absolute hands); betas [B]; trans [T,3] m.
  """
  poses = np.asarray(poses, np.float64)
  num_frames = len(poses)
  return dict(trans=np.asarray(trans, np.float64), gender=np.array(str(gender)),
              mocap_framerate=np.array(float(fps)), betas=_padded_betas(betas),
              dmpls=np.zeros((num_frames, AMASS_NUM_DMPLS)),
              poses=poses.reshape(num_frames, 156))


def smplx_stageii_arrays(poses, betas, trans, gender, fps) -> Dict[str, np.ndarray]:
  """The keys of an AMASS SMPL-X `*_stageii.npz` (MoSh++), in its order.

  poses [T,55,3] rad (AMASS world, absolute hands); betas [B]; trans [T,3] m.
  """
  poses = np.asarray(poses, np.float64)
  num_frames = len(poses)
  flat = poses.reshape(num_frames, 165)
  betas = _padded_betas(betas)
  return dict(
      gender=np.array(str(gender)), surface_model_type=np.array('smplx'),
      mocap_frame_rate=np.array(float(fps)), mocap_time_length=np.array(num_frames / float(fps)),
      trans=np.asarray(trans, np.float64), poses=flat, betas=betas,
      num_betas=np.array(len(betas)), root_orient=flat[:, 0:3], pose_body=flat[:, 3:66],
      pose_hand=flat[:, 75:165], pose_jaw=flat[:, 66:69], pose_eye=flat[:, 69:75])


def amass_outputs(model, betas, fit_poses, trans, fps,
                  fitted_joints=None) -> Tuple[Optional[str], Dict[str, np.ndarray], dict]:
  """The AMASS file of a fit: (file suffix, arrays, info); (None, {}, info)
  for SMPL.

  model: BodyModel; betas [B]; fit_poses [T,24,3] rad and trans [T,3] m as
  fitted (jaxfit world); fitted_joints [T,24,3] m: the fit's joints, which FK
  of the full model must reproduce (info['fk_max_error_mm'], body joints and
  the two wrist children of the fitting view).
  """
  family = model.family
  info = dict(family=family, num_joints=model.num_joints)
  if family == 'smpl':
    return None, {}, info
  betas64 = np.asarray(betas, np.float64)
  full = fam.expand_poses(fit_poses, None if model.rest_pose is None else np.asarray(model.rest_pose))
  rest = (np.asarray(model.J_template, np.float64)
          + np.asarray(model.J_shapedirs, np.float64) @ betas64)          # [J,3]
  if fitted_joints is not None:
    joints = fam.forward_kinematics_np(model.parents, rest, full, trans)
    index = list(fam.fit_joint_index(model.parents))
    err = np.linalg.norm(joints[:, index] - np.asarray(fitted_joints, np.float64), axis=-1)
    info['fk_max_error_mm'] = float(1000 * err.max()) if err.size else 0.0
  poses, new_trans = to_amass_world(full, trans, rest[0])
  build = smplh_poses_arrays if family == 'smplh' else smplx_stageii_arrays
  arrays = build(poses, betas64, new_trans, model.gender, fps)
  info['amass_world_from_jaxfit'] = AMASS_FROM_JAXFIT.tolist()
  return FILE_SUFFIX[family], arrays, info
