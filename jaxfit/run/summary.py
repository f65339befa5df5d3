"""A run's summary as it goes: summary.csv / summary.json rewritten as trials
finish, the progress bar, and the closing text table."""

import sys
import time
from typing import Dict

from absl import logging
from tqdm import tqdm

from jaxfit.io.outputs import summary_row, write_summary


class Summary:
  """summary.csv / summary.json of a run (plans: its jaxfit.run.dataset.InputPlan list), in plan order, rewritten atomically
  as trials finish (at most every `interval_s`, and at the end)."""

  def __init__(self, output_dir, plans: list, interval_s=2.0):
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
    write_summary(self.output_dir, list(self.rows.values()))
    self._last = time.monotonic()


class Progress:
  """One dataset progress bar (frames, trials, frames/s, ETA) on a terminal;
  nothing when stderr is not a terminal or progress is off."""

  def __init__(self, plans: list, enabled: bool):
    self.bar = None
    total = sum(t.frames for p in plans for t in p.trials)
    done = sum(t.frames for p in plans for t in p.trials if t.done_row is not None)
    self.trials = sum(len(p.trials) for p in plans)
    self.trials_done = sum(t.done_row is not None for p in plans for t in p.trials)
    self._handler, self._stream = None, None
    if enabled and sys.stderr.isatty():
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
