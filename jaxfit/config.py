"""The config schema: every field, its default, and its validation.

Config files in configs/ start from `base_config()` (jaxfit's recommended
settings, chosen by measurement, see benchmarks/RESULTS.md) and override
fields. `settings_from_config` converts a ConfigDict once into typed,
validated settings; no ConfigDict goes past this module.
"""

import dataclasses
from typing import Dict, Tuple

import ml_collections
import numpy as np

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.errors import ConfigError
from jaxfit.fit.types import LOSS_TERMS, LossWeights

# AddBiomechanics (Rajagopal) joint -> SMPL joint; '' = not fitted.
# subtalar_*: SMPL has no subtalar joint; it sits 4-5 cm below/behind the ankle
#   centre, inside SMPL's ankle-foot segment, so it would fight the ankle target.
# radioulnar_*: a forearm pronation axis point 2-3 cm from the elbow centre,
#   not a joint SMPL has; elbow_* already pins the elbow.
# back -> spine1: measured (docs/joint_mapping.md, benchmarks/spine_mapping.py):
#   the Rajagopal lumbar (L5/S1) joint sits 30% of the way from the hip centres
#   to the shoulders; spine1 is the nearest SMPL joint (40% on the demo body).
DEFAULT_JOINT_MAP = {
    'ground_pelvis': 'pelvis',
    'hip_r': 'right_hip', 'hip_l': 'left_hip',
    'walker_knee_r': 'right_knee', 'walker_knee_l': 'left_knee',
    'ankle_r': 'right_ankle', 'ankle_l': 'left_ankle',
    'subtalar_r': '', 'subtalar_l': '',
    'mtp_r': 'right_foot', 'mtp_l': 'left_foot',
    'back': 'spine1',
    'acromial_r': 'right_shoulder', 'acromial_l': 'left_shoulder',
    'elbow_r': 'right_elbow', 'elbow_l': 'left_elbow',
    'radioulnar_r': '', 'radioulnar_l': '',
    'radius_hand_r': 'right_wrist', 'radius_hand_l': 'left_wrist',
}

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
STAGES = ('init', 'shape', 'pose', 'sequence')
VARIANTS = ('simultaneous', 'sequential')


def _stage(iters, lr, lr_final_ratio, terms, **extra):
  return ml_collections.ConfigDict(dict(
      iters=iters, lr=lr, lr_final_ratio=lr_final_ratio, terms=terms, **extra))


def base_config() -> ml_collections.ConfigDict:
  """jaxfit's recommended settings (see benchmarks/RESULTS.md for why)."""
  c = ml_collections.ConfigDict()
  c.input = ''            # .b3d file, joints .npz, or a folder of them
  c.output_dir = 'outputs'
  c.model_path = ''       # SMPL .pkl/.npz; '' = the generated jaxfit demo body
  c.num_betas = 10
  c.trials = ''           # comma-separated trial names or indices; '' = all
  c.processing_pass = 'last'  # 'last', an index, or kinematics/dynamics/lowpass
  c.max_frames = 0        # > 0: fit only the first max_frames frames of each trial
  c.variant = 'simultaneous'  # or 'sequential' (stage 3 frame by frame)
  c.frame_bucket = 128    # trial lengths are padded up to a multiple (no recompiles)
  c.dtype = 'float32'
  # Persistent XLA compilation cache: '' = ~/.cache/jaxfit/xla, 'none' = off.
  c.compilation_cache_dir = ''
  c.joint_map = ml_collections.ConfigDict(DEFAULT_JOINT_MAP)
  # Per-SMPL-joint weights of the position term (e.g. --config.joint_weights.left_wrist=0.5).
  c.joint_weights = ml_collections.ConfigDict({n: 1.0 for n in SMPL_JOINT_NAMES})
  # Per-joint learning-rate multipliers, by group (reference: feet 0.5, knees 1, hips 1.5).
  c.joint_lr = ml_collections.ConfigDict({g: 1.0 for g in JOINT_GROUPS})
  c.joint_lr.hips = 1.5
  c.joint_lr.feet = 0.5
  c.loss = ml_collections.ConfigDict(dict(
      position=1.0, bone_direction=0.05, bone_length=1.0,
      bone_length_consistency=0.0, pose_reg=1e-6, trans_reg=0.0,
      shape_prior=1e-6, temporal=1e-5, velocity=0.0, acceleration=1e-3,
      foot_skate=0.0,
      contact_weight=2.0,   # foot position weight multiplier during ground contact
      gap_fill=0.1,         # weight of interpolated targets for missing joints (x joint weight)
  ))
  c.contact = ml_collections.ConfigDict(dict(
      source='auto',        # auto (file, else heuristic), file, heuristic, none
      vertical_speed_threshold=0.4,  # m/s, heuristic
      height_margin=0.03,    # m above the lowest toe height, heuristic
  ))
  # Stage 1: closed-form root (Kabsch) then per-frame Levenberg-Marquardt
  # (6 iterations; bone direction is left to the Adam stages: measured 35%
  # faster at equal accuracy, benchmarks/RESULTS.md).
  c.init = _stage(6, 0.08, 0.1, 'position,pose_reg', solver='lm', root='kabsch')
  # Stage 2: closed-form shape (rigid distances, then least squares alternated
  # with LM on the sample); iters > 0 adds the reference's Adam shape fit.
  c.shape = _stage(0, 0.05, 0.1,
                   'position,bone_direction,bone_length,pose_reg,shape_prior',
                   frames=80, pose_lr=0.03, method='closed_form', rounds=2,
                   resolve_iters=5)
  c.pose = _stage(40, 0.01, 0.05,
                  'position,bone_direction,pose_reg,trans_reg,temporal',
                  warm_start=0.0)
  c.sequence = _stage(60, 0.005, 0.05,
                      'position,bone_direction,bone_length,bone_length_consistency,'
                      'pose_reg,trans_reg,shape_prior,temporal,velocity,'
                      'acceleration,foot_skate', betas_lr=0.002)
  c.max_passes = 1
  c.whiten_betas = True   # Adam on a whitened shape basis (False: plain betas, as the reference)
  return c


@dataclasses.dataclass(frozen=True)
class StageSettings:
  iters: int
  lr: float
  lr_final_ratio: float
  terms: Tuple[str, ...]
  extra: Dict[str, float]


@dataclasses.dataclass(frozen=True)
class Settings:
  """Typed, validated run settings (from a ConfigDict)."""
  input: str
  output_dir: str
  model_path: str
  num_betas: int
  trials: Tuple[str, ...]
  processing_pass: str
  max_frames: int
  variant: str
  frame_bucket: int
  dtype: str
  compilation_cache_dir: str
  joint_map: Dict[str, str]
  joint_weights: np.ndarray      # [24]
  joint_lr: np.ndarray           # [24]
  loss: LossWeights
  contact_weight: float
  gap_fill: float
  contact_source: str
  contact_vertical_speed_threshold: float
  contact_height_margin: float
  stages: Dict[str, StageSettings]
  max_passes: int
  whiten_betas: bool


def _check(cond, field, problem):
  if not cond:
    raise ConfigError(f'--config.{field}', problem)


def settings_from_config(c: ml_collections.ConfigDict) -> Settings:
  """Validates a config; raises ConfigError naming the field and the problem."""
  _check(c.variant in VARIANTS, 'variant', f'must be one of {VARIANTS}, got {c.variant!r}')
  _check(c.dtype in ('float32', 'float64'), 'dtype', f'must be float32 or float64, got {c.dtype!r}')
  _check(isinstance(c.num_betas, int) and 1 <= c.num_betas <= 300, 'num_betas',
         f'must be an integer in [1, 300], got {c.num_betas!r}')
  _check(isinstance(c.frame_bucket, int) and c.frame_bucket >= 1, 'frame_bucket',
         f'must be a positive integer, got {c.frame_bucket!r}')
  _check(isinstance(c.max_passes, int) and c.max_passes >= 1, 'max_passes',
         f'must be an integer >= 1, got {c.max_passes!r}')
  _check(isinstance(c.max_frames, int) and c.max_frames >= 0, 'max_frames',
         f'must be an integer >= 0, got {c.max_frames!r}')
  joint_map = {str(k): str(v or '') for k, v in c.joint_map.items()}
  for addb, smpl in joint_map.items():
    _check(smpl == '' or smpl in SMPL_JOINT_NAMES, f'joint_map.{addb}',
           f'{smpl!r} is not an SMPL joint; expected one of {SMPL_JOINT_NAMES} or ""')
  weights = np.ones(len(SMPL_JOINT_NAMES))
  for name, w in c.joint_weights.items():
    _check(name in SMPL_JOINT_NAMES, f'joint_weights.{name}', 'not an SMPL joint name')
    _check(np.isfinite(w) and w >= 0, f'joint_weights.{name}', f'must be >= 0, got {w}')
    weights[SMPL_JOINT_NAMES.index(name)] = w
  joint_lr = np.ones(len(SMPL_JOINT_NAMES))
  for group, m in c.joint_lr.items():
    _check(group in JOINT_GROUPS, f'joint_lr.{group}', f'unknown group; groups are {list(JOINT_GROUPS)}')
    _check(np.isfinite(m) and m >= 0, f'joint_lr.{group}', f'must be >= 0, got {m}')
    for name in JOINT_GROUPS[group]:
      joint_lr[SMPL_JOINT_NAMES.index(name)] = m
  loss = {}
  for term in LOSS_TERMS:
    w = c.loss[term]
    _check(np.isfinite(w) and w >= 0, f'loss.{term}', f'must be a finite weight >= 0, got {w}')
    loss[term] = float(w)
  _check(c.loss.contact_weight >= 0, 'loss.contact_weight', 'must be >= 0')
  _check(0 <= c.loss.gap_fill <= 1, 'loss.gap_fill', f'must be in [0, 1], got {c.loss.gap_fill}')
  _check(c.contact.source in ('auto', 'file', 'heuristic', 'none'), 'contact.source',
         f'must be auto, file, heuristic or none, got {c.contact.source!r}')
  stages = {}
  for name in STAGES:
    s = c[name]
    if name == 'shape' and s.method == 'adam':
      _check(s.iters > 0, 'shape.iters', 'must be > 0 when shape.method=adam')
    _check(isinstance(s.iters, int) and s.iters >= 0, f'{name}.iters', f'must be an integer >= 0, got {s.iters!r}')
    _check(s.lr > 0 and np.isfinite(s.lr), f'{name}.lr', f'must be > 0, got {s.lr}')
    _check(0 < s.lr_final_ratio <= 1, f'{name}.lr_final_ratio', f'must be in (0, 1], got {s.lr_final_ratio}')
    terms = tuple(t.strip() for t in s.terms.split(',') if t.strip())
    for t in terms:
      _check(t in LOSS_TERMS, f'{name}.terms', f'unknown loss term {t!r}; terms are {LOSS_TERMS}')
    extra = {k: v for k, v in s.items() if k not in ('iters', 'lr', 'lr_final_ratio', 'terms')}
    stages[name] = StageSettings(int(s.iters), float(s.lr), float(s.lr_final_ratio), terms, extra)
  _check(stages['shape'].extra['frames'] >= 1, 'shape.frames', 'must be >= 1')
  _check(stages['shape'].extra['method'] in ('closed_form', 'adam'), 'shape.method',
         f"must be closed_form or adam, got {stages['shape'].extra['method']!r}")
  _check(stages['init'].extra['solver'] in ('lm', 'adam'), 'init.solver',
         f"must be lm or adam, got {stages['init'].extra['solver']!r}")
  _check(stages['init'].extra['root'] in ('kabsch', 'pelvis'), 'init.root',
         f"must be kabsch or pelvis, got {stages['init'].extra['root']!r}")
  trials = tuple(t.strip() for t in str(c.trials).split(',') if t.strip())
  return Settings(
      input=str(c.input), output_dir=str(c.output_dir), model_path=str(c.model_path),
      num_betas=int(c.num_betas), trials=trials, processing_pass=str(c.processing_pass),
      max_frames=int(c.max_frames), variant=str(c.variant), frame_bucket=int(c.frame_bucket),
      dtype=str(c.dtype), compilation_cache_dir=str(c.compilation_cache_dir), joint_map=joint_map, joint_weights=weights, joint_lr=joint_lr,
      loss=LossWeights(**loss), contact_weight=float(c.loss.contact_weight),
      gap_fill=float(c.loss.gap_fill),
      contact_source=str(c.contact.source),
      contact_vertical_speed_threshold=float(c.contact.vertical_speed_threshold),
      contact_height_margin=float(c.contact.height_margin),
      stages=stages, max_passes=int(c.max_passes), whiten_betas=bool(c.whiten_betas))
