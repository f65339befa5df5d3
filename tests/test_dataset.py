"""Dataset runs from the command line: resuming after kill -9, the summary,
the Ray engine against the local one (subprocesses, as a user runs them)."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxfit.run.dataset import subject_names
from jaxfit.runtime.files import TEMP_MARK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAM_KEYS = ('betas', 'poses', 'trans', 'joint_offsets')
# What differs between two runs of the same fit: times, and where outputs were written.
RUN_DEPENDENT = ('time_s',)


def _command(data, out, cache, *flags):
  return [sys.executable, '-m', 'jaxfit.main', '--config=configs/default.py',
          f'--config.input={data}', f'--config.output_dir={out}',
          f'--config.compilation_cache_dir={cache}', *flags]


def _run(data, out, cache, *flags):
  return subprocess.run(_command(data, out, cache, *flags), cwd=ROOT, capture_output=True,
                        text=True, timeout=900)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """Three subjects (one in a nested folder), five trials of 60-160 frames."""
  from jaxfit.demo.subject import TrialSpec, write_demo_subject
  root = tmp_path_factory.mktemp('dataset')
  (root / 'labB').mkdir()
  specs = {
      root / 'S01.b3d': (TrialSpec('walk', 'walk', 1.2, 140, 100.0, True),
                         TrialSpec('run', 'run', 3.0, 60, 150.0, False)),
      root / 'S02.b3d': (TrialSpec('walk', 'walk', 1.4, 100, 100.0, True),),
      root / 'labB' / 'S03.b3d': (TrialSpec('slow', 'walk', 0.9, 160, 100.0, True),
                                  TrialSpec('fast', 'walk', 1.6, 80, 100.0, False)),
  }
  for seed, (path, trials) in enumerate(specs.items()):
    write_demo_subject(str(path), trials, height_m=1.6 + 0.1 * seed, seed=seed)
  return root


@pytest.fixture(scope='module')
def cache(executable_cache):
  return executable_cache


@pytest.fixture(scope='module')
def reference(dataset, cache, tmp_path_factory):
  """An uninterrupted local run (which also fills the executable store)."""
  out = tmp_path_factory.mktemp('reference') / 'out'
  proc = _run(dataset, out, cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def _trial_dirs(out):
  """Finished trial folders (not the temporaries of a write in progress)."""
  found = []
  for root, dirs, files in os.walk(out):
    dirs[:] = [d for d in dirs if TEMP_MARK not in d]
    if 'params.npz' in files:
      found.append(os.path.relpath(root, out))
  return sorted(found)


def _summary(out):
  with open(out / 'summary.csv', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def _assert_same_outputs(a, b):
  """Identical fits: arrays bit for bit, metrics equal but for the times."""
  assert _trial_dirs(a) == _trial_dirs(b) and len(_trial_dirs(a)) == 5
  for d in _trial_dirs(a):
    with np.load(a / d / 'params.npz') as pa, np.load(b / d / 'params.npz') as pb:
      for key in PARAM_KEYS:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=f'{d} {key}')
    ma, mb = (json.loads((x / d / 'metrics.json').read_text()) for x in (a, b))
    for key in RUN_DEPENDENT:
      ma.pop(key), mb.pop(key)
    assert ma == mb, d


def test_summary_lists_every_trial(reference):
  rows = _summary(reference)
  assert [(r['subject'], r['trial']) for r in rows] == [
      ('S01', 'walk'), ('S01', 'run'), ('S02', 'walk'), ('S03', 'slow'), ('S03', 'fast')]
  for r in rows:
    assert r['status'] == 'ok' and r['fitted_now'] == 'True' and r['error'] == ''
    assert float(r['mpjpe_mm']) < 16 and float(r['max_abs_beta']) <= 3.0
    metrics = json.loads((reference / r['subject'] / r['trial'] / 'metrics.json').read_text())
    assert int(r['frames']) == metrics['frames']
    assert len(metrics['provenance']['input_sha256']) == 64
  report = json.loads((reference / 'summary.json').read_text())
  assert report['counts'] == dict(ok=5, failed=0, pending=0)


def test_rerun_fits_nothing_and_a_changed_config_refits(reference, dataset, cache, tmp_path):
  stamps = {d: os.stat(reference / d / 'params.npz').st_mtime_ns for d in _trial_dirs(reference)}
  before = _summary(reference)
  proc = _run(dataset, reference, cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '0 to fit, 5 complete' in proc.stderr
  assert stamps == {d: os.stat(reference / d / 'params.npz').st_mtime_ns for d in stamps}
  after = _summary(reference)
  assert [r['fitted_now'] for r in after] == ['False'] * 5
  strip = lambda rows: [{k: v for k, v in r.items() if k != 'fitted_now'} for r in rows]
  assert strip(after) == strip(before)
  # A field that changes the fit makes its trials stale; a run-only one does not.
  copy = tmp_path / 'copy'
  shutil.copytree(reference, copy)
  changed = _run(dataset, copy, cache, '--config.max_frames=50', '--config.trials=walk',
                 '--config.progress=false')
  assert changed.returncode == 0, changed.stderr[-3000:]
  assert '2 to fit, 0 complete' in changed.stderr


def test_kill_9_then_rerun_gives_the_uninterrupted_outputs(reference, dataset, cache, tmp_path):
  out = tmp_path / 'out'
  proc = subprocess.Popen(_command(dataset, out, cache), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 600
  while len(_trial_dirs(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = _trial_dirs(out)
  assert 2 <= len(done) < 5, done   # killed in the middle of the run
  # What a kill can leave behind: temporaries of a write in progress.
  (out / 'S02' / ('.walk' + TEMP_MARK + 'x')).mkdir(parents=True, exist_ok=True)
  stamps = {d: os.stat(out / d / 'params.npz').st_mtime_ns for d in done}
  rerun = _run(dataset, out, cache)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'{5 - len(done)} to fit, {len(done)} complete' in rerun.stderr
  assert stamps == {d: os.stat(out / d / 'params.npz').st_mtime_ns for d in done}  # not refitted
  fitted_now = {f"{r['subject']}/{r['trial']}": r['fitted_now'] == 'True' for r in _summary(out)}
  assert sorted(k for k, v in fitted_now.items() if not v) == done
  assert not [n for _, dirs, files in os.walk(out) for n in dirs + files if TEMP_MARK in n]
  _assert_same_outputs(reference, out)


def test_ray_engine_writes_what_the_local_engine_writes(reference, dataset, cache, tmp_path):
  pytest.importorskip('ray')
  out = tmp_path / 'out'
  proc = _run(dataset, out, cache, '--config.engine=ray')
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_outputs(reference, out)
  strip = lambda rows: [{k: v for k, v in r.items() if k not in ('output', 'wall_s', 'fit_s', 'fitted_now',
                                                                  'compile_s')} for r in rows]
  assert strip(_summary(out)) == strip(_summary(reference))


def test_a_bad_file_in_a_dataset_is_one_failed_row(dataset, cache, tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  os.symlink(dataset / 'S02.b3d', data / 'S02.b3d')
  (data / 'broken.b3d').write_bytes(b'not a b3d file' * 100)
  out = tmp_path / 'out'
  proc = _run(data, out, cache)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  rows = {r['subject']: r for r in _summary(out)}
  assert rows['S02']['status'] == 'ok'
  assert rows['broken']['status'] == 'failed' and 'broken.b3d' in rows['broken']['error']


def test_subject_names_are_unique_where_stems_collide():
  names = subject_names(['/d/labA/P01/P01.b3d', '/d/labB/P01/P01.b3d', '/d/labB/P02.b3d'])
  assert names == {'/d/labA/P01/P01.b3d': 'labA__P01__P01', '/d/labB/P01/P01.b3d': 'labB__P01__P01',
                   '/d/labB/P02.b3d': 'P02'}


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_on_a_terminal_only(monkeypatch):
  from absl import logging  # pylint: disable=import-outside-toplevel
  from jaxfit.run.dataset import InputPlan, TrialPlan  # pylint: disable=import-outside-toplevel
  from jaxfit.run.summary import Progress  # pylint: disable=import-outside-toplevel
  plans = [InputPlan('a.b3d', 'a', trials=[TrialPlan('t1', 300, 'x'), TrialPlan('t2', 200, 'y',
                                                                               done_row={})])]
  monkeypatch.setattr(sys, 'stderr', io.StringIO())
  quiet = Progress(plans, enabled=True)
  assert quiet.bar is None   # not a terminal: no bar
  quiet.update(300)
  terminal = _Terminal()
  monkeypatch.setattr(sys, 'stderr', terminal)
  progress = Progress(plans, enabled=True)
  # What absl's handler (root handler under absl.app) writes goes above the bar.
  logging.get_absl_handler().python_handler.stream.write('a log line while the bar is shown\n')
  progress.update(300)
  progress.close()
  text = terminal.getvalue()
  assert '500/500' in text and 'trials 2/2' in text and 'frame/s' in text
  assert 'a log line while the bar is shown' in text
  assert Progress(plans, enabled=False).bar is None
