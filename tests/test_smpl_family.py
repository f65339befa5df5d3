"""SMPL-H and SMPL-X bodies: their file layouts load, the 24-joint fitting view
is exact, the full model skins, and a real trial fitted from the CLI writes
AMASS files that read back as AMASS's readers read them."""

import json
import os
import pickletools
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from jaxfit.body import family as fam
from jaxfit.body.model import forward_kinematics, joint_model, skin_vertices
from jaxfit.errors import ModelFileError
from jaxfit.io.amass import AMASS_FROM_JAXFIT, amass_outputs
from jaxfit.io.smpl_file import load_body_model
from tests import numpy_reference as ref
from tests import smpl_family_files as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_TRIAL = os.path.join(ROOT, '..', 'shared', 'data', 'real', 'dev_opencap_unfiltered.b3d')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Every stand-in layout, written once: name -> (path, arrays)."""
  d = tmp_path_factory.mktemp('family_models')
  h = sf.family_arrays('smplh', num_betas=16)
  x11 = sf.family_arrays('smplx', num_betas=300, num_expression=100)
  x10 = sf.family_arrays('smplx', num_betas=10, num_expression=10, seed=1)
  return {
      'amass_smplh_npz': (sf.write_amass_smplh_npz(str(d), h, 'female'), h),
      'mano_smplh_pkl': (sf.write_mano_smplh_pkl(str(d / 'SMPLH_male.pkl'), h), h),
      'merged_smplh_pkl': (sf.write_mano_smplh_pkl(str(d / 'SMPLH_female.pkl'), h, merged=True), h),
      'smplx_npz': (sf.write_smplx_npz(str(d / 'SMPLX_NEUTRAL.npz'), x11), x11),
      'smplx_v10_pkl': (sf.write_smplx_pkl(str(d / 'SMPLX_MALE.pkl'), x10), x10),
  }


# name: family, gender, shape components, expression columns, has hand means
LAYOUTS = {
    'amass_smplh_npz': ('smplh', 'female', 16, 0, False),
    'mano_smplh_pkl': ('smplh', 'male', 10, 0, False),
    'merged_smplh_pkl': ('smplh', 'female', 10, 0, True),
    'smplx_npz': ('smplx', 'neutral', 300, 100, True),
    'smplx_v10_pkl': ('smplx', 'male', 10, 10, True),
}


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_every_layout_loads_with_its_tree_betas_and_neutral_hands(files, name):
  path, a = files[name]
  family, gender, num_shape, num_expr, has_mean = LAYOUTS[name]
  model = load_body_model(path, num_betas=num_shape)
  assert (model.family, model.gender, model.num_betas) == (family, gender, num_shape)
  assert model.parents == fam.PARENTS[family] and model.joint_names == fam.JOINT_NAMES[family]
  num_j = len(fam.PARENTS[family])
  assert model.posedirs.shape == (len(a['v_template']), 3, 9 * (num_j - 1))
  np.testing.assert_allclose(np.asarray(model.J_regressor), a['J_regressor'], atol=1e-7)
  np.testing.assert_allclose(np.asarray(model.shapedirs), a['shapedirs'][:, :, :num_shape], atol=1e-7)
  if num_expr:   # SMPL-X: expression columns kept apart, never betas
    np.testing.assert_allclose(np.asarray(model.expr_dirs), a['shapedirs'][:, :, num_shape:],
                               atol=1e-7)
  else:
    assert model.expr_dirs is None
  rest = np.asarray(model.rest_pose)
  left, right = fam.HAND_START[family]
  want = np.zeros((num_j, 3))
  if has_mean:
    want[left:left + 15] = a['hands_meanl'].reshape(15, 3)
    want[right:right + 15] = a['hands_meanr'].reshape(15, 3)
  np.testing.assert_allclose(rest, want, atol=1e-6)
  with pytest.raises(ModelFileError, match=f'only {num_shape} shape components'):
    load_body_model(path, num_betas=num_shape + 1)


def test_the_stand_ins_have_the_documented_file_layouts(files):
  with zipfile.ZipFile(files['amass_smplh_npz'][0]) as z:
    assert [n[:-4] for n in z.namelist()] == [
        'J_regressor_prior', 'f', 'J_regressor', 'kintree_table', 'J', 'weights_prior', 'weights',
        'posedirs', 'bs_style', 'v_template', 'shapedirs', 'bs_type']
  with np.load(files['amass_smplh_npz'][0]) as z:
    assert z['bs_style'].dtype == np.dtype('S3') and z['shapedirs'].shape[2] == 16
  with zipfile.ZipFile(files['smplx_npz'][0]) as z:
    names = [n[:-4] for n in z.namelist()]
  assert len(names) == 22 and names[0] == 'hands_meanr' and 'allow_pickle' in names
  with np.load(files['smplx_npz'][0]) as z:   # pickled dicts need allow_pickle
    assert z['shapedirs'].shape[2] == 400
    with pytest.raises(ValueError):
      z['joint2num']    # pylint: disable=pointless-statement
  raw = open(files['mano_smplh_pkl'][0], 'rb').read()
  assert raw[:2] == b'\x80\x02' and b'chumpy.ch\nCh' in raw and b'scipy.sparse.csc\ncsc_matrix' in raw
  assert 'BINUNICODE' not in {op.name for op, _, _ in pickletools.genops(raw)}
  merged = open(files['merged_smplh_pkl'][0], 'rb').read()
  assert merged[:2] == b'\x80\x04' and b'chumpy' not in merged and b'hands_meanl' in merged
  assert b'scipy.sparse._csc' in merged or b'scipy.sparse.csc' in merged


def _random_fit_poses(rng, frames):
  poses = rng.normal(scale=0.4, size=(frames, 24, 3))
  poses[:, 22:] = 0.0   # the fitting view's wrist children carry no rotation
  return poses, rng.normal(scale=0.5, size=(frames, 3))


@pytest.fixture
def x64():
  with jax.experimental.enable_x64():
    yield


@pytest.mark.parametrize('name', ['merged_smplh_pkl', 'smplx_npz'])
def test_the_fitting_view_is_exact_for_the_full_model(files, name, x64):
  """FK of the 24-joint view == FK of the full model (expanded pose) at the
  view's joints; and == an independent 4x4 FK."""
  model = load_body_model(files[name][0], num_betas=10, dtype=np.float64)
  view = joint_model(model)
  assert view.J_template.shape == (24, 3) and view.parents == fam.SMPL_PARENTS
  rng = np.random.default_rng(0)
  poses, trans = _random_fit_poses(rng, 3)
  betas = rng.normal(size=10)
  full = fam.expand_poses(poses, np.asarray(model.rest_pose))
  index = list(fam.fit_joint_index(model.parents))
  rest_full = np.asarray(model.J_template) + np.asarray(model.J_shapedirs) @ betas
  for t in range(3):
    fitted = np.asarray(forward_kinematics(view, betas, poses[t], trans[t])[0])
    whole = np.asarray(forward_kinematics(model, betas, full[t], trans[t])[0])
    np.testing.assert_allclose(whole[index], fitted, atol=1e-10)
    np.testing.assert_allclose(ref.fk(model.parents, rest_full, full[t], trans[t])[0], whole,
                               atol=1e-10)
  np.testing.assert_allclose(fam.forward_kinematics_np(model.parents, rest_full, full, trans)[:, index],
                             np.stack([np.asarray(forward_kinematics(view, betas, p, tr)[0])
                                       for p, tr in zip(poses, trans)]), atol=1e-10)


def test_the_full_smplx_model_skins_with_its_486_pose_correctives(files, x64):
  path, a = files['smplx_v10_pkl']
  model = load_body_model(path, num_betas=10, dtype=np.float64)
  rng = np.random.default_rng(1)
  poses, trans = _random_fit_poses(rng, 1)
  full = fam.expand_poses(poses, np.asarray(model.rest_pose))[0]
  full[22:25] = rng.normal(scale=0.2, size=(3, 3))    # jaw and eyes move their vertices too
  betas = rng.normal(size=10)
  got = np.asarray(skin_vertices(model, betas, full, trans[0]))
  parents = a['kintree_table'][0].astype(np.int64)
  parents[0] = -1
  want = ref.lbs(dict(a, shapedirs=a['shapedirs'][:, :, :10], parents=parents), betas, full, trans[0])
  np.testing.assert_allclose(got, want, atol=1e-10)


def _read_back(path, family):
  """Reads an AMASS file the way its readers do: poses split by the layout."""
  with np.load(path) as z:
    data = {k: z[k] for k in z.files}
  if family == 'smplh':
    p = data['poses']
    return data, dict(root=p[:, :3], body=p[:, 3:66], hands=p[:, 66:156])
  p = data['poses']
  return data, dict(root=p[:, :3], body=p[:, 3:66], jaw=p[:, 66:69], eyes=p[:, 69:75],
                    hands=p[:, 75:165])


def _fk_from_file(arrays, betas, poses, trans):
  """AMASS readers' FK: joints from the model file and saved parameters."""
  num_b = min(len(betas), arrays['shapedirs'].shape[2])
  parents = arrays['kintree_table'][0].astype(np.int64)
  parents[0] = -1
  rest = arrays['J_regressor'] @ (arrays['v_template']
                                  + arrays['shapedirs'][:, :, :num_b] @ betas[:num_b])
  num_j = len(parents)
  return np.stack([ref.fk(parents, rest, p.reshape(num_j, 3), t)[0] for p, t in zip(poses, trans)])


def test_amass_outputs_reproduce_the_fitted_joints_in_amass_world(files, x64):
  path, a = files['smplx_v10_pkl']
  model = load_body_model(path, num_betas=10, dtype=np.float64)
  rng = np.random.default_rng(2)
  poses, trans = _random_fit_poses(rng, 4)
  betas = rng.normal(size=10)
  view = joint_model(model)
  fitted = np.stack([np.asarray(forward_kinematics(view, betas, p, t)[0]) for p, t in zip(poses, trans)])
  suffix, arrays, info = amass_outputs(model, betas, poses, trans, 50.0, fitted)
  assert suffix == '_stageii.npz' and info['fk_max_error_mm'] < 1e-6
  joints = _fk_from_file(a, arrays['betas'], arrays['poses'], arrays['trans'])
  np.testing.assert_allclose(joints[:, :22], fitted[:, :22] @ AMASS_FROM_JAXFIT.T, atol=1e-10)
  smplh = load_body_model(files['merged_smplh_pkl'][0], num_betas=10, dtype=np.float64)
  suffix, arrays, _ = amass_outputs(smplh, betas, poses, trans, 50.0)
  assert suffix == '_poses.npz' and arrays['poses'].shape == (4, 156)


# ----------------------------------------------------------------------------- CLI on a real trial

CLI_CASES = {   # model file -> (family, AMASS file suffix)
    'amass_smplh_npz': ('smplh', '_poses.npz'),
    'merged_smplh_pkl': ('smplh', '_poses.npz'),
    'smplx_npz': ('smplx', '_stageii.npz'),
}
SMPLH_KEYS = {'trans': ((-1, 3), 'f8'), 'gender': ((), 'U'), 'mocap_framerate': ((), 'f8'),
              'betas': ((16,), 'f8'), 'dmpls': ((-1, 8), 'f8'), 'poses': ((-1, 156), 'f8')}
SMPLX_KEYS = {'gender': ((), 'U'), 'surface_model_type': ((), 'U'), 'mocap_frame_rate': ((), 'f8'),
              'mocap_time_length': ((), 'f8'), 'trans': ((-1, 3), 'f8'), 'poses': ((-1, 165), 'f8'),
              'betas': ((16,), 'f8'), 'num_betas': ((), 'i'), 'root_orient': ((-1, 3), 'f8'),
              'pose_body': ((-1, 63), 'f8'), 'pose_hand': ((-1, 90), 'f8'),
              'pose_jaw': ((-1, 3), 'f8'), 'pose_eye': ((-1, 6), 'f8')}


@pytest.mark.skipif(not os.path.isfile(REAL_TRIAL), reason='no ../shared/data/real here')
@pytest.mark.parametrize('name', sorted(CLI_CASES))
def test_cli_fits_a_real_trial_and_writes_amass_files(tmp_path, files, executable_cache, name):
  path, a = files[name]
  family, suffix = CLI_CASES[name]
  out = tmp_path / 'out'
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'jaxfit.main', '--config=configs/default.py',
       f'--config.input={REAL_TRIAL}', '--config.trials=walking2', f'--config.output_dir={out}',
       f'--config.model_path={path}', f'--config.compilation_cache_dir={executable_cache}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  d = out / 'dev_opencap_unfiltered' / 'walking2'
  assert sorted(os.listdir(d)) == sorted(['config.json', 'joints.npz', 'metrics.json', 'params.npz',
                                          'walking2' + suffix])
  metrics = json.loads((d / 'metrics.json').read_text())
  assert metrics['body_model']['family'] == family
  assert metrics['body_model']['amass_file'] == 'walking2' + suffix
  assert metrics['body_model']['fk_max_error_mm'] < 0.05
  assert metrics['mpjpe_mm'] < 30.0
  data, parts = _read_back(d / ('walking2' + suffix), family)
  keys = SMPLH_KEYS if family == 'smplh' else SMPLX_KEYS
  assert list(data) == list(keys)      # AMASS's keys, in its writers' order
  frames = metrics['frames']
  for key, (shape, kind) in keys.items():
    value = data[key]
    assert value.shape == tuple(frames if s == -1 else s for s in shape), key
    assert value.dtype.kind == kind[0] and (kind != 'f8' or value.dtype == np.float64), key
  if family == 'smplx':
    assert str(data['surface_model_type']) == 'smplx' and int(data['num_betas']) == 16
    np.testing.assert_array_equal(data['pose_body'], parts['body'])
    np.testing.assert_array_equal(data['pose_hand'], parts['hands'])
    np.testing.assert_array_equal(data['pose_jaw'], parts['jaw'])
    np.testing.assert_array_equal(data['pose_eye'], parts['eyes'])
    np.testing.assert_array_equal(data['root_orient'], parts['root'])
    assert float(data['mocap_time_length']) == pytest.approx(frames / float(data['mocap_frame_rate']))
    np.testing.assert_array_equal(parts['jaw'], 0.0)
  # Hands (and nothing else) are the model's neutral pose: its hand mean, if any.
  means = np.concatenate([a['hands_meanl'], a['hands_meanr']]) if name != 'amass_smplh_npz' else 0.0
  np.testing.assert_allclose(parts['hands'], np.broadcast_to(means, parts['hands'].shape), atol=1e-6)
  # FK of the saved parameters reproduces the reported joints (in AMASS's Z-up world).
  with np.load(d / 'joints.npz') as j:
    reported = j['smpl_joints'][:, :22].astype(np.float64)
  with np.load(d / 'params.npz') as p:
    assert p['poses'].shape == (frames, 72)
    np.testing.assert_array_equal(parts['body'], p['poses'][:, 3:66])
    np.testing.assert_allclose(data['betas'][:len(p['betas'])], p['betas'])
    assert not data['betas'][len(p['betas']):].any()
  joints = _fk_from_file(a, data['betas'], data['poses'], data['trans'])
  np.testing.assert_allclose(joints[:, :22], reported @ AMASS_FROM_JAXFIT.T, atol=2e-5)
  if name == 'smplx_npz':   # the report's meshes and glTF skin the full model
    _check_meshes(d, path)


def _check_meshes(trial_dir, model_path):
  from jaxfit.io.outputs import load_trial  # pylint: disable=import-outside-toplevel
  from jaxfit.report.meshes import write_glb, write_meshes  # pylint: disable=import-outside-toplevel
  import pygltflib  # pylint: disable=import-outside-toplevel
  model = load_body_model(model_path)
  trial = load_trial(str(trial_dir))
  paths = write_meshes(model, trial, str(trial_dir), 2)
  assert len(paths) == 2 and all(os.path.getsize(p) > 0 for p in paths)
  glb = write_glb(model, trial, str(trial_dir / 'animation.glb'))
  gltf = pygltflib.GLTF2().load(glb)
  assert len(gltf.skins[0].joints) == 55 and gltf.nodes[22].name == 'jaw'


def test_smpl_stays_smpl_and_other_joint_counts_get_one_clear_error(tmp_path, demo_model):
  assert demo_model.family == 'smpl' and demo_model.rest_pose is None
  assert joint_model(demo_model).J_template is demo_model.J_template   # the view is the model
  assert amass_outputs(demo_model, np.zeros(10), np.zeros((2, 24, 3)), np.zeros((2, 3)), 30.0)[0] is None
  a = sf.family_arrays('smplh', num_betas=10)
  bad = dict(a, kintree_table=a['kintree_table'][:, :30], J_regressor=a['J_regressor'][:30],
             weights=a['weights'][:, :30], posedirs=a['posedirs'][:, :, :9 * 29])
  path = tmp_path / 'SMPLH_male.npz'
  np.savez(path, **bad)
  with pytest.raises(ModelFileError, match='30 joints: not an SMPL'):
    load_body_model(path)
