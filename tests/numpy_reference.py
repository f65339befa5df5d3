"""Independent float64 NumPy references: Rodrigues via the matrix exponential,
FK with 4x4 homogeneous transforms in joint order, and textbook LBS."""

import numpy as np
from scipy.linalg import expm


def rotation(axis_angle):
  x, y, z = axis_angle
  return expm(np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]], np.float64))


def fk(parents, rest_joints, poses, trans):
  """Returns (joints [J,3], world 4x4 transforms [J,4,4])."""
  n = len(parents)
  world = np.zeros((n, 4, 4))
  for j in range(n):
    local = np.eye(4)
    local[:3, :3] = rotation(poses[j])
    p = parents[j]
    local[:3, 3] = rest_joints[j] - (rest_joints[p] if p >= 0 else 0.0)
    world[j] = local if p < 0 else world[p] @ local
  joints = world[:, :3, 3] + trans
  return joints, world


def lbs(model_np, betas, poses, trans):
  v_shaped = model_np['v_template'] + model_np['shapedirs'] @ betas
  rest = model_np['J_regressor'] @ v_shaped
  feature = np.concatenate([(rotation(p) - np.eye(3)).ravel() for p in poses[1:]])
  v_posed = v_shaped + model_np['posedirs'] @ feature
  _, world = fk(model_np['parents'], rest, poses, trans)
  skinning = world.copy()
  for j in range(len(world)):
    skinning[j, :3, 3] = world[j, :3, 3] - world[j, :3, :3] @ rest[j]
  blended = np.einsum('vj,jab->vab', model_np['weights'], skinning)
  homo = np.concatenate([v_posed, np.ones((len(v_posed), 1))], 1)
  return np.einsum('vab,vb->va', blended, homo)[:, :3] + trans
