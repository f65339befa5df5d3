"""Generator of the openly licensed 'jaxfit demo body' in the SMPL file format.

This is NOT SMPL. It is a coarse body built here from published anthropometric
segment proportions of stature (Winter, Biomechanics and Motor Control of Human
Movement, 4th ed., segment-length fractions of height H), with SMPL's 24-joint
tree and file keys, so that jaxfit runs, and its real loader path is tested,
without the licence-restricted SMPL files.

  * joints in T-pose, metres, +Y up, facing +Z, subject's left at +X;
  * a mesh of tapered rings along every bone ('tube' segments) with smooth
    linear-blend-skinning weights (rows sum to 1);
  * J_regressor rows that average the ring of vertices centred on each joint,
    so they reproduce the joints exactly for every shape;
  * 10 shapedirs from a PCA of a synthetic population (stature, leg and arm
    ratios, shoulder and hip width, trunk length, girth), scaled so that
    betas ~ N(0, I); beta 0 is mostly stature (taller for positive beta 0);
  * posedirs all zero.

Deterministic (fixed seed), pure NumPy, well under a second.
Licence: CC0 1.0 (public domain dedication), like the rest of this generator's output.
"""

import os
import sys

import numpy as np

from jaxfit.body.model import NUM_JOINTS, NUM_POSE_BLEND, SMPL_JOINT_NAMES, SMPL_PARENTS
from jaxfit.io.smpl_file import save_body_model_npz
from jaxfit.runtime.files import cache_root

DEMO_MODEL_NAME = 'jaxfit_demo_body_v1'
_RINGS_PER_BONE = 8
_VERTS_PER_RING = 12
_POPULATION = 600
_SEED = 20261125

# Bones of the mesh: (proximal joint, distal joint or end point). The vertices
# of a bone follow the proximal joint's rotation, as in SMPL.
_J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
_END_POINTS = ('head_top', 'left_fingertip', 'right_fingertip', 'left_toe_tip',
               'right_toe_tip')
_BONES = (
    ('pelvis', 'spine1'), ('pelvis', 'left_hip'), ('pelvis', 'right_hip'),
    ('left_hip', 'left_knee'), ('right_hip', 'right_knee'),
    ('left_knee', 'left_ankle'), ('right_knee', 'right_ankle'),
    ('left_ankle', 'left_foot'), ('right_ankle', 'right_foot'),
    ('left_foot', 'left_toe_tip'), ('right_foot', 'right_toe_tip'),
    ('spine1', 'spine2'), ('spine2', 'spine3'), ('spine3', 'neck'),
    ('spine3', 'left_collar'), ('spine3', 'right_collar'),
    ('neck', 'head'), ('head', 'head_top'),
    ('left_collar', 'left_shoulder'), ('right_collar', 'right_shoulder'),
    ('left_shoulder', 'left_elbow'), ('right_shoulder', 'right_elbow'),
    ('left_elbow', 'left_wrist'), ('right_elbow', 'right_wrist'),
    ('left_wrist', 'left_hand'), ('right_wrist', 'right_hand'),
    ('left_hand', 'left_fingertip'), ('right_hand', 'right_fingertip'),
)
# The ring that regresses each joint: the first ring of this bone.
_REGRESSOR_BONE = {
    'pelvis': 0, 'left_hip': 3, 'right_hip': 4, 'spine1': 11, 'left_knee': 5,
    'right_knee': 6, 'spine2': 12, 'left_ankle': 7, 'right_ankle': 8,
    'spine3': 13, 'left_foot': 9, 'right_foot': 10, 'neck': 16,
    'left_collar': 18, 'right_collar': 19, 'head': 17, 'left_shoulder': 20,
    'right_shoulder': 21, 'left_elbow': 22, 'right_elbow': 23,
    'left_wrist': 24, 'right_wrist': 25, 'left_hand': 26, 'right_hand': 27}


def _population(rng, n):
  """Body descriptors of n synthetic adults; row 0 is the population mean."""
  z = rng.standard_normal((n, 9))
  z[0] = 0.0
  stature = 1.70 + 0.095 * z[:, 0]
  return dict(
      stature=stature,
      leg=1.0 + 0.025 * z[:, 1],           # hip height / (0.53 H)
      trunk=1.0 - 0.5 * 0.025 * z[:, 1] + 0.02 * z[:, 2],
      arm=1.0 + 0.035 * z[:, 3],
      shoulder=1.0 + 0.06 * z[:, 4],
      hip=1.0 + 0.07 * z[:, 5],
      girth=1.0 + 0.14 * z[:, 6],
      foot=1.0 + 0.05 * z[:, 7],
      head=1.0 + 0.04 * z[:, 8],
  )


def _joints_and_ends(p):
  """Rest joints [N,24,3] and end points [N,5,3] (metres) from descriptors."""
  h = p['stature'][:, None]
  n = h.shape[0]
  leg, trunk, arm = p['leg'][:, None], p['trunk'][:, None], p['arm'][:, None]
  sh, hip, foot, head = (p['shoulder'][:, None], p['hip'][:, None],
                         p['foot'][:, None], p['head'][:, None])
  y_hip = 0.530 * h * leg
  y_shoulder = y_hip + 0.288 * h * trunk
  trunk_len = y_shoulder - y_hip
  pts = {}
  def put(name, x, y, z):
    pts[name] = np.concatenate([np.broadcast_to(v, (n, 1)) for v in (x, y, z)], 1)
  put('pelvis', 0.0, y_hip + 0.12 * trunk_len, -0.005 * h)
  for side, s in (('left', 1.0), ('right', -1.0)):
    put(f'{side}_hip', s * 0.052 * h * hip, y_hip, 0.0)
    put(f'{side}_knee', s * 0.050 * h * hip, 0.285 * h * leg, 0.004 * h)
    put(f'{side}_ankle', s * 0.047 * h * hip, 0.039 * h, -0.012 * h)
    put(f'{side}_foot', s * 0.052 * h * hip, 0.012 * h, -0.012 * h + 0.085 * h * foot)
    put(f'{side}_toe_tip', s * 0.054 * h * hip, 0.008 * h, -0.012 * h + 0.118 * h * foot)
    put(f'{side}_collar', s * 0.030 * h * sh, y_shoulder - 0.010 * h, -0.010 * h)
    x_sh = 0.130 * h * sh
    put(f'{side}_shoulder', s * x_sh, y_shoulder, -0.012 * h)
    x_el = x_sh + 0.186 * h * arm
    put(f'{side}_elbow', s * x_el, y_shoulder, -0.016 * h)
    x_wr = x_el + 0.146 * h * arm
    put(f'{side}_wrist', s * x_wr, y_shoulder, -0.012 * h)
    put(f'{side}_hand', s * (x_wr + 0.054 * h * arm), y_shoulder, -0.012 * h)
    put(f'{side}_fingertip', s * (x_wr + 0.108 * h * arm), y_shoulder, -0.012 * h)
  put('spine1', 0.0, y_hip + 0.40 * trunk_len, -0.010 * h)
  put('spine2', 0.0, y_hip + 0.62 * trunk_len, -0.006 * h)
  put('spine3', 0.0, y_hip + 0.76 * trunk_len, -0.002 * h)
  put('neck', 0.0, y_shoulder + 0.045 * h, -0.014 * h)
  put('head', 0.0, y_shoulder + 0.090 * h * head, -0.006 * h)
  put('head_top', 0.0, y_shoulder + 0.182 * h * head, -0.004 * h)
  joints = np.stack([pts[name] for name in SMPL_JOINT_NAMES], 1)
  ends = np.stack([pts[name] for name in _END_POINTS], 1)
  return joints, ends


def _radii(p, h):
  """Ring radii (start, end) per bone, metres: [N, bones, 2]."""
  base = {  # fractions of stature, for a mean build
      'spine1': (0.080, 0.078), 'left_hip': (0.050, 0.050), 'right_hip': (0.050, 0.050),
      'left_knee': (0.040, 0.028), 'right_knee': (0.040, 0.028),
      'left_ankle': (0.026, 0.018), 'right_ankle': (0.026, 0.018),
      'left_foot': (0.020, 0.016), 'right_foot': (0.020, 0.016),
      'left_toe_tip': (0.016, 0.010), 'right_toe_tip': (0.016, 0.010),
      'spine2': (0.078, 0.080), 'spine3': (0.080, 0.082), 'neck': (0.034, 0.030),
      'left_collar': (0.040, 0.036), 'right_collar': (0.040, 0.036),
      'head': (0.030, 0.052), 'head_top': (0.052, 0.020),
      'left_shoulder': (0.030, 0.030), 'right_shoulder': (0.030, 0.030),
      'left_elbow': (0.024, 0.022), 'right_elbow': (0.024, 0.022),
      'left_wrist': (0.020, 0.016), 'right_wrist': (0.020, 0.016),
      'left_hand': (0.016, 0.018), 'right_hand': (0.016, 0.018),
      'left_fingertip': (0.016, 0.008), 'right_fingertip': (0.016, 0.008),
  }
  r = np.array([base[child] for _, child in _BONES])  # [bones, 2]
  return h[:, None, None] * p['girth'][:, None, None] * r[None]


def _frame(direction):
  """Unit vectors perpendicular to direction [N,3] -> two [N,3] arrays."""
  d = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
  helper = np.where(np.abs(d[:, 1:2]) < 0.9, [[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]])
  e1 = np.cross(d, helper)
  e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
  return e1, np.cross(d, e1)


def _mesh(joints, ends, radii):
  """Vertices [N,V,3] of every member; same topology for all."""
  points = np.concatenate([joints, ends], 1)
  index = {n: i for i, n in enumerate(SMPL_JOINT_NAMES + _END_POINTS)}
  s = np.linspace(0.0, 1.0, _RINGS_PER_BONE)
  u = 2 * np.pi * np.arange(_VERTS_PER_RING) / _VERTS_PER_RING
  out = []
  for b, (a_name, c_name) in enumerate(_BONES):
    a, c = points[:, index[a_name]], points[:, index[c_name]]
    e1, e2 = _frame(c - a)
    centre = a[:, None] + s[None, :, None] * (c - a)[:, None]            # [N,R,3]
    r = radii[:, b, 0:1] + s[None] * (radii[:, b, 1:2] - radii[:, b, 0:1])  # [N,R]
    offset = (np.cos(u)[None, :, None] * e1[:, None] +
              np.sin(u)[None, :, None] * e2[:, None])                      # [N,U,3]
    out.append((centre[:, :, None] + r[:, :, None, None] * offset[:, None]
                ).reshape(len(a), -1, 3))
  return np.concatenate(out, 1)


def _topology():
  """Faces [F,3], skinning weights [V,24] and J_regressor [24,V]."""
  per_bone = _RINGS_PER_BONE * _VERTS_PER_RING
  num_v = per_bone * len(_BONES)
  faces = []
  for b in range(len(_BONES)):
    base = b * per_bone
    for i in range(_RINGS_PER_BONE - 1):
      for k in range(_VERTS_PER_RING):
        a = base + i * _VERTS_PER_RING + k
        bb = base + i * _VERTS_PER_RING + (k + 1) % _VERTS_PER_RING
        faces += [(a, bb, a + _VERTS_PER_RING), (bb, bb + _VERTS_PER_RING, a + _VERTS_PER_RING)]
  weights = np.zeros((num_v, NUM_JOINTS))
  s = np.repeat(np.linspace(0.0, 1.0, _RINGS_PER_BONE), _VERTS_PER_RING)
  band = 0.25
  for b, (a_name, c_name) in enumerate(_BONES):
    rows = slice(b * per_bone, (b + 1) * per_bone)
    owner = _J[a_name]
    w = np.zeros((per_bone, NUM_JOINTS))
    to_parent = np.where(s < band, 0.5 * (1 - s / band), 0.0) if SMPL_PARENTS[owner] >= 0 else 0 * s
    to_child = (np.where(s > 1 - band, 0.5 * (s - (1 - band)) / band, 0.0)
                if c_name in _J else 0 * s)
    if SMPL_PARENTS[owner] >= 0:
      w[:, SMPL_PARENTS[owner]] += to_parent
    if c_name in _J:
      w[:, _J[c_name]] += to_child
    w[:, owner] += 1.0 - to_parent - to_child
    weights[rows] = w
  j_regressor = np.zeros((NUM_JOINTS, num_v))
  for name, b in _REGRESSOR_BONE.items():
    assert _BONES[b][0] == name, (name, _BONES[b])
    start = b * per_bone
    j_regressor[_J[name], start:start + _VERTS_PER_RING] = 1.0 / _VERTS_PER_RING
  return np.asarray(faces, np.uint32), weights, j_regressor


def demo_body_arrays(num_betas=10):
  """All arrays of the demo body under the official SMPL keys (float64)."""
  rng = np.random.default_rng(_SEED)
  p = _population(rng, _POPULATION)
  joints, ends = _joints_and_ends(p)
  verts = _mesh(joints, ends, _radii(p, p['stature']))      # [N,V,3]
  flat = verts.reshape(len(verts), -1)
  mean = flat.mean(0)
  _, sigma, vt = np.linalg.svd(flat - mean, full_matrices=False)
  scale = sigma[:num_betas] / np.sqrt(len(flat) - 1)
  components = vt[:num_betas] * scale[:, None]             # [B, V*3]
  # Sign convention: positive betas make the body taller / larger.
  heights = flat.reshape(len(flat), -1, 3)[:, :, 1]
  stature_dir = (heights.max(1) - heights.min(1))
  coeff = (flat - mean) @ vt[:num_betas].T
  signs = np.sign([np.corrcoef(coeff[:, k], stature_dir)[0, 1] or 1.0
                   for k in range(num_betas)])
  components *= signs[:, None]
  num_v = verts.shape[1]
  faces, weights, j_regressor = _topology()
  kintree = np.stack([np.array(SMPL_PARENTS, np.int64) % (2**32),
                      np.arange(NUM_JOINTS)]).astype(np.uint32)
  v_template = mean.reshape(num_v, 3)
  return dict(
      v_template=v_template,
      shapedirs=components.T.reshape(num_v, 3, num_betas),
      posedirs=np.zeros((num_v, 3, NUM_POSE_BLEND)),
      J_regressor=j_regressor,
      weights=weights,
      kintree_table=kintree,
      f=faces,
      J=j_regressor @ v_template,
      joint_names=np.array(SMPL_JOINT_NAMES),
      model_name=np.array(DEMO_MODEL_NAME),
      gender=np.array('neutral'),
      licence=np.array('CC0-1.0; jaxfit demo body, not SMPL'),
  )


def variant_body_arrays(seed=0, spectrum=(3.0, 1.5, 0.6, 0.25, 0.12, 0.06, 0.04, 0.03, 0.02, 0.01)):
  """The demo body with a different shape space: its shape directions mixed
  by a random matrix with the given singular values (a few strong, many weak
  components, unlike the demo body's PCA). For tests and benchmarks that need
  a second SMPL-layout model; same mesh, joints and skinning."""
  rng = np.random.default_rng(seed)
  arrays = demo_body_arrays(len(spectrum))
  q1, _ = np.linalg.qr(rng.normal(size=(len(spectrum),) * 2))
  q2, _ = np.linalg.qr(rng.normal(size=(len(spectrum),) * 2))
  mix = q1 @ np.diag(spectrum) @ q2
  arrays = dict(arrays, shapedirs=np.einsum('vcb,bd->vcd', arrays['shapedirs'], mix))
  arrays['licence'] = np.array(str(arrays.get('licence', '')) + ' (shape-space variant for tests)')
  return arrays


def demo_body_path(directory=None):
  """Where the generated demo body is cached (created on first use)."""
  directory = directory or cache_root()
  return os.path.join(directory, DEMO_MODEL_NAME + '.npz')


def ensure_demo_body(directory=None):
  """Writes the demo body .npz (atomically) if absent; returns its path."""
  path = demo_body_path(directory)
  if not os.path.isfile(path):
    save_body_model_npz(path, demo_body_arrays())
  return path


if __name__ == '__main__':
  target = sys.argv[1] if len(sys.argv) > 1 else 'smpl_model'
  print(ensure_demo_body(target))
