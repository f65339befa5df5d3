"""Fitting: ground-truth recovery, each loss term's effect, per-joint rates, one compiled core."""

import jax
import jax.numpy as jnp
from typing import NamedTuple

import numpy as np
import pytest

from jaxfit.body.model import SMPL_JOINT_NAMES, forward_kinematics, joint_model
from jaxfit.fit.options import JOINT_GROUPS
from jaxfit.run.config import settings_from_config
from jaxfit.demo.smpl_truth import make_ground_truth_trial, with_gaps
from jaxfit.runtime import compiled
from jaxfit.fit.core import fit_blocks
from jaxfit.fit.init import rigid_pairs, shape_from_distances_jit, solve_betas_jit
from jaxfit.fit.lm import joints_and_jacobian, moving_joints
from jaxfit.fit.pipeline import fit_trial, stage_hyper, target_distances, _targets
from jaxfit.fit.types import FitParams, LossWeights, empty_anchor
from jaxfit.data.prepare import prepare_trial
from tests.conftest import load_config_file, make_settings, read_real_trial, term_losses, total_loss

FRAMES = 200


def _settings(**overrides):
  return make_settings(learn_offsets=False, **overrides)   # SMPL-generated truth


def _reference_settings():
  return settings_from_config(load_config_file('reference.py'))


@pytest.fixture(scope='module')
def truth_trial(demo_model):
  return make_ground_truth_trial(demo_model, _settings().prepare.joint_map, num_frames=FRAMES, seed=3)


def _mpjpe_mm(result, prep, truth):
  idx = list(prep.structure.smpl_index)
  return np.linalg.norm(result.joints[:, idx] - truth['clean'], axis=-1).mean() * 1000


@pytest.mark.parametrize('variant', ['simultaneous', 'sequential'])
def test_default_config_recovers_smpl_ground_truth(demo_model, truth_trial, variant):
  trial, truth = truth_trial
  settings = _settings(variant=variant)
  prep = prepare_trial(trial, settings.prepare)
  result = fit_trial(demo_model, prep, settings.fit)
  assert result.poses.shape == (FRAMES, 24, 3) and result.trans.shape == (FRAMES, 3)
  assert _mpjpe_mm(result, prep, truth) < 1.0


def test_second_model_in_official_layout_is_recovered(random_smpl_model):
  model = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), joint_model(random_smpl_model))
  settings = _settings()
  trial, truth = make_ground_truth_trial(model, settings.prepare.joint_map, num_frames=FRAMES, seed=5)
  prep = prepare_trial(trial, settings.prepare)
  assert _mpjpe_mm(fit_trial(model, prep, settings.fit), prep, truth) < 1.0


def test_reference_config_is_reported_and_reasonable(demo_model, truth_trial):
  trial, truth = truth_trial
  settings = _reference_settings()
  prep = prepare_trial(trial, settings.prepare)
  error = _mpjpe_mm(fit_trial(demo_model, prep, settings.fit), prep, truth)
  print(f'reference config MPJPE on SMPL ground truth: {error:.2f} mm')
  # The reference's shape stage (100 Adam steps at lr 5e-3) cannot move betas more than
  # 0.5 each; that alone caps it near 15 mm here (6 mm with jaxfit's closed-form shape).
  assert error < 16.0


def test_missing_frames_and_joints_are_masked_and_filled(demo_model, truth_trial):
  trial, truth = truth_trial
  gappy = with_gaps(trial, fraction=0.05, seed=1)
  settings = _settings()
  prep = prepare_trial(gappy, settings.prepare)
  assert prep.num_valid_frames < FRAMES and not prep.valid.all()
  result = fit_trial(demo_model, prep, settings.fit)
  idx = list(prep.structure.smpl_index)
  err = np.linalg.norm(result.joints[:, idx] - truth['clean'], axis=-1) * 1000
  assert np.all(np.isfinite(result.poses))
  assert err[prep.valid].mean() < 2.0
  assert err[~prep.valid].mean() < 10.0       # filled from neighbouring frames


def test_temporal_smoothing_lowers_jitter_on_noisy_input(demo_model):
  """Stage 4's acceleration term (stage 4 is off by default: on for noisy inputs)."""
  settings = _settings()
  trial, truth = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=FRAMES,
                                         seed=7, noise_m=0.01)
  def jitter(weight):
    s = _settings(**{'loss.acceleration': weight, 'sequence.lr': 0.005, 'sequence.iters': 60})
    prep = prepare_trial(trial, s.prepare)
    result = fit_trial(demo_model, prep, s.fit)
    j = result.joints[:, list(prep.structure.smpl_index)]
    jerk = j[3:] - 3 * j[2:-1] + 3 * j[1:-2] - j[:-3]
    return np.linalg.norm(jerk, axis=-1).mean(), _mpjpe_mm(result, prep, truth)
  rough, rough_err = jitter(0.0)
  smooth, smooth_err = jitter(1.0)
  assert smooth < 0.5 * rough
  assert smooth_err < rough_err            # closer to the clean truth than the noise


# ---- the core, on one small block -------------------------------------------------

class Block(NamedTuple):
  model: object
  structure: object
  params: FitParams      # the truth
  targets: object        # noisy targets (2 cm), feet in contact, offset trans prior
  clean: object          # the noise-free targets
  settings: object


@pytest.fixture(scope='module')
def block(demo_model, truth_trial):
  trial, truth = truth_trial
  settings = _settings()
  prep = prepare_trial(trial, settings.prepare)
  rng = np.random.default_rng(0)
  clean = _targets(prep, np.zeros((prep.targets.shape[0], 3)))
  targets = clean.__class__(joints=clean.joints + 0.02 * rng.standard_normal(clean.joints.shape),
                            weight=clean.weight, observed=clean.observed, exists=clean.exists,
                            contact=jnp.ones_like(clean.contact), trans_prior=clean.trans_prior + 0.05,
                            seg_rot=clean.seg_rot, seg_weight=clean.seg_weight)
  t = clean.joints.shape[0]
  params = FitParams(jnp.asarray(truth['betas'], jnp.float32),
                     jnp.asarray(np.pad(truth['poses'], ((0, t - FRAMES), (0, 0), (0, 0))), jnp.float32),
                     jnp.asarray(np.pad(truth['trans'], ((0, t - FRAMES), (0, 0))), jnp.float32),
                     jnp.zeros((len(prep.structure.smpl_index), 3), jnp.float32))
  return Block(joint_model(demo_model), prep.structure, params, targets, clean, settings)


def _run_core(b: Block, weights, steps=60, lr=0.01, lr_mult=None, params=None, targets=None):
  params = b.params if params is None else params
  targets = b.targets if targets is None else targets
  hyper = stage_hyper(b.settings.fit, 'sequence', 10, lr, iters=steps)   # betas at the same rate
  hyper = hyper._replace(weights=LossWeights(**{k: jnp.float32(v) for k, v in weights._asdict().items()}),
                         lr=jnp.float32(lr), lr_final_ratio=jnp.float32(1.0))
  if lr_mult is not None:
    hyper = hyper._replace(lr_mult=lr_mult)
  anchor = empty_anchor(len(b.structure.smpl_index))
  out = compiled.call(fit_blocks, (b.model, params.betas, params.offsets, params.poses[None],
                                   params.trans[None], jax.tree.map(lambda a: a[None], targets),
                                   anchor, hyper),
                      dict(structure=b.structure))
  fitted = FitParams(out[0], out[2][0], out[3][0], out[1])
  return term_losses(b.model, fitted, targets, anchor, b.structure), fitted


def test_per_joint_learning_rates_scale_the_adam_step(block):
  params = block.params
  lr = 0.01
  mult = np.ones(24)
  for group, m in (('hips', 1.5), ('knees', 1.0), ('feet', 0.5), ('elbows', 2.0)):
    for name in JOINT_GROUPS[group]:
      mult[SMPL_JOINT_NAMES.index(name)] = m
  lr_mult = FitParams(jnp.zeros(10), jnp.asarray(mult[:, None], jnp.float32), jnp.ones(1), jnp.zeros((1, 1)))
  plain = FitParams(jnp.zeros(10), jnp.ones((24, 1), jnp.float32), jnp.ones(1), jnp.zeros((1, 1)))
  _, after = _run_core(block, LossWeights(position=1.0), steps=1, lr=lr, lr_mult=lr_mult)
  _, reference = _run_core(block, LossWeights(position=1.0), steps=1, lr=lr, lr_mult=plain)
  step = np.asarray(after.poses - params.poses)[:FRAMES]              # [T,24,3]
  step_plain = np.asarray(reference.poses - params.poses)[:FRAMES]
  # Where Adam's first step is the full lr (|g| >> eps): a step of ~1e-5 rad on a
  # pose of ~1 rad is float32-rounded by ~1e-3 of itself (the joints weighted
  # noncomparable_weight have such small gradients).
  moved = np.abs(step_plain) > 0.1 * lr
  ratio = step[moved] / step_plain[moved]
  expected = np.broadcast_to(mult[None, :, None], step.shape)[moved]
  np.testing.assert_allclose(ratio, expected, rtol=1e-3)
  # Adam's first step is lr * g / (|g| + eps), so lr * multiplier where |g| >> eps.
  hip = SMPL_JOINT_NAMES.index('left_hip')
  np.testing.assert_allclose(np.median(np.abs(step[:, hip])), lr * 1.5, rtol=1e-2)
  np.testing.assert_allclose(np.asarray(after.betas), np.asarray(params.betas))   # multiplier 0


def test_sequential_and_simultaneous_share_one_compiled_core(demo_model, truth_trial):
  trial, _ = truth_trial
  compiled.clear(fit_blocks)
  # The default runs no Adam stage (stage 3 and stage 4 have 0 steps), so
  # compiles no Adam program.
  default = _settings()
  fit_trial(demo_model, prepare_trial(trial, default.prepare), default.fit)
  assert compiled.num_compiled(fit_blocks) == 0
  simultaneous = _settings(**{'variant': 'simultaneous', 'sequence.iters': 20})
  prep = prepare_trial(trial, simultaneous.prepare)
  fit_trial(demo_model, prep, simultaneous.fit)
  executables = compiled.num_compiled(fit_blocks)
  assert executables == 1          # every stage of the simultaneous variant: [1, T] blocks
  # Other stage weights, rates and iteration counts: traced, so no new executable.
  changed = _settings(**{'variant': 'simultaneous', 'pose.iters': 7, 'sequence.iters': 9,
                         'loss.temporal': 0.5, 'pose.lr': 0.3})
  fit_trial(demo_model, prepare_trial(trial, changed.prepare), changed.fit)
  assert compiled.num_compiled(fit_blocks) == executables
  # The sequential variant is the same jitted function on T blocks of 1 frame.
  sequential = _settings(variant='sequential')
  fit_trial(demo_model, prepare_trial(trial, sequential.prepare), sequential.fit)
  assert compiled.num_compiled(fit_blocks) == executables + 1
  # A shorter trial within the same length bucket reuses everything.
  short = type(trial)(**{**trial.__dict__, 'joints': trial.joints[:150], 'valid': trial.valid[:150]})
  fit_trial(demo_model, prepare_trial(short, simultaneous.prepare), simultaneous.fit)
  assert compiled.num_compiled(fit_blocks) == executables + 1


def test_every_trial_length_runs_the_same_executables(demo_model, truth_trial):
  """Every program sees fixed chunks of frames (fit.chunk_frames): once one
  trial is fitted, trials of other lengths (other padding buckets, shorter
  than one chunk, several chunks with a ragged end) compile nothing, and the
  chunked fit is the fit: each length recovers its own frames' truth."""
  trial, truth = truth_trial
  settings = _settings()
  cut = lambda n: type(trial)(**{**trial.__dict__, 'joints': trial.joints[:n], 'valid': trial.valid[:n]})
  fit_trial(demo_model, prepare_trial(cut(FRAMES), settings.prepare), settings.fit)
  before = compiled.num_compiled()
  for n in (37, 129, 150):
    prep = prepare_trial(cut(n), settings.prepare)
    result = fit_trial(demo_model, prep, settings.fit)
    assert compiled.num_compiled() == before, n
    assert result.poses.shape == (n, 24, 3) and result.joints.shape == (n, 24, 3)
    idx = list(prep.structure.smpl_index)
    mpjpe_mm = np.linalg.norm(result.joints[:, idx] - truth['clean'][:n], axis=-1).mean() * 1000
    assert mpjpe_mm < 1.0, (n, mpjpe_mm)


# ---- closed-form pieces -------------------------------------------------------------

@pytest.mark.parametrize('with_offsets', [False, True])
def test_analytic_kinematic_jacobian_matches_autodiff(demo_model, with_offsets):
  """Points are joints, or joints plus offsets in their joint's frame (whose
  own rotation then moves them too)."""
  model = joint_model(demo_model)
  structure_index = tuple(range(24))
  offset_joints = (0, 3, 10, 16, 23) if with_offsets else ()
  active = moving_joints(model.parents, structure_index, offset_joints)
  rng = np.random.default_rng(1)
  pose = jnp.asarray(rng.normal(scale=0.5, size=(24, 3)), jnp.float32)
  trans = jnp.asarray(rng.normal(size=3), jnp.float32)
  betas = jnp.asarray(rng.normal(size=10), jnp.float32)
  offsets = np.zeros((24, 3), np.float32)
  offsets[list(offset_joints)] = rng.normal(scale=0.05, size=(len(offset_joints), 3))
  offsets = jnp.asarray(offsets)
  points, jac, _ = jax.jit(joints_and_jacobian, static_argnums=(4, 5, 7))(
      model, betas, pose, trans, structure_index, active, offsets, offset_joints)
  from jaxfit.body.rotation import axis_angle_to_matrix, matrix_to_axis_angle
  def posed(delta):
    rot = axis_angle_to_matrix(pose[np.asarray(active)]) @ axis_angle_to_matrix(delta[:-3].reshape(-1, 3))
    full = pose.at[np.asarray(active)].set(matrix_to_axis_angle(rot))
    joints, rotations = forward_kinematics(model, betas, full, trans + delta[-3:])
    return joints + jnp.einsum('jab,jb->ja', rotations, offsets)
  auto = jax.jit(jax.jacfwd(posed))(jnp.zeros(3 * len(active) + 3, jnp.float32))
  np.testing.assert_allclose(np.asarray(points), np.asarray(jax.jit(posed)(jnp.zeros(3 * len(active) + 3))),
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(jac), np.asarray(auto), atol=2e-4)
  if with_offsets:   # the hands' own rotation moves their offset points
    assert 23 in active and 23 not in moving_joints(model.parents, structure_index)


def test_analytic_orientation_jacobian_matches_autodiff(demo_model):
  """The orientation rows' Jacobian (right increments of every ancestor and of
  the segment's own joint turn its global rotation) equals autodiff's."""
  from jaxfit.body.rotation import axis_angle_to_matrix, matrix_to_axis_angle
  from jaxfit.fit.lm import active_joints, orientation_rows
  from jaxfit.fit.types import FitStructure, LossWeights, Targets
  model = joint_model(demo_model)
  segments = (0, 2, 5, 8, 11, 9, 17, 19, 21)
  structure = FitStructure(smpl_index=(0, 1, 2, 4, 5, 7, 8), bones=(), left_foot=(), right_foot=(),
                           segment_joints=segments)
  active = active_joints(model.parents, structure)
  assert 21 in active and 11 in active      # leaf segments' own joints become unknowns
  rng = np.random.default_rng(2)
  pose = jnp.asarray(rng.normal(scale=0.5, size=(24, 3)), jnp.float32)
  trans = jnp.asarray(rng.normal(size=3), jnp.float32)
  betas = jnp.zeros(10, jnp.float32)
  seg_rot = jnp.asarray(np.stack([axis_angle_to_matrix(jnp.asarray(rng.normal(size=3)))
                                  for _ in segments]), jnp.float32)
  target = Targets(joints=None, weight=None, observed=None, exists=jnp.ones(()), contact=None,
                   trans_prior=None, seg_rot=seg_rot,
                   seg_weight=jnp.asarray(rng.uniform(0.5, 2, len(segments)), jnp.float32))
  weights = LossWeights(orientation=0.3)
  act = np.asarray(active)

  def rows(delta):
    rot = axis_angle_to_matrix(pose[act]) @ axis_angle_to_matrix(delta[:-3].reshape(-1, 3))
    full = pose.at[act].set(matrix_to_axis_angle(rot))
    _, rotations = forward_kinematics(model, betas, full, trans + delta[-3:])
    return orientation_rows(rotations, target, weights, structure, active, model.parents, 9.0)
  zero = jnp.zeros(3 * len(active) + 3, jnp.float32)
  r, jac = jax.jit(rows)(zero)
  auto = jax.jit(jax.jacfwd(lambda d: rows(d)[0]))(zero)
  np.testing.assert_allclose(np.asarray(jac), np.asarray(auto), atol=2e-4)
  # Its squared norm is the orientation loss of losses.py (weighted).
  _, rotations = forward_kinematics(model, betas, pose, trans)
  g = np.asarray(rotations)[list(segments)]
  want = 0.3 * np.sum(np.asarray(target.seg_weight)[:, None, None] * (g - np.asarray(seg_rot)) ** 2) / 2 / 9
  np.testing.assert_allclose(float(jnp.sum(r * r)), want, rtol=1e-4)


def test_joint_solve_cost_is_the_losses_total(demo_model):
  """The joint LM minimises the Adam core's loss on the same terms: its cost
  equals losses.total_loss (position, orientation, pose prior, shape and offset
  priors) at the same parameters."""
  from jaxfit.fit.joint_lm import joint_lm
  from jaxfit.fit.pipeline import _targets
  from jaxfit.fit.types import LossWeights, empty_anchor
  settings = make_settings(**{'max_frames': 40})
  trial = read_real_trial('dev_opencap_unfiltered.b3d', 'walking2')
  prep = prepare_trial(trial, settings.prepare, demo_model.parents)
  assert prep.structure.segment_joints and prep.structure.offset_joints
  model = joint_model(demo_model)
  t = prep.targets.shape[0]
  rng = np.random.default_rng(3)
  poses = jnp.asarray(rng.normal(scale=0.2, size=(t, 24, 3)), jnp.float32)
  trans = jnp.asarray(np.asarray(prep.filled[:, 0]), jnp.float32)
  targets = _targets(prep, np.zeros((t, 3)))
  weights = LossWeights(position=1.0, orientation=1e-3, pose_reg=1e-6, shape_prior=1e-5,
                        offset_prior=1e-2)
  betas = jnp.asarray(rng.normal(scale=0.5, size=10), jnp.float32)
  offsets = jnp.asarray(rng.normal(scale=0.01, size=(len(prep.structure.smpl_index), 3))
                        * np.isin(np.arange(len(prep.structure.smpl_index)),
                                  prep.structure.offset_joints)[:, None], jnp.float32)
  # The LM's pose prior covers the joints it moves; hold the others at zero.
  from jaxfit.fit.lm import active_joints
  inactive = np.setdiff1d(np.arange(24), active_joints(model.parents, prep.structure))
  params0 = FitParams(betas, poses.at[:, inactive].set(0.0), trans, offsets)
  out0 = joint_lm(model, betas, offsets, params0.poses, trans, targets, weights, 0,
                  jnp.full((16,), 0.2), 3.0, 0.0, structure=prep.structure)
  want0 = total_loss(model, params0, targets, empty_anchor(len(prep.structure.smpl_index)),
                     prep.structure, weights)
  np.testing.assert_allclose(float(out0[4]), float(want0), rtol=1e-4)
  assert float(want0) > 0


def test_closed_form_shape_pieces_are_exact(demo_model, truth_trial):
  trial, truth = truth_trial
  settings = _settings()
  prep = prepare_trial(trial, settings.prepare)
  model = joint_model(demo_model)
  idx = prep.structure.smpl_index
  pairs = rigid_pairs(idx, model.parents)
  distances, weight = target_distances(prep, pairs)
  betas = shape_from_distances_jit(model, jnp.asarray(distances, jnp.float32),
                                   jnp.asarray(weight, jnp.float32), pairs, idx, 1e-9)
  from jaxfit.body.model import shaped_joints
  rest = np.asarray(jax.jit(shaped_joints)(model, betas))
  a, b = np.asarray(idx)[[p for p, _ in pairs]], np.asarray(idx)[[q for _, q in pairs]]
  np.testing.assert_allclose(np.linalg.norm(rest[b] - rest[a], axis=-1), distances, atol=2e-5)
  # Least squares with the true rotations reproduces every joint.
  frames = np.arange(0, FRAMES, 5)
  betas_ls = solve_betas_jit(model, jnp.asarray(truth['poses'][frames], jnp.float32),
                             jnp.asarray(prep.targets[frames], jnp.float32),
                             jnp.asarray(prep.weight[frames], jnp.float32), idx, 1e-9)
  joints = jax.jit(jax.vmap(lambda p, t: forward_kinematics(model, betas_ls, p, t)[0]))(
      jnp.asarray(truth['poses'][frames], jnp.float32), jnp.asarray(truth['trans'][frames], jnp.float32))
  offset = np.asarray(joints)[:, list(idx)] - truth['clean'][frames]
  offset -= offset.mean(1, keepdims=True)          # translation is free per frame
  assert np.abs(offset).max() < 1e-3


def test_a_never_observed_joint_does_not_bias_the_initial_root(demo_model, truth_trial):
  from jaxfit.body.rotation import axis_angle_to_matrix
  from jaxfit.fit.init import root_initialisation_jit as root_initialisation
  trial, truth = truth_trial
  joints = np.array(trial.joints)
  joints[:, list(trial.joint_names).index('back')] = np.nan       # spine1 never observed
  blind = type(trial)(**{**trial.__dict__, 'joints': joints,
                         'valid': np.all(np.isfinite(joints), -1)})
  prep = prepare_trial(blind, _settings().prepare)
  rot, _ = root_initialisation(joint_model(demo_model), jnp.asarray(truth['betas'], jnp.float32),
                               jnp.asarray(prep.filled, jnp.float32),
                               jnp.asarray(prep.init_weight, jnp.float32), prep.structure.smpl_index)
  expected = np.asarray(axis_angle_to_matrix(jnp.asarray(truth['poses'][:, 0], jnp.float32)))
  np.testing.assert_allclose(np.asarray(rot)[:FRAMES], expected, atol=1e-3)
