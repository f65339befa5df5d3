"""Loading SMPL files: .npz and official-layout .pkl round trips; unsafe and malformed files."""

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse

from jaxfit.errors import ModelFileError
from jaxfit.io.smpl_file import load_body_model, save_body_model_npz
from tests.conftest import random_smpl_arrays


class _FakeCh:
  """Pickles like chumpy.ch.Ch: a class from module 'chumpy.ch' with state {'x': array}."""

  def __init__(self, x):
    self.x = np.asarray(x)

  def __getstate__(self):
    return {'x': self.x, '_cache': {}, '_parents': {}}


class _FakeSelect:
  """Pickles like chumpy.reordering.Select (a view of another Ch by indices)."""

  def __init__(self, a, idxs, shape):
    self.a, self.idxs, self.preferred_shape = a, idxs, shape

  def __getstate__(self):
    return {'a': self.a, 'idxs': self.idxs, 'preferred_shape': self.preferred_shape}


def _write_official_pkl(path, arrays, num_pcs=300):
  """Writes the official SMPL layout: chumpy objects, a scipy.sparse J_regressor,
  300 shape PCs (v1.1.0), Python-2-era protocol 2. The fake chumpy modules are
  registered only while dumping."""
  ch = types.ModuleType('chumpy.ch')
  reordering = types.ModuleType('chumpy.reordering')
  _FakeCh.__module__, _FakeCh.__qualname__ = 'chumpy.ch', 'Ch'
  _FakeSelect.__module__, _FakeSelect.__qualname__ = 'chumpy.reordering', 'Select'
  ch.Ch, reordering.Select = _FakeCh, _FakeSelect
  saved = {k: sys.modules.get(k) for k in ('chumpy', 'chumpy.ch', 'chumpy.reordering')}
  sys.modules.update({'chumpy': types.ModuleType('chumpy'), 'chumpy.ch': ch,
                      'chumpy.reordering': reordering})
  try:
    rng = np.random.default_rng(1)
    shapedirs = np.concatenate([arrays['shapedirs'], rng.normal(
        size=arrays['shapedirs'].shape[:2] + (num_pcs - arrays['shapedirs'].shape[2],))], 2)
    weights = arrays['weights']
    data = dict(
        v_template=arrays['v_template'],
        shapedirs=_FakeCh(shapedirs),
        posedirs=arrays['posedirs'],
        J_regressor=scipy.sparse.csc_matrix(arrays['J_regressor']),
        weights=_FakeSelect(_FakeCh(weights.ravel()), np.arange(weights.size), weights.shape),
        kintree_table=arrays['kintree_table'], f=arrays['f'],
        J=arrays['J_regressor'] @ arrays['v_template'], bs_style='lbs', bs_type='lrotmin')
    with open(path, 'wb') as f:
      pickle.dump(data, f, protocol=2)
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v


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


def test_official_pkl_with_chumpy_sparse_and_300_pcs(tmp_path, arrays):
  path = tmp_path / 'basicmodel_m_lbs_10_207_0_v1.1.0.pkl'
  _write_official_pkl(path, arrays)
  assert 'chumpy' not in sys.modules
  model = load_body_model(path, num_betas=10)
  assert model.gender == 'male'
  assert model.shapedirs.shape == (6890, 3, 10)
  np.testing.assert_allclose(np.asarray(model.shapedirs), arrays['shapedirs'], atol=1e-6)
  np.testing.assert_allclose(np.asarray(model.J_regressor), arrays['J_regressor'], atol=1e-7)
  np.testing.assert_allclose(np.asarray(model.weights), arrays['weights'], atol=1e-7)
  more = load_body_model(path, num_betas=16)
  assert more.num_betas == 16


def test_demo_body_also_loads_as_official_pkl(tmp_path):
  from jaxfit.demo.body_model import demo_body_arrays
  a = demo_body_arrays()
  path = tmp_path / 'demo_neutral.pkl'
  _write_official_pkl(path, a, num_pcs=10)
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
