"""The fit layer's own typed options: one frozen dataclass per stage, validated once.

Their defaults are jaxfit's recommended settings (chosen by measurement, see
benchmarks/FINDINGS.md): `FitOptions()` is the recommended fit, and the CLI
config (`jaxfit.run.config`) is built from these defaults. An invalid value
raises jaxfit.errors.ConfigError(field, problem), with `field` the dotted
option path (e.g. 'shape.frames'), the same path as its `--config.<field>`.
"""

import dataclasses
import math
from typing import Tuple

import numpy as np

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.errors import check as _check
from jaxfit.fit.types import LOSS_TERMS, LossWeights

VARIANTS = ('simultaneous', 'sequential')
DTYPES = ('float32', 'float64')

# Groups of SMPL joints for per-joint learning-rate multipliers.
JOINT_GROUPS = {
    'root': ('pelvis',),
    'hips': ('left_hip', 'right_hip'),
    'knees': ('left_knee', 'right_knee'),
    'feet': ('left_ankle', 'right_ankle', 'left_foot', 'right_foot'),
    'spine': ('spine1', 'spine2', 'spine3'),
    'neck_head': ('neck', 'head'),
    'collars': ('left_collar', 'right_collar'),
    'shoulders': ('left_shoulder', 'right_shoulder'),
    'elbows': ('left_elbow', 'right_elbow'),
    'wrists_hands': ('left_wrist', 'right_wrist', 'left_hand', 'right_hand'),
}


def joint_lr_from_groups(groups) -> Tuple[float, ...]:
  """24 per-SMPL-joint multipliers from {group: multiplier} (others 1)."""
  joint_lr = [1.0] * len(SMPL_JOINT_NAMES)
  for group, m in groups.items():
    _check(group in JOINT_GROUPS, f'joint_lr.{group}', f'unknown group; groups are {list(JOINT_GROUPS)}')
    _check(math.isfinite(m) and m >= 0, f'joint_lr.{group}', f'must be >= 0, got {m}')
    for name in JOINT_GROUPS[group]:
      joint_lr[SMPL_JOINT_NAMES.index(name)] = float(m)
  return tuple(joint_lr)


def joint_lr_groups(joint_lr) -> dict:
  """{group: multiplier} of 24 per-joint multipliers (each group's first joint)."""
  return {g: float(joint_lr[SMPL_JOINT_NAMES.index(names[0])]) for g, names in JOINT_GROUPS.items()}


# The reference's per-joint rates: feet 0.5, knees 1, hips 1.5.
DEFAULT_JOINT_LR = joint_lr_from_groups(dict(hips=1.5, feet=0.5))
# The recommended loss weights (the traced LossWeights default to 0 = off).
# orientation: the OpenSim segment orientations (files that carry them), rad^2
# against the position term's m^2 (0 = joint centres only). 1e-4: it decides
# what the joint centres leave free (each segment's twist) and barely moves the
# joints (open body, DJ1 / walking2 0.298 / 0.254 mm; 0.289 / 0.245 at 1e-5);
# at 1e-5 a twist the centres do see a little trades against them (the
# mannequin's torso on the demo run: 7.2 deg twist p95 at 1e-5, 0.6 at 1e-4);
# at 1e-3 the open body's DJ1 MPJPE is 0.49 mm (the two skeletons cannot match
# both the centres and every segment's swing; the centres are the metric).
# bone_direction, bone_length: the Adam stages only (off by default). Bones
# weigh as their less observed end, so those ending at a joint whose definition
# differs count noncomparable_weight: at full weight those bones made a body
# that cannot match the subject pay at the scored joints (open body, DJ1 with
# stage 4 on: 2.7-4.0 mm against 0.32). bone_direction keeps the frame-by-frame
# Adam of configs/sequential.py on the truth (0.35 mm with it, 1.7 without).
# pose_reg: 1e-8, enough to condition the solves (0 breaks DJ1: 3.6 mm), 0.02
# mm better than 1e-6 on walking2 (benchmarks/FINDINGS.md, issue 18).
# offset_prior: 1e-2. Measured at 1e-6 (benchmarks/FINDINGS.md): the open body's
# comparable joints gain up to 0.7 mm (walking2 1.46 -> 0.85 mm), but offsets then
# drift in directions no target sees (5 mm on exact data) and asked-for knee offsets
# are recovered 12 mm off in 20 iterations: not adopted.
DEFAULT_LOSS = LossWeights(
    position=1.0, orientation=1e-4, bone_direction=0.05, bone_length=1.0, bone_length_consistency=0.0,
    pose_reg=1e-8, trans_reg=0.0, shape_prior=3e-6, offset_prior=1e-2, temporal=1e-5,
    velocity=0.0, acceleration=1e-2, foot_skate=0.0)


def _is_int(value):
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class StageOptions:
  """What every stage has: iterations, Adam learning rate (decaying to
  lr * lr_final_ratio at the last step) and the loss terms it uses."""
  iters: int = 0
  lr: float = 0.01
  lr_final_ratio: float = 0.1
  terms: Tuple[str, ...] = ('position',)

  def validate(self, name):
    _check(_is_int(self.iters) and self.iters >= 0, f'{name}.iters',
           f'must be an integer >= 0, got {self.iters!r}')
    _check(math.isfinite(self.lr) and self.lr > 0, f'{name}.lr', f'must be > 0, got {self.lr}')
    _check(0 < self.lr_final_ratio <= 1, f'{name}.lr_final_ratio',
           f'must be in (0, 1], got {self.lr_final_ratio}')
    for t in self.terms:
      _check(t in LOSS_TERMS, f'{name}.terms', f'unknown loss term {t!r}; terms are {LOSS_TERMS}')


@dataclasses.dataclass(frozen=True)
class InitOptions(StageOptions):
  """Stage 1. solver: 'lm' (per-frame Levenberg-Marquardt, `iters` iterations)
  or 'adam' (the reference); root: 'kabsch' (closed-form root orientation) or
  'pelvis' (the reference: zero rotation, translation from the pelvis).

  15 iterations: with 6, frames of a running swing phase (knee flexion ~1.8
  rad) stayed in a poor local minimum that the joint solve of stage 2 does
  not leave (114 mm spikes on the demo run; 1.0 mm max at 15)."""
  iters: int = 15
  lr: float = 0.08
  lr_final_ratio: float = 0.1
  terms: Tuple[str, ...] = ('position', 'orientation', 'pose_reg')
  solver: str = 'lm'
  root: str = 'kabsch'

  def validate(self, name):
    super().validate(name)
    _check(self.solver in ('lm', 'adam'), f'{name}.solver', f'must be lm or adam, got {self.solver!r}')
    _check(self.root in ('kabsch', 'pelvis'), f'{name}.root',
           f'must be kabsch or pelvis, got {self.root!r}')


@dataclasses.dataclass(frozen=True)
class ShapeOptions(StageOptions):
  """Stage 2. method 'joint_lm': `joint_iters` Levenberg-Marquardt iterations
  on every frame's pose, the betas (kept within +-beta_bound) and the
  correspondence offsets together;
  'closed_form': least-squares betas on `frames` sampled frames alternated
  `rounds` times with LM of the sample, then every frame re-solved with
  `resolve_iters` LM iterations; 'adam': the reference's Adam on betas (lr)
  and the sample's poses (pose_lr) for `iters` steps (iters > 0 adds it
  after the other methods). prior: 'auto' (joint_lm: the shape prior's weight
  follows the noise the fit's own residual shows from frame to frame, at least
  noise_floor_m m of noise; joint_lm.white_noise_variance and
  noise_shape_prior_weight) or 'fixed' (loss.shape_prior).
  joint_tol: the joint solve stops before joint_iters once two accepted steps
  in a row lowered its cost by less than this fraction (0 = always
  joint_iters). 1e-4: once converged every later step lowers the cost by
  1e-5-4e-5 of itself and moves MPJPE by < 0.02 mm (FINDINGS.md, issue 22).
  joint_iters 30: with the non-comparable joints down-weighted
  (PrepareOptions.noncomparable_weight) the real trials use all 20 of the
  former limit (open body, walking2: 0.247 mm at 20, 0.242 at 30)."""
  iters: int = 0
  lr: float = 0.05
  lr_final_ratio: float = 0.1
  terms: Tuple[str, ...] = ('position', 'bone_direction', 'bone_length', 'pose_reg', 'shape_prior')
  method: str = 'joint_lm'
  joint_iters: int = 30
  joint_tol: float = 1e-4
  beta_bound: float = 3.0
  prior: str = 'auto'
  noise_floor_m: float = 1e-4
  frames: int = 80
  rounds: int = 2
  resolve_iters: int = 5
  pose_lr: float = 0.03

  def validate(self, name):
    super().validate(name)
    _check(self.method in ('joint_lm', 'closed_form', 'adam'), f'{name}.method',
           f'must be joint_lm, closed_form or adam, got {self.method!r}')
    _check(_is_int(self.joint_iters) and self.joint_iters >= 0, f'{name}.joint_iters',
           f'must be an integer >= 0, got {self.joint_iters!r}')
    _check(math.isfinite(self.joint_tol) and 0 <= self.joint_tol < 1, f'{name}.joint_tol',
           f'must be in [0, 1), got {self.joint_tol}')
    _check(self.beta_bound > 0, f'{name}.beta_bound', f'must be > 0, got {self.beta_bound}')
    _check(self.prior in ('auto', 'fixed'), f'{name}.prior', f'must be auto or fixed, got {self.prior!r}')
    _check(math.isfinite(self.noise_floor_m) and self.noise_floor_m > 0, f'{name}.noise_floor_m',
           f'must be > 0, got {self.noise_floor_m}')
    _check(self.method != 'adam' or self.iters > 0, f'{name}.iters', 'must be > 0 when method=adam')
    _check(_is_int(self.frames) and self.frames >= 1, f'{name}.frames', f'must be an integer >= 1, got {self.frames!r}')
    _check(_is_int(self.rounds) and self.rounds >= 0, f'{name}.rounds', f'must be an integer >= 0, got {self.rounds!r}')
    _check(_is_int(self.resolve_iters) and self.resolve_iters >= 0, f'{name}.resolve_iters',
           f'must be an integer >= 0, got {self.resolve_iters!r}')
    _check(math.isfinite(self.pose_lr) and self.pose_lr > 0, f'{name}.pose_lr',
           f'must be > 0, got {self.pose_lr}')


@dataclasses.dataclass(frozen=True)
class PoseOptions(StageOptions):
  """Stage 3 (per-frame refinement). warm_start in [0, 1]: how much each frame
  of the sequential variant starts from the previous frame's result.

  Off by default: the joint LM of stage 2 already solves every frame
  exactly, and Adam's noisy steps only added error (0.16 -> 0.30 mm on SMPL
  truth) and jitter (benchmarks/FINDINGS.md). configs/sequential.py runs it
  frame by frame."""
  iters: int = 0
  lr: float = 0.01
  lr_final_ratio: float = 0.05
  terms: Tuple[str, ...] = ('position', 'orientation', 'bone_direction', 'pose_reg', 'trans_reg',
                            'temporal')
  warm_start: float = 0.0

  def validate(self, name):
    super().validate(name)
    _check(0.0 <= self.warm_start <= 1.0, f'{name}.warm_start', f'must be in [0, 1], got {self.warm_start}')


@dataclasses.dataclass(frozen=True)
class SequenceOptions(StageOptions):
  """Stage 4 (whole sequence). betas_lr: Adam rate of the shape (0 = fixed:
  the joint LM chose it under the prior and the bound).

  Off by default (iters 0): AddBiomechanics joint centres are IK output,
  already smooth, and its Adam smoothing costs the user's MPJPE 0.02-0.03 mm
  there (open body, DJ1 0.29 -> 0.31, walking2 0.24 -> 0.26 mm) with no
  jitter to remove (the fit's jitter equals the targets'). On noisy inputs it
  pays: SMPL truth with 10 mm noise, 13.7 -> 13.1 mm from the truth with
  `--config.sequence.iters=60` (benchmarks/FINDINGS.md, issue 18)."""
  iters: int = 0
  lr: float = 0.001
  lr_final_ratio: float = 0.05
  terms: Tuple[str, ...] = ('position', 'orientation', 'bone_direction', 'bone_length',
                            'bone_length_consistency', 'pose_reg', 'trans_reg', 'shape_prior',
                            'offset_prior', 'temporal', 'velocity', 'acceleration', 'foot_skate')
  betas_lr: float = 0.0

  def validate(self, name):
    super().validate(name)
    _check(math.isfinite(self.betas_lr) and self.betas_lr >= 0, f'{name}.betas_lr',
           f'must be >= 0, got {self.betas_lr}')


@dataclasses.dataclass(frozen=True)
class FitOptions:
  """Everything `fit_trial` needs besides the model and the prepared trial.

  variant: 'simultaneous' (stage 3 on all frames at once) or 'sequential'
  (frame by frame); dtype: 'float32' or 'float64' (float64 needs
  jax_enable_x64, which the caller enables); loss: LossWeights;
  joint_lr: 24 per-SMPL-joint learning-rate multipliers; max_passes: stages
  3+4 repeated; whiten_betas: Adam on a whitened shape basis;
  chunk_frames: frames per compiled call (every program sees a fixed chunk of
  frames, so one set of executables serves every trial length; 0 = auto:
  `auto_chunk_frames`, 128 on CPU, more on accelerators, whose throughput
  grows with the batch).
  """
  variant: str = 'simultaneous'
  dtype: str = 'float32'
  loss: LossWeights = DEFAULT_LOSS
  joint_lr: Tuple[float, ...] = DEFAULT_JOINT_LR
  init: InitOptions = InitOptions()
  shape: ShapeOptions = ShapeOptions()
  pose: PoseOptions = PoseOptions()
  sequence: SequenceOptions = SequenceOptions()
  max_passes: int = 1
  whiten_betas: bool = True
  chunk_frames: int = 0

  def __post_init__(self):
    _check(self.variant in VARIANTS, 'variant', f'must be one of {VARIANTS}, got {self.variant!r}')
    _check(self.dtype in DTYPES, 'dtype', f'must be float32 or float64, got {self.dtype!r}')
    for term in LOSS_TERMS:
      w = getattr(self.loss, term)
      _check(math.isfinite(w) and w >= 0, f'loss.{term}', f'must be a finite weight >= 0, got {w}')
    _check(len(self.joint_lr) == 24 and all(math.isfinite(m) and m >= 0 for m in self.joint_lr),
           'joint_lr', f'must be 24 multipliers >= 0, got {self.joint_lr}')
    for name in ('init', 'shape', 'pose', 'sequence'):
      getattr(self, name).validate(name)
    _check(_is_int(self.max_passes) and self.max_passes >= 1, 'max_passes',
           f'must be an integer >= 1, got {self.max_passes!r}')
    _check(_is_int(self.chunk_frames) and (self.chunk_frames == 0 or self.chunk_frames >= 16),
           'chunk_frames', f'must be 0 (auto) or an integer >= 16, got {self.chunk_frames!r}')

  def stage(self, name) -> StageOptions:
    return getattr(self, name)


# Frames per compiled call by default, per JAX backend: on CPU a chunk of 128
# frames already fills the cores (measured: benchmarks/accelerator.py); an
# accelerator's throughput grows with the batch until it is full.
AUTO_CHUNK_FRAMES = dict(cpu=128, gpu=2048, tpu=2048)


def auto_chunk_frames(chunk_frames: int, backend: str) -> int:
  """chunk_frames, or for 0 (auto) the default of the JAX backend ('cpu', 'gpu', 'tpu')."""
  return int(chunk_frames) or AUTO_CHUNK_FRAMES.get(backend, 128)
