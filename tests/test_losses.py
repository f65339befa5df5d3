"""Every loss term against an independent float64 NumPy reference, on a block with
padding, missing and gap-filled joints, contact and a valid anchor frame: a wrong
mask, a wrong anchor, a wrong normaliser or a wrong formula changes the number."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit.body.model import joint_model, shaped_joints
from jaxfit.fit.types import LOSS_TERMS, Anchor, FitParams, FitStructure, Targets
from jaxfit.data.prepare import mapped_bones
from tests import numpy_reference
from tests.conftest import term_losses

SMPL_INDEX = (0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 16, 17, 18, 19, 20, 21)
LEFT_FOOT, RIGHT_FOOT = (6, 8), (7, 9)   # mapped indices of (ankle, foot) per side
K = 7
OFFSET_JOINTS = (0, 3, 8, 10)   # mapped indices with a learned correspondence offset
SEGMENT_JOINTS = (0, 1, 4, 7, 9, 10, 16, 18, 21)   # SMPL joints with an orientation target


def _rotation(v):
  return numpy_reference.rotation(v)


def reference_losses(joints_fn, params, targets, anchor, structure):
  """dict term -> loss, float64 NumPy, from the definitions in losses.py's docstrings."""
  poses, trans, betas = (np.asarray(params.poses, np.float64), np.asarray(params.trans, np.float64),
                         np.asarray(params.betas, np.float64))
  t = {k: np.asarray(v, np.float64) for k, v in targets.__dict__.items()}
  pred = np.stack([joints_fn(poses[k], trans[k]) for k in range(K)])
  e = t['exists']
  real = e.sum()
  m = len(structure.smpl_index)
  bones = structure.bones
  out = {}
  out['position'] = np.sum(t['weight'][..., None] * (pred - t['joints']) ** 2) / (real * m)
  world = np.stack([joints_fn(poses[k], trans[k], rotations=True) for k in range(K)])
  g = world[:, list(structure.segment_joints)]
  out['orientation'] = (np.sum(t['seg_weight'][..., None, None] * (g - t['seg_rot']) ** 2) / 2
                        / (real * len(structure.segment_joints)))
  bw = np.array([[min(t['observed'][k, p], t['observed'][k, c]) for p, c in bones] for k in range(K)])
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  vec = lambda x: np.stack([x[:, c] - x[:, p] for p, c in bones], 1)
  out['bone_direction'] = np.sum(bw[..., None] * (unit(vec(pred)) - unit(vec(t['joints']))) ** 2) / (real * len(bones))
  lengths = lambda x: np.linalg.norm(vec(x), axis=-1)
  out['bone_length'] = np.sum(bw * (lengths(pred) - lengths(t['joints'])) ** 2) / (real * len(bones))
  lp = lengths(pred)
  mean = (e[:, None] * lp).sum(0) / real
  out['bone_length_consistency'] = np.sum(e[:, None] * (lp - mean) ** 2) / (real * len(bones))
  out['pose_reg'] = np.sum(e[:, None, None] * poses[:, 1:] ** 2) / (real * 69)
  out['trans_reg'] = np.sum(e[:, None] * (trans - t['trans_prior']) ** 2) / (real * 3)
  out['shape_prior'] = np.sum(betas ** 2) / len(betas)
  offsets = np.asarray(params.offsets, np.float64)[list(structure.offset_joints)]
  out['offset_prior'] = np.sum(offsets ** 2) / offsets.size
  # Neighbouring frames, the anchor (previous frame) first when valid.
  a_pose, a_trans = np.asarray(anchor.poses, np.float64), np.asarray(anchor.trans, np.float64)
  a_joints, a_valid = np.asarray(anchor.joints, np.float64), float(anchor.valid)
  frames = [(a_pose, a_trans, a_joints, a_valid, None)] + [
      (poses[k], trans[k], pred[k], e[k], t['contact'][k]) for k in range(K)]
  temporal = velocity = skate = 0.0
  pairs = skate_count = 0
  for (p0, t0, j0, v0, c0), (p1, t1, j1, v1, c1) in zip(frames[:-1], frames[1:]):
    if not (v0 and v1):
      continue
    pairs += 1
    temporal += sum(np.sum((_rotation(p1[j]) - _rotation(p0[j])) ** 2) / 2 for j in range(24))
    temporal += np.sum((t1 - t0) ** 2)
    velocity += np.sum((j1 - j0) ** 2)
    c0 = c1 if c0 is None else c0     # the anchor frame carries no contact: the first frame's
    for side, feet in ((0, structure.left_foot), (1, structure.right_foot)):
      for f in feet:
        if c0[side] and c1[side]:
          skate += np.sum((j1[f] - j0[f]) ** 2)
          skate_count += 1
  out['temporal'] = temporal / (pairs * 75)
  out['velocity'] = velocity / (pairs * m)
  out['foot_skate'] = skate / skate_count
  acc, triples = 0.0, 0
  for f0, f1, f2 in zip(frames[:-2], frames[1:-1], frames[2:]):
    if f0[3] and f1[3] and f2[3]:
      acc += np.sum((f2[2] - 2 * f1[2] + f0[2]) ** 2)
      triples += 1
  out['acceleration'] = acc / (triples * m)
  return out


@pytest.fixture(scope='module')
def block(demo_model):
  rng = np.random.default_rng(4)
  model = joint_model(demo_model)
  structure = FitStructure(SMPL_INDEX, mapped_bones(SMPL_INDEX), LEFT_FOOT, RIGHT_FOOT, OFFSET_JOINTS,
                           SEGMENT_JOINTS)
  m = len(SMPL_INDEX)
  betas = rng.normal(size=10)
  params = FitParams(jnp.asarray(betas, jnp.float32), jnp.asarray(rng.normal(scale=0.4, size=(K, 24, 3)), jnp.float32),
                     jnp.asarray(rng.normal(scale=0.5, size=(K, 3)), jnp.float32),
                     jnp.asarray(rng.normal(scale=0.05, size=(m, 3)) * np.isin(np.arange(m), OFFSET_JOINTS)[:, None],
                                 jnp.float32))
  observed = np.where(rng.uniform(size=(K, m)) < 0.2, 0.1, 1.0)     # some gap-filled samples
  observed[2, 4] = 0.0                                              # one never-seen sample
  exists = np.ones(K)
  exists[-1] = 0.0                                                  # one padding frame
  observed *= exists[:, None]
  weight = observed * rng.uniform(0.5, 2.0, size=(K, m))            # joint weights, contact
  targets = Targets(joints=jnp.asarray(rng.normal(scale=0.5, size=(K, m, 3)), jnp.float32),
                    weight=jnp.asarray(weight, jnp.float32), observed=jnp.asarray(observed, jnp.float32),
                    exists=jnp.asarray(exists, jnp.float32),
                    contact=jnp.asarray(rng.uniform(size=(K, 2)) < 0.6, jnp.float32),
                    trans_prior=jnp.asarray(rng.normal(size=(K, 3)), jnp.float32),
                    seg_rot=jnp.asarray(np.stack([[_rotation(rng.normal(size=3))
                                                   for _ in SEGMENT_JOINTS] for _ in range(K)]),
                                        jnp.float32),
                    seg_weight=jnp.asarray(rng.uniform(0.0, 2.0, size=(K, len(SEGMENT_JOINTS)))
                                           * exists[:, None], jnp.float32))
  anchor = Anchor(poses=jnp.asarray(rng.normal(scale=0.4, size=(24, 3)), jnp.float32),
                  trans=jnp.asarray(rng.normal(size=3), jnp.float32),
                  joints=jnp.asarray(rng.normal(scale=0.5, size=(m, 3)), jnp.float32),
                  valid=jnp.ones((), jnp.float32))
  rest = np.asarray(shaped_joints(jax.tree.map(lambda a: np.asarray(a, np.float64), model), betas))
  offsets = np.asarray(params.offsets, np.float64)

  def joints_fn(pose, tr, rotations=False):   # mapped joints plus offsets (or all rotations)
    joints, world = numpy_reference.fk(model.parents, rest, pose, tr)
    if rotations:
      return world[:, :3, :3]
    idx = list(SMPL_INDEX)
    return joints[idx] + np.einsum('mab,mb->ma', world[idx, :3, :3], offsets)
  return model, structure, params, targets, anchor, joints_fn


@pytest.mark.parametrize('anchor_valid', [1.0, 0.0])
def test_every_term_equals_the_numpy_reference(block, anchor_valid):
  model, structure, params, targets, anchor, joints_fn = block
  anchor = anchor._replace(valid=jnp.asarray(anchor_valid, jnp.float32))
  got = {k: float(v) for k, v in term_losses(model, params, targets, anchor, structure).items()}
  want = reference_losses(joints_fn, params, targets, anchor, structure)
  assert set(got) == set(LOSS_TERMS)
  for term in LOSS_TERMS:
    np.testing.assert_allclose(got[term], want[term], rtol=2e-4, err_msg=term)


def test_a_gap_filled_frame_counts_gap_fill_of_an_observed_one(block):
  """A one-frame block (LM, the sequential variant) whose joints are all
  interpolated: position and bone terms are gap_fill x those of the same frame
  observed (normalising by the block's weight sum used to cancel the 0.1)."""
  model, structure, params, targets, anchor, _ = block
  one = lambda x: jax.tree.map(lambda a: a[:1], x)
  frame_params, frame_targets = one(params), one(targets)
  m = len(SMPL_INDEX)
  observed = frame_targets.__class__(**{**frame_targets.__dict__, 'weight': jnp.ones((1, m)),
                                        'observed': jnp.ones((1, m))})
  gap = frame_targets.__class__(**{**frame_targets.__dict__, 'weight': jnp.full((1, m), 0.1),
                                   'observed': jnp.full((1, m), 0.1)})
  anchor = anchor._replace(valid=jnp.zeros(()))
  full = term_losses(model, frame_params, observed, anchor, structure)
  filled = term_losses(model, frame_params, gap, anchor, structure)
  for term in ('position', 'bone_direction', 'bone_length'):
    np.testing.assert_allclose(float(filled[term]), 0.1 * float(full[term]), rtol=1e-5, err_msg=term)


def test_temporal_term_sees_rotations_not_axis_angle_vectors(block):
  """Adding 2 pi to a joint's angle (the same rotation) changes nothing."""
  model, structure, params, targets, anchor, _ = block
  poses = np.asarray(params.poses)
  axis = poses[3, 0] / np.linalg.norm(poses[3, 0])
  same = poses.copy()
  same[3, 0] = poses[3, 0] + 2 * np.pi * axis
  before = term_losses(model, params, targets, anchor, structure)['temporal']
  after = term_losses(model, params._replace(poses=jnp.asarray(same)) if hasattr(params, '_replace')
                      else FitParams(params.betas, jnp.asarray(same), params.trans, params.offsets),
                      targets, anchor, structure)['temporal']
  np.testing.assert_allclose(float(after), float(before), rtol=1e-4)
