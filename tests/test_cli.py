"""The command line, end to end, as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.data.trial import ADDB_JOINT_NAMES, COMPARABLE_JOINTS
from jaxfit.io.joints_npz import write_joints_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags, cache):
  env = dict(os.environ, JAXFIT_CACHE=os.environ['JAXFIT_CACHE'], PYTHONUNBUFFERED='1')
  return subprocess.run(
      [sys.executable, '-m', 'jaxfit.main', '--config=configs/default.py',
       f'--config.compilation_cache_dir={cache}', *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope='module')
def cache(executable_cache):
  return executable_cache


def test_fits_a_b3d_subject_and_writes_the_output_contract(tmp_path, demo_b3d, cache):
  path, truth = demo_b3d
  out = tmp_path / 'out'
  proc = _run(f'--config.input={path}', f'--config.output_dir={out}', cache=cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert 'summary' in proc.stderr and 'MPJPE' in proc.stderr
  for trial, data in truth.items():
    d = out / 'subject01' / trial
    assert sorted(os.listdir(d)) == ['config.json', 'joints.npz', 'metrics.json', 'params.npz']
    frames = len(data['joint_centres'])
    with np.load(d / 'joints.npz') as j:   # what the fit was compared with
      names = list(j['joint_names'])
      assert j['targets'].shape == j['fitted'].shape == (frames, len(names), 3)
      assert j['valid'].shape == (frames, len(names)) and j['contact'].shape == (frames, 2)
      assert j['smpl_joints'].shape == (frames, 24, 3) and float(j['fps']) == {'walk': 100.0, 'run': 150.0}[trial]
      err_mm = 1000 * np.linalg.norm(j['fitted'] - j['targets'], axis=-1)[j['valid']].mean()
      smpl_index = [SMPL_JOINT_NAMES.index(str(n)) for n in j['smpl_names']]
      keep = [m for m, n in enumerate(names) if n in COMPARABLE_JOINTS]
      raw_mm = 1000 * np.linalg.norm(j['smpl_joints'][:, smpl_index][:, keep] - j['targets'][:, keep],
                                     axis=-1)[j['valid'][:, keep]].mean()
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
    # MPJPE: the raw SMPL joints over the comparable joints; the offset points
    # over all mapped joints are the fit residual, reported beside it.
    assert sorted(metrics['mpjpe_joints']) == sorted(n for n in names if n in COMPARABLE_JOINTS)
    assert abs(raw_mm - metrics['mpjpe_mm']) < 0.01
    assert abs(err_mm - metrics['fit_residual_mm']) < 0.01
    # Regression bar on the Rajagopal demo with the default (open) body (README states it).
    assert metrics['mpjpe_mm'] < 16.0 and metrics['pck_100mm'] == 1.0
    # The generated skeleton's known segment twists (its hip, knee, subtalar and
    # arm rotations) are recovered: every segment within 1 degree (p95).
    segments = metrics['segment_orientation_deg']
    assert len(segments) == 16, sorted(segments)
    assert max(e['twist_p95_deg'] for e in segments.values()) < 1.0, segments
    assert metrics['worst_twist_p95_deg'] < 1.0
    with np.load(d / 'params.npz') as p:
      assert list(p['segment_names']) == list(segments) and p['segment_frame_offsets'].shape == (16, 3, 3)
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
  assert 'NOT SMPL' in proc.stderr     # no model_path outside the demo: said loudly
  with np.load(tmp_path / 'out' / 'mocap' / 'mocap' / 'params.npz') as p:
    assert p['poses'].shape == (120, 72) and np.all(np.isfinite(p['poses']))


def _one_clear_error(proc, *needles):
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('E')]
  assert errors, proc.stderr[-2000:]
  for needle in needles:
    assert any(needle in l for l in errors), (needle, errors)


def test_bad_config_value(tmp_path, cache):
  for flag, needles in (('--config.variant=bogus', ('--config.variant', 'bogus')),
                        ('--config.loss.temporal=-1', ('--config.loss.temporal',)),
                        ('--config.offsets.bound_m.back=0.5', ('--config.offsets.bound_m.back', '0.5')),
                        ('--config.orientation_weights.tibia=-1', ('--config.orientation_weights.tibia',)),
                        ('--config.shape.prior=sometimes', ('--config.shape.prior', 'sometimes'))):
    proc = _run(flag, f'--config.output_dir={tmp_path}', cache=cache)
    assert proc.returncode == 2, flag
    _one_clear_error(proc, *needles)


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
  # No trial output; the run's summary lists the failure.
  assert sorted(os.listdir(out)) == ['summary.csv', 'summary.json']
  failed = json.loads((out / 'summary.json').read_text())['trials']
  assert [r['status'] for r in failed] == ['failed'] and str(bad) in failed[0]['error']


def test_wrong_model_file(tmp_path, cache):
  junk = tmp_path / 'SMPL_NEUTRAL.pkl'
  junk.write_bytes(b'not a pickle')
  proc = _run(f'--config.model_path={junk}', cache=cache)
  assert proc.returncode == 2
  _one_clear_error(proc, str(junk))


REAL = os.path.join(ROOT, '..', 'shared', 'data', 'real')
needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/data/real here')


@needs_real
def test_every_real_file_fits_from_the_cli(tmp_path, cache):
  """All real AddBiomechanics files: full-body, lower-body (knee_*, no arms) and
  a legacy file without joint centres (FK fallback) fit with exit status 0."""
  from jaxfit.fit.init import REST_POSE
  out = tmp_path / 'out'
  proc = _run(f'--config.input={REAL}', f'--config.output_dir={out}', cache=cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert 'NOT SMPL' in proc.stderr            # real data with a built-in body: said
  with open(os.path.join(REAL, 'manifest.json'), encoding='utf-8') as f:
    manifest = json.load(f)['files']
  checked = []
  for entry in manifest:
    subject = entry['file'][:-4]
    for trial in entry['trials']:
      d = out / subject / trial['name']
      metrics = json.loads((d / 'metrics.json').read_text())
      assert metrics['frames'] == trial['frames']
      assert 0 < metrics['mpjpe_mm'] < 40 and metrics['pck_100mm'] > 0.95, (subject, metrics['mpjpe_mm'])
      assert 'pck_50mm' in metrics and 'max_abs_beta' in metrics
      # The default body: the open body (not SMPL, said in a note, not a warning).
      assert metrics['body_model']['kind'] == 'open' and not metrics['body_model']['is_demo_body']
      assert 'NOT SMPL' in metrics['note'] and 'warning' not in metrics
      assert metrics['max_abs_beta'] <= 3.0 + 1e-5     # bounded (see benchmarks/OPEN_BODY.md)
      assert metrics['joint_centre_source'] == ('fk' if 'legacy' in subject else 'file')
      with np.load(d / 'params.npz') as p:   # no learned offset on a comparable joint
        learned = [str(n) for n, l in zip(p['joint_mapping_source'], p['joint_offset_learned']) if l]
      assert learned and not set(learned) & COMPARABLE_JOINTS, learned
      checked.append((subject, trial['name'], d, metrics))
  # metrics.json's MPJPE is an independent float64 FK of the saved params.npz
  # against the file's own joint centres over the comparable joints, no alignment.
  import jax
  from jaxfit.body.model import forward_kinematics
  from jaxfit.demo.builtin import builtin_body_path
  from jaxfit.io.b3d import read_b3d_trials
  from jaxfit.io.smpl_file import load_body_model
  with jax.experimental.enable_x64():
    model = load_body_model(builtin_body_path('open'), dtype=np.float64)   # the default body
    fk = jax.jit(jax.vmap(lambda b, q, t: forward_kinematics(model, b, q, t)[0], in_axes=(None, 0, 0)))
    for subject, name, d, metrics in checked:
      trial, = read_b3d_trials(os.path.join(REAL, subject + '.b3d'), trials=[name])
      with np.load(d / 'params.npz') as p:
        joints = np.asarray(fk(p['betas'], p['poses'].reshape(-1, 24, 3), p['trans']))
        source, smpl = list(p['joint_mapping_source']), list(p['joint_mapping_smpl'])
        world_from_opensim = p['world_from_opensim']
      keep = [m for m, n in enumerate(source) if n in COMPARABLE_JOINTS]
      pred = joints[:, [SMPL_JOINT_NAMES.index(smpl[m]) for m in keep]] @ world_from_opensim
      target = trial.joints[:, [list(trial.joint_names).index(source[m]) for m in keep]]
      valid = np.all(np.isfinite(target), -1)
      error = np.linalg.norm(pred - target, axis=-1)[valid].mean() * 1000
      assert error == pytest.approx(metrics['mpjpe_mm'], abs=0.1), (subject, name)
      with np.load(d / 'params.npz') as p:
        assert not bool(p['model_is_demo_body']) and str(p['model_kind']) == 'open'
        poses = p['poses'].reshape(-1, 24, 3)
        assert np.all(np.isfinite(poses))
        if 'camargo' in subject:   # lower body: the arms rest by the sides, never move
          np.testing.assert_allclose(poses[:, 16:24], np.broadcast_to(REST_POSE[16:24], poses[:, 16:24].shape),
                                     atol=1e-6)
          assert 'right_knee' in list(p['joint_mapping_smpl'])


@needs_real
def test_a_folder_with_broken_files_fits_the_good_ones(tmp_path, cache):
  data = open(os.path.join(REAL, 'dev_opencap_unfiltered.b3d'), 'rb').read()
  folder = tmp_path / 'in'
  folder.mkdir()
  (folder / 'a_truncated.b3d').write_bytes(data[:len(data) // 2])
  flipped = bytearray(data)
  flipped[150] ^= 0xFF
  (folder / 'b_flipped.b3d').write_bytes(bytes(flipped))
  (folder / 'c_good.b3d').write_bytes(data)
  out = tmp_path / 'out'
  proc = _run(f'--config.input={folder}', f'--config.output_dir={out}', cache=cache)
  assert proc.returncode == 1
  _one_clear_error(proc, 'a_truncated.b3d', 'b_flipped.b3d')
  assert sorted(os.listdir(out)) == ['c_good', 'summary.csv', 'summary.json']
  assert sorted(os.listdir(out / 'c_good')) == ['DJ1', 'walking2']


def test_saved_params_reproduce_the_fit_in_the_input_frame(tmp_path, demo_b3d, demo_model, cache):
  """FK of params.npz, taken back through world_from_opensim, lands on the
  input joints with exactly the reported MPJPE; float64 runs really in float64;
  trials by index and max_frames select what they say."""
  import jax
  from jaxfit.body.model import forward_kinematics
  from jaxfit.io.b3d import read_b3d_trials
  path, _ = demo_b3d
  out = tmp_path / 'out'
  proc = _run(f'--config.input={path}', f'--config.output_dir={out}', '--config.dtype=float64',
              '--config.trials=1', '--config.max_frames=64', '--config.body=demo', cache=cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(out / 'subject01')) == ['run']
  d = out / 'subject01' / 'run'
  metrics = json.loads((d / 'metrics.json').read_text())
  assert metrics['dtype'] == 'float64' and metrics['frames'] == 64
  assert json.loads((d / 'config.json').read_text())['dtype'] == 'float64'
  trial = read_b3d_trials(path, trials=['run'])[0]
  with np.load(d / 'params.npz') as p:
    betas, poses, trans = p['betas'], p['poses'].reshape(-1, 24, 3), p['trans']
    world_from_opensim = p['world_from_opensim']
    source = [str(n) for n in p['joint_mapping_source']]
    smpl = [str(n) for n in p['joint_mapping_smpl']]
    offsets = p['joint_offsets']
  with jax.experimental.enable_x64():
    model64 = jax.tree.map(lambda a: np.asarray(a, np.float64), demo_model)
    posed = [forward_kinematics(model64, betas, poses[t], trans[t]) for t in range(len(poses))]
  from jaxfit.body.model import SMPL_JOINT_NAMES
  index = [SMPL_JOINT_NAMES.index(n) for n in smpl]
  # each target: its SMPL joint plus the learned offset turned by that joint's rotation
  fitted_smpl = np.stack([np.asarray(j)[index] + np.einsum('mab,mb->ma', np.asarray(r)[index], offsets)
                          for j, r in posed])
  fitted_osim = fitted_smpl @ world_from_opensim        # rows: smpl = R osim  =>  osim = smpl R
  target = trial.joints[:64, [list(trial.joint_names).index(n) for n in source]]
  error = np.linalg.norm(fitted_osim - target, axis=-1).mean() * 1000
  assert error == pytest.approx(metrics['fit_residual_mm'], abs=1e-3)   # the offset points
  keep = [m for m, n in enumerate(source) if n in COMPARABLE_JOINTS]
  raw_osim = np.stack([np.asarray(j)[index] for j, _ in posed])[:, keep] @ world_from_opensim
  raw = np.linalg.norm(raw_osim - target[:, keep], axis=-1).mean() * 1000
  assert raw == pytest.approx(metrics['mpjpe_mm'], abs=1e-3)           # the raw SMPL joints
  assert error < 20.0 and raw < 20.0
