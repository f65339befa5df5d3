"""Whole datasets: plan, resume, fit (here or on Ray), summarise, show progress.

A run is a list of input files (one subject each). Each is planned first: its
content hash and its trials (from the file header), and for each trial
whether complete outputs made from the same input and config already exist
(then it is reused, not refitted). The trials left are fitted by an engine:

- local: in this process, one trial after another, every compiled program
  reused across trials (no per-trial compilation);
- ray: one Ray task per input file (`--config.engine=ray`), on this machine
  or a cluster (`--config.ray_address=auto`); a task whose worker dies is
  retried, and a retried task skips what its first attempt finished.

Either way each trial's outputs are written atomically as it finishes, and
`<output_dir>/summary.csv` / `summary.json` list every trial of the run. Kill
the run at any moment and run the same command again: it picks up where it
stopped, with outputs identical to an uninterrupted run.
"""

import dataclasses
import os
import time
from typing import Dict, List, Optional

from absl import logging

from jaxfit.errors import JaxfitInputError
from jaxfit.io.b3d import list_b3d_trials
from jaxfit.io.joints_npz import read_joints_npz
from jaxfit.io.outputs import (DEMO_BODY_WARNING, OPEN_BODY_NOTE, complete_metrics,
                               remove_stale_temporaries, summary_row, trial_dir)
from jaxfit.report.build import build_report
from jaxfit.report.options import ReportError
from jaxfit.run.config import Settings, config_sha256
from jaxfit.run.ray_engine import run_on_ray
from jaxfit.run.summary import Progress, Summary
from jaxfit.run.trial import find_inputs, fit_input, model_file, settings_model
from jaxfit.runtime.files import file_sha256
from jaxfit.runtime.jax_setup import configure_jax

@dataclasses.dataclass
class TrialPlan:
  """One trial of an input: its name, frames (after max_frames), output dir,
  and the summary row of complete outputs from an earlier run (or None)."""
  name: str
  frames: int
  output: str
  done_row: Optional[dict] = None


@dataclasses.dataclass
class InputPlan:
  """One input file (one subject) and its trials; error: why it cannot run."""
  path: str
  subject: str
  input_sha256: str = ''
  trials: List[TrialPlan] = dataclasses.field(default_factory=list)
  error: str = ''

  @property
  def pending(self) -> List[TrialPlan]:
    return [t for t in self.trials if t.done_row is None]


def subject_names(inputs: List[str]) -> Dict[str, str]:
  """A unique output folder name per input file: its stem, or, where stems
  collide (P001/P001.b3d in two datasets), its path below the common root."""
  stems = {p: os.path.splitext(os.path.basename(p))[0] for p in inputs}
  counts: Dict[str, int] = {}
  for stem in stems.values():
    counts[stem] = counts.get(stem, 0) + 1
  root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in inputs]) if inputs else ''
  names = {}
  for p, stem in stems.items():
    if counts[stem] == 1:
      names[p] = stem
    else:
      rel = os.path.relpath(os.path.splitext(os.path.abspath(p))[0], root)
      names[p] = rel.replace(os.sep, '__')
  return names


def plan_input(path, subject, settings: Settings, config_sha) -> InputPlan:
  """Hashes the input, lists its trials and finds the ones already done."""
  plan = InputPlan(path=path, subject=subject)
  try:
    plan.input_sha256 = file_sha256(path)
    if path.endswith('.npz'):
      trial = read_joints_npz(path)
      stem = os.path.splitext(os.path.basename(path))[0]
      if trial.subject != stem:  # the file names its subject
        plan.subject = trial.subject
      infos = [(trial.name, trial.num_frames)]
    else:
      wanted = set(settings.trials)
      listed = list_b3d_trials(path, settings.read_timeout_s)
      if not listed:
        raise JaxfitInputError(path, 'the file holds no trials')
      # --config.trials selects by name or index; a file without any is skipped.
      infos = [(i.name, i.num_frames) for i in listed
               if not wanted or i.name in wanted or str(i.index) in wanted]
  except JaxfitInputError as e:
    plan.error = str(e)
    return plan
  except OSError as e:
    plan.error = f'{path}: {e.strerror or e}'
    return plan
  cap = settings.prepare.max_frames
  for name, frames in infos:
    output = trial_dir(settings.output_dir, plan.subject, name)
    trial = TrialPlan(name=name, frames=min(frames, cap) if cap else frames, output=output)
    metrics = complete_metrics(output, plan.input_sha256, config_sha) if settings.resume else None
    if metrics is not None:
      trial.done_row = summary_row(plan.subject, name, 'ok', input_path=path, output=output,
                            metrics=metrics)
    plan.trials.append(trial)
  return plan


def run_dataset(settings: Settings, config_dict) -> List[dict]:
  """Fits every trial of every input (skipping complete ones). Returns the
  summary rows; each input problem is reported in one line and skipped."""
  if settings.engine == 'local':
    configure_jax(settings.fit.dtype, settings.compilation_cache_dir)
  model, model_info = settings_model(settings)
  logging.info('body model %s (%s, %d vertices, %d betas, %s)', model_info['name'],
               model_info['kind'], model.num_vertices, model.num_betas, model.gender)
  inputs = find_inputs(settings)
  if model_info['is_demo_body'] and settings.input:
    logging.warning('%s', DEMO_BODY_WARNING)
  elif model_info['kind'] == 'open':
    logging.info('%s', OPEN_BODY_NOTE)
  config_sha = config_sha256(settings, model_info['sha256'])
  remove_stale_temporaries(settings.output_dir)
  names = subject_names(inputs)
  plans = [plan_input(path, names[path], settings, config_sha) for path in inputs]
  for plan in plans:
    if plan.error:
      logging.error('%s', plan.error)
  if settings.trials and not any(p.trials for p in plans):
    raise JaxfitInputError(settings.input or 'the demo subject',
                           f'none of the trials {list(settings.trials)} exist in any input')
  reused = sum(t.done_row is not None for p in plans for t in p.trials)
  todo = sum(len(p.pending) for p in plans)
  logging.info('%d input files, %d trials: %d to fit, %d complete from an earlier run '
               '(same input and config)', len(plans), reused + todo, todo, reused)
  summary = Summary(settings.output_dir, plans)
  summary.write()
  progress = Progress(plans, settings.progress)
  frames = {(p.subject, t.name): t.frames for p in plans for t in p.trials}

  def on_row(row):
    summary.add(row)
    progress.update(frames.get((row['subject'], row['trial'])))

  try:
    if settings.engine == 'ray':
      run_on_ray(plans, settings, config_dict, config_sha, on_row)
    else:
      for plan in plans:
        fit_input(plan, settings, model, model_info, config_dict, config_sha, on_row)
  finally:
    progress.close()
    summary.write()
  rows = list(summary.rows.values())
  if settings.report is not None:
    make_report(settings, rows)
  return rows


def make_report(settings: Settings, rows):
  """Reports the run's fitted trials whose report is missing or older than
  their fit, and writes index.html. A report problem is a warning: the fits
  are written already."""
  stale = []
  for r in rows:
    if r['status'] != 'ok':
      continue
    report = os.path.join(r['output'], 'report', 'per_joint_mpjpe.png')
    params = os.path.join(r['output'], 'params.npz')
    if not os.path.isfile(report) or os.path.getmtime(report) < os.path.getmtime(params):
      stale.append(r['output'])
  t0 = time.perf_counter()
  try:
    result = build_report(settings.output_dir, stale, model_file(settings), settings.report)
  except ReportError as e:
    logging.warning('no report: %s', e)
    return
  logging.info('report: %s (%d trials reported in %.1f s)', result['index'], len(stale),
               time.perf_counter() - t0)
