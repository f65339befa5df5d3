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

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional

from absl import logging

from jaxfit import __version__
from jaxfit.config import RUN_ONLY_FIELDS, Settings
from jaxfit.errors import JaxfitInputError
from jaxfit.io.atomic import TEMP_MARK, atomic_write
from jaxfit.io.results import trial_dir

SUMMARY_FIELDS = ('subject', 'trial', 'status', 'fitted_now', 'frames', 'mpjpe_mm',
                  'pa_mpjpe_mm', 'pck_50mm', 'pck_100mm', 'fit_residual_mm', 'max_abs_beta',
                  'worst_twist_segment', 'worst_twist_p95_deg', 'fit_s',
                  'compile_s', 'wall_s', 'error', 'input', 'output')


def config_sha256(config_dict, model_sha256) -> str:
  """Hash of everything in the config that decides a trial's fit (not where
  it runs or is written), plus the body model's content hash."""
  decisive = {k: v for k, v in config_dict.items() if k not in RUN_ONLY_FIELDS}
  text = json.dumps(dict(config=decisive, model_sha256=model_sha256), sort_keys=True,
                    default=str)
  return hashlib.sha256(text.encode()).hexdigest()


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


def summary_row(subject, trial, status, *, input_path, output='', metrics=None, error='',
                fitted_now=False):
  """One row of summary.csv / summary.json (SUMMARY_FIELDS), from a trial's
  metrics.json contents where it has been fitted."""
  metrics = metrics or {}
  time_s = metrics.get('time_s', {})
  row = dict(subject=subject, trial=trial, status=status, fitted_now=fitted_now,
             frames=metrics.get('frames'), mpjpe_mm=metrics.get('mpjpe_mm'),
             pa_mpjpe_mm=metrics.get('pa_mpjpe_mm'), pck_50mm=metrics.get('pck_50mm'),
             pck_100mm=metrics.get('pck_100mm'), fit_residual_mm=metrics.get('fit_residual_mm'),
             max_abs_beta=metrics.get('max_abs_beta'),
             worst_twist_segment=metrics.get('worst_twist_segment'),
             worst_twist_p95_deg=metrics.get('worst_twist_p95_deg'),
             fit_s=time_s.get('total'), compile_s=time_s.get('compile_s', 0.0 if metrics else None),
             wall_s=time_s.get('wall'), error=error, input=input_path, output=output)
  return row


def complete_metrics(output, input_sha256, config_sha) -> Optional[dict]:
  """The metrics of complete outputs in `output` made from this input and
  config, or None (absent, partial, unreadable or made otherwise)."""
  try:
    if not all(os.path.isfile(os.path.join(output, f)) for f in ('params.npz', 'config.json')):
      return None
    with open(os.path.join(output, 'metrics.json'), encoding='utf-8') as f:
      metrics = json.load(f)
  except (OSError, ValueError):
    return None
  provenance = metrics.get('provenance') or {}
  if provenance.get('input_sha256') != input_sha256 or provenance.get('config_sha256') != config_sha:
    return None
  return metrics


def plan_input(path, subject, settings: Settings, config_sha) -> InputPlan:
  """Hashes the input, lists its trials and finds the ones already done."""
  from jaxfit.app import file_sha256  # pylint: disable=import-outside-toplevel
  plan = InputPlan(path=path, subject=subject)
  try:
    plan.input_sha256 = file_sha256(path)
    if path.endswith('.npz'):
      from jaxfit.io.joints_npz import read_joints_npz  # pylint: disable=import-outside-toplevel
      trial = read_joints_npz(path)
      stem = os.path.splitext(os.path.basename(path))[0]
      if trial.subject != stem:  # the file names its subject
        plan.subject = trial.subject
      infos = [(trial.name, trial.num_frames)]
    else:
      from jaxfit.io.b3d import list_b3d_trials  # pylint: disable=import-outside-toplevel
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


def fit_input(plan: InputPlan, settings: Settings, model, model_info, config_dict, config_sha,
              on_row: Callable[[dict], None] = lambda row: None) -> List[dict]:
  """Reads and fits the pending trials of one planned input; one row each.

  A trial that fails (bad data, or an unexpected error) becomes a 'failed'
  row with the reason; the others go on.
  """
  from jaxfit.app import fit_and_write, read_trials  # pylint: disable=import-outside-toplevel
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
    trials = read_trials(plan.path, dataclasses.replace(settings, trials=tuple(names)))
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


class Summary:
  """summary.csv / summary.json of a run, in plan order, rewritten atomically
  as trials finish (at most every `interval_s`, and at the end)."""

  def __init__(self, output_dir, plans: List[InputPlan], interval_s=2.0):
    self.output_dir, self.interval_s = output_dir, interval_s
    self.rows: Dict[tuple, dict] = {}
    self._last = 0.0
    for plan in plans:
      if plan.error:
        self.rows[(plan.subject, '-')] = summary_row(plan.subject, '-', 'failed', input_path=plan.path,
                                              error=plan.error)
      for t in plan.trials:
        self.rows[(plan.subject, t.name)] = t.done_row or summary_row(
            plan.subject, t.name, 'pending', input_path=plan.path, output=t.output)

  def add(self, row):
    self.rows[(row['subject'], row['trial'])] = row
    if time.monotonic() - self._last >= self.interval_s:
      self.write()

  def write(self):
    rows = list(self.rows.values())
    os.makedirs(self.output_dir, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator='\n')
    writer.writeheader()
    for row in rows:
      writer.writerow({k: ('' if row.get(k) is None else row.get(k)) for k in SUMMARY_FIELDS})
    with atomic_write(os.path.join(self.output_dir, 'summary.csv')) as tmp:
      with open(tmp, 'w', encoding='utf-8', newline='') as f:
        f.write(text.getvalue())
    counts = {s: sum(r['status'] == s for r in rows) for s in ('ok', 'failed', 'pending')}
    with atomic_write(os.path.join(self.output_dir, 'summary.json')) as tmp:
      with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(dict(counts=counts, trials=rows), f, indent=1, allow_nan=False,
                  default=lambda v: None)
    self._last = time.monotonic()


class Progress:
  """One dataset progress bar (frames, trials, frames/s, ETA) on a terminal;
  nothing when stderr is not a terminal or progress is off."""

  def __init__(self, plans: List[InputPlan], enabled: bool):
    self.bar = None
    total = sum(t.frames for p in plans for t in p.trials)
    done = sum(t.frames for p in plans for t in p.trials if t.done_row is not None)
    self.trials = sum(len(p.trials) for p in plans)
    self.trials_done = sum(t.done_row is not None for p in plans for t in p.trials)
    self._handler, self._stream = None, None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self.bar = tqdm(total=total, initial=done, unit='frame', unit_scale=True,
                      dynamic_ncols=True, desc='fitting', smoothing=0.1)
      self._postfix()
      # Log lines go above the bar instead of breaking it.
      self._handler = logging.get_absl_handler().python_handler
      self._stream = self._handler.stream

      class _AboveTheBar:
        def write(self, text):
          if text.strip():
            tqdm.write(text.rstrip('\n'), file=sys.stderr)

        def flush(self):
          sys.stderr.flush()

      self._handler.stream = _AboveTheBar()

  def _postfix(self):
    self.bar.set_postfix_str(f'trials {self.trials_done}/{self.trials}')

  def update(self, frames):
    self.trials_done += 1
    if self.bar is not None:
      self.bar.update(frames or 0)
      self._postfix()

  def close(self):
    if self.bar is not None:
      self.bar.close()
      self._handler.stream = self._stream


def remove_stale_temporaries(output_dir):
  """Deletes what an interrupted run left half-written (atomic writes' temporaries)."""
  if not os.path.isdir(output_dir):
    return
  for root, dirs, files in os.walk(output_dir):
    for name in list(dirs):
      if TEMP_MARK in name:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        dirs.remove(name)
    for name in files:
      if TEMP_MARK in name:
        try:
          os.remove(os.path.join(root, name))
        except OSError:
          pass


def run_dataset(settings: Settings, config_dict) -> List[dict]:
  """Fits every trial of every input (skipping complete ones). Returns the
  summary rows; each input problem is reported in one line and skipped."""
  from jaxfit.app import DEMO_BODY_WARNING, OPEN_BODY_NOTE, configure_jax, find_inputs, load_model  # pylint: disable=import-outside-toplevel
  if settings.engine == 'local':
    configure_jax(settings)
  model, model_info = load_model(settings)
  logging.info('body model %s (%s, %d vertices, %d betas, %s)', model_info['name'],
               model_info['kind'], model.num_vertices, model.num_betas, model.gender)
  inputs = find_inputs(settings)
  if model_info['is_demo_body'] and settings.input:
    logging.warning('%s', DEMO_BODY_WARNING)
  elif model_info['kind'] == 'open':
    logging.info('%s', OPEN_BODY_NOTE)
  config_sha = config_sha256(config_dict, model_info['sha256'])
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
      from jaxfit.ray_engine import run_on_ray  # pylint: disable=import-outside-toplevel
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
  from jaxfit.report import ReportError, build_report  # pylint: disable=import-outside-toplevel
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
    from jaxfit.app import model_file  # pylint: disable=import-outside-toplevel
    result = build_report(settings.output_dir, stale, model_file(settings), settings.report)
  except ReportError as e:
    logging.warning('no report: %s', e)
    return
  logging.info('report: %s (%d trials reported in %.1f s)', result['index'], len(stale),
               time.perf_counter() - t0)


def summary_table(rows) -> str:
  """A plain-text table of the run."""
  header = (f'{"subject":24s} {"trial":24s} {"frames":>6s} {"MPJPE mm":>9s} {"PA mm":>7s} '
            f'{"PCK50":>6s} {"resid mm":>8s} {"fit s":>7s} {"compile s":>9s}')
  lines = [header, '-' * len(header)]
  for r in rows:
    if r['status'] != 'ok':
      lines.append(f'{r["subject"][:24]:24s} {r["trial"][:24]:24s} {r["status"].upper()}: '
                   f'{r["error"]}')
    else:
      lines.append(f'{r["subject"][:24]:24s} {r["trial"][:24]:24s} {r["frames"]:6d} '
                   f'{r["mpjpe_mm"]:9.2f} {r["pa_mpjpe_mm"]:7.2f} {r["pck_50mm"]:6.3f} '
                   f'{r["fit_residual_mm"]:8.2f} {r["fit_s"]:7.2f} {r["compile_s"]:9.1f}'
                   + ('' if r['fitted_now'] else '  (earlier run)'))
  return '\n'.join(lines)
