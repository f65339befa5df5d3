"""Real AddBiomechanics files (../shared/data/real, read in place, never copied
into the repository): every file version and skeleton reads, the FK fallback
for files without joint centres, and no file can end the process."""

import json
import os

import numpy as np
import pytest

from jaxfit.errors import MotionFileError
from jaxfit.io.b3d import read_b3d_trials
from jaxfit.io.isolated import IsolatedWorker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.path.join(ROOT, '..', 'shared', 'data', 'real')
LEGACY = os.path.join(REAL, 'legacy_addb_no_joint_centres.b3d')

pytestmark = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/data/real here')


def _manifest():
  with open(os.path.join(REAL, 'manifest.json'), encoding='utf-8') as f:
    return json.load(f)['files']


def test_every_real_file_reads_as_its_manifest_says():
  for entry in _manifest():
    trials = read_b3d_trials(os.path.join(REAL, entry['file']))
    assert [t.name for t in trials] == [t['name'] for t in entry['trials']]
    for trial, expected in zip(trials, entry['trials']):
      assert trial.num_frames == expected['frames'] and trial.fps == pytest.approx(expected['fps'])
      assert np.all(np.isfinite(trial.joints))
      if 'joint_names' in entry:
        assert list(trial.joint_names) == entry['joint_names']
      legacy = entry['file'] == os.path.basename(LEGACY)
      assert trial.joint_centre_source == ('fk' if legacy else 'file')
      if 'contact_fraction_r_l' in expected:   # force-plate contact, stored as (left, right);
        # the manifest's threshold differs slightly from jaxfit's 10 N: within 1-2 frames per trial
        np.testing.assert_allclose(trial.contact.mean(0)[::-1], expected['contact_fraction_r_l'],
                                   atol=8.0 / trial.num_frames)
      if 'joint_range_m' in expected:
        for axis, (lo, hi) in zip('xyz', (expected['joint_range_m'][a] for a in 'xyz')):
          values = trial.joints[..., 'xyz'.index(axis)]
          assert values.min() == pytest.approx(lo, abs=2e-3) and values.max() == pytest.approx(hi, abs=2e-3)


def test_legacy_file_gets_the_twenty_rajagopal_joints_by_fk():
  trials = read_b3d_trials(LEGACY)
  for trial in trials:
    assert len(trial.joint_names) == 20 and trial.joint_names[2] == 'walker_knee_r'
    names = list(trial.joint_names)
    # Plausible anatomy: hips ~ 0.9 m up, ankles below knees below hips, ~18 cm apart.
    hip_width = np.linalg.norm(trial.joints[:, names.index('hip_r')] - trial.joints[:, names.index('hip_l')], axis=-1)
    assert 0.12 < hip_width.mean() < 0.25
    y = trial.joints[..., 1]
    assert np.all(y[:, names.index('ankle_r')] < y[:, names.index('walker_knee_r')])
    assert np.all(y[:, names.index('walker_knee_r')] < y[:, names.index('hip_r')])


@pytest.mark.parametrize('name', ['dev_opencap_unfiltered.b3d', 'dev_camargo_levelground.b3d'])
def test_fk_fallback_matches_stored_joint_centres(name):
  path = os.path.join(REAL, name)
  stored = read_b3d_trials(path)
  computed = read_b3d_trials(path, joint_centres='fk')
  for a, b in zip(stored, computed):
    assert a.joint_centre_source == 'file' and b.joint_centre_source == 'fk'
    assert a.joint_names == b.joint_names
    assert np.abs(a.joints - b.joints).max() < 1e-3      # within 1 mm (measured: 0)


def test_isolated_reader_turns_crashes_and_hangs_into_one_error_and_recovers():
  worker = IsolatedWorker(allowed_prefixes=('jaxfit.io.', 'tests.'))
  try:
    with pytest.raises(MotionFileError, match=r'^x\.b3d: the \.b3d reader .*crashed.*SIGSEGV'):
      worker.call('tests.isolation_probes:crash_with_segfault', 'x.b3d', 'x.b3d')
    # The real thing: nimblephysics' loadAllFrames segfaults on files without joint centres.
    with pytest.raises(MotionFileError, match='legacy_addb_no_joint_centres.b3d: .*crashed'):
      worker.call('tests.isolation_probes:nimble_load_all_frames', LEGACY, LEGACY)
    assert worker.call('tests.isolation_probes:echo', 'a.b3d', 'a.b3d', 1) == ('a.b3d', 1)
    with pytest.raises(MotionFileError, match='did not finish within 1 s'):
      worker.call('tests.isolation_probes:hang', 'slow.b3d', 'slow.b3d', timeout_s=1.0)
    assert worker.call('tests.isolation_probes:echo', 'b.b3d', 'b.b3d') == ('b.b3d',)
    with pytest.raises(MotionFileError, match='refusing to run'):
      worker.call('os:system', 'c', 'true')
  finally:
    worker.close()


def _corrupted_variants(path, count, seed):
  """Truncations at several depths and random bit flips in header and frames."""
  data = open(path, 'rb').read()
  rng = np.random.default_rng(seed)
  n = len(data)
  out = [('truncated_%d' % i, data[:int(n * f)])
         for i, f in enumerate((0.0005, 0.01, 0.05, 0.2, 0.5, 0.8, 0.99))]
  k = 0
  while len(out) < count:
    flipped = bytearray(data)
    region = (200, 20000, n)[k % 3]
    for _ in range(1 + k % 5):
      i = int(rng.integers(0, region))
      flipped[i] ^= 1 << int(rng.integers(0, 8))
    out.append(('flipped_%d' % k, bytes(flipped)))
    k += 1
  return out


@pytest.mark.parametrize('source, seed', [('dev_opencap_unfiltered.b3d', 0),
                                          ('legacy_addb_no_joint_centres.b3d', 1)])
def test_fuzzed_files_give_one_line_or_a_valid_read_never_a_signal(tmp_path, source, seed):
  outcomes = []
  for name, data in _corrupted_variants(os.path.join(REAL, source), 20, seed):
    path = tmp_path / f'{name}.b3d'
    path.write_bytes(data)
    try:
      trials = read_b3d_trials(path)
      assert trials and all(t.joints.ndim == 3 for t in trials)
      outcomes.append('read')
    except MotionFileError as e:
      message = str(e)
      assert message.startswith(str(path)) and '\n' not in message.strip(), message
      assert 'Traceback' not in message
      outcomes.append('error')
  assert outcomes.count('error') >= 10       # truncations always fail; most flips too
