"""Byte-faithful stand-ins for the SMPL model files users bring (no real chumpy).

* `official`: `basicmodel_*_lbs_10_207_0_v1.*.pkl` as written by Python 2
  (cPickle, protocol 2): Python-2 module names (`copy_reg`, `__builtin__`),
  byte strings as Python-2 `str` opcodes (BINSTRING), chumpy `Ch` objects
  (module `chumpy.ch`) built by NEWOBJ whose state is the dict
  {x, _dirty_vars: set(), _itr: None, _depends_on_deps: {}}, a
  `chumpy.reordering.Select`, and the J_regressor as a
  `scipy.sparse.csc.csc_matrix` (the old module path).
* `py3_protocol2` / `py3_protocol3` / `py3_protocol4`: the same objects
  re-saved by Python 3 (bytes as `_codecs.encode`, `__builtin__.set` under
  protocol 2; `builtins.set` under 3; the EMPTY_SET opcode under 4).
* `smplx_clean`: the chumpy-free pickle of smplx's `tools/clean_ch.py`
  (Python 2 `pickle.dump`, protocol 0: text opcodes), plain arrays and the
  sparse J_regressor left as it was.
* `write_smplx_npz`: `SMPL_{NEUTRAL,MALE,FEMALE}.npz` as written by
  `np.savez(**model)`: dense arrays, string arrays, and the sparse
  J_regressor as a 0-d object array (a pickle inside the .npy member).
"""

import copyreg
import io
import pickle
import struct
import sys
import types

import numpy as np
import scipy.sparse

FLAVOURS = ('official', 'py3_protocol2', 'py3_protocol3', 'py3_protocol4', 'smplx_clean')


class Ch:
  """Pickles like chumpy.ch.Ch: NEWOBJ of `chumpy.ch.Ch`, then its state dict."""

  def __init__(self, x):
    self.x = np.asarray(x)

  def __reduce_ex__(self, protocol):
    state = {'x': self.x, '_dirty_vars': set(), '_itr': None, '_depends_on_deps': {}}
    return copyreg.__newobj__, (type(self),), state


class Select:
  """Pickles like chumpy.reordering.Select (a view of another Ch by indices)."""

  def __init__(self, a, idxs, shape):
    self.a, self.idxs, self.preferred_shape = a, idxs, shape

  def __reduce_ex__(self, protocol):
    state = {'a': self.a, 'idxs': self.idxs, 'preferred_shape': self.preferred_shape,
             '_dirty_vars': set(), '_itr': None, '_depends_on_deps': {}}
    return copyreg.__newobj__, (type(self),), state


class OldScipyCsc(scipy.sparse.csc_matrix):
  """A csc_matrix that pickles under Python 2 scipy's module path."""

  def __reduce_ex__(self, protocol):
    state = {'_shape': self.shape, 'maxprint': 50, 'indices': self.indices,
             'indptr': self.indptr, 'data': self.data, 'format': 'csc'}
    if protocol < 2:
      return copyreg._reconstructor, (type(self), object, None), state  # pylint: disable=protected-access
    return copyreg.__newobj__, (type(self),), state


_HEX = np.frombuffer(b'0123456789abcdef', np.uint8)


def _escaped(data: bytes) -> bytes:
  """Python 2's protocol-0 STRING body: printable ASCII but quote and
  backslash as itself, every other byte as \\xNN (vectorised: the arrays
  are hundreds of MB)."""
  if not data:
    return b''
  c = np.frombuffer(data, np.uint8)
  plain = (c >= 32) & (c < 127) & (c != 39) & (c != 92)
  start = np.concatenate([[0], np.cumsum(np.where(plain, 1, 4))[:-1]])
  out = np.empty(int(start[-1]) + (1 if plain[-1] else 4), np.uint8)
  out[start[plain]] = c[plain]
  s = start[~plain]
  e = c[~plain]
  out[s], out[s + 1], out[s + 2], out[s + 3] = ord('\\'), ord('x'), _HEX[e >> 4], _HEX[e & 15]
  return out.tobytes()


class _Python2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes every str/bytes as a Python-2 `str` (BINSTRING, or STRING under
  protocol 0), as Python 2's cPickle did for byte strings."""

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def save_py2_str(self, obj):
    data = obj.encode('latin1') if isinstance(obj, str) else bytes(obj)
    if self.proto == 0:
      self.write(b"S'" + _escaped(data) + b"'\n")
    elif len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
    self.memoize(obj)

  dispatch[str] = save_py2_str
  dispatch[bytes] = save_py2_str


def _fake_modules():
  """Registers chumpy and old scipy module names while dumping; returns an undo."""
  ch = types.ModuleType('chumpy.ch')
  reordering = types.ModuleType('chumpy.reordering')
  csc = types.ModuleType('scipy.sparse.csc')
  Ch.__module__, Ch.__qualname__ = 'chumpy.ch', 'Ch'
  Select.__module__, Select.__qualname__ = 'chumpy.reordering', 'Select'
  OldScipyCsc.__module__, OldScipyCsc.__qualname__ = 'scipy.sparse.csc', 'csc_matrix'
  ch.Ch, reordering.Select, csc.csc_matrix = Ch, Select, OldScipyCsc
  added = {'chumpy': types.ModuleType('chumpy'), 'chumpy.ch': ch,
           'chumpy.reordering': reordering, 'scipy.sparse.csc': csc}
  saved = {k: sys.modules.get(k) for k in added}
  sys.modules.update(added)

  def undo():
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
  return undo


def official_objects(arrays, num_pcs=300, chumpy=True):
  """The dict an official SMPL pickle holds (chumpy objects when `chumpy`)."""
  rng = np.random.default_rng(1)
  shapedirs = arrays['shapedirs']
  if num_pcs > shapedirs.shape[2]:
    shapedirs = np.concatenate([shapedirs, rng.normal(
        scale=1e-3, size=shapedirs.shape[:2] + (num_pcs - shapedirs.shape[2],))], 2)
  weights = arrays['weights']
  j = arrays['J_regressor'] @ arrays['v_template']
  wrap = Ch if chumpy else np.asarray
  return dict(
      v_template=wrap(arrays['v_template']),
      shapedirs=wrap(shapedirs),
      posedirs=arrays['posedirs'],
      J_regressor=OldScipyCsc(arrays['J_regressor']),
      J_regressor_prior=OldScipyCsc(arrays['J_regressor']),
      weights=(Select(Ch(weights.ravel()), np.arange(weights.size), weights.shape)
               if chumpy else weights),
      weights_prior=weights,
      kintree_table=arrays['kintree_table'], f=arrays['f'], J=wrap(j),
      vert_sym_idxs=np.arange(len(arrays['v_template'])),
      bs_style='lbs', bs_type='lrotmin',
      pose_training_info={'num_subjects': 40, 'num_poses': 1786})


def write_model_pkl(path, arrays, flavour='official', num_pcs=300):
  """Writes a model pickle of one of FLAVOURS to `path`."""
  undo = _fake_modules()
  try:
    buf = io.BytesIO()
    if flavour == 'official':
      _Python2Pickler(buf, protocol=2).dump(official_objects(arrays, num_pcs))
    elif flavour == 'smplx_clean':
      _Python2Pickler(buf, protocol=0).dump(official_objects(arrays, num_pcs, chumpy=False))
    elif flavour.startswith('py3_protocol'):
      pickle.dump(official_objects(arrays, num_pcs), buf, protocol=int(flavour[-1]))
    else:
      raise ValueError(flavour)
  finally:
    undo()
  with open(path, 'wb') as f:
    f.write(buf.getvalue())


def write_smplx_npz(path, arrays, gender='neutral'):
  """`SMPL_<GENDER>.npz` as np.savez(**model) writes it (sparse J_regressor as
  a 0-d object array)."""
  np.savez(path, v_template=arrays['v_template'], shapedirs=arrays['shapedirs'],
           posedirs=arrays['posedirs'], J_regressor=np.asarray(scipy.sparse.csc_matrix(arrays['J_regressor']), dtype=object),
           weights=arrays['weights'], kintree_table=arrays['kintree_table'], f=arrays['f'],
           J=arrays['J_regressor'] @ arrays['v_template'], gender=np.array(gender),
           bs_style=np.array('lbs'), bs_type=np.array('lrotmin'))
