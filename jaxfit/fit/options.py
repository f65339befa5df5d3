"""The fit layer's own typed options: one frozen dataclass per stage, validated once.

The CLI config (`jaxfit.config`) converts its ConfigDict into these at the
edge; nothing in `jaxfit.fit` knows about the config. An invalid value raises
OptionError(field, problem), with `field` the dotted option path (e.g.
'shape.frames'), which the config layer reports as `--config.<field>`.
"""

import dataclasses
import math
from typing import Tuple

import numpy as np

from jaxfit.fit.types import LOSS_TERMS, LossWeights

VARIANTS = ('simultaneous', 'sequential')
DTYPES = ('float32', 'float64')


class OptionError(ValueError):
  """An invalid fit option: `field` (dotted path) and the problem."""

  def __init__(self, field, problem):
    self.field, self.problem = field, problem
    super().__init__(f'{field}: {problem}')


def _check(cond, field, problem):
  if not cond:
    raise OptionError(field, problem)


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
  'pelvis' (the reference: zero rotation, translation from the pelvis)."""
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
  and the sample's poses (pose_lr) for `iters` steps. prior: 'auto' (joint_lm:
  the shape prior's weight follows the noise the fit's own residual shows, at
  least noise_floor_m m of noise; joint_lm.noise_shape_prior_weight) or
  'fixed' (loss.shape_prior)."""
  method: str = 'joint_lm'
  joint_iters: int = 20
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
  of the sequential variant starts from the previous frame's result."""
  warm_start: float = 0.0

  def validate(self, name):
    super().validate(name)
    _check(0.0 <= self.warm_start <= 1.0, f'{name}.warm_start', f'must be in [0, 1], got {self.warm_start}')


@dataclasses.dataclass(frozen=True)
class SequenceOptions(StageOptions):
  """Stage 4 (whole sequence). betas_lr: Adam rate of the shape (0 = fixed)."""
  betas_lr: float = 0.002

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
  3+4 repeated; whiten_betas: Adam on a whitened shape basis.
  """
  variant: str = 'simultaneous'
  dtype: str = 'float32'
  loss: LossWeights = LossWeights()
  joint_lr: Tuple[float, ...] = (1.0,) * 24
  init: InitOptions = InitOptions()
  shape: ShapeOptions = ShapeOptions()
  pose: PoseOptions = PoseOptions()
  sequence: SequenceOptions = SequenceOptions()
  max_passes: int = 1
  whiten_betas: bool = True

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

  def stage(self, name) -> StageOptions:
    return getattr(self, name)
