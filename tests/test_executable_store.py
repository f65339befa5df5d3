"""Compiled programs persist across processes (jaxfit.io.executable_store),
and lengths pad to a small fixed set (so few programs serve a dataset)."""

import json
import os
import subprocess
import sys

import numpy as np

from jaxfit.prepare import padded_length

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fit(data, out, cache):
  proc = subprocess.run(
      [sys.executable, '-m', 'jaxfit.main', '--config=configs/default.py', f'--config.input={data}',
       f'--config.output_dir={out}', f'--config.compilation_cache_dir={cache}',
       '--config.trials=walk', '--config.max_frames=40', '--config.resume=false'],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(out / 'subject01' / 'walk' / 'params.npz') as p:
    poses = p['poses']
  metrics = json.loads((out / 'subject01' / 'walk' / 'metrics.json').read_text())
  return proc, poses, metrics['time_s']['compile_s']


def test_a_second_process_loads_instead_of_compiling(demo_b3d, tmp_path):
  cache = tmp_path / 'cache'
  _, poses, compile_first = _fit(demo_b3d[0], tmp_path / 'a', cache)
  stored = sorted(os.listdir(cache / 'executables'))
  assert len(stored) >= 5   # init, joint solve, Adam core, output FK, ...
  _, again, compile_second = _fit(demo_b3d[0], tmp_path / 'b', cache)
  assert sorted(os.listdir(cache / 'executables')) == stored   # nothing compiled anew
  assert compile_second < 0.5 * compile_first
  np.testing.assert_array_equal(poses, again)
  # A damaged store is compiled again, with a warning, and the fit is the same.
  for name in stored:
    (cache / 'executables' / name).write_bytes(b'damaged')
  proc, third, _ = _fit(demo_b3d[0], tmp_path / 'c', cache)
  assert 'unreadable' in proc.stderr and 'Traceback' not in proc.stderr
  np.testing.assert_array_equal(poses, third)


def test_padded_lengths_are_few_and_waste_little():
  lengths = [padded_length(n) for n in range(1, 16385)]
  assert all(p >= n and p % 128 == 0 for n, p in zip(range(1, 16385), lengths))
  assert len(set(lengths)) == 24           # 128 ... 16384 frames
  waste = [(p - n) / p for n, p in zip(range(1, 16385), lengths) if n > 512]
  assert max(waste) <= 0.2
  assert padded_length(300) == 384 and padded_length(1000) == 1024 and padded_length(1100) == 1280
