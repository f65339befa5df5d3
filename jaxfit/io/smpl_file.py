"""Loading SMPL-family body-model files (.pkl or .npz) without chumpy.

SMPL (24 joints), SMPL-H (52) and SMPL-X (55): the joints and their tree come
from the file's kintree_table (jaxfit.body.family). Layouts: the official
SMPL pickles and their npz copies; SMPL-H from the MANO site (SMPLH_*.pkl,
with or without smplx's merged MANO hand keys) and AMASS's
smplh/<gender>/model.npz (16 betas, no hand keys); SMPL-X
SMPLX_<GENDER>.npz / .pkl (shapedirs = shape then expression columns).

Official SMPL pickles (v1.0.0, v1.1.0) hold chumpy objects and a
scipy.sparse J_regressor and were written by Python 2. A model pickle is
untrusted input: it is read by a restricted unpickler that builds only NumPy
arrays, plain containers, and inert placeholders for chumpy and scipy.sparse
objects. Any other class is refused, so a malicious pickle cannot run code.
"""

import codecs
import copyreg
import io
import os
import pickle
import re
import zipfile

import numpy as np

from jaxfit.body import family as fam
from jaxfit.body.model import BodyModel, make_body_model
from jaxfit.errors import ModelFileError
from jaxfit.runtime.files import atomic_write

REQUIRED_KEYS = ('v_template', 'shapedirs', 'J_regressor', 'weights',
                 'kintree_table', 'f')
# Arrays read when present: pose correctives, the relaxed-hand means
# (MANO-merged SMPL-H pkl, SMPL-X). And a gender key.
OPTIONAL_ARRAYS = ('posedirs', 'hands_meanl', 'hands_meanr')
GENDERS = ('neutral', 'male', 'female')
FAMILY_LABEL = {'smpl': 'SMPL', 'smplh': 'SMPL-H', 'smplx': 'SMPL-X'}


class _ChumpyPlaceholder:
  """Stands in for any chumpy object; keeps the array it carried."""

  def __init__(self, *args, **kwargs):
    del args, kwargs
    self.state = {}

  def __setstate__(self, state):
    self.state = state if isinstance(state, dict) else {'x': state}

  def to_array(self):
    s = self.state
    if 'x' in s:
      return _to_array(s['x'])
    if 'a' in s and 'idxs' in s:  # chumpy.reordering.Select and friends
      values = _to_array(s['a']).ravel()[np.asarray(s['idxs'])]
      shape = s.get('preferred_shape')
      return values.reshape(shape) if shape is not None else values
    if 'a' in s:
      return _to_array(s['a'])
    raise ValueError(f'chumpy object without data (keys {sorted(s)})')


class _SparsePlaceholder:
  """Stands in for a scipy.sparse matrix; densified with NumPy alone."""
  fmt = 'csc'

  def __init__(self, *args, **kwargs):
    del args, kwargs
    self.state = {}

  def __setstate__(self, state):
    self.state = state

  def to_array(self):
    s = self.state
    shape = tuple(s.get('_shape', s.get('shape')))
    dense = np.zeros(shape, np.float64)
    if self.fmt in ('csc', 'csr'):
      indptr, indices, data = (np.asarray(s['indptr']), np.asarray(s['indices']),
                               np.asarray(s['data'], np.float64))
      major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
      if self.fmt == 'csc':
        np.add.at(dense, (indices, major), data)
      else:
        np.add.at(dense, (major, indices), data)
    elif self.fmt == 'coo':
      np.add.at(dense, (np.asarray(s['row']), np.asarray(s['col'])),
                np.asarray(s['data'], np.float64))
    else:
      raise ValueError(f'unsupported sparse format {self.fmt}')
    return dense


def _sparse_class(fmt):
  return type(f'_Sparse_{fmt}', (_SparsePlaceholder,), {'fmt': fmt})



_ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'): np.core.multiarray._reconstruct,  # pylint: disable=protected-access
    ('numpy._core.multiarray', '_reconstruct'): np.core.multiarray._reconstruct,  # pylint: disable=protected-access
    ('numpy.core.multiarray', 'scalar'): np.core.multiarray.scalar,
    ('numpy._core.multiarray', 'scalar'): np.core.multiarray.scalar,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('copyreg', '_reconstructor'): copyreg._reconstructor,  # pylint: disable=protected-access
    ('copy_reg', '_reconstructor'): copyreg._reconstructor,  # pylint: disable=protected-access
    ('copyreg', '__newobj__'): copyreg.__newobj__,
    ('builtins', 'object'): object,
    ('_codecs', 'encode'): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
    ('__builtin__', 'object'): object,
    # chumpy objects keep `_dirty_vars` as a set(): official SMPL files need these.
    ('__builtin__', 'set'): set,
    ('builtins', 'set'): set,
    ('__builtin__', 'frozenset'): frozenset,
    ('builtins', 'frozenset'): frozenset,
}
_SPARSE_NAME = re.compile(r'^scipy\.sparse(\.[\w.]+)?$')


class _RestrictedUnpickler(pickle.Unpickler):
  """Builds only arrays, containers and placeholders; refuses anything else."""

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'chumpy' or module.startswith('chumpy.'):
      return _ChumpyPlaceholder
    if _SPARSE_NAME.match(module) and name in ('csc_matrix', 'csr_matrix',
                                                'coo_matrix'):
      return _sparse_class(name[:3])
    raise pickle.UnpicklingError(
        f'refusing to load {module}.{name}: model pickles may only contain '
        'NumPy arrays, scipy.sparse matrices and chumpy arrays')


def _to_array(value):
  if isinstance(value, (_ChumpyPlaceholder, _SparsePlaceholder)):
    return value.to_array()
  if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
    return _to_array(value.reshape(-1)[0])  # e.g. a sparse matrix saved into an .npz
  return np.asarray(value)


def _restricted_load(data: bytes):
  """Unpickles with the restricted unpickler (latin1 for Python-2 strings)."""
  return _RestrictedUnpickler(io.BytesIO(data), encoding='latin1').load()


def _read_pickle(path):
  with open(path, 'rb') as f:
    data = f.read()
  try:
    obj = _restricted_load(data)
  except pickle.UnpicklingError as e:
    raise ModelFileError(path, f'unsafe or invalid pickle: {e}') from None
  except Exception as e:  # truncated, not a pickle, ...
    raise ModelFileError(path, f'not a readable SMPL pickle ({type(e).__name__}: {e})') from None
  if not isinstance(obj, dict):
    raise ModelFileError(path, f'expected a dict of arrays, found {type(obj).__name__}')
  return obj


def _read_npy_member(archive, name):
  """One .npy member of an .npz: plain arrays by NumPy without pickle; object
  arrays (e.g. a scipy.sparse J_regressor saved by np.savez) by the
  restricted unpickler, so nothing in the file can run code."""
  with archive.open(name) as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
      shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
      return _restricted_load(f.read())
    data = np.frombuffer(f.read(), dtype=dtype)
  count = int(np.prod(shape))
  if data.size < count:
    raise ValueError(f'{name} is truncated')
  return data[:count].reshape(shape, order='F' if fortran else 'C')


def _read_npz(path, wanted=None):
  """{key: array} of an .npz; with `wanted`, only those members are read (the
  others are listed with the value None: SMPL-X files hold pickled dicts and
  landmark tables jaxfit never needs)."""
  try:
    with zipfile.ZipFile(path) as archive:
      out = {}
      for name in archive.namelist():
        key = name[:-4] if name.endswith('.npy') else name
        out[key] = (_read_npy_member(archive, name) if wanted is None or key in wanted
                    else None)
      return out
  except pickle.UnpicklingError as e:
    raise ModelFileError(path, f'unsafe or invalid object array: {e}') from None
  except Exception as e:
    raise ModelFileError(path, f'not a readable .npz file ({type(e).__name__}: {e})') from None


def _gender_from(path, raw):
  if raw.get('gender') is not None:
    g = np.asarray(raw['gender']).reshape(-1)[0]
    g = (g.decode('latin1') if isinstance(g, bytes) else str(g)).lower()
    if g in GENDERS:
      return g
  base = os.path.basename(path).lower()
  for g in ('female', 'male', 'neutral'):  # 'female' before 'male'
    if g in base:
      return g
  parent = os.path.basename(os.path.dirname(os.path.abspath(path))).lower()
  if parent in GENDERS:   # AMASS: smplh/<gender>/model.npz
    return parent
  if re.search(r'(^|_)f(_|$)', base):
    return 'female'
  if re.search(r'(^|_)m(_|$)', base):
    return 'male'
  return 'neutral'


def _model_name(path):
  """The file name; AMASS's smplh/<gender>/model.npz keeps its folders."""
  parts = os.path.abspath(path).split(os.sep)
  return '/'.join(parts[-3:]) if parts[-1].lower() == 'model.npz' else parts[-1]


def load_body_model(path, num_betas=10, dtype=np.float32) -> BodyModel:
  """Loads an SMPL, SMPL-H or SMPL-X model file (.pkl official layout, or .npz).

  Keeps the first `num_betas` shape components (SMPL 1.1.0 files carry 300;
  AMASS SMPL-H 16; SMPL-X: shape columns only, its expression columns go to
  expr_dirs). Raises ModelFileError naming the file and the problem for
  anything wrong.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ModelFileError(path, 'no such model file (see smpl_model/README.md)')
  ext = os.path.splitext(path)[1].lower()
  if ext == '.pkl':
    raw = _read_pickle(path)
  elif ext == '.npz':
    raw = _read_npz(path, REQUIRED_KEYS + OPTIONAL_ARRAYS + ('gender',))
  else:
    raise ModelFileError(path, f'unknown model file type {ext!r}; expected .pkl or .npz')
  missing = [k for k in REQUIRED_KEYS if k not in raw]
  if missing:
    raise ModelFileError(path, f'missing SMPL keys {missing}; found {sorted(raw)}')
  try:
    arrays = {k: _to_array(raw[k]) for k in REQUIRED_KEYS + OPTIONAL_ARRAYS
              if raw.get(k) is not None}
  except Exception as e:
    raise ModelFileError(path, f'could not read arrays: {e}') from None
  return _validated_model(path, arrays, num_betas, dtype, _gender_from(path, raw))


def _validated_model(path, a, num_betas, dtype, gender):
  def bad(msg):
    return ModelFileError(path, msg)
  v_template = a['v_template']
  if v_template.ndim != 2 or v_template.shape[1] != 3:
    raise bad(f'v_template must be [V,3], got {v_template.shape}')
  num_v = v_template.shape[0]
  kintree = np.asarray(a['kintree_table']).astype(np.int64)
  if kintree.ndim != 2 or kintree.shape[0] != 2:
    raise bad(f'kintree_table must be [2,J], got {kintree.shape}')
  num_j = kintree.shape[1]
  try:
    family = fam.family_of(num_j)
  except ValueError as e:
    raise bad(f'kintree_table: {e}') from None
  parents = kintree[0].copy()
  parents[0] = -1  # the root's entry is a sentinel (2^32-1 in official files)
  if not np.array_equal(kintree[1], np.arange(num_j)) or np.any(
      parents[1:] >= np.arange(1, num_j)) or np.any(parents[1:] < 0):
    raise bad(f'kintree_table is not an {FAMILY_LABEL[family]} {num_j}-joint tree: '
              f'parents {parents.tolist()}')
  try:
    fam.fit_joint_index(parents)
  except ValueError as e:
    raise bad(f'kintree_table: {e}') from None
  shapedirs = a['shapedirs']
  if shapedirs.ndim != 3 or shapedirs.shape[:2] != (num_v, 3):
    raise bad(f'shapedirs must be [{num_v},3,B], got {shapedirs.shape}')
  num_shape = shapedirs.shape[2]
  expr_dirs = None
  if family == 'smplx':   # shape columns first, expression after
    num_shape = fam.smplx_shape_columns(shapedirs.shape[2])
    expr_dirs = shapedirs[:, :, num_shape:]
  if num_shape < num_betas:
    raise bad(f'num_betas={num_betas} but the file has only {num_shape} shape components')
  shapedirs = shapedirs[:, :, :num_betas]
  num_pose = 9 * (num_j - 1)
  posedirs = a.get('posedirs')
  if posedirs is None:
    posedirs = np.zeros((num_v, 3, num_pose))
  if posedirs.shape != (num_v, 3, num_pose):
    raise bad(f'posedirs must be [{num_v},3,{num_pose}] (9 x {num_j - 1} joints), '
              f'got {posedirs.shape}')
  j_regressor = a['J_regressor']
  if j_regressor.shape != (num_j, num_v):
    raise bad(f'J_regressor must be [{num_j},{num_v}], got {j_regressor.shape}')
  weights = a['weights']
  if weights.shape != (num_v, num_j):
    raise bad(f'weights must be [{num_v},{num_j}], got {weights.shape}')
  faces = np.asarray(a['f']).astype(np.int64)
  if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and (faces.min() < 0 or faces.max() >= num_v)):
    raise bad(f'f must be [F,3] vertex indices < {num_v}')
  means = []
  for key in ('hands_meanl', 'hands_meanr'):
    mean = a.get(key) if family != 'smpl' else None
    if mean is not None and mean.size != 45:
      raise bad(f'{key} must hold 45 values (15 joints x 3), got shape {mean.shape}')
    means.append(mean)
  for name, arr in (('v_template', v_template), ('shapedirs', shapedirs),
                    ('J_regressor', j_regressor), ('weights', weights), ('posedirs', posedirs),
                    ('hands_meanl', means[0]), ('hands_meanr', means[1])):
    if arr is not None and not np.all(np.isfinite(arr)):
      raise bad(f'{name} holds NaN or infinite values')
  rest_pose = None if family == 'smpl' else fam.neutral_pose(family, num_j, *means)
  return make_body_model(
      v_template, shapedirs, posedirs, j_regressor, weights, faces,
      parents=tuple(int(p) for p in parents), joint_names=fam.JOINT_NAMES[family],
      gender=gender, name=_model_name(path), dtype=dtype, family=family,
      rest_pose=rest_pose, expr_dirs=expr_dirs)


def save_body_model_npz(path, arrays):
  """Writes SMPL-key arrays to `path` (.npz, compressed) atomically."""
  with atomic_write(path) as tmp:
    with open(tmp, 'wb') as f:
      np.savez_compressed(f, **arrays)
