"""One Levenberg-Marquardt solve of every frame's pose and the shared shape.

Unknowns: per frame t, the rotations of the active joints and the translation
(x_t, at most 75 numbers); shared by all frames, the betas and the free joint
correspondence offsets (s, B + 3 O numbers). The objective is the Adam core's
loss restricted to the terms that define the body:
  position * L_position + orientation * L_orientation + pose_reg * L_pose_reg
  + shape_prior * L_shape_prior + offset_prior * L_offset_prior
(losses.py), so both solvers minimise the same function.

Its Gauss-Newton matrix has an arrow structure: a dense n_x x n_x block per
frame, a coupling block per frame to the shared unknowns, and one small shared
block. Each step eliminates the frames by a Schur complement,
  (H_ss - sum_t H_st H_tt^-1 H_ts) ds = -(g_s - sum_t H_st H_tt^-1 g_t),
a B+3O square system, then back-substitutes every frame's step in one batched
solve: cost linear in the number of frames, no alternation between shape and
pose. Rotations take right-multiplied increments R <- R exp(d), whose
kinematic Jacobian is analytic (see lm.py); the betas' Jacobian is forward-mode.

Bounds (|beta_i| <= beta_bound, |offset_m| <= its bound) are handled by an
active set, as in projected Newton methods: a shared unknown at its bound
whose reduced gradient points outwards is held there (for an offset, only its
radial component). The betas' step is then the minimiser of the damped,
Schur-reduced model inside the box (`_bounded_step`, a primal active-set
solve that also frees a held beta once the others' step turns its gradient
inwards), so no beta's step is clipped; an offset's is projected onto its
ball. Every frame's step is back-substituted from the shared step actually
taken (after the step cap and the projection), so the poses answer the shape
they will be evaluated with. A clamp alone would fight the Gauss-Newton step
at every corner and stall (issue 18: 18 mm against 11 mm for a bounded
baseline); clipping the free step, with the poses solved for the unclipped
one, converged but slowly (30 iterations where this takes 10-20).

The shape prior's weight can follow the data (`auto_prior`): betas are N(0, I)
and the targets carry Gaussian noise of variance sigma^2 per coordinate, so the
MAP objective is the position term plus B sigma^2 w_pos / (N M) * L_shape_prior;
sigma^2 is estimated from the current fit's own weighted residual
(sum w |d|^2 / (3 sum w), empirical Bayes) and floored at `noise_floor_m`^2.
Exact data thus get (almost) no prior and are recovered exactly; noisy data get
the prior their noise calls for.
"""

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from jaxfit.body.model import JointModel
from jaxfit.runtime import compiled
from jaxfit.fit.chunks import frame_chunks
from jaxfit.fit.lm import active_joints, joints_and_jacobian, orientation_rows
from jaxfit.fit.lm_common import (DAMPING_DOWN, DAMPING_UP, MAX_ROTATION_STEP, damped, rotate,
                                  step_scale)
from jaxfit.fit.losses import orientation_error, posed_mapped_joints, posed_points_and_rotations
from jaxfit.fit.types import FitParams, FitStructure, LossWeights, Targets

_MAX_BETA_STEP = 1.0
_MAX_OFFSET_STEP = 0.03  # m


def _frame_points(model, betas, offsets, pose, trans, structure):
  """[M,3] m: the points of one frame compared with its targets."""
  return posed_mapped_joints(model, FitParams(betas, pose[None], trans[None], offsets), structure)[0]


def _pose_prior_columns(active):
  """(body joints among `active`, their columns among the frame unknowns)."""
  act = np.asarray(active)
  position = {int(k): i for i, k in enumerate(act)}
  body = act[act > 0]
  return body, np.array([3 * position[int(k)] + c for k in body for c in range(3)], int)


def _frame_residual(model, betas, offsets, pose, trans, target, weights, structure, active,
                    pos_norm, pose_norm, seg_norm):
  """Residual of one frame [3M + 3S + 3 * body joints]: sqrt-weighted position,
  orientation and pose prior."""
  points, rotations = posed_points_and_rotations(
      model, FitParams(betas, pose[None], trans[None], offsets), structure)
  return _residual_of_points(points[0], rotations[0], pose, target, weights, structure, active,
                             pos_norm, pose_norm, seg_norm)


def _residual_of_points(points, rotations, pose, target, weights, structure, active, pos_norm,
                        pose_norm, seg_norm):
  """_frame_residual given the frame's points [M,3] m and rotations [24,3,3]."""
  scale = jnp.sqrt(weights.position * target.weight / pos_norm)[:, None]
  body, _ = _pose_prior_columns(active)
  prior = jnp.sqrt(weights.pose_reg * target.exists / pose_norm)
  seg = np.asarray(structure.segment_joints, int)
  ori = (jnp.sqrt(weights.orientation * target.seg_weight / seg_norm)[:, None]
         * orientation_error(rotations[seg], target.seg_rot))
  return jnp.concatenate([(scale * (points - target.joints)).reshape(-1), ori.reshape(-1),
                          prior * pose[body].reshape(-1)])


def _frame_system(model, betas, offsets, pose, trans, target, weights, structure, active,
                  pos_norm, pose_norm, seg_norm):
  """One frame's residual r [3M + 3S + 3 * body joints] (rows: position,
  orientation, pose prior; `_residual_of_points`) and its Jacobians, by block:
  j_pos [3M, n_x] and j_s [3M, n_s] (position rows; the only rows the shared
  unknowns move), j_ori [3S, n_x] (orientation rows; the shape turns no
  segment), and prior_sq [n_x]: the pose prior's J^T J, diagonal (its Jacobian
  w.r.t. a small right increment is taken as the identity, exact at zero
  rotation), so its rows need no product."""
  offset_free = structure.offset_joints
  free = np.asarray(offset_free, int)
  m = len(structure.smpl_index)
  points, j_x, rot = joints_and_jacobian(model, betas, pose, trans, structure.smpl_index, active,
                                         offsets, offset_free)               # [M,3,n_x]
  d_betas = jax.jacfwd(lambda b: _frame_points(model, b, offsets, pose, trans, structure))(betas)
  d_off = jnp.zeros((m, 3, len(free), 3), j_x.dtype)
  if len(free):
    own = rot[np.asarray(structure.smpl_index)[free]]                        # [O,3,3]
    d_off = d_off.at[free, :, np.arange(len(free)), :].set(own)
  j_s = jnp.concatenate([d_betas, d_off.reshape(m, 3, -1)], -1)              # [M,3,n_s]
  scale = jnp.sqrt(weights.position * target.weight / pos_norm)[:, None, None]
  j_pos = (scale * j_x).reshape(3 * m, -1)
  j_s = (scale * j_s).reshape(3 * m, -1)
  _, col = _pose_prior_columns(active)
  prior = jnp.sqrt(weights.pose_reg * target.exists / pose_norm)
  prior_sq = jnp.zeros((j_pos.shape[1],), j_pos.dtype).at[col].set(prior * prior)
  # Orientation rows (analytic, lm.orientation_rows).
  _, j_ori = orientation_rows(rot, target, weights, structure, active, model.parents, seg_norm)
  r = _residual_of_points(points, rot, pose, target, weights, structure, active, pos_norm,
                          pose_norm, seg_norm)
  return r, j_pos, j_s, j_ori, prior_sq


def _shared_prior(betas, offsets, shape_weight, offset_weight, offset_free):
  """Residual and Jacobian of the shape and offset priors (shared unknowns)."""
  free = np.asarray(offset_free, int)
  nb = betas.shape[0]
  r_b = jnp.sqrt(shape_weight / nb) * betas
  n_o = max(3 * len(free), 1)
  r_o = jnp.sqrt(offset_weight / n_o) * offsets[free].reshape(-1)
  n_s = nb + 3 * len(free)
  jac = jnp.diag(jnp.concatenate([jnp.full((nb,), jnp.sqrt(shape_weight / nb)),
                                  jnp.full((3 * len(free),), jnp.sqrt(offset_weight / n_o))]))
  return jnp.concatenate([r_b, r_o]), jac.reshape(n_s, n_s).astype(betas.dtype)


def _fully_observed(targets: Targets):
  """[T,M] bool (NumPy): the samples that are data in full: a real frame,
  weight > 0, observed 1 (not gap-filled, not a down-weighted joint)."""
  return ((np.asarray(targets.exists)[:, None] > 0) & (np.asarray(targets.weight) > 0)
          & (np.asarray(targets.observed) >= 1.0))


def data_totals(targets: Targets, num_mapped):
  """(slots, n) of a trial's targets (NumPy, every frame): real frames x
  mapped joints, and 3 x the number of fully observed samples (observed 1,
  weight > 0: those `white_noise_variance` measures the noise on and the
  poses spend their degrees of freedom on; `noise_shape_prior_weight`)."""
  exists = np.asarray(targets.exists, np.float64)
  return (max(float(exists.sum()) * num_mapped, 1e-9), 3.0 * float(_fully_observed(targets).sum()))


def white_noise_variance(position_rows, targets: Targets, pos_norm, w_pos):
  """The targets' noise variance per coordinate (m^2) as the fit's own
  residual shows it, from what the fit cannot follow from frame to frame
  (NumPy). position_rows [T,3M]: the position residual rows of every frame
  (sqrt(w_pos w / pos_norm) (points - targets)); targets with leading [T].

  Measurement noise is independent between frames; a body that cannot match
  the subject leaves a residual that moves with the pose, smoothly. The
  second difference of the residual along time, d[t+1] - 2 d[t] + d[t-1],
  keeps the first (its variance is 6 sigma^2 per coordinate) and removes the
  second, so misfit is not taken for noise. Over the triples of consecutive
  frames whose three samples are observed (not gap-filled); with none, the
  residual's own mean square per coordinate."""
  weight = np.asarray(targets.weight, np.float64)
  t, m = weight.shape
  scale = np.sqrt(float(w_pos) * weight / float(pos_norm))
  rows = np.asarray(position_rows, np.float64).reshape(t, m, 3)
  d = np.where(scale[..., None] > 0, rows / np.maximum(scale, 1e-30)[..., None], 0.0)
  ok = _fully_observed(targets)
  triple = ok[2:] & ok[1:-1] & ok[:-2]
  if triple.any():
    second = d[2:] - 2.0 * d[1:-1] + d[:-2]
    return float(np.sum(triple[..., None] * second ** 2) / (18.0 * triple.sum()))
  return float(np.sum(ok[..., None] * d ** 2) / (3.0 * max(ok.sum(), 1)))


def noise_shape_prior_weight(noise_sq, dof_used, totals, weights: LossWeights, num_betas,
                             noise_floor_m):
  """The shape prior's weight that the data call for (empirical Bayes).

  noise_sq: the residual's noise variance per coordinate, m^2
  (`white_noise_variance`); dof_used: the residual degrees of freedom the poses
  absorb (hat-matrix trace); totals: `data_totals` of the targets (slots N M,
  n); returns B sigma^2 w_pos / (N M), the MAP weight for Gaussian noise of
  the unbiased variance sigma^2 = noise_sq n / (n - p) (n = 3 x the weighted
  joint samples, p = dof_used), at least noise_floor_m^2.
  """
  slots, n = totals
  w_pos = jnp.maximum(weights.position, 1e-12)
  sigma_sq = noise_sq * n / jnp.maximum(n - dof_used, 0.05 * n)
  sigma_sq = jnp.maximum(sigma_sq, jnp.square(noise_floor_m))
  return num_betas * sigma_sq * w_pos / slots


def _bound_projector(betas, offsets, rhs, beta_bound, offset_bound, free):
  """[n_s,n_s] projector onto the shared directions a step may take: zero for
  a beta at its bound whose descent direction (-rhs) points outwards, and the
  radial direction of an offset at its bound that descent would push out."""
  nb = betas.shape[0]
  tol = 1e-6
  push_up = -rhs[:nb]
  held = ((betas >= beta_bound * (1 - tol)) & (push_up > 0)) | (
      (betas <= -beta_bound * (1 - tol)) & (push_up < 0))
  blocks = [jnp.diag(1.0 - held.astype(betas.dtype))]
  for k, m in enumerate(free):
    o = offsets[m]
    norm = jnp.linalg.norm(o)
    n = o / jnp.maximum(norm, 1e-12)
    descent = -rhs[nb + 3 * k: nb + 3 * k + 3]
    at_bound = (norm >= offset_bound[m] * (1 - tol)) & (jnp.dot(n, descent) > 0) & (norm > 0)
    blocks.append(jnp.eye(3, dtype=betas.dtype) - at_bound * jnp.outer(n, n))
  return jax.scipy.linalg.block_diag(*blocks)


def _bounded_step(schur, rhs, proj, betas, beta_bound):
  """The shared step [n_s] that minimises the model q(d) = rhs.d + d.schur.d / 2
  (the poses eliminated: the damped Schur system) in the directions `proj`
  leaves free, with every beta inside its box, by the primal active-set
  method: from d = 0 (feasible, q = 0) move towards the minimiser in the free
  directions, stop at the first beta that reaches its bound and fix it there;
  at a minimiser, free the fixed beta whose gradient points most inwards.
  2B + 2 iterations (each fixes one beta, frees one, or ends); q never rises,
  so the step is a descent step of the model and feasible without clipping.
  The betas proj holds start fixed (at their bound, pushed outwards)."""
  nb = betas.shape[0]
  n_s = rhs.shape[0]
  dtype = rhs.dtype
  eye = jnp.eye(n_s, dtype=dtype)
  index = jnp.arange(nb)
  lo, hi = -beta_bound - betas, beta_bound - betas      # the betas' steps allowed
  tiny = jnp.asarray(1e-12, dtype)

  def body(_, carry):
    d, fixed = carry
    # The free directions: the unfixed betas, and the offsets' as proj says.
    p = proj.at[:nb, :nb].set(jnp.diag(1.0 - fixed.astype(dtype)))
    direction = -p @ jnp.linalg.solve(p @ schur @ p + (eye - p), p @ (rhs + schur @ d))
    db = direction[:nb]
    room = jnp.where(db > tiny, (hi - d[:nb]) / jnp.maximum(db, tiny),
                     jnp.where(db < -tiny, (lo - d[:nb]) / jnp.minimum(db, -tiny), jnp.inf))
    room = jnp.where(fixed, jnp.inf, jnp.maximum(room, 0.0))
    alpha = jnp.minimum(1.0, jnp.min(room))
    blocked = alpha < 1.0
    d_new = d + alpha * direction
    d_new = d_new.at[:nb].set(jnp.clip(d_new[:nb], lo, hi))
    # At the minimiser of the free directions, the fixed beta whose gradient
    # points inwards the most (its multiplier has the wrong sign) is freed.
    grad = (rhs + schur @ d_new)[:nb]
    upper = betas + d_new[:nb] >= 0
    wrong = jnp.where(fixed, jnp.where(upper, grad, -grad), 0.0)       # > 0: frees it
    release = ~blocked & (jnp.max(wrong) > 0)
    fixed = jnp.where(blocked, fixed | (index == jnp.argmin(room)),
                      fixed & ~(release & (index == jnp.argmax(wrong))))
    return d_new, fixed

  held = jnp.diagonal(proj)[:nb] < 0.5
  d, _ = jax.lax.fori_loop(0, 2 * nb + 2, body, (jnp.zeros((n_s,), dtype), held))
  return d


def frame_norms(targets: Targets, structure: FitStructure):
  """Normalisers of the position, pose-prior and orientation residuals (counts
  of real frames x slots, as losses.py), over every frame of the trial (NumPy:
  the chunks of a trial share them)."""
  xp = np if isinstance(targets.exists, np.ndarray) else jnp     # traced in shape_information
  frames = xp.sum(targets.exists)
  return (xp.maximum(frames * len(structure.smpl_index), 1e-9), xp.maximum(frames * 69, 1e-9),
          xp.maximum(frames * len(structure.segment_joints), 1e-9))


def _data_normal_equations(model, betas, offsets, poses, trans, targets, weights, structure, norms):
  """Gauss-Newton pieces of the data terms (position, orientation, pose prior), frames [T]:
  h_xx [T,n_x,n_x], h_xs [T,n_x,n_s], g_x [T,n_x], and these frames' sums
  h_ss [n_s,n_s], g_s [n_s], cost, dof_used, and position_rows [T,3M], each
  frame's position residual rows (`white_noise_variance`). norms: `frame_norms`."""
  active = active_joints(model.parents, structure)
  m = len(structure.smpl_index)
  pos_norm, pose_norm, seg_norm = norms
  systems = jax.vmap(_frame_system,
                     in_axes=(None, None, None, 0, 0, 0, None, None, None, None, None, None))
  r, j_pos, j_s, j_ori, prior_sq = systems(model, betas, offsets, poses, trans, targets, weights,
                                           structure, active, pos_norm, pose_norm, seg_norm)
  n_ori = j_ori.shape[1]
  r_pos, r_ori, r_prior = r[:, :3 * m], r[:, 3 * m:3 * m + n_ori], r[:, 3 * m + n_ori:]
  _, col = _pose_prior_columns(active)
  eye = jnp.eye(j_pos.shape[-1], dtype=j_pos.dtype)
  h_xx = (jnp.einsum('tri,trj->tij', j_pos, j_pos) + jnp.einsum('tri,trj->tij', j_ori, j_ori)
          + prior_sq[:, :, None] * eye)
  # The pose prior's gradient J^T r: prior * r_prior in its columns.
  g_prior = jnp.zeros_like(prior_sq).at[:, col].set(jnp.sqrt(prior_sq[:, col]) * r_prior)
  g_x = jnp.einsum('tri,tr->ti', j_pos, r_pos) + jnp.einsum('tri,tr->ti', j_ori, r_ori) + g_prior
  # Degrees of freedom the poses spend on the position residuals (the trace of
  # each frame's hat matrix, tr(H_xx^-1 H_pos) = sum(J_pos^T * H_xx^-1 J_pos^T)
  # for H_pos = J_pos^T J_pos): what they absorb of the noise.
  j_pos_t = jnp.swapaxes(j_pos, -1, -2)                                     # [T,n_x,3M]
  # A ridge at the dtype's resolution (per frame): directions the data barely
  # see absorb no noise, and a near-singular block (a 1e-8 pose prior beside
  # down-weighted joints) must not turn float32 solves into NaN. Each frame's
  # trace lies in [0, 3M].
  diag = jnp.diagonal(h_xx, axis1=-2, axis2=-1)
  ridge = 10 * jnp.finfo(h_xx.dtype).eps * jnp.max(diag, -1) + 1e-30                # [T]
  h_reg = h_xx + ridge[:, None, None] * eye
  per_frame = jnp.sum(jnp.linalg.solve(h_reg, j_pos_t) * j_pos_t, (-2, -1))
  dof_used = jnp.sum(jnp.clip(jnp.nan_to_num(per_frame), 0.0, 3.0 * m))
  return dict(h_xx=h_xx, h_xs=jnp.einsum('tri,trj->tij', j_pos, j_s), g_x=g_x,
              h_ss=jnp.einsum('tri,trj->ij', j_s, j_s), g_s=jnp.einsum('tri,tr->i', j_s, r_pos),
              cost=jnp.sum(r * r),
              position_rows=r[:, :3 * m], dof_used=dof_used)


@functools.partial(jax.jit, static_argnames=('structure',))
def shape_information(model: JointModel, betas, offsets, poses, trans, targets: Targets,
                      weights: LossWeights, structure: FitStructure):
  """[n_s,n_s] what the data say about the shared unknowns (betas [B], then the
  free offsets [3O]) once every frame's pose is free: the Schur complement of
  the data terms' Gauss-Newton matrix, priors excluded. Directions with a
  (near) zero eigenvalue are shapes the joint positions cannot determine
  (a pose change compensates them exactly); the priors decide those."""
  lin = _data_normal_equations(model, betas, offsets, poses, trans, targets, weights, structure,
                               frame_norms(targets, structure))
  n_x = lin['h_xx'].shape[-1]
  scale = jnp.max(jnp.diagonal(lin['h_xx'], axis1=-2, axis2=-1))
  h_xx = lin['h_xx'] + 1e-9 * scale * jnp.eye(n_x, dtype=poses.dtype)
  inv_h_xs = jax.vmap(jnp.linalg.solve)(h_xx, lin['h_xs'])
  return lin['h_ss'] - jnp.einsum('tis,tij->sj', lin['h_xs'], inv_h_xs)


# ---- The solve, in fixed chunks of frames.
#
# The frames enter the shared (Schur-reduced) system only through sums over
# frames, and each frame's step depends only on its own blocks and the shared
# step. So every program below sees one chunk of frames (a fixed number,
# whatever the trial's length) and the host adds the chunks' sums: one set of
# executables serves every trial length. Per iteration: each chunk's damped
# solve and its share of the Schur system (`_chunk_reduce`), the bounded
# shared step (`_shared_step`), each chunk's back-substituted step and trial
# cost (`_chunk_apply`), and, if the step is taken, each chunk's new
# linearisation (`_chunk_linearise`).


def _project(betas, offsets, beta_bound, offset_bound):
  """Betas clipped to the box, each offset's length to its bound [M] (jnp or
  NumPy arrays alike)."""
  xp = np if isinstance(offsets, np.ndarray) else jnp
  norm = xp.linalg.norm(offsets, axis=-1, keepdims=True)
  return (xp.clip(betas, -beta_bound, beta_bound),
          offsets * xp.minimum(1.0, offset_bound[:, None] / xp.maximum(norm, 1e-12)))


@functools.partial(jax.jit, static_argnames=('structure',))
def _chunk_linearise(model, betas, offsets, poses, trans, targets, weights, norms, *, structure):
  """`_data_normal_equations` of one chunk of frames (norms: the trial's)."""
  return _data_normal_equations(model, betas, offsets, poses, trans, targets, weights, structure,
                                norms)


@jax.jit
def _chunk_reduce(h_xx, h_xs, g_x, damping):
  """One chunk's damped frame solves and its share of the Schur system:
  (H_tt^-1 H_ts [K,n_x,n_s], H_tt^-1 g_t [K,n_x], -sum H_st H_tt^-1 H_ts,
  -sum H_st H_tt^-1 g_t); one factorisation of each frame's block for both."""
  both = jnp.linalg.solve(damped(h_xx, damping), jnp.concatenate([h_xs, g_x[..., None]], -1))
  inv_h_xs, inv_g_x = both[..., :-1], both[..., -1]
  return (inv_h_xs, inv_g_x, -jnp.einsum('tis,tij->sj', h_xs, inv_h_xs),
          -jnp.einsum('tis,ti->s', h_xs, inv_g_x))


def _shape_weight(noise_sq, dof_used, totals, weights, num_betas, auto_prior, noise_floor_m):
  data = noise_shape_prior_weight(noise_sq, dof_used, totals, weights, num_betas,
                                  noise_floor_m)
  return auto_prior * data + (1 - auto_prior) * weights.shape_prior


@functools.partial(jax.jit, static_argnames=('offset_free',))
def _shared_step(betas, offsets, h_ss, g_s, schur_frames, rhs_frames, noise_sq, dof_used,
                 totals, weights, damping, beta_bound, offset_bound, auto_prior, noise_floor_m,
                 *, offset_free):
  """The shared step of one iteration from the summed pieces: the shape
  prior's weight, the priors added, the bounded minimiser of the reduced model
  (`_bounded_step`), capped and projected onto the bounds. Returns (new betas,
  new offsets, the step [n_s] they amount to, the shape prior's weight, the
  priors' cost now and after the step)."""
  nb = betas.shape[0]
  free = np.asarray(offset_free, int)
  w_shape = _shape_weight(noise_sq, dof_used, totals, weights, nb, auto_prior, noise_floor_m)
  r_p, j_p = _shared_prior(betas, offsets, w_shape, weights.offset_prior, offset_free)
  schur = damped(h_ss + j_p.T @ j_p, damping) + schur_frames
  rhs = g_s + j_p.T @ r_p + rhs_frames
  # Active bounds: solve only in the directions the bounds leave free.
  proj = _bound_projector(betas, offsets, rhs, beta_bound, offset_bound, free)
  d_s = _bounded_step(schur, rhs, proj, betas, beta_bound)
  d_s = d_s * step_scale(d_s[:nb], _MAX_BETA_STEP)
  d_off = d_s[nb:].reshape(-1, 3)
  if len(free):
    d_off = d_off * step_scale(d_off, _MAX_OFFSET_STEP)
  o_new = offsets.at[free].add(d_off) if len(free) else offsets
  b_new, o_new = _project(betas + d_s[:nb], o_new, beta_bound, offset_bound)
  taken = jnp.concatenate([b_new - betas, (o_new[free] - offsets[free]).reshape(-1)])
  r_new, _ = _shared_prior(b_new, o_new, w_shape, weights.offset_prior, offset_free)
  return b_new, o_new, taken, w_shape, jnp.sum(r_p * r_p), jnp.sum(r_new * r_new)


@functools.partial(jax.jit, static_argnames=('offset_free',))
def _final_prior(betas, offsets, noise_sq, dof_used, totals, weights, auto_prior,
                 noise_floor_m, *, offset_free):
  """(the shape prior's weight at the final fit, the priors' cost there)."""
  w_shape = _shape_weight(noise_sq, dof_used, totals, weights, betas.shape[0], auto_prior,
                          noise_floor_m)
  r_p, _ = _shared_prior(betas, offsets, w_shape, weights.offset_prior, offset_free)
  return w_shape, jnp.sum(r_p * r_p)


@functools.partial(jax.jit, static_argnames=('structure',))
def _chunk_apply(model, betas, offsets, poses, trans, targets, weights, norms, inv_h_xs, inv_g_x,
                 d_s, *, structure):
  """One chunk's frames after the shared step d_s [n_s] (betas, offsets: the
  shared unknowns after it): each frame's step -(H_tt^-1 g_t + H_tt^-1 H_ts
  d_s), capped per frame, and the chunk's data cost there. Returns (poses,
  trans, cost)."""
  active = active_joints(model.parents, structure)
  act = np.asarray(active)
  d_x = -(inv_g_x + jnp.einsum('tij,j->ti', inv_h_xs, d_s))
  d_x = d_x * targets.exists[:, None]
  d_x = d_x * step_scale(d_x, MAX_ROTATION_STEP, axis=-1)   # per frame
  poses = poses.at[:, act].set(rotate(poses[:, act], d_x[:, :-3].reshape(len(poses), -1, 3)))
  trans = trans + d_x[:, -3:]
  residuals = jax.vmap(_frame_residual,
                       in_axes=(None, None, None, 0, 0, 0, None, None, None, None, None, None))
  r = residuals(model, betas, offsets, poses, trans, targets, weights, structure, active, *norms)
  return poses, trans, jnp.sum(r * r)


def joint_lm(model: JointModel, betas, offsets, poses, trans, targets: Targets,
             weights: LossWeights, iterations, offset_bound, beta_bound, auto_prior=0.0,
             noise_floor_m=1e-4, *, structure: FitStructure, initial_damping=1e-2,
             chunk_frames=128, call=None, rel_tol=0.0):
  """Solves all frames' poses with the shared betas and offsets together.

  betas [B]; offsets [M,3] m (in each mapped SMPL joint's frame; only the
  mapped joints structure.offset_joints move, offset m bounded to
  offset_bound[m] m, offset_bound [M]); betas stay within [-beta_bound,
  beta_bound] (standard-normal units: a plausible body), on top of the shape
  prior; poses [T,24,3] rad (joints that move no target are left as they are);
  trans [T,3] m; targets with leading [T] (padding frames have exists 0);
  iterations: int, at most (the solve stops once two accepted steps in a row
  lower the cost by less than rel_tol of itself; 0: never); auto_prior: 1 =
  the shape prior's weight follows the data (`noise_shape_prior_weight`,
  floor noise_floor_m), 0 = weights.shape_prior.
  The frames go through the compiled programs in chunks of chunk_frames (the
  last one padded): every trial length runs the same executables. call(fn,
  args, static): how a program is run (default compiled.call; the pipeline
  passes its own, which times it or, when prefetching, only readies it).
  Returns (betas, offsets, poses, trans, final loss, shape prior weight used),
  NumPy arrays.
  """
  call = call or compiled.call
  targets = jax.tree.map(np.asarray, targets)
  poses, trans = np.asarray(poses), np.asarray(trans)
  dtype = poses.dtype
  n, m = poses.shape[0], len(structure.smpl_index)
  tgt = frame_chunks(targets, int(chunk_frames))
  poses_c, trans_c = frame_chunks(poses, int(chunk_frames)), frame_chunks(trans, int(chunk_frames))
  norms = tuple(np.asarray(v, dtype) for v in frame_norms(targets, structure))
  totals = tuple(np.asarray(v, dtype) for v in data_totals(targets, m))
  scalar = lambda v: np.asarray(v, dtype)
  offset_bound = np.broadcast_to(np.asarray(offset_bound, dtype), (m,))
  bounds = (scalar(beta_bound), offset_bound)
  weights = jax.tree.map(scalar, weights)
  prior_args = (scalar(auto_prior), scalar(noise_floor_m))
  static = dict(structure=structure)
  shared_static = dict(offset_free=structure.offset_joints)

  def linearise(b, o, ps, ts):
    lins = [call(_chunk_linearise, (model, b, o, p, t, g, weights, norms), static)
            for p, t, g in zip(ps, ts, tgt)]
    sums = {key: np.asarray(sum(np.asarray(l[key], np.float64) for l in lins), dtype)
            for key in ('h_ss', 'g_s', 'cost', 'dof_used')}
    rows = np.concatenate([np.asarray(l['position_rows']) for l in lins])[:n]
    sums['noise_sq'] = np.asarray(white_noise_variance(rows, targets, norms[0], weights.position),
                                  dtype)
    return lins, sums

  # Start inside the bounds (the closed-form initial shape may lie outside),
  # or every step that the bound clips would be rejected.
  b, o = _project(np.asarray(betas, dtype), np.asarray(offsets, dtype), *bounds)
  b, o = b.astype(dtype), o.astype(dtype)
  lins, sums = linearise(b, o, poses_c, trans_c)
  damping = float(initial_damping)
  small_steps = 0     # accepted steps in a row that lowered the cost by < rel_tol of it
  for _ in range(int(iterations)):
    reduced = [call(_chunk_reduce, (l['h_xx'], l['h_xs'], l['g_x'], scalar(damping))) for l in lins]
    schur_frames = np.asarray(sum(np.asarray(r[2], np.float64) for r in reduced), dtype)
    rhs_frames = np.asarray(sum(np.asarray(r[3], np.float64) for r in reduced), dtype)
    b_new, o_new, d_s, w_shape, prior_now, prior_new = call(
        _shared_step, (b, o, sums['h_ss'], sums['g_s'], schur_frames, rhs_frames,
                       sums['noise_sq'], sums['dof_used'], totals, weights, scalar(damping),
                       *bounds, *prior_args), shared_static)
    applied = [call(_chunk_apply, (model, b_new, o_new, p, t, g, weights, norms, r[0], r[1], d_s),
                    static) for p, t, g, r in zip(poses_c, trans_c, tgt, reduced)]
    trial_cost = sum(float(a[2]) for a in applied) + float(prior_new)
    current = float(sums['cost']) + float(prior_now)
    better = trial_cost < current
    if better:
      b, o = np.asarray(b_new), np.asarray(o_new)
      poses_c, trans_c = [a[0] for a in applied], [a[1] for a in applied]
      lins, sums = linearise(b, o, poses_c, trans_c)
      small_steps = small_steps + 1 if current - trial_cost < rel_tol * current else 0
      if small_steps >= 2:
        break
    damping = damping / DAMPING_DOWN if better else damping * DAMPING_UP
  w_shape, prior_cost = call(_final_prior, (b, o, sums['noise_sq'], sums['dof_used'], totals,
                                            weights, *prior_args), shared_static)
  return (b, o, np.concatenate([np.asarray(p) for p in poses_c])[:n],
          np.concatenate([np.asarray(t) for t in trans_c])[:n],
          np.asarray(float(sums['cost']) + float(prior_cost), dtype), np.asarray(w_shape, dtype))
