"""The command line, end to end, as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxfit.data import ADDB_JOINT_NAMES
from jaxfit.io.joints_npz import write_joints_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags, cache):
  env = dict(os.environ, JAXFIT_CACHE=os.environ['JAXFIT_CACHE'], PYTHONUNBUFFERED='1')
  return subprocess.run(
      [sys.executable, '-m', 'jaxfit.main', '--config=configs/default.py',
       f'--config.compilation_cache_dir={cache}', *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('xla'))


def test_fits_a_b3d_subject_and_writes_the_output_contract(tmp_path, demo_b3d, cache):
  path, truth = demo_b3d
  out = tmp_path / 'out'
  proc = _run(f'--config.input={path}', f'--config.output_dir={out}', cache=cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert 'summary' in proc.stderr and 'MPJPE' in proc.stderr
  for trial, data in truth.items():
    d = out / 'subject01' / trial
    assert sorted(os.listdir(d)) == ['config.json', 'metrics.json', 'params.npz']
    frames = len(data['joint_centres'])
    with np.load(d / 'params.npz') as p:
      assert p['betas'].shape == (10,) and p['poses'].shape == (frames, 72)
      assert p['trans'].shape == (frames, 3) and str(p['gender']) == 'neutral'
      assert float(p['mocap_framerate']) in (100.0, 150.0)
      assert 'back' in list(p['joint_mapping_source']) and len(str(p['model_sha256'])) == 64
      assert np.all(np.isfinite(p['poses']))
    metrics = json.loads((d / 'metrics.json').read_text())
    for key in ('mpjpe_mm', 'pa_mpjpe_mm', 'pck_50mm', 'pck_100mm', 'pck_150mm',
                'per_joint_mpjpe_mm', 'frames', 'time_s'):
      assert key in metrics
    assert metrics['frames'] == frames and metrics['contact_source'] == 'file'
    # Regression bar on the Rajagopal demo with the demo body (README states it).
    assert metrics['mpjpe_mm'] < 16.0 and metrics['pck_100mm'] == 1.0
    config = json.loads((d / 'config.json').read_text())
    assert config['input'] == path and config['variant'] == 'simultaneous'
  assert not [f for f in os.listdir(out / 'subject01') if f.startswith('.')]  # no temp dirs


def test_joints_npz_with_missing_frames(tmp_path, demo_b3d, cache):
  from jaxfit.io.b3d import read_b3d_trials
  trial = read_b3d_trials(demo_b3d[0], trials=['walk'])[0]
  joints = np.array(trial.joints)
  joints[40:43] = np.nan
  joints[60, 4] = np.nan
  npz = tmp_path / 'mocap.npz'
  write_joints_npz(npz, ADDB_JOINT_NAMES, joints, trial.fps)
  proc = _run(f'--config.input={npz}', f'--config.output_dir={tmp_path / "out"}', cache=cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '3 of 120 frames lack joints' in proc.stderr
  with np.load(tmp_path / 'out' / 'mocap' / 'mocap' / 'params.npz') as p:
    assert p['poses'].shape == (120, 72) and np.all(np.isfinite(p['poses']))


def _one_clear_error(proc, *needles):
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('E')]
  assert errors, proc.stderr[-2000:]
  for needle in needles:
    assert any(needle in l for l in errors), (needle, errors)


def test_bad_config_value(tmp_path, cache):
  proc = _run('--config.variant=bogus', f'--config.output_dir={tmp_path}', cache=cache)
  assert proc.returncode == 2
  _one_clear_error(proc, '--config.variant', 'bogus')
  proc = _run('--config.loss.temporal=-1', cache=cache)
  assert proc.returncode == 2
  _one_clear_error(proc, '--config.loss.temporal')


def test_misspelt_config_field_is_refused(cache):
  proc = _run('--config.loss.temporl=0', cache=cache)
  assert proc.returncode != 0 and 'temporl' in proc.stderr


def test_corrupt_b3d_names_the_file_and_writes_nothing(tmp_path, cache):
  bad = tmp_path / 'broken.b3d'
  bad.write_bytes(np.random.default_rng(0).bytes(4096))
  out = tmp_path / 'out'
  proc = _run(f'--config.input={bad}', f'--config.output_dir={out}', cache=cache)
  assert proc.returncode == 1
  _one_clear_error(proc, str(bad))
  assert not out.exists() or not any(out.iterdir())


def test_wrong_model_file(tmp_path, cache):
  junk = tmp_path / 'SMPL_NEUTRAL.pkl'
  junk.write_bytes(b'not a pickle')
  proc = _run(f'--config.model_path={junk}', cache=cache)
  assert proc.returncode == 2
  _one_clear_error(proc, str(junk))
