"""Generated stand-ins for the SMPL-H and SMPL-X model files users bring.

Never real model data: the bodies are the jaxfit demo body (jaxfit.demo,
CC0) with hand (and jaw / eye) joints regressed from its hand (head) rings
and skinned to them, random small pose correctives and hand statistics. The
file layouts follow ../shared/reference/smpl-family-files.md:

* `write_amass_smplh_npz`: AMASS's "extended SMPL+H" `smplh/<gender>/model.npz`
  as np.savez writes it: keys J_regressor_prior, f, J_regressor,
  kintree_table, J, weights_prior, weights, posedirs, bs_style, v_template,
  shapedirs, bs_type in that order; shapedirs [V,3,16]; dense float64
  regressor; bs_style / bs_type bytes scalars; no hands_* keys; no gender key
  (the folder names it).
* `write_mano_smplh_pkl(merged=False)`: the MANO site's `SMPLH_<gender>.pkl`:
  a Python-2 cPickle (protocol 2, BINSTRING strings, `copy_reg` /
  `__builtin__` globals), chumpy `Ch` shapedirs / v_template / J and a chumpy
  `Select` for the weights, `scipy.sparse.csc.csc_matrix` J_regressor and
  J_regressor_prior [24,V], 10 shape components, no hand keys.
* `write_mano_smplh_pkl(merged=True)`: the same after smplx's clean_ch.py and
  merge_smplh_mano.py, re-saved by Python 3 (pickle protocol 4): plain arrays,
  the sparse regressors as today's scipy pickles them
  (`scipy.sparse._csc.csc_matrix`), plus hands_components{l,r} [45,45],
  hands_coeffs{l,r} [1554,45], hands_mean{l,r} [45].
* `write_smplx_npz`: `SMPLX_<GENDER>.npz`, its 22 keys in the reported order
  (hands_meanr .. weights), including the stray `allow_pickle` key and the
  pickled dicts joint2num / part2num as 0-d object arrays; shapedirs
  [V,3,300+100] (v1.1) or [V,3,10+10] (v1.0); dense regressor.
* `write_smplx_pkl`: `SMPLX_<GENDER>.pkl`: the same keys without
  allow_pickle, a Python-3 protocol-2 pickle, f / ft uint32, the regressor
  as a scipy.sparse csc matrix.
Not verified by the facts (chosen here, see its section 7): the dtypes of f
(npz: int32 here), kintree_table (npz: int64 holding 2^32-1 at the root),
lmk_*; the SMPL-X pkl's regressor format and pickle protocol; joint2num
spellings. Sizes: the demo body's 2,688 vertices, not 6,890 / 10,475 (the
loader takes V from the file), so the files stay small.
"""

import io
import os
import pickle
import zipfile

import numpy as np
import scipy.sparse

from jaxfit.body import family as fam
from jaxfit.demo import body_model as demo
from tests.smpl_files import Ch, OldScipyCsc, Select, _fake_modules, _Python2Pickler  # pylint: disable=protected-access

_U = demo._VERTS_PER_RING      # pylint: disable=protected-access
_R = demo._RINGS_PER_BONE      # pylint: disable=protected-access
_BONES = demo._BONES           # pylint: disable=protected-access
_PER_BONE = _U * _R


def _bone(a, b):
  return _BONES.index((a, b))


def _ring(bone, ring):
  """Vertex ids of one ring of one bone of the demo mesh."""
  start = bone * _PER_BONE + ring * _U
  return np.arange(start, start + _U)


def _ring_point_row(num_v, bone, ring, k):
  """A regressor row: half the ring's centre, half its vertex k."""
  row = np.zeros(num_v)
  row[_ring(bone, ring)] = 0.5 / _U
  row[_ring(bone, ring)[k % _U]] += 0.5
  return row


def family_arrays(family, num_betas=16, num_expression=0, seed=0):
  """SMPL-H ('smplh') or SMPL-X ('smplx') arrays under the files' keys.

  v_template [V,3]; shapedirs [V,3,num_betas+num_expression] (SMPL-X: shape
  then expression columns); posedirs [V,3,9*(J-1)]; J_regressor [J,V];
  weights [V,J]; kintree_table [2,J] uint32 (root 2^32-1); f [F,3] uint32;
  J [J,3]; hands_mean{l,r} [45]; hands_components{l,r} [45,45];
  hands_coeffs{l,r} [1554,45]; plus the demo body's 24-joint regressor and
  weights as J_regressor_prior / weights_prior. float64.
  """
  rng = np.random.default_rng(seed)
  base = demo.demo_body_arrays(min(num_betas, 16))
  num_v = len(base['v_template'])
  parents = fam.PARENTS[family]
  num_j = len(parents)
  shapedirs = base['shapedirs']
  if num_betas > shapedirs.shape[2]:
    shapedirs = np.concatenate([shapedirs, rng.normal(
        scale=1e-3, size=(num_v, 3, num_betas - shapedirs.shape[2]))], 2)
  if num_expression:   # expression moves the head only
    expr = np.zeros((num_v, 3, num_expression))
    head = np.arange(_bone('head', 'head_top') * _PER_BONE, (_bone('head', 'head_top') + 1) * _PER_BONE)
    expr[head] = rng.normal(scale=2e-3, size=(len(head), 3, num_expression))
    shapedirs = np.concatenate([shapedirs, expr], 2)
  regressor = np.zeros((num_j, num_v))
  regressor[:fam.NUM_BODY_JOINTS] = base['J_regressor'][:fam.NUM_BODY_JOINTS]
  weights = np.zeros((num_v, num_j))
  weights[:, :fam.NUM_BODY_JOINTS] = base['weights'][:, :fam.NUM_BODY_JOINTS]
  starts = fam.HAND_START[family]
  for side, start, old in (('left', starts[0], 22), ('right', starts[1], 23)):
    finger_bone = _bone(f'{side}_hand', f'{side}_fingertip')
    for f in range(5):
      for seg in range(3):
        regressor[start + 3 * f + seg] = _ring_point_row(num_v, finger_bone, 3 * seg, 2 * f + 1)
    # The demo's hand weights go to the finger joint of each vertex's sector / ring.
    for v in np.flatnonzero(base['weights'][:, old]):
      bone, rest = divmod(v, _PER_BONE)
      ring, k = divmod(rest, _U)
      seg = min(ring // 3, 2) if bone == finger_bone else 0
      weights[v, start + 3 * ((k // 2) % 5) + seg] += base['weights'][v, old]
  if family == 'smplx':
    head_bone = _bone('head', 'head_top')
    for j, (ring, k) in zip((22, 23, 24), ((1, 0), (3, 2), (3, 10))):
      regressor[j] = _ring_point_row(num_v, head_bone, ring, k)
    for ring in (0, 1, 2):        # the jaw carries the front of the lower head
      for k in (11, 0, 1):
        v = _ring(head_bone, ring)[k]
        weights[v, 22] += 0.5 * weights[v, 15]
        weights[v, 15] *= 0.5
    for j, k in ((23, 2), (24, 10)):
      v = _ring(head_bone, 3)[k]
      weights[v, j], weights[v, 15] = weights[v, 15], 0.0
  assert np.allclose(weights.sum(1), 1.0)
  # A relaxed hand: every finger joint flexed a little (generated, not MANO's).
  flex = np.array([0.0, 0.0, 1.0])
  hands_mean = {}
  for side, sign in (('l', 1.0), ('r', -1.0)):
    mean = np.tile(sign * 0.25 * flex, (15, 1)) + rng.normal(scale=0.05, size=(15, 3))
    hands_mean[side] = mean.reshape(45)
  components = {s: np.linalg.qr(rng.normal(size=(45, 45)))[0] for s in 'lr'}
  coeffs = {s: rng.normal(scale=0.3, size=(1554, 45)) for s in 'lr'}
  kintree = np.stack([np.array(parents, np.int64) % 2**32, np.arange(num_j)]).astype(np.uint32)
  v_template = base['v_template']
  return dict(
      v_template=v_template, shapedirs=shapedirs,
      posedirs=rng.normal(scale=1e-4, size=(num_v, 3, 9 * (num_j - 1))),
      J_regressor=regressor, weights=weights, kintree_table=kintree, f=base['f'],
      J=regressor @ v_template, J_regressor_prior=base['J_regressor'],
      weights_prior=base['weights'],
      hands_meanl=hands_mean['l'], hands_meanr=hands_mean['r'],
      hands_componentsl=components['l'], hands_componentsr=components['r'],
      hands_coeffsl=coeffs['l'], hands_coeffsr=coeffs['r'])


def _savez_members(path, items):
  """Writes (key, array) pairs as np.savez does (one stored .npy member per
  key, in order), whatever the key: np.savez itself may take `allow_pickle`
  as its own argument."""
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    for key, value in items:
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=True)
      archive.writestr(key + '.npy', buf.getvalue())


def _npz_kintree(arrays):
  return arrays['kintree_table'].astype(np.int64)


def write_amass_smplh_npz(directory, arrays, gender='neutral'):
  """`<directory>/smplh/<gender>/model.npz`; returns its path."""
  folder = os.path.join(directory, 'smplh', gender)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, 'model.npz')
  a = arrays
  np.savez(path, J_regressor_prior=a['J_regressor_prior'], f=a['f'], J_regressor=a['J_regressor'],
           kintree_table=_npz_kintree(a), J=a['J'], weights_prior=a['weights_prior'],
           weights=a['weights'], posedirs=a['posedirs'], bs_style=np.array(b'lbs'),
           v_template=a['v_template'], shapedirs=a['shapedirs'][:, :, :16],
           bs_type=np.array(b'lrotmin'))
  return path


def _smplh_objects(a, merged):
  """The dict in a MANO-site SMPL-H pkl (chumpy) or its merged re-save."""
  shapedirs = a['shapedirs'][:, :, :10]
  if not merged:
    weights = a['weights']
    return dict(
        v_template=Ch(a['v_template']), shapedirs=Ch(shapedirs), posedirs=a['posedirs'],
        J_regressor=OldScipyCsc(a['J_regressor']),
        J_regressor_prior=OldScipyCsc(a['J_regressor_prior']),
        weights=Select(Ch(weights.ravel()), np.arange(weights.size), weights.shape),
        weights_prior=a['weights_prior'], kintree_table=a['kintree_table'].astype(np.int64),
        f=a['f'], J=Ch(a['J']), bs_style='lbs', bs_type='lrotmin')
  out = dict(
      v_template=a['v_template'], shapedirs=shapedirs, posedirs=a['posedirs'],
      J_regressor=scipy.sparse.csc_matrix(a['J_regressor']),
      J_regressor_prior=scipy.sparse.csc_matrix(a['J_regressor_prior']),
      weights=a['weights'], weights_prior=a['weights_prior'],
      kintree_table=a['kintree_table'].astype(np.int64), f=a['f'], J=a['J'],
      bs_style='lbs', bs_type='lrotmin')
  for side in 'lr':
    for key in ('hands_components', 'hands_coeffs', 'hands_mean'):
      out[key + side] = a[key + side]
  return out


def write_mano_smplh_pkl(path, arrays, merged=False):
  """`SMPLH_<gender>.pkl` of the MANO site (merged=False) or after smplx's
  clean / merge tools (merged=True)."""
  buf = io.BytesIO()
  if merged:
    pickle.dump(_smplh_objects(arrays, True), buf, protocol=4)
  else:
    undo = _fake_modules()
    try:
      _Python2Pickler(buf, protocol=2).dump(_smplh_objects(arrays, False))
    finally:
      undo()
  with open(path, 'wb') as f:
    f.write(buf.getvalue())
  return path


def _smplx_items(a, rng, for_pkl):
  num_f = len(a['f'])
  num_vt = len(a['v_template']) + 40
  names = {n: i for i, n in enumerate(fam.SMPLX_JOINT_NAMES)}
  parts = {p: i for i, p in enumerate(('global', 'head', 'leftCalf', 'rightCalf', 'leftHand',
                                       'rightHand', 'spine'))}
  faces_dtype = np.uint32 if for_pkl else np.int32
  regressor = scipy.sparse.csc_matrix(a['J_regressor']) if for_pkl else a['J_regressor']
  as_dict = (lambda d: d) if for_pkl else (lambda d: np.array(d, dtype=object))
  items = [
      ('hands_meanr', a['hands_meanr']), ('hands_meanl', a['hands_meanl']),
      ('lmk_bary_coords', rng.dirichlet(np.ones(3), 51)), ('vt', rng.uniform(size=(num_vt, 2))),
      ('posedirs', a['posedirs']), ('part2num', as_dict(parts)),
      ('hands_coeffsr', a['hands_coeffsr']), ('lmk_faces_idx', rng.integers(0, num_f, 51)),
      ('J_regressor', regressor),
      ('dynamic_lmk_faces_idx', rng.integers(0, num_f, (79, 17))),
      ('hands_componentsr', a['hands_componentsr']), ('shapedirs', a['shapedirs']),
      ('dynamic_lmk_bary_coords', rng.dirichlet(np.ones(3), (79, 17))),
      ('ft', rng.integers(0, num_vt, (num_f, 3)).astype(faces_dtype)),
      ('hands_componentsl', a['hands_componentsl']), ('joint2num', as_dict(names)),
      ('v_template', a['v_template']), ('allow_pickle', np.array(True)),
      ('f', a['f'].astype(faces_dtype)), ('hands_coeffsl', a['hands_coeffsl']),
      ('kintree_table', _npz_kintree(a)), ('weights', a['weights'])]
  if for_pkl:
    items = [(k, v) for k, v in items if k != 'allow_pickle']
  return items


def write_smplx_npz(path, arrays, seed=0):
  """`SMPLX_<GENDER>.npz` (arrays from family_arrays('smplx', ...))."""
  _savez_members(path, _smplx_items(arrays, np.random.default_rng(seed), for_pkl=False))
  return path


def write_smplx_pkl(path, arrays, seed=0):
  """`SMPLX_<GENDER>.pkl`: Python 3, protocol 2."""
  items = _smplx_items(arrays, np.random.default_rng(seed), for_pkl=True)
  with open(path, 'wb') as f:
    pickle.dump(dict(items), f, protocol=2)
  return path
