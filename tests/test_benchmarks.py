"""A shrunk run of the benchmark harness, so it cannot rot (no timing is asserted)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_harness_smoke(tmp_path, executable_cache):
  """benchmarks/run.py, tiny: 30 frames, both methods, the batched core on 2
  trials; jaxfit loads the session's compiled programs."""
  out = tmp_path / 'RESULTS.md'
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, 'benchmarks/run.py', '--frames=30', '--methods=jaxfit_simultaneous,reference_torch',
       '--batch=2', f'--out={out}', f'--work={tmp_path / "work"}',
       f'--compilation_cache_dir={executable_cache}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = out.read_text()
  assert '| 30 | jaxfit_simultaneous |' in table and '| 30 | reference_torch |' in table
  assert 'Batched throughput' in table and 'Machine:' in table
  data = json.loads((tmp_path / 'RESULTS.json').read_text())
  assert {r['method'] for r in data['results']} == {'jaxfit_simultaneous', 'reference_torch'}
  for r in data['results']:
    assert r['mpjpe_mm'] < 80 and r['time_s']['total'] > 0
  # The baseline writes the same output layout as jaxfit.main.
  fit_dir = tmp_path / 'work' / 'fits' / 'reference_torch' / 'bench_30' / 'walk'
  assert sorted(os.listdir(fit_dir)) == ['config.json', 'metrics.json', 'params.npz']


def test_real_data_benchmark_smoke(tmp_path, executable_cache):
  """benchmarks/real_data.py end to end, tiny: one generated-truth trial, 50
  frames, 20 Adam steps, 10 L-BFGS, one restart; writes both files."""
  out = tmp_path / 'REAL_DATA.md'
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, 'benchmarks/real_data.py', '--models=demo', '--trials=smpl_truth_0/noiseless',
       '--max_frames=50', '--baseline_steps=20', '--polish_steps=10', '--restarts=1', f'--out={out}',
       f'--work={tmp_path / "work"}', f'--compilation_cache_dir={executable_cache}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = out.read_text()
  assert 'Machine:' in table and 'Date:' in table and 'Baseline convergence' in table
  assert '| body | trial | frames | jaxfit MPJPE vs truth | baseline MPJPE vs truth | jaxfit MPJPE |' in table
  assert '| demo | smpl_truth_0/noiseless | 50 |' in table
  data = json.loads((tmp_path / 'REAL_DATA.json').read_text())
  assert len(data['rows']) == 1
  r = data['rows'][0]
  assert r['kind'] == 'truth' and r['frames'] == 50 and r['verdict'].startswith(('yes', 'no'))
  for key in ('mpjpe_mm', 'pa_mpjpe_mm', 'pck_50mm', 'max_abs_beta', 'mpjpe_vs_truth_mm',
              'mpjpe_all24_vs_truth_mm', 'beta_error_max'):
    assert r['jaxfit'][key] >= 0 and r['baseline'][key] >= 0
  stems = sorted(name.rsplit('_', 1)[0].replace('walker_', '') for name in r['comparable_joints'])
  assert stems == sorted(2 * ['hip', 'knee', 'ankle', 'acromial', 'elbow', 'radius_hand'])
  assert r['baseline']['max_abs_beta'] <= 3.0 and len(r['baseline']['restarts']) == 1
  assert 'fit_residual_mm' in r['jaxfit'] and 'offsets_mm' in r['jaxfit']


def test_accelerator_benchmark_smoke(tmp_path, executable_cache):
  """benchmarks/accelerator.py on CPU, tiny: batch 1 (one 128-frame chunk per
  call, the CPU default, whose programs the session has compiled already), a
  150-frame trial (two chunks, the second ragged), one repeat: its row, the
  device it ran on and a plausible fit."""
  out = tmp_path / 'ACCELERATOR.md'
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, 'benchmarks/accelerator.py', '--batches=1', '--frames=150', '--repeats=1',
       f'--out={out}', f'--compilation_cache_dir={executable_cache}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = out.read_text()
  assert 'Device: cpu' in table and '| batch | frames / call |' in table and '| 1 | 128 |' in table
  data = json.loads((tmp_path / 'ACCELERATOR.json').read_text())
  assert data['device']['platform'] == 'cpu' and data['device']['default_chunk_frames'] == 128
  row, = data['rows']
  assert row['chunk_frames'] == 128 and row['frames'] == 150
  assert row['frames_per_s'] > 0 and row['fit_s'] > 0 and 0 < row['mpjpe_mm'] < 20
