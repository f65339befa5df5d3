"""Closed-form initialisation: root orientation and translation per frame.

Kabsch (weighted orthogonal Procrustes) between the shaped rest joints of the
pelvis_rigid and the target pelvis_rigid joints gives each frame's global orientation, so
Adam never has to turn the body through a large heading change.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.body.model import JointModel, forward_kinematics, shaped_joints

# SMPL joints rigidly attached to the pelvis (pelvis, hips, spine1): their
# offsets depend on betas only, so Kabsch on them is exact for SMPL data. In
# AddBiomechanics data ground_pelvis, hip_* and back all sit on the pelvis body.
PELVIS_RIGID_JOINTS = (0, 1, 2, 3)

# Neutral rest pose [24,3] rad for joints no target constrains (e.g. the arms
# of a lower-body skeleton): arms hanging down by the sides (shoulders rotated
# 1.2 rad about +Z: left arm from +X towards -Y, right arm mirrored), the rest
# at zero. Joints that move a target start from zero instead.
REST_POSE = np.zeros((24, 3))
REST_POSE[16, 2] = -1.2  # left_shoulder
REST_POSE[17, 2] = 1.2   # right_shoulder


def kabsch(source, target, weight):
  """Rotation R [3,3] minimising sum w ||R (s - s_c) - (t - t_c)||^2.

  source, target [P,3]; weight [P] >= 0. Returns (R, source centroid,
  target centroid). vmappable.
  """
  w = weight / jnp.maximum(jnp.sum(weight), 1e-12)
  s_c = jnp.sum(w[:, None] * source, 0)
  t_c = jnp.sum(w[:, None] * target, 0)
  h = jnp.einsum('p,pi,pj->ij', w, source - s_c, target - t_c)
  u, _, vt = jnp.linalg.svd(h)
  d = jnp.sign(jnp.linalg.det(vt.T @ u.T))
  d = jnp.where(d == 0, 1.0, d)
  rot = vt.T @ jnp.diag(jnp.array([1.0, 1.0, 1.0], h.dtype).at[2].set(d)) @ u.T
  return rot, s_c, t_c


def root_initialisation(model: JointModel, betas, targets, weight, smpl_index):
  """Per-frame global orientation and translation from the pelvis-rigid joints.

  targets [T,M,3] m (gaps filled); weight [T,M] (>0 where observed);
  smpl_index: static tuple [M]. Returns (root rotations [T,3,3], trans [T,3]).
  Frames with fewer than 3 observed pelvis_rigid joints keep the identity rotation.
  """
  rest = shaped_joints(model, betas)
  idx = np.asarray(smpl_index)
  pelvis_rigid = np.isin(idx, PELVIS_RIGID_JOINTS).astype(np.float64)
  source = rest[idx]

  def one_frame(tgt, w):
    wt = (w > 0) * jnp.asarray(pelvis_rigid, tgt.dtype)
    rot, s_c, t_c = kabsch(source, tgt, wt)
    enough = jnp.sum(wt) >= 3
    rot = jnp.where(enough, rot, jnp.eye(3, dtype=tgt.dtype))
    wa = (w > 0) * 1.0
    s_all = jnp.sum(wa[:, None] * source, 0) / jnp.maximum(jnp.sum(wa), 1e-12)
    t_all = jnp.sum(wa[:, None] * tgt, 0) / jnp.maximum(jnp.sum(wa), 1e-12)
    s_c = jnp.where(enough, s_c, s_all)
    t_c = jnp.where(enough, t_c, t_all)
    # posed = R (x - J0) + J0 + trans  =>  trans = t_c - R (s_c - J0) - J0
    trans = t_c - rot @ (s_c - rest[0]) - rest[0]
    return rot, trans

  return jax.vmap(one_frame)(targets, weight)


def rigid_pairs(smpl_index, parents):
  """Pairs (a, b) of mapped joints whose distance depends on betas only.

  Two joints are rigidly linked when one is the other's SMPL parent, or both
  have the same parent (e.g. the two hips, or a hip and spine1).
  """
  pairs = []
  for a, ja in enumerate(smpl_index):
    for b, jb in enumerate(smpl_index):
      if b <= a:
        continue
      if parents[jb] == ja or parents[ja] == jb or (parents[ja] == parents[jb] >= 0):
        pairs.append((a, b))
  return tuple(pairs)


def shape_from_distances(model: JointModel, target_distances, pair_weight, pairs,
                         smpl_index, ridge, iterations=12):
  """Betas whose rest-joint distances match target distances (Gauss-Newton).

  Pose-free: rest distances between rigidly linked joints equal posed ones.
  target_distances [P] m (e.g. medians over frames); pair_weight [P] >= 0;
  pairs, smpl_index static; ridge: shape-prior weight. Returns betas [B].
  """
  idx = np.asarray(smpl_index)
  a = idx[np.asarray([p for p, _ in pairs])]
  b = idx[np.asarray([q for _, q in pairs])]
  w = pair_weight / jnp.maximum(jnp.sum(pair_weight), 1e-12)
  num_betas = model.num_betas

  def residual(betas):
    rest = shaped_joints(model, betas)
    d = jnp.linalg.norm(rest[b] - rest[a], axis=-1)
    return jnp.sqrt(w) * (d - target_distances)

  def step(betas, _):
    r = residual(betas)
    jac = jax.jacfwd(residual)(betas)
    lhs = jac.T @ jac + (ridge / num_betas + 1e-9) * jnp.eye(num_betas, dtype=betas.dtype)
    rhs = jac.T @ r + (ridge / num_betas) * betas
    return betas - jnp.linalg.solve(lhs, rhs), None

  betas, _ = jax.lax.scan(step, jnp.zeros((num_betas,), target_distances.dtype),
                          None, length=iterations)
  return betas


def solve_betas(model: JointModel, poses, targets, weight, smpl_index, ridge):
  """Closed-form shape for fixed rotations (linear least squares).

  With rotations fixed, posed joints are exactly affine in betas, and a free
  per-frame translation is removed by weighted centring, so
    min_b  sum_t sum_m w_tm ||c(D_tm b + j0_tm - y_tm)||^2 / sum w + ridge ||b||^2 / B
  is a B x B linear system. poses [S,24,3] rad; targets [S,M,3] m; weight [S,M];
  smpl_index static [M]; ridge = the shape_prior loss weight. Returns betas [B].
  """
  num_betas = model.num_betas
  idx = np.asarray(smpl_index)
  zero_b = jnp.zeros((num_betas,), targets.dtype)
  zero_t = jnp.zeros((3,), targets.dtype)

  def frame(pose):
    f = lambda b: forward_kinematics(model, b, pose, zero_t)[0][idx]
    return f(zero_b), jax.jacfwd(f)(zero_b)        # [M,3], [M,3,B]

  j0, d = jax.vmap(frame)(poses)
  w = weight / jnp.maximum(jnp.sum(weight, 1, keepdims=True), 1e-12)   # per frame
  centre = lambda x: x - jnp.einsum('sm,sm...->s...', w, x)[:, None]
  r = centre(targets - j0)
  dc = centre(d)
  frame_w = weight / jnp.maximum(jnp.sum(weight), 1e-12)
  ata = jnp.einsum('sm,smcb,smcd->bd', frame_w, dc, dc)
  atb = jnp.einsum('sm,smcb,smc->b', frame_w, dc, r)
  ata = ata + (ridge / num_betas + 1e-10) * jnp.eye(num_betas, dtype=ata.dtype)
  return jnp.linalg.solve(ata, atb)


root_initialisation_jit = jax.jit(root_initialisation, static_argnames=('smpl_index',))
shape_from_distances_jit = jax.jit(shape_from_distances,
                                   static_argnames=('pairs', 'smpl_index', 'ridge', 'iterations'))
solve_betas_jit = jax.jit(solve_betas, static_argnames=('smpl_index', 'ridge'))
