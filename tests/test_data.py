"""Reading .b3d and joints .npz, the OpenSim->SMPL conversion, mapping, bad input."""

import numpy as np
import pytest

from jaxfit.data.trial import (ADDB_JOINT_NAMES, DEFAULT_JOINT_MAP, contact_from_kinematics, make_trial,
                         opensim_to_smpl, resolve_mapping)
from jaxfit.errors import MotionFileError
from jaxfit.io.b3d import list_b3d_trials, read_b3d_trials
from jaxfit.io.joints_npz import read_joints_npz, write_joints_npz
from jaxfit.io.nimble import import_nimble, quiet_native_output


def test_trials_are_listed_with_lengths_and_rates(demo_b3d):
  path, _ = demo_b3d
  infos = list_b3d_trials(path)
  assert [(i.name, i.num_frames, round(i.fps)) for i in infos] == [('walk', 120, 100), ('run', 90, 150)]
  assert infos[0].passes == ('kinematics',)


def test_round_trip_equals_fk_of_stored_poses_on_the_reread_skeleton(demo_b3d):
  path, truth = demo_b3d
  trials = read_b3d_trials(path)
  b3d = import_nimble().biomechanics
  with quiet_native_output():
    subject = b3d.SubjectOnDisk(path)
    skel = subject.readSkel(0, '', True)
    subject.loadAllFrames()
  joints = [skel.getJoint(i) for i in range(skel.getNumJoints())]
  for t, trial in enumerate(trials):
    assert trial.joint_names == ADDB_JOINT_NAMES
    assert trial.joints.shape == (truth[trial.name]['joint_centres'].shape)
    poses = subject.getHeaderProto().getTrials()[t].getPasses()[0].getPoses()
    for k in (0, len(trial.joints) // 2, len(trial.joints) - 1):
      skel.setPositions(poses[:, k])
      fk = np.asarray(skel.getJointWorldPositions(joints)).reshape(-1, 3)
      np.testing.assert_allclose(trial.joints[k], fk, atol=1e-9)
    assert trial.height_m == pytest.approx(1.80) and trial.sex == 'male'


def test_contact_flags_follow_the_motion(demo_b3d):
  path, truth = demo_b3d
  for trial in read_b3d_trials(path):
    expected = truth[trial.name]['contact'][:, ::-1]       # truth is (right, left)
    assert trial.contact.shape == (trial.num_frames, 2)
    np.testing.assert_array_equal(trial.contact, expected)
    assert 0.3 < trial.contact.mean() < 0.75


def test_contact_heuristic_agrees_with_force_contact(demo_b3d):
  path, _ = demo_b3d
  trial = read_b3d_trials(path, trials=['walk'])[0]
  names = list(trial.joint_names)
  feet = opensim_to_smpl(trial.joints[:, [names.index('mtp_l'), names.index('mtp_r')]])
  guess = contact_from_kinematics(feet, trial.fps)
  assert (guess == trial.contact).mean() > 0.85


def test_opensim_to_smpl_axes(demo_b3d):
  path, _ = demo_b3d
  run = read_b3d_trials(path, trials=['run'])[0]   # overground, heading 0: walks along +X
  names = list(run.joint_names)
  osim = run.joints
  assert np.mean(osim[:, names.index('hip_r'), 2] - osim[:, names.index('hip_l'), 2]) > 0.1  # right = +Z
  assert osim[-1, 0, 0] - osim[0, 0, 0] > 1.0                                              # walks +X
  smpl = opensim_to_smpl(osim)
  hip_l, hip_r = smpl[:, names.index('hip_l')], smpl[:, names.index('hip_r')]
  assert np.mean(hip_l[:, 0] - hip_r[:, 0]) > 0.1                  # SMPL: subject's left at +X
  assert smpl[-1, 0, 2] - smpl[0, 0, 2] > 1.0                      # walks along +Z (facing)
  assert np.all(smpl[:, names.index('acromial_l'), 1] > smpl[:, names.index('ankle_l'), 1])  # +Y up
  assert np.isclose(np.linalg.det(opensim_to_smpl(np.eye(3))), 1.0)   # proper rotation


def test_joints_npz_round_trip_and_nan_frames_are_masked(tmp_path):
  rng = np.random.default_rng(0)
  joints = rng.normal(size=(50, 20, 3))
  joints[10] = np.nan
  joints[20, 3] = np.nan
  path = tmp_path / 'mocap.npz'
  write_joints_npz(path, ADDB_JOINT_NAMES, joints, 120.0)
  trial = read_joints_npz(path)
  assert trial.fps == 120.0 and trial.joint_names == ADDB_JOINT_NAMES
  assert not trial.valid[10].any() and not trial.valid[20, 3] and trial.valid.sum() == 50 * 20 - 21


def test_mapping_default_table_and_smpl_names():
  m = resolve_mapping(ADDB_JOINT_NAMES, DEFAULT_JOINT_MAP)
  assert len(m.smpl_index) == 16
  assert dict(zip(m.source_names, m.smpl_names))['back'] == 'spine1'
  assert 'subtalar_r' not in m.source_names and 'radioulnar_l' not in m.source_names
  names = ('pelvis', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
           'right_ankle', 'head')
  assert resolve_mapping(names, DEFAULT_JOINT_MAP).smpl_names == names


def test_mapping_errors_name_the_problem():
  with pytest.raises(MotionFileError, match='unknown SMPL joint'):
    resolve_mapping(ADDB_JOINT_NAMES, {**DEFAULT_JOINT_MAP, 'back': 'spine9'})
  with pytest.raises(MotionFileError, match='same SMPL joints'):
    resolve_mapping(ADDB_JOINT_NAMES + ('knee_r',), DEFAULT_JOINT_MAP)


LOWER_BODY = ('ground_pelvis', 'hip_r', 'knee_r', 'ankle_r', 'subtalar_r', 'mtp_r', 'hip_l',
              'knee_l', 'ankle_l', 'subtalar_l', 'mtp_l', 'back')   # gait2392 family, no arms


def test_skeleton_variants_map_and_extra_joints_are_left_out():
  lower = resolve_mapping(LOWER_BODY, DEFAULT_JOINT_MAP)
  assert dict(zip(lower.source_names, lower.smpl_names))['knee_l'] == 'left_knee'
  assert len(lower.smpl_index) == 10 and lower.ignored == ('subtalar_r', 'subtalar_l')
  with_patella = resolve_mapping(ADDB_JOINT_NAMES + ('patellofemoral_r', 'patellofemoral_l', 'tibia_r'),
                                 DEFAULT_JOINT_MAP)
  assert len(with_patella.smpl_index) == 16
  assert {'patellofemoral_r', 'patellofemoral_l', 'tibia_r'} <= set(with_patella.ignored)
  no_elbow = resolve_mapping(tuple(n for n in ADDB_JOINT_NAMES if n != 'elbow_r'), DEFAULT_JOINT_MAP)
  assert 'right_elbow' not in no_elbow.smpl_names and len(no_elbow.smpl_index) == 15
  hips_only = resolve_mapping(tuple(n for n in LOWER_BODY if n != 'ground_pelvis'), DEFAULT_JOINT_MAP)
  assert 'pelvis' not in hips_only.smpl_names


@pytest.mark.parametrize('drop, needle', [
    (('ground_pelvis', 'hip_r'), 'pelvis (or both hips)'),
    (('knee_l',), "'left_knee'"),
    (('ankle_r', 'ankle_l'), "'left_ankle', 'right_ankle'"),
])
def test_a_skeleton_that_cannot_be_fitted_is_refused_in_one_line(drop, needle):
  with pytest.raises(MotionFileError, match='cannot fit this skeleton') as info:
    resolve_mapping(tuple(n for n in LOWER_BODY if n not in drop), DEFAULT_JOINT_MAP)
  assert needle in str(info.value) and '\n' not in str(info.value)


def test_bad_b3d_inputs_get_one_clear_error(tmp_path, demo_b3d):
  with pytest.raises(MotionFileError, match='no such file'):
    read_b3d_trials(tmp_path / 'missing.b3d')
  empty = tmp_path / 'empty.b3d'
  empty.write_bytes(b'')
  with pytest.raises(MotionFileError, match='empty.b3d: file is empty'):
    read_b3d_trials(empty)
  noise = tmp_path / 'noise.b3d'
  noise.write_bytes(np.random.default_rng(0).bytes(5000))
  with pytest.raises(MotionFileError, match='noise.b3d'):
    read_b3d_trials(noise)
  data = open(demo_b3d[0], 'rb').read()
  for cut in (200, len(data) // 2, len(data) - 100):
    truncated = tmp_path / f'truncated_{cut}.b3d'
    truncated.write_bytes(data[:cut])
    with pytest.raises(MotionFileError, match=f'truncated_{cut}.b3d'):
      read_b3d_trials(truncated)


def test_missing_pass_and_trial_are_named(demo_b3d):
  path, _ = demo_b3d
  with pytest.raises(MotionFileError, match="no 'dynamics' pass"):
    read_b3d_trials(path, processing_pass='dynamics')
  with pytest.raises(MotionFileError, match="trials are \\['walk', 'run'\\]"):
    read_b3d_trials(path, trials=['jump'])


def test_empty_trial_is_refused():
  with pytest.raises(MotionFileError, match='zero frames'):
    make_trial('s', 't', 'file.b3d', ADDB_JOINT_NAMES, np.zeros((0, 20, 3)), 100.0)


def test_choosing_among_processing_passes(tmp_path):
  from jaxfit.demo.subject import TrialSpec, write_demo_subject
  path = tmp_path / 'two_passes.b3d'
  truth = write_demo_subject(path, (TrialSpec('walk', 'walk', 1.25, 60, 100.0, True, 0.0),),
                             lowpass_pass=True)['walk']
  assert list_b3d_trials(path)[0].passes == ('kinematics', 'lowpass')
  raw, smooth = truth['joint_centres'], truth['lowpass_joint_centres']
  assert np.abs(raw - smooth).max() > 0.005
  for choice, expected, name in (('last', smooth, 'lowpass'), (None, smooth, 'lowpass'),
                                 ('kinematics', raw, 'kinematics'), ('lowpass', smooth, 'lowpass'),
                                 (0, raw, 'kinematics'), ('1', smooth, 'lowpass'),
                                 (-1, smooth, 'lowpass'), (-2, raw, 'kinematics')):
    trial = read_b3d_trials(path, processing_pass=choice)[0]
    assert trial.processing_pass == name, choice
    np.testing.assert_allclose(trial.joints, expected, atol=1e-9, err_msg=str(choice))
  with pytest.raises(MotionFileError, match="has passes \\['kinematics', 'lowpass'\\]; no pass 2"):
    read_b3d_trials(path, processing_pass=2)


def test_trials_by_name_or_index(demo_b3d):
  path, _ = demo_b3d
  assert [t.name for t in read_b3d_trials(path, trials=['1'])] == ['run']
  assert [t.name for t in read_b3d_trials(path, trials=['0', 'run'])] == ['walk', 'run']
  assert [t.name for t in read_b3d_trials(path, trials=['walk'])] == ['walk']


def test_comparable_joints_are_a_property_of_the_mapping():
  """MPJPE's joints: those whose definitions agree, mapped to their own SMPL
  joint; the pelvis origin, lumbar joint and toes are not; SMPL names are."""
  from jaxfit.data.trial import COMPARABLE_JOINTS, DEFAULT_JOINT_MAP, resolve_mapping
  m = resolve_mapping(ADDB_JOINT_NAMES, DEFAULT_JOINT_MAP)
  comparable = {m.source_names[k] for k in m.comparable_index}
  assert comparable == {'hip_r', 'hip_l', 'walker_knee_r', 'walker_knee_l', 'ankle_r', 'ankle_l',
                        'acromial_r', 'acromial_l', 'elbow_r', 'elbow_l', 'radius_hand_r',
                        'radius_hand_l'}
  assert not comparable & {'ground_pelvis', 'back', 'mtp_r', 'mtp_l'}
  moved = resolve_mapping(ADDB_JOINT_NAMES, dict(DEFAULT_JOINT_MAP, elbow_r='right_wrist',
                                                 radius_hand_r=''))
  assert 'elbow_r' not in {moved.source_names[k] for k in moved.comparable_index}
  smpl = resolve_mapping(('pelvis', 'left_hip', 'right_hip', 'left_knee', 'right_knee',
                          'left_ankle', 'right_ankle', 'spine1'), DEFAULT_JOINT_MAP)
  assert len(smpl.comparable_index) == 8 and 'knee_r' in COMPARABLE_JOINTS


def test_offsets_by_default_only_where_definitions_differ_and_bounded_per_joint(demo_b3d):
  """Learned offsets: the pelvis origin, lumbar joint and toes, each with its
  own anatomical bound; a comparable joint only when asked. An offset at its
  bound or above its typical size is a warning naming the joint and size."""
  import types
  from jaxfit.data.metrics import trial_metrics
  from jaxfit.data.prepare import PrepareOptions, prepare_trial
  from jaxfit.io.b3d import read_b3d_trials
  trial = read_b3d_trials(demo_b3d[0], trials=['walk'])[0]
  prep = prepare_trial(trial, PrepareOptions())
  names = prep.mapping.source_names
  learned = {names[m] for m in prep.structure.offset_joints}
  assert learned == {'ground_pelvis', 'back', 'mtp_r', 'mtp_l'}
  bound = {names[m]: prep.offset_bound[m] for m in prep.structure.offset_joints}
  assert bound == {'ground_pelvis': 0.12, 'back': 0.08, 'mtp_r': 0.06, 'mtp_l': 0.06}
  asked = prepare_trial(trial, PrepareOptions(offset_joints=('walker_knee_r', 'back')))
  assert {asked.mapping.source_names[m] for m in asked.structure.offset_joints} == {
      'walker_knee_r', 'back'}
  n, m = prep.num_frames, len(names)
  offsets = np.zeros((m, 3))
  pelvis, back = names.index('ground_pelvis'), names.index('back')
  offsets[pelvis] = (0.0, 0.0, 0.12)      # at its bound
  offsets[back] = (0.0, 0.07, 0.0)        # above its typical 6 cm, below its bound
  joints = np.zeros((n, 24, 3))
  joints[:, list(prep.structure.smpl_index)] = prep.targets[:n]
  result = types.SimpleNamespace(joints=joints, points=prep.targets[:n], offsets=offsets,
                                 losses={}, rotations=np.tile(np.eye(3), (n, 24, 1, 1)),
                                 frame_offsets=prep.segment_rest_offset, poses=np.zeros((n, 24, 3)))
  metrics, _ = trial_metrics(prep, result, trial.fps)
  assert metrics['mpjpe_mm'] == 0.0 and metrics['fit_residual_mm'] == 0.0
  warnings = metrics['offset_warnings']
  assert len(warnings) == 2
  assert 'ground_pelvis' in warnings[0] and '120 mm' in warnings[0] and 'at its bound' in warnings[0]
  assert 'back' in warnings[1] and '70 mm' in warnings[1] and 'typical' in warnings[1]
