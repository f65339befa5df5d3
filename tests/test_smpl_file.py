"""Loading SMPL files: .npz and official-layout .pkl round trips; unsafe and malformed files."""

import os
import pickle
import sys

import numpy as np
import pytest

from jaxfit.errors import ModelFileError
from jaxfit.io.smpl_file import load_body_model, save_body_model_npz
from tests.conftest import random_smpl_arrays
from tests.smpl_files import FLAVOURS, write_model_pkl, write_smplx_npz


@pytest.fixture(scope='module')
def arrays():
  return random_smpl_arrays(seed=3)


def test_npz_round_trip(tmp_path, arrays):
  path = tmp_path / 'SMPL_FEMALE.npz'
  save_body_model_npz(path, arrays)
  model = load_body_model(path)
  assert model.gender == 'female' and model.num_vertices == 6890 and model.num_betas == 10
  assert model.parents[0] == -1 and model.parents[1:4] == (0, 0, 0)
  np.testing.assert_allclose(np.asarray(model.J_template), arrays['J_regressor'] @ arrays['v_template'], atol=1e-5)


@pytest.mark.parametrize('flavour', FLAVOURS)
def test_official_and_resaved_pickles_load(tmp_path, arrays, flavour):
  """Official Python-2 chumpy pickles (their state holds a set()), Python-3
  re-saves at protocols 2-4, and smplx's chumpy-free protocol-0 pickle."""
  path = tmp_path / 'basicmodel_m_lbs_10_207_0_v1.1.0.pkl'
  write_model_pkl(path, arrays, flavour)
  assert 'chumpy' not in sys.modules
  model = load_body_model(path, num_betas=10)
  assert model.gender == 'male'
  assert model.shapedirs.shape == (6890, 3, 10)
  np.testing.assert_allclose(np.asarray(model.shapedirs), arrays['shapedirs'], atol=1e-6)
  np.testing.assert_allclose(np.asarray(model.J_regressor), arrays['J_regressor'], atol=1e-7)
  np.testing.assert_allclose(np.asarray(model.weights), arrays['weights'], atol=1e-7)
  more = load_body_model(path, num_betas=16)     # v1.1.0 carries 300 components
  assert more.num_betas == 16


def test_the_official_layout_really_holds_python2_sets(tmp_path, arrays):
  """The stand-in is what the loader must survive: __builtin__.set in a
  protocol-2 stream with Python-2 string opcodes and old module paths."""
  import pickletools  # pylint: disable=import-outside-toplevel
  path = tmp_path / 'basicmodel_f_lbs_10_207_0_v1.0.0.pkl'
  write_model_pkl(path, arrays, 'official', num_pcs=10)
  data = path.read_bytes()
  assert data[:2] == b'\x80\x02'
  ops = {op.name for op, _, _ in pickletools.genops(data)}
  assert {'SHORT_BINSTRING', 'BINSTRING', 'NEWOBJ', 'GLOBAL'} <= ops and 'BINUNICODE' not in ops
  for name in (b'__builtin__\nset', b'chumpy.ch\nCh', b'scipy.sparse.csc\ncsc_matrix',
               b'_dirty_vars', b'_depends_on_deps', b'_itr'):
    assert name in data, name
  assert load_body_model(path).gender == 'female'


@pytest.mark.parametrize('gender', ['NEUTRAL', 'MALE', 'FEMALE'])
def test_smplx_style_npz_with_a_sparse_regressor_loads(tmp_path, arrays, gender):
  path = tmp_path / f'SMPL_{gender}.npz'
  write_smplx_npz(path, arrays, gender.lower())
  model = load_body_model(path)
  assert model.gender == gender.lower()
  np.testing.assert_allclose(np.asarray(model.J_regressor), arrays['J_regressor'], atol=1e-7)


def test_demo_body_also_loads_as_official_pkl(tmp_path):
  from jaxfit.demo.body_model import demo_body_arrays
  a = demo_body_arrays()
  path = tmp_path / 'demo_neutral.pkl'
  write_model_pkl(path, a, 'official', num_pcs=10)
  model = load_body_model(path)
  np.testing.assert_allclose(np.asarray(model.J_template), a['J'], atol=1e-5)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
  marker = tmp_path / 'pwned'

  class Exploit:
    def __reduce__(self):
      return (os.system, (f'touch {marker}',))

  path = tmp_path / 'evil.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'v_template': Exploit()}, f)
  with pytest.raises(ModelFileError, match='refusing to load'):
    load_body_model(path)
  assert not marker.exists()


@pytest.mark.parametrize('payload', [
    b'c__builtin__\neval\n(S\'1\'\ntR.', b'cbuiltins\ngetattr\n(c__builtin__\nset\nS\'add\'\ntR.',
    b'cos\nsystem\n(S\'true\'\ntR.', b'c__builtin__\n__import__\n(S\'os\'\ntR.'])
def test_hostile_globals_beside_the_allowed_builtins_are_refused(tmp_path, payload):
  path = tmp_path / 'hostile.pkl'
  path.write_bytes(payload)
  with pytest.raises(ModelFileError, match='refusing to load'):
    load_body_model(path)


def test_object_arrays_in_npz_cannot_run_code(tmp_path, arrays):
  marker = tmp_path / 'pwned'

  class Exploit:
    def __reduce__(self):
      return (os.system, (f'touch {marker}',))

  bad = dict(arrays)
  bad['J_regressor'] = np.array(Exploit(), dtype=object)
  path = tmp_path / 'SMPL_NEUTRAL.npz'
  np.savez(path, **bad)
  with pytest.raises(ModelFileError, match='refusing to load'):
    load_body_model(path)
  assert not marker.exists()


@pytest.mark.parametrize('problem, mutate, message', [
    ('missing key', lambda a: a.pop('weights'), 'missing SMPL keys'),
    ('wrong shape', lambda a: a.__setitem__('J_regressor', a['J_regressor'][:20]), 'J_regressor must be'),
    ('too few betas', lambda a: a.__setitem__('shapedirs', a['shapedirs'][:, :, :4]), 'only 4 shape components'),
    ('bad tree', lambda a: a['kintree_table'].__setitem__((0, 5), 7), 'not an SMPL 24-joint tree'),
    ('nan', lambda a: a['v_template'].__setitem__((0, 0), np.nan), 'NaN'),
])
def test_malformed_files_get_one_clear_error(tmp_path, arrays, problem, mutate, message):
  del problem
  bad = {k: np.array(v) for k, v in arrays.items()}
  mutate(bad)
  path = tmp_path / 'model.npz'
  save_body_model_npz(path, bad)
  with pytest.raises(ModelFileError, match=message) as info:
    load_body_model(path)
  assert str(path) in str(info.value)


def test_missing_and_non_model_files(tmp_path):
  with pytest.raises(ModelFileError, match='no such model file'):
    load_body_model(tmp_path / 'nope.pkl')
  junk = tmp_path / 'junk.pkl'
  junk.write_bytes(b'\x00\x01not a pickle at all')
  with pytest.raises(ModelFileError, match='junk.pkl'):
    load_body_model(junk)
  other = tmp_path / 'model.obj'
  other.write_text('v 0 0 0')
  with pytest.raises(ModelFileError, match='unknown model file type'):
    load_body_model(other)
