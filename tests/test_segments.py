"""Segment rotations: read from every .b3d version and joints .npz, the
OpenSim -> SMPL segment pairs, and the swing/twist orientation metric."""

import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.data.trial import ADDB_JOINT_NAMES, OPENSIM_TO_SMPL, SEGMENT_PAIRS, make_trial
from jaxfit.errors import MotionFileError
from jaxfit.io.b3d import read_b3d_trials
from jaxfit.io.joints_npz import read_joints_npz, write_joints_npz
from jaxfit.data.metrics import (estimate_segment_offsets, segment_orientation_errors,
                            segment_orientation_metrics)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.path.join(ROOT, '..', 'shared', 'data', 'real')
RAJAGOPAL_BODIES = ('pelvis', 'femur_r', 'tibia_r', 'talus_r', 'calcn_r', 'toes_r', 'femur_l',
                    'tibia_l', 'talus_l', 'calcn_l', 'toes_l', 'torso', 'humerus_r', 'ulna_r',
                    'radius_r', 'hand_r', 'humerus_l', 'ulna_l', 'radius_l', 'hand_l')
real = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/data/real here')


# --- reading ---------------------------------------------------------------

def _in_body_frame(trial, body, a, b):
  """Vector joint b -> joint a [T,3] (m) in `body`'s frame: R^T (a - b)."""
  names, segments = list(trial.joint_names), list(trial.segment_names)
  v = trial.joints[:, names.index(a)] - trial.joints[:, names.index(b)]
  return np.einsum('tji,tj->ti', trial.segment_rotations[:, segments.index(body)], v)


def _angle_deg(u, v):
  cos = np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
  return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@real
@pytest.mark.parametrize('name, source, bodies, knee', [
    ('dev_opencap_unfiltered.b3d', 'file', RAJAGOPAL_BODIES, 'walker_knee_r'),
    ('legacy_addb_no_joint_centres.b3d', 'fk', RAJAGOPAL_BODIES, 'walker_knee_r'),
    ('dev_camargo_levelground.b3d', 'file', RAJAGOPAL_BODIES[:12], 'knee_r')])
def test_real_files_give_body_rotations_tied_to_the_joint_centres(name, source, bodies, knee):
  trial = read_b3d_trials(os.path.join(REAL, name), trials=[0])[0]
  assert trial.joint_centre_source == source and trial.segment_names == bodies
  r = trial.segment_rotations
  assert r.shape == (trial.num_frames, len(bodies), 3, 3) and not r.flags.writeable
  np.testing.assert_allclose(np.einsum('tsji,tsjk->tsik', r, r), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-9)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)
  # Body -> world: the knee and ankle are fixed points of the tibia, the hips
  # of the pelvis, so their differences are constant in those body frames (a
  # transposed or wrong-frame rotation moves them by ~10 cm) ...
  shank = _in_body_frame(trial, 'tibia_r', knee, 'ankle_r')
  hips = _in_body_frame(trial, 'pelvis', 'hip_r', 'hip_l')
  assert shank.std(0).max() < 1e-6 and hips.std(0).max() < 1e-6
  # ... the tibia's long axis (+Y) points from the ankle to the knee, and the
  # pelvis' +Z is the subject's right (hip_l -> hip_r).
  assert _angle_deg(shank, np.array([0.0, 1.0, 0.0])).max() < 2.0
  assert _angle_deg(hips, np.array([0.0, 0.0, 1.0])).max() < 1.0
  assert 0.35 < np.linalg.norm(shank, axis=-1).mean() < 0.5


@real
def test_stored_and_fk_paths_give_the_same_rotations():
  path = os.path.join(REAL, 'dev_opencap_unfiltered.b3d')
  stored, = read_b3d_trials(path, trials=['walking2'])
  fk, = read_b3d_trials(path, trials=['walking2'], joint_centres='fk')
  assert stored.joint_centre_source == 'file' and fk.joint_centre_source == 'fk'
  assert stored.segment_names == fk.segment_names
  np.testing.assert_allclose(stored.segment_rotations, fk.segment_rotations, atol=1e-12)


def _rotations(rng, shape):
  return Rotation.random(int(np.prod(shape)), random_state=rng).as_matrix().reshape(*shape, 3, 3)


def test_joints_npz_with_and_without_segment_rotations(tmp_path):
  rng = np.random.default_rng(1)
  joints = rng.normal(size=(30, 20, 3))
  plain = tmp_path / 'plain.npz'
  write_joints_npz(plain, ADDB_JOINT_NAMES, joints, 100.0)
  trial = read_joints_npz(plain)
  assert trial.segment_names == () and trial.segment_rotations is None
  rot = _rotations(rng, (30, 3))
  rot[4, 1] = np.nan                                   # a missing frame is allowed
  with_rot = tmp_path / 'rot.npz'
  write_joints_npz(with_rot, ADDB_JOINT_NAMES, joints, 100.0,
                   segment_names=np.array(['pelvis', 'femur_r', 'tibia_r']), segment_rotations=rot)
  trial = read_joints_npz(with_rot)
  assert trial.segment_names == ('pelvis', 'femur_r', 'tibia_r')
  np.testing.assert_array_equal(trial.segment_rotations, rot)
  assert not trial.segment_rotations.flags.writeable
  bad = tmp_path / 'bad.npz'
  write_joints_npz(bad, ADDB_JOINT_NAMES, joints, 100.0,
                   segment_names=np.array(['pelvis', 'femur_r']), segment_rotations=rot)
  with pytest.raises(MotionFileError, match=r'bad\.npz.*segment rotations must be \[T,S,3,3\]'):
    read_joints_npz(bad)
  half = tmp_path / 'half.npz'
  write_joints_npz(half, ADDB_JOINT_NAMES, joints, 100.0, segment_rotations=rot)
  with pytest.raises(MotionFileError, match=r'half\.npz.*only segment_rotations'):
    read_joints_npz(half)


def test_make_trial_checks_segment_rotation_shapes():
  joints = np.zeros((5, 20, 3))
  with pytest.raises(MotionFileError, match=r'^f\.b3d: .*segment rotations must be'):
    make_trial('s', 't', 'f.b3d', ADDB_JOINT_NAMES, joints, 100.0, segment_names=['pelvis'],
               segment_rotations=np.zeros((4, 1, 3, 3)))


def test_segment_pairs_name_opensim_bodies_and_smpl_joints():
  assert set(SEGMENT_PAIRS) <= set(RAJAGOPAL_BODIES) and len(SEGMENT_PAIRS) == 16
  assert set(SEGMENT_PAIRS.values()) <= set(SMPL_JOINT_NAMES)
  for body, joint in SEGMENT_PAIRS.items():
    side = {'_r': 'right_', '_l': 'left_'}.get(body[-2:], '')
    assert joint.startswith(side)


# --- the orientation metric ------------------------------------------------

def _planted(seed=0, frames=40, segments=3, max_swing=80.0, max_twist=170.0, paired=False):
  """R_os, R_smpl with known offsets C, swing and twist: R_smpl = A R_os C E,
  E = swing(about an axis perpendicular to the twist axis) . twist(about it)."""
  rng = np.random.default_rng(seed)
  axes = rng.normal(size=(segments, 3))
  axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
  swing = rng.uniform(0, max_swing, (frames, segments))
  twist = rng.uniform(-max_twist, max_twist, (frames, segments))
  perp = np.cross(axes, rng.normal(size=(frames, segments, 3)))
  perp /= np.linalg.norm(perp, axis=-1, keepdims=True)
  e = (Rotation.from_rotvec((np.radians(swing)[..., None] * perp).reshape(-1, 3))
       * Rotation.from_rotvec((np.radians(twist)[..., None] * axes).reshape(-1, 3))).as_matrix()
  e = e.reshape(frames, segments, 3, 3)
  if paired:   # each residual with its inverse: the chordal mean of C E is then exactly C
    e = np.concatenate([e, np.swapaxes(e, -1, -2)])
    swing, twist = np.concatenate([swing, swing]), np.concatenate([twist, -twist])
    frames *= 2
  offsets = _rotations(rng, (segments,))
  r_os = _rotations(rng, (frames, segments))
  r_smpl = np.einsum('ij,tsjk,skl,tslm->tsim', OPENSIM_TO_SMPL, r_os, offsets, e)
  return r_os, r_smpl, axes, offsets, swing, twist, e


def test_known_swing_and_twist_are_recovered():
  r_os, r_smpl, axes, offsets, swing, twist, e = _planted()
  total, got_swing, got_twist, used = segment_orientation_errors(
      r_os, r_smpl, np.ones(swing.shape, bool), axes, offsets)
  np.testing.assert_array_equal(used, offsets)
  magnitude = np.degrees(Rotation.from_matrix(e.reshape(-1, 3, 3)).magnitude()).reshape(swing.shape)
  np.testing.assert_allclose(total, magnitude, atol=1e-6)
  np.testing.assert_allclose(got_swing, swing, atol=1e-6)
  np.testing.assert_allclose(got_twist, twist, atol=1e-6)


def test_planted_offset_is_estimated_and_removed():
  r_os, r_smpl, axes, offsets, swing, twist, _ = _planted(seed=3, max_swing=50.0, max_twist=60.0,
                                                          paired=True)
  valid = np.ones(swing.shape, bool)
  np.testing.assert_allclose(estimate_segment_offsets(r_os, r_smpl, valid), offsets, atol=1e-12)
  names = ['femur_r', 'tibia_r', 'calcn_r']
  m = segment_orientation_metrics(r_os, r_smpl, valid, axes, names)
  assert list(m) == names
  for s, name in enumerate(names):
    np.testing.assert_allclose(m[name]['offset'], offsets[s], atol=1e-12)
    assert m[name]['frames'] == len(swing)
    assert m[name]['swing_mean_deg'] == pytest.approx(swing[:, s].mean(), abs=1e-6)
    assert m[name]['swing_p95_deg'] == pytest.approx(np.percentile(swing[:, s], 95), abs=1e-6)
    assert m[name]['twist_mean_deg'] == pytest.approx(np.abs(twist[:, s]).mean(), abs=1e-6)
    assert m[name]['twist_p95_deg'] == pytest.approx(np.percentile(np.abs(twist[:, s]), 95), abs=1e-6)
    assert m[name]['twist_signed_mean_deg'] == pytest.approx(0.0, abs=1e-6)   # paired +-twist
  # An exact match (E = I) reads zero everywhere.
  exact = np.einsum('ij,tsjk,skl->tsil', OPENSIM_TO_SMPL, r_os, offsets)
  zero = segment_orientation_metrics(r_os, exact, valid, axes, names)
  assert all(abs(zero[n][k]) < 1e-6 for n in names for k in ('total_p95_deg', 'swing_p95_deg',
                                                              'twist_p95_deg'))


def test_invalid_and_nan_frames_are_left_out():
  r_os, r_smpl, axes, offsets, swing, twist, _ = _planted(seed=5, max_swing=50.0, max_twist=60.0,
                                                          paired=True)
  names = ['a', 'b', 'c']
  clean = segment_orientation_metrics(r_os, r_smpl, np.ones(swing.shape, bool), axes, names)
  rng = np.random.default_rng(9)
  extra = 7   # frames that are garbage, NaN or flagged invalid, appended
  bad_os = _rotations(rng, (extra, 3))
  bad_smpl = _rotations(rng, (extra, 3))
  bad_os[0, 1] = np.nan
  bad_smpl[1] = np.nan
  valid = np.ones((len(swing) + extra, 3), bool)
  valid[len(swing) + 2:] = False
  valid[len(swing) + 0, [0, 2]] = False
  valid[len(swing) + 1, :] = True     # NaN rotations, flagged valid: still left out
  all_os, all_smpl = np.concatenate([r_os, bad_os]), np.concatenate([r_smpl, bad_smpl])
  m = segment_orientation_metrics(all_os, all_smpl, valid, axes, names)
  for n in names:
    assert m[n]['frames'] == len(swing)
    np.testing.assert_allclose(m[n]['offset'], clean[n]['offset'], atol=1e-12)
    for k in ('total_mean_deg', 'total_p95_deg', 'swing_mean_deg', 'twist_p95_deg'):
      assert m[n][k] == pytest.approx(clean[n][k], abs=1e-9)
  total, swing_f, twist_f, _ = segment_orientation_errors(all_os, all_smpl, valid, axes)
  assert np.all(np.isnan(total[len(swing):])) and np.all(np.isnan(twist_f[len(swing):]))
  assert np.all(np.isfinite(swing_f[:len(swing)]))
  none = segment_orientation_metrics(r_os, r_smpl, np.zeros(swing.shape, bool), axes, names)
  assert none['a']['frames'] == 0 and none['a']['total_mean_deg'] is None


class _FakeSkeleton:
  """Two bodies turning about Z by q[0] and q[0] + q[1] (radians)."""

  def __init__(self):
    self.q = np.zeros(2)
    self._bodies = [self._Body(self, 'pelvis', 1), self._Body(self, 'femur_r', 2)]

  class _Body:
    def __init__(self, skel, name, n):
      self.skel, self.name, self.n = skel, name, n

    def getName(self):  # pylint: disable=invalid-name
      return self.name

    def getWorldTransform(self):  # pylint: disable=invalid-name
      angle = float(np.sum(self.skel.q[:self.n]))
      return type('T', (), {'rotation': lambda _: Rotation.from_rotvec([0, 0, angle]).as_matrix()})()

  def getNumDofs(self):  # pylint: disable=invalid-name
    return 2

  def getNumBodyNodes(self):  # pylint: disable=invalid-name
    return 2

  def getBodyNode(self, i):  # pylint: disable=invalid-name
    return self._bodies[i]

  def setPositions(self, q):  # pylint: disable=invalid-name
    assert np.all(np.isfinite(q)), 'non-finite poses must not reach nimblephysics'
    self.q = np.asarray(q, np.float64)


def test_stored_path_gives_nan_rotations_for_non_finite_poses_and_fk_path_refuses_them():
  from types import SimpleNamespace  # pylint: disable=import-outside-toplevel
  from jaxfit.io import b3d_native  # pylint: disable=import-outside-toplevel
  poses = np.array([[0.1, np.nan, 0.3], [0.2, 0.0, np.inf]])        # [dofs, T]
  trial_pass = SimpleNamespace(getJointCenters=lambda: np.zeros((3, 3)),
                               getGroundBodyWrenches=lambda: np.zeros((0, 3)),
                               getPoses=lambda: poses)
  header = SimpleNamespace(getTrials=lambda: [SimpleNamespace(getPasses=lambda: [trial_pass])])
  subject = SimpleNamespace(loadAllFrames=lambda: None, getHeaderProto=lambda: header)
  info = dict(index=0, name='walk', num_frames=3)
  _, _, rot = b3d_native._stored_centres('x.b3d', subject, _FakeSkeleton(), info, 0, 1)  # pylint: disable=protected-access
  np.testing.assert_allclose(rot[0, 1], Rotation.from_rotvec([0, 0, 0.3]).as_matrix(), atol=1e-12)
  assert np.all(np.isnan(rot[1:])) and np.all(np.isfinite(rot[0]))
  frames = [SimpleNamespace(processingPasses=[SimpleNamespace(pos=p, groundContactForce=np.zeros(3))])
            for p in poses.T]
  subject = SimpleNamespace(readFrames=lambda *a, **k: frames)
  skel = _FakeSkeleton()
  skel.getNumJoints = lambda: 0
  skel.getJointWorldPositions = lambda joints: np.zeros(0)
  with pytest.raises(MotionFileError, match=r"^x\.b3d: trial 'walk', frame 1: .*not finite"):
    b3d_native._fk_centres('x.b3d', subject, skel, info, 0)  # pylint: disable=protected-access
