"""A shrunk run of the benchmark harness, so it cannot rot (no timing is asserted)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_harness_smoke(tmp_path):
  out = tmp_path / 'RESULTS.md'
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, 'benchmarks/run.py', '--frames=30', '--methods=jaxfit_simultaneous,reference_torch',
       '--batch=1,2', f'--out={out}', f'--work={tmp_path / "work"}'],
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
