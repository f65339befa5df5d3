"""One input at a time: the body model, the inputs, and fitting and writing
a trial (prepare, fit, measure, write; outputs written atomically).

The maths lives in jaxfit.fit, the targets in jaxfit.data, the output folder
in jaxfit.io.outputs; the dataset-level orchestration (planning, resuming,
summary, engines) in jaxfit.run.dataset.
"""

import dataclasses
import os
import time
import traceback
from typing import Callable, List

import numpy as np
from absl import logging

from jaxfit.data.prepare import prepare_trial
from jaxfit.body.model import joint_model
from jaxfit.demo.builtin import builtin_body_path
from jaxfit.demo.subject import ensure_demo_subject
from jaxfit.errors import JaxfitInputError
from jaxfit.fit.pipeline import fit_trial
from jaxfit.io.motion import find_motion_files, read_trials
from jaxfit.io.outputs import (MAX_PLAUSIBLE_BETA, complete_metrics, metrics_json, summary_row,
                               trial_dir, write_fit)
from jaxfit.io.smpl_file import load_body_model
from jaxfit.run.config import Settings
from jaxfit.runtime.files import file_sha256
from jaxfit.version import __version__

def load_model(model_path='', body='open', num_betas=10, dtype='float32'):
  """The SMPL-family file at model_path, or ('') the built-in `body` ('open',
  'open_male', 'open_female': the jaxfit open body; 'demo': the generated
  mannequin; neither is SMPL). Returns (model, info); info: name, sha256,
  path, kind ('smpl_file', 'demo', 'open') and is_demo_body."""
  path = model_path or builtin_body_path(body)
  model = load_body_model(path, num_betas, np.float64 if dtype == 'float64' else np.float32)
  kind = 'smpl_file' if model_path else ('demo' if body == 'demo' else 'open')
  return model, dict(name=model.name, sha256=file_sha256(path), path=os.path.abspath(path),
                     kind=kind, is_demo_body=kind == 'demo')


def model_file(settings: Settings) -> str:
  """The body model file a run uses: model_path, else the built-in `body`."""
  return settings.model_path or builtin_body_path(settings.body)


def settings_model(settings: Settings):
  """load_model for a run's settings."""
  return load_model(settings.model_path, settings.body, settings.num_betas, settings.fit.dtype)


def find_inputs(settings: Settings) -> List[str]:
  """Files to fit: the demo subject, one file, or every .b3d / joints .npz in a folder."""
  if not settings.input:
    return [ensure_demo_subject()]
  return find_motion_files(settings.input, exclude_dir=settings.output_dir)


def settings_trials(path, settings: Settings, names=None):
  """read_trials for a run's settings (names: these trials, default settings.trials)."""
  return read_trials(path, settings.processing_pass, names or settings.trials or None,
                     settings.joint_centres, settings.read_timeout_s)


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
  metrics, extras = metrics_json(trial, prep, result, model, model_info, settings.fit.variant,
                                 provenance, settings.fit.shape.beta_bound)
  for warning in metrics['offset_warnings']:
    logging.warning('%s: %s', label, warning)
  metrics['time_s']['wall'] = round(wall, 4)
  if metrics['max_abs_beta'] > MAX_PLAUSIBLE_BETA * (1 + 1e-4):
    logging.warning('%s: max |beta| = %.1f > %g: an implausible body shape (betas are '
                    'standard-normal); check the joint mapping and the model file', label,
                    metrics['max_abs_beta'], MAX_PLAUSIBLE_BETA)
  elif metrics['betas_at_bound']:
    logging.warning('%s: betas %s at their bound +-%g: the body model\'s shape space does not '
                    'reach this subject (the fit is the best body within it)', label,
                    metrics['betas_at_bound'], settings.fit.shape.beta_bound)
  out = trial_dir(settings.output_dir, trial.subject, trial.name)
  write_fit(out, trial, prep, result, model, model_info, metrics, config_dict, extras)
  logging.info('%s: MPJPE %.1f mm, PA-MPJPE %.1f mm, PCK@50 %.3f (raw SMPL joints, %d comparable '
               'joints), fit residual %.1f mm, %d frames, %.2f s (+%.1f s compile) -> %s', label,
               metrics['mpjpe_mm'], metrics['pa_mpjpe_mm'], metrics['pck_50mm'],
               len(metrics['mpjpe_joints']), metrics['fit_residual_mm'], prep.num_frames,
               result.time_s['total'], result.time_s.get('compile_s', 0.0), out)
  return metrics


def fit_input(plan, settings: Settings, model, model_info, config_dict, config_sha,
              on_row: Callable[[dict], None] = lambda row: None) -> List[dict]:
  """Reads and fits the pending trials of one planned input (a
  jaxfit.run.dataset.InputPlan); one summary row each.

  A trial that fails (bad data, or an unexpected error) becomes a 'failed'
  row with the reason; the others go on.
  """
  pending = plan.pending
  rows = []

  def emit(row):
    rows.append(row)
    on_row(row)

  if not pending:
    return rows
  provenance = dict(input_path=os.path.abspath(plan.path), input_sha256=plan.input_sha256,
                    config_sha256=config_sha, jaxfit_version=__version__)
  names = [t.name for t in pending]
  try:
    trials = settings_trials(plan.path, settings, tuple(names))
  except JaxfitInputError as e:
    logging.error('%s', e)
    for t in pending:
      emit(summary_row(plan.subject, t.name, 'failed', input_path=plan.path, error=str(e)))
    return rows
  by_name = {t.name: t for t in trials}
  for t in pending:
    # A retried task (its worker died) finds what its first attempt finished.
    metrics = complete_metrics(t.output, plan.input_sha256, config_sha) if settings.resume else None
    if metrics is not None:
      emit(summary_row(plan.subject, t.name, 'ok', input_path=plan.path, output=t.output,
                       metrics=metrics))
      continue
    trial = by_name.get(t.name)
    if trial is None:
      emit(summary_row(plan.subject, t.name, 'failed', input_path=plan.path,
                       error=f'{plan.path}: trial {t.name!r} could not be read'))
      continue
    trial = dataclasses.replace(trial, subject=plan.subject)
    try:
      metrics = fit_and_write(trial, settings, model, model_info, config_dict, provenance)
    except JaxfitInputError as e:
      logging.error('%s', e)
      emit(summary_row(plan.subject, t.name, 'failed', input_path=plan.path, error=str(e)))
      continue
    except Exception as e:  # pylint: disable=broad-except
      # Not the user's data: say so once with the traceback, and go on.
      logging.error('%s/%s: internal error, trial skipped: %s: %s\n%s', plan.subject, t.name,
                    type(e).__name__, e, traceback.format_exc())
      emit(summary_row(plan.subject, t.name, 'failed', input_path=plan.path,
                       error=f'internal error: {type(e).__name__}: {e}'))
      continue
    emit(summary_row(plan.subject, t.name, 'ok', input_path=plan.path, output=t.output,
                     metrics=metrics, fitted_now=True))
  return rows
