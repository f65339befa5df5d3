"""Pytrees shared by the fitting code: parameters, targets, hyperparameters.

Everything that changes between stages (loss weights, learning rates and
their per-joint multipliers, iteration counts) is traced data, so all stages
with the same block shape share one compilation. What changes the graph
(joint mapping, bone list, foot joints) is the static `FitStructure`.
"""

import dataclasses
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class FitParams:
  """SMPL parameters of a block of K frames, and the correspondence offsets.

  betas [B]; poses [K,24,3] axis-angle, radians; trans [K,3] metres;
  offsets [M,3] metres: the point compared with mapped target m is SMPL joint
  smpl_index[m] plus offsets[m] in that joint's frame (R_j offsets[m]), so it
  moves with the body; zero for joints without a learned offset.
  """
  betas: jax.Array
  poses: jax.Array
  trans: jax.Array
  offsets: jax.Array


jax.tree_util.register_dataclass(
    FitParams, data_fields=['betas', 'poses', 'trans', 'offsets'], meta_fields=[])


@dataclasses.dataclass(frozen=True)
class Targets:
  """Data of a block of K frames (M mapped joints, NB bones), SMPL frame.

  joints [K,M,3] m (zeros where invalid); weight [K,M] >= 0, the position
  weight (0 = missing; includes gap filling, per-joint weights and contact
  up-weighting); observed [K,M] in [0,1]: how much each target is data (1
  observed, the gap_fill weight where interpolated, 0 never seen; times
  noncomparable_weight for a joint whose definition differs); exists [K]
  1 for real frames, 0 for padding; contact [K,2] (left, right foot) in {0,1};
  trans_prior [K,3] m, the translation the trans regulariser pulls towards;
  seg_rot [K,S,3,3]: the global rotation (SMPL world) each paired segment's
  SMPL joint should have (the OpenSim body's, through its constant frame
  offset; FitStructure.segment_joints); seg_weight [K,S] >= 0 (0 = none).
  """
  joints: jax.Array
  weight: jax.Array
  observed: jax.Array
  exists: jax.Array
  contact: jax.Array
  trans_prior: jax.Array
  seg_rot: jax.Array
  seg_weight: jax.Array


jax.tree_util.register_dataclass(
    Targets, data_fields=['joints', 'weight', 'observed', 'exists', 'contact', 'trans_prior',
                          'seg_rot', 'seg_weight'],
    meta_fields=[])


class Anchor(NamedTuple):
  """The frame before a block: temporal terms connect to it when valid=1.

  poses [24,3] rad; trans [3] m; joints [M,3] m (posed mapped joints);
  valid scalar in {0,1}.
  """
  poses: jax.Array
  trans: jax.Array
  joints: jax.Array
  valid: jax.Array


def empty_anchor(num_mapped: int, dtype=jnp.float32) -> Anchor:
  """No previous frame (valid = 0) for M = num_mapped joints."""
  return Anchor(poses=jnp.zeros((24, 3), dtype), trans=jnp.zeros((3,), dtype),
                joints=jnp.zeros((num_mapped, 3), dtype), valid=jnp.zeros((), dtype))


LOSS_TERMS = ('position', 'orientation', 'bone_direction', 'bone_length',
              'bone_length_consistency', 'pose_reg', 'trans_reg',
              'shape_prior', 'offset_prior', 'temporal', 'velocity', 'acceleration',
              'foot_skate')


class LossWeights(NamedTuple):
  """One traced scalar weight per loss term (0 switches a term off)."""
  position: float = 1.0
  orientation: float = 0.0
  bone_direction: float = 0.0
  bone_length: float = 0.0
  bone_length_consistency: float = 0.0
  pose_reg: float = 0.0
  trans_reg: float = 0.0
  shape_prior: float = 0.0
  offset_prior: float = 0.0
  temporal: float = 0.0
  velocity: float = 0.0
  acceleration: float = 0.0
  foot_skate: float = 0.0


class StageHyper(NamedTuple):
  """Traced stage settings.

  weights: LossWeights; lr: base learning rate; lr_final_ratio: the learning
  rate decays exponentially to lr * lr_final_ratio at the last step;
  num_steps: Adam steps per block; lr_mult: FitParams of multipliers
  (betas [B], poses [24,1] per joint, trans [1], offsets [M,1]); warm_start: 1 to start each
  block from the previous block's last frame, 0 to keep its own init;
  beta_basis [B,B]: Adam steps in z with betas = beta_basis @ z (identity, or a
  whitening basis in which every unit of z moves the mapped joints equally).
  """
  weights: LossWeights
  lr: float
  lr_final_ratio: float
  num_steps: int
  lr_mult: FitParams
  warm_start: float = 0.0
  beta_basis: jax.Array = None


@dataclasses.dataclass(frozen=True)
class FitStructure:
  """Static description of what is fitted (hashable: part of the compile key).

  smpl_index: SMPL joint of each mapped target joint [M];
  bones: (parent, child) pairs in mapped-joint indices;
  left_foot, right_foot: mapped indices of each foot's joints (ankle, toes);
  offset_joints: mapped indices whose correspondence offset is learned;
  segment_joints: the SMPL joint of each paired segment whose orientation is
  a target (Targets.seg_rot), () when the trial has no segment rotations.
  """
  smpl_index: Tuple[int, ...]
  bones: Tuple[Tuple[int, int], ...]
  left_foot: Tuple[int, ...]
  right_foot: Tuple[int, ...]
  offset_joints: Tuple[int, ...] = ()
  segment_joints: Tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class TrialArrays:
  """What `fit_trial` fits: one trial's targets, SMPL frame, padded to T_pad.

  targets [T_pad,M,3] m (gaps: interpolated; stand-ins where never seen);
  filled [T_pad,M,3] gaps linearly interpolated (for initialisation);
  valid [T,M] observed (unpadded);
  observed [T_pad,M] in [0,1]: 1 observed, gap_fill interpolated, 0 never seen,
    padding or weighted 0, times noncomparable_weight for a joint whose
    definition differs (how much a target is data; bones weigh by it);
  weight [T_pad,M] position weight: observed x joint weight x contact factor;
  exists [T_pad]; contact [T_pad,2] (left, right) float; num_frames: real frames T;
  joint_weight [M]: the position weight of each mapped joint, noncomparable_weight
    included (0 = not fitted);
  offset_bound [M] m: each learned offset's bound (0 where none is learned);
  segment_rotations [T_pad,S,3,3]: A R_opensim, each paired OpenSim body's
  rotation in the SMPL world (identity where missing; S =
  len(structure.segment_joints)); segment_weight [T_pad,S]: its weight (0
  missing or padding); segment_rest_offset [S,3,3]: the constant frame
  offset C of each pair from the two rest poses: R_smpl = A R_opensim C.
  """
  structure: FitStructure
  targets: np.ndarray
  filled: np.ndarray
  valid: np.ndarray
  observed: np.ndarray
  weight: np.ndarray
  exists: np.ndarray
  contact: np.ndarray
  num_frames: int
  joint_weight: np.ndarray
  offset_bound: np.ndarray
  segment_rotations: np.ndarray
  segment_weight: np.ndarray
  segment_rest_offset: np.ndarray

  @property
  def used(self):
    """[M] bool: joints that count at all (observed somewhere, weight > 0)."""
    return self.valid.any(0) & (self.joint_weight > 0)

  @property
  def init_weight(self):
    """[T_pad,M] for closed-form initialisation: every real frame's gap-filled
    joints, but never a joint the trial never observed (its values are
    stand-ins) nor one weighted 0."""
    return self.exists[:, None] * self.used[None]
