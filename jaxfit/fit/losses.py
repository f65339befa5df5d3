"""Loss terms as residual functions: each loss is the squared norm of its residual.

Every `*_residual` returns an array r whose sum of squares is the term's loss
(normalisation by counts folded into r), so Adam minimises
  sum_i w_i * ||r_i||^2
and a Gauss-Newton / Levenberg-Marquardt solver can stack sqrt(w_i) r_i.
Shapes: K frames in the block, M mapped joints, NB bones. Units: metres, radians.
"""

import jax
import jax.numpy as jnp

from jaxfit.body.model import JointModel, forward_kinematics
from jaxfit.body.rotation import axis_angle_to_matrix
from jaxfit.fit.types import (LOSS_TERMS, Anchor, FitParams, FitStructure,
                              LossWeights, Targets)

_EPS = 1e-9
# Floor of 1 + tr E in `orientation_error` (0 at an error of pi rad).
ORIENTATION_FLOOR = 1e-6


def posed_points_and_rotations(model: JointModel, params: FitParams, structure: FitStructure):
  """([K,M,3] m, [K,24,3,3]): the points compared with the targets, each
  mapped SMPL joint plus its correspondence offset in the joint's frame, and
  every joint's global rotation."""
  joints, rotations = jax.vmap(forward_kinematics, in_axes=(None, None, 0, 0))(
      model, params.betas, params.poses, params.trans)
  idx = jnp.asarray(structure.smpl_index)
  return joints[:, idx] + jnp.einsum('kmab,mb->kma', rotations[:, idx], params.offsets), rotations


def posed_mapped_joints(model: JointModel, params: FitParams, structure: FitStructure):
  """[K,M,3] metres: the points compared with the targets (see
  `posed_points_and_rotations`)."""
  return posed_points_and_rotations(model, params, structure)[0]


def _normalised(weight, denominator_axes=None):
  """sqrt(w / sum w), safe when sum w == 0 (for 0/1 masks: a mean over the mask)."""
  total = jnp.sum(weight, axis=denominator_axes, keepdims=denominator_axes is not None)
  return jnp.sqrt(weight / jnp.maximum(total, _EPS))


def _per_slot(weight, exists):
  """sqrt(w / (real frames x slots)) for weight [K,S]: a weighted mean over every
  slot of every real frame, so a sample of weight 0.1 counts a tenth of an
  observed one whatever else the block holds (normalising by sum w instead
  would scale a block of only low-weight samples back up to full weight)."""
  count = jnp.sum(exists) * weight.shape[-1]
  return jnp.sqrt(weight / jnp.maximum(count, _EPS))


def _safe_unit(v):
  norm_sq = jnp.sum(v * v, axis=-1, keepdims=True)
  return v / jnp.sqrt(jnp.maximum(norm_sq, _EPS))


def _bone_ends(structure):
  """Mapped-joint indices of each bone's (parent, child) ends, [NB] each."""
  return (jnp.asarray([p for p, _ in structure.bones]),
          jnp.asarray([c for _, c in structure.bones]))


def _bone_vectors(points, structure):
  parents, children = _bone_ends(structure)
  return points[..., children, :] - points[..., parents, :]


def _bone_weight(observed, structure):
  """[K,NB] in [0,1]: a bone is as much data as its less observed end (an
  interpolated end counts gap_fill, an unseen one 0)."""
  parents, children = _bone_ends(structure)
  return jnp.minimum(observed[:, parents], observed[:, children])


def position_residual(pred, targets: Targets):
  """[K,M,3]: weighted joint offsets; loss = weighted mean squared distance (m^2)
  over the real frames' mapped joints."""
  return _per_slot(targets.weight, targets.exists)[..., None] * (pred - targets.joints)


def orientation_error_parts(g, t):
  """The pieces of `orientation_error` (its Jacobian, lm.py, needs them too):
  E = t^T g [...,3,3], w = vee(E - E^T) [...,3], tr E [...] and
  s = sqrt(1 + tr E) [...], floored."""
  e = jnp.swapaxes(t, -1, -2) @ g
  w = jnp.stack([e[..., 2, 1] - e[..., 1, 2], e[..., 0, 2] - e[..., 2, 0],
                 e[..., 1, 0] - e[..., 0, 1]], -1)
  trace = e[..., 0, 0] + e[..., 1, 1] + e[..., 2, 2]
  return e, w, trace, jnp.sqrt(jnp.maximum(1.0 + trace, ORIENTATION_FLOOR))


def orientation_error(g, t):
  """[...,3]: the rotation error of g [...,3,3] against t [...,3,3] as three
  numbers, vee(E - E^T) / sqrt(1 + tr E) with E = t^T g: 2 sin(theta/2) times
  the error's unit axis (in t's frame) for an error of theta rad. Its squared
  norm is 3 - tr E = ||g - t||_F^2 / 2 = 4 sin^2(theta/2) ~ theta^2, the chordal
  distance in 3 rows instead of 9 (ill-defined only at theta = pi, where the
  denominator is floored)."""
  _, w, _, s = orientation_error_parts(g, t)
  return w / s[..., None]


def orientation_residual(rotations, targets: Targets, structure):
  """[K,S,3]: the paired segments' global rotation errors against their
  targets (`orientation_error`), whose squared norm is 4 sin^2(theta/2) ~
  theta^2 rad^2 for an error of theta; loss = weighted mean over real frames
  and segments. rotations [K,24,3,3] global."""
  g = rotations[:, jnp.asarray(structure.segment_joints, jnp.int32)]
  scale = _per_slot(targets.seg_weight, targets.exists)
  return scale[..., None] * orientation_error(g, targets.seg_rot)


def bone_direction_residual(pred, targets: Targets, structure):
  """[K,NB,3]: differences of unit bone vectors; insensitive to bone length."""
  w = _bone_weight(targets.observed, structure)
  diff = _safe_unit(_bone_vectors(pred, structure)) - _safe_unit(
      _bone_vectors(targets.joints, structure))
  return _per_slot(w, targets.exists)[..., None] * diff


def _lengths(points, structure):
  v = _bone_vectors(points, structure)
  return jnp.sqrt(jnp.maximum(jnp.sum(v * v, -1), _EPS))


def bone_length_residual(pred, targets: Targets, structure):
  """[K,NB] m: predicted minus target bone lengths, per frame."""
  w = _bone_weight(targets.observed, structure)
  return _per_slot(w, targets.exists) * (_lengths(pred, structure) - _lengths(targets.joints, structure))


def bone_length_consistency_residual(pred, targets: Targets, structure):
  """[K,NB] m: predicted bone lengths minus their mean over the block's frames."""
  w = targets.exists[:, None] * jnp.ones((1, len(structure.bones)))
  lengths = _lengths(pred, structure)
  mean = jnp.sum(w * lengths, 0) / jnp.maximum(jnp.sum(w, 0), _EPS)
  return _normalised(w) * (lengths - mean)


def pose_reg_residual(params: FitParams, targets: Targets):
  """[K,23,3] rad: body-joint rotations (root excluded); loss = mean squared angle."""
  w = jnp.broadcast_to(targets.exists[:, None, None], params.poses[:, 1:].shape)
  return _normalised(w) * params.poses[:, 1:]


def trans_reg_residual(params: FitParams, targets: Targets):
  """[K,3] m: translation minus its prior (pelvis-initialised translation)."""
  w = jnp.broadcast_to(targets.exists[:, None], params.trans.shape)
  return _normalised(w) * (params.trans - targets.trans_prior)


def shape_prior_residual(params: FitParams):
  """[B]: betas / sqrt(B); betas are N(0, I) under the model's PCA."""
  return params.betas / jnp.sqrt(params.betas.shape[0])


def offset_prior_residual(params: FitParams, structure: FitStructure):
  """[O,3] m: the learned correspondence offsets, towards zero; loss = mean
  squared offset component."""
  free = jnp.asarray(structure.offset_joints, jnp.int32)
  return params.offsets[free] / jnp.sqrt(max(3 * len(structure.offset_joints), 1))


def _with_anchor(values, anchor_value, anchor_valid, exists):
  """Prepends the anchor frame: values [K,...] -> [K+1,...], exists -> [K+1]."""
  stacked = jnp.concatenate([anchor_value[None], values], 0)
  mask = jnp.concatenate([anchor_valid[None] * 1.0, exists * 1.0], 0)
  return stacked, mask


def temporal_residual(params: FitParams, targets: Targets, anchor: Anchor):
  """[K,24*9+3]: rotation and translation (m) changes between neighbouring
  frames, including from the anchor (previous) frame.

  Rotations are compared as rotations, (R_t - R_t-1) / sqrt(2), whose squared
  norm is 4 sin^2(theta/2) ~ theta^2 for a relative rotation of theta rad: the
  same for every axis-angle representative, so a heading that crosses +-pi
  (where axis-angle vectors jump by 2 pi) costs nothing extra.
  """
  k = params.poses.shape[0]
  rot = axis_angle_to_matrix(params.poses).reshape(k, -1) / jnp.sqrt(2.0)
  x = jnp.concatenate([rot, params.trans], -1)
  a = jnp.concatenate([axis_angle_to_matrix(anchor.poses).reshape(-1) / jnp.sqrt(2.0),
                       anchor.trans], -1)
  seq, mask = _with_anchor(x, a, anchor.valid, targets.exists)
  pair = (mask[1:] * mask[:-1])[:, None]
  # Normalised per frame pair and 75 parameters, as a mean squared change.
  per_pair = jnp.sqrt(pair / jnp.maximum(jnp.sum(pair) * 75.0, _EPS))
  return per_pair * (seq[1:] - seq[:-1])


def velocity_residual(pred, targets: Targets, anchor: Anchor):
  """[K,M,3] m/frame: mapped-joint displacement between neighbouring frames."""
  seq, mask = _with_anchor(pred, anchor.joints, anchor.valid, targets.exists)
  pair = mask[1:] * mask[:-1]
  w = jnp.broadcast_to(pair[:, None], pred.shape[:2])
  return _normalised(w)[..., None] * (seq[1:] - seq[:-1])


def acceleration_residual(pred, targets: Targets, anchor: Anchor):
  """[K-1,M,3] m/frame^2: second differences of the mapped joints."""
  seq, mask = _with_anchor(pred, anchor.joints, anchor.valid, targets.exists)
  triple = mask[2:] * mask[1:-1] * mask[:-2]
  w = jnp.broadcast_to(triple[:, None], (triple.shape[0], pred.shape[1]))
  return _normalised(w)[..., None] * (seq[2:] - 2 * seq[1:-1] + seq[:-2])


def foot_skate_residual(pred, targets: Targets, anchor: Anchor, structure):
  """[K,F,3] m/frame: foot-joint motion while that foot stays in ground contact."""
  feet = jnp.asarray(structure.left_foot + structure.right_foot)
  side = jnp.asarray([0] * len(structure.left_foot) + [1] * len(structure.right_foot))
  seq, mask = _with_anchor(pred[:, feet], anchor.joints[feet], anchor.valid, targets.exists)
  contact = targets.contact[:, side]                                    # [K,F]
  contact_prev = jnp.concatenate([contact[:1] * anchor.valid, contact[:-1]], 0)
  w = (mask[1:] * mask[:-1])[:, None] * contact * contact_prev
  return _normalised(w)[..., None] * (seq[1:] - seq[:-1])


def residuals(model: JointModel, params: FitParams, targets: Targets,
              anchor: Anchor, structure: FitStructure):
  """All residuals of a block, as a dict term -> array (see LOSS_TERMS)."""
  pred, rotations = posed_points_and_rotations(model, params, structure)
  return residuals_from_joints(pred, params, targets, anchor, structure, rotations)


def residuals_from_joints(pred, params: FitParams, targets: Targets,
                          anchor: Anchor, structure: FitStructure, rotations=None):
  """All residuals given the posed mapped joints pred [K,M,3] (m) and the
  global rotations [K,24,3,3] (needed when structure.segment_joints)."""
  has_bones = bool(structure.bones)
  zero = jnp.zeros((0,), pred.dtype)
  return dict(
      position=position_residual(pred, targets),
      orientation=(orientation_residual(rotations, targets, structure)
                   if structure.segment_joints and rotations is not None else zero),
      bone_direction=bone_direction_residual(pred, targets, structure) if has_bones else zero,
      bone_length=bone_length_residual(pred, targets, structure) if has_bones else zero,
      bone_length_consistency=(bone_length_consistency_residual(pred, targets, structure)
                               if has_bones else zero),
      pose_reg=pose_reg_residual(params, targets),
      trans_reg=trans_reg_residual(params, targets),
      shape_prior=shape_prior_residual(params),
      offset_prior=offset_prior_residual(params, structure),
      temporal=temporal_residual(params, targets, anchor),
      velocity=velocity_residual(pred, targets, anchor),
      acceleration=acceleration_residual(pred, targets, anchor),
      foot_skate=(foot_skate_residual(pred, targets, anchor, structure)
                  if structure.left_foot or structure.right_foot else zero),
  )


def term_losses(model, params, targets, anchor, structure):
  """Dict term -> scalar loss (unweighted)."""
  return {k: jnp.sum(jnp.square(r)) for k, r in
          residuals(model, params, targets, anchor, structure).items()}


def total_loss(model, params, targets, anchor, structure, weights: LossWeights):
  """Weighted sum of all terms (scalar)."""
  losses = term_losses(model, params, targets, anchor, structure)
  return sum(getattr(weights, k) * losses[k] for k in LOSS_TERMS)
