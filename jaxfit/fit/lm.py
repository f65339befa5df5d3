"""Per-frame Levenberg-Marquardt on the same residuals Adam minimises.

Each frame's 75 unknowns (24x3 axis-angle, 3 translation) are solved with
damped Gauss-Newton steps on the stacked residual vector sqrt(w_i) r_i of
`losses.residuals_from_joints` (a block of one frame; betas fixed), so the
loss is the same function as the Adam core's and only the solver differs.
Frames are independent here (no temporal terms), hence vmapped; the normal
equations are dense 75x75.

Rotations are updated by right-multiplied local increments, R_k <- R_k exp(d_k),
for which the kinematic Jacobian is analytic: a posed joint j moves by
-[p_j - p_k]x G_k d_k for every proper ancestor k of j (G_k: global rotation).
Only the cheap, FK-free part of the residuals is differentiated (forward mode,
one pass per unknown, its tangent the kinematic Jacobian's column).
"""

import functools

import jax
import jax.numpy as jnp

import numpy as np

from jaxfit.body.model import JointModel, forward_kinematics
from jaxfit.body.rotation import skew
from jaxfit.fit.lm_common import DAMPING_FLOOR, MAX_ROTATION_STEP, next_damping, rotate, step_scale
from jaxfit.fit.losses import orientation_error_parts, residuals_from_joints
from jaxfit.fit.types import LOSS_TERMS, FitParams, FitStructure, LossWeights, Targets, empty_anchor


def _proper_ancestors(parents):
  """[J,J] 0/1: [j,k] = 1 when k is a proper ancestor of j."""
  n = len(parents)
  mask = np.zeros((n, n))
  for j in range(n):
    k = parents[j]
    while k >= 0:
      mask[j, k] = 1.0
      k = parents[k]
  return mask


def ancestor_or_self_mask(parents, smpl_index, offset_joints=()):
  """[M,J] 0/1: [m,k] = 1 when rotating joint k moves the point of mapped
  joint m: k is a proper ancestor of smpl_index[m], or k is that joint itself
  and m has a correspondence offset (the offset turns with its joint)."""
  idx = np.asarray(smpl_index)
  mask = _proper_ancestors(parents)[idx]
  for m in offset_joints:
    mask[m, idx[m]] = 1.0
  return mask


def moving_joints(parents, smpl_index, offset_joints=()):
  """Joints whose rotation moves some mapped point (the root always does)."""
  mask = ancestor_or_self_mask(parents, smpl_index, offset_joints)
  return tuple(int(k) for k in np.flatnonzero(mask.sum(0) > 0))


def active_joints(parents, structure: FitStructure):
  """Joints a solver moves: those whose rotation moves a mapped point, and the
  joints of the paired segments whose orientation is a target."""
  moving = set(moving_joints(parents, structure.smpl_index, structure.offset_joints))
  return tuple(sorted(moving | set(structure.segment_joints)))


def orientation_error_jacobian(g, t):
  """Rotation errors r [S,3] of g [S,3,3] against t [S,3,3]
  (losses.orientation_error) and their Jacobians [S,3,3] w.r.t. a world-frame
  rotation increment a of g, g <- exp([a]x) g.

  With E = t^T g, w = vee(E - E^T), s = sqrt(1 + tr E) and r = w / s, the
  increment turns E into exp([b]x) E for b = t^T a, so dw = (tr E I - E) b and
  d tr E = -w . b: dr/db = (tr E I - E) / s + w w^T / (2 s^3).
  """
  e, w, trace, s = orientation_error_parts(g, t)
  eye = jnp.eye(3, dtype=g.dtype)
  d_b = ((trace[..., None, None] * eye - e) / s[..., None, None]
         + w[..., :, None] * w[..., None, :] / (2.0 * s**3)[..., None, None])
  return w / s[..., None], d_b @ jnp.swapaxes(t, -1, -2)


def orientation_rows(rotations, target: Targets, weights: LossWeights, structure: FitStructure,
                     active, parents, norm):
  """Orientation residual of one frame [3S] and its Jacobian [3S,3A+3] w.r.t.
  right increments of the `active` joints and the translation.

  rotations [24,3,3] global; target with seg_rot [S,3,3], seg_weight [S] (one
  frame); norm: the residual's normaliser (real frames x segments). Rows:
  sqrt(w seg_weight / norm) losses.orientation_error (3 per segment; squared
  norm = the weighted losses.orientation_residual). A right increment d of
  joint k turns every descendant's global rotation G_j into exp([G_k d]x) G_j:
  a world increment a = G_k d, so d r_j / d d_k = (dr_j / da) G_k.
  """
  seg = np.asarray(structure.segment_joints, int)
  act = np.asarray(active)
  if not len(seg):
    return jnp.zeros((0,), rotations.dtype), jnp.zeros((0, 3 * len(act) + 3), rotations.dtype)
  scale = jnp.sqrt(weights.orientation * target.seg_weight / norm)              # [S]
  r, d_world = orientation_error_jacobian(rotations[seg], target.seg_rot)       # [S,3], [S,3,3]
  mask = ancestor_or_self_mask(parents, seg, tuple(range(len(seg))))[:, act]   # [S,A]
  weight = jnp.asarray(mask, rotations.dtype) * scale[:, None]                  # [S,A]
  jac = jnp.einsum('sk,sab,kbc->sakc', weight, d_world, rotations[act])         # [S,3,A,3]
  jac = jac.reshape(3 * len(seg), 3 * len(act))
  jac = jnp.concatenate([jac, jnp.zeros((3 * len(seg), 3), jac.dtype)], -1)
  return (scale[:, None] * r).reshape(-1), jac


def joints_and_jacobian(model: JointModel, betas, pose, trans, smpl_index, active,
                        offsets=None, offset_joints=()):
  """Mapped points [M,3] m (joints plus offsets [M,3] in their joint's frame),
  their Jacobian [M,3,3A+3] w.r.t. local rotation increments of the `active`
  joints [A] and the translation [3] of one frame, and the global rotations
  [24,3,3]."""
  joints, rotations = forward_kinematics(model, betas, pose, trans)
  idx, act = np.asarray(smpl_index), np.asarray(active)
  points = joints[idx]
  if offsets is not None:
    points = points + jnp.einsum('mab,mb->ma', rotations[idx], offsets)
  mask = jnp.asarray(ancestor_or_self_mask(model.parents, idx, offset_joints)[:, act],
                     joints.dtype)                                                 # [M,A]
  lever = points[:, None] - joints[act][None]                                     # [M,A,3]
  d_rot = -jnp.einsum('mk,mkab,kbc->makc', mask, skew(lever), rotations[act])     # [M,3,A,3]
  d_trans = jnp.broadcast_to(jnp.eye(3, dtype=joints.dtype), (len(idx), 3, 3))
  jac = jnp.concatenate([d_rot.reshape(len(idx), 3, 3 * len(act)), d_trans], -1)
  return points, jac, rotations


def stacked_residual(pred, pose, trans, betas, offsets, target: Targets, weights: LossWeights,
                     structure: FitStructure, anchor, terms):
  """Residual vector of the given terms (squared norm = their weighted loss)
  from mapped points pred [M,3], pose [24,3] rad and trans [3] m of one frame."""
  params = FitParams(betas, pose[None], trans[None], offsets)
  res = residuals_from_joints(pred[None], params, target, anchor, structure)
  return jnp.concatenate([jnp.sqrt(getattr(weights, k)) * res[k].ravel() for k in terms])


@functools.partial(jax.jit, static_argnames=('structure', 'terms'))
def lm_frames(model: JointModel, betas, offsets, poses, trans, targets: Targets,
              weights: LossWeights, iterations, structure: FitStructure, terms=LOSS_TERMS,
              initial_damping: float = 1e-2):
  """Solves every frame independently for the loss sum_{k in terms} w_k ||r_k||^2.

  betas [B] and offsets [M,3] m fixed; poses [T,24,3] rad; trans [T,3] m;
  targets with leading [T]; iterations:
  traced int; terms: static tuple of loss terms. Rotations that move no mapped joint are left as they are.
  Returns (poses, trans, final loss [T]).
  """
  anchor = empty_anchor(len(structure.smpl_index), poses.dtype)
  active = active_joints(model.parents, structure)
  act = np.asarray(active)
  # The orientation term's rows come with their analytic Jacobian; the other
  # terms are differentiated through the mapped points (see module docstring).
  with_orientation = 'orientation' in terms and bool(structure.segment_joints)
  point_terms = tuple(t for t in terms if t != 'orientation')

  def one_frame(pose, tr, target):
    target = jax.tree.map(lambda a: a[None], target)
    frame = jax.tree.map(lambda a: a[0], target)
    norm = jnp.maximum(frame.exists * len(structure.segment_joints), 1e-9)

    def res(pred, x, pose):
      # x = (rotations of the active joints [3A], translation [3]); the pose
      # argument supplies the inactive joints.
      full = pose.at[act].set(x[:-3].reshape(-1, 3))
      return stacked_residual(pred, full, x[-3:], betas, offsets, target, weights, structure,
                              anchor, point_terms)

    def evaluate(x):
      full = pose.at[act].set(x[:-3].reshape(-1, 3))
      pred, d_pred, rotations = joints_and_jacobian(model, betas, full, x[-3:], structure.smpl_index,
                                                    active, offsets, structure.offset_joints)
      if with_orientation:
        ori = orientation_rows(rotations, frame, weights, structure, active, model.parents, norm)
      else:
        ori = (jnp.zeros((0,), pose.dtype), jnp.zeros((0, len(x)), pose.dtype))
      cost = jnp.sum(jnp.square(res(pred, x, pose))) + jnp.sum(jnp.square(ori[0]))
      return pred, d_pred, ori, cost

    def step(_, carry):
      x, damping, pred, d_pred, ori, current = carry
      # The point terms' Jacobian by the chain rule, one forward pass per
      # unknown: the tangent of unknown k is (d_pred[..., k], e_k).
      point_r, lin = jax.linearize(lambda p, u: res(p, u, pose), pred, x)
      columns = jax.vmap(lin, in_axes=(2, 0))(d_pred, jnp.eye(x.shape[0], dtype=x.dtype))
      r = jnp.concatenate([point_r, ori[0]])
      jac = jnp.concatenate([columns.T, ori[1]])
      hess = jac.T @ jac
      grad = jac.T @ r
      curvature = jnp.diag(hess)
      # lm_common.damped's sum, in this solver's own order (see there).
      lhs = hess + damping * jnp.diag(curvature + DAMPING_FLOOR * jnp.mean(curvature) + 1e-12)
      delta = -jnp.linalg.solve(lhs, grad)
      # One bound for every coordinate (rad or m).
      delta = delta * step_scale(delta, MAX_ROTATION_STEP)
      x_new = jnp.concatenate([rotate(x[:-3].reshape(-1, 3), delta[:-3].reshape(-1, 3)).ravel(),
                               x[-3:] + delta[-3:]])
      pred_new, d_new, ori_new, trial = evaluate(x_new)
      better = trial < current
      pick = lambda a, b: jax.tree.map(lambda u, v: jnp.where(better, u, v), a, b)
      return (pick(x_new, x), next_damping(better, damping), pick(pred_new, pred),
              pick(d_new, d_pred), pick(ori_new, ori), jnp.minimum(trial, current))

    x0 = jnp.concatenate([pose[act].ravel(), tr])
    pred0, d0, ori0, cost0 = evaluate(x0)
    x, _, _, _, _, final = jax.lax.fori_loop(
        0, iterations, step, (x0, jnp.asarray(initial_damping, pose.dtype), pred0, d0, ori0, cost0))
    return pose.at[act].set(x[:-3].reshape(-1, 3)), x[-3:], final

  return jax.vmap(one_frame)(poses, trans, targets)
