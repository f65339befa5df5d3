"""The joint shape-and-pose solve, learned correspondence offsets and the shape
prior, on generated truth (known betas, poses and offsets) and on real trials."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit.body.model import SMPL_JOINT_NAMES, joint_model, make_body_model
from jaxfit.demo.body_model import variant_body_arrays
from jaxfit.demo.smpl_truth import make_ground_truth_trial
from jaxfit.fit.joint_lm import shape_information
from jaxfit.fit.pipeline import _targets, fit_trial
from jaxfit.data.prepare import prepare_trial
from jaxfit.runtime import compiled
from tests.conftest import make_settings

FRAMES = 200
# Offsets of the kind real AddBiomechanics joints have from SMPL's (metres, in
# the SMPL joint's frame: +Y up, +Z forward, +X the subject's left).
TRUE_OFFSETS = {'ground_pelvis': (0.0, 0.07, 0.05), 'back': (0.0, -0.03, -0.02),
                'acromial_r': (-0.02, 0.03, 0.0), 'acromial_l': (0.02, 0.03, 0.0),
                'mtp_r': (0.0, -0.02, 0.03), 'mtp_l': (0.0, -0.02, 0.03),
                'knee_r': (0.0, 0.02, 0.0), 'knee_l': (0.0, 0.02, 0.0),
                'walker_knee_r': (0.0, 0.02, 0.0), 'walker_knee_l': (0.0, 0.02, 0.0)}


_settings = make_settings


@pytest.fixture(scope='module')
def variant_model():
  """An SMPL-layout model whose shape space has a few strong and many weak or
  unobservable components (unlike the demo body's PCA)."""
  a = variant_body_arrays(seed=1)
  parents = a['kintree_table'][0].astype(np.int64)
  parents[0] = -1
  return make_body_model(a['v_template'], a['shapedirs'], a['posedirs'], a['J_regressor'],
                         a['weights'], a['f'], parents=tuple(parents))


def _models(demo_model, variant_model):
  return {'demo': demo_model, 'variant': variant_model}


def _identified(model, prep, result, options, truth_betas, dtype=jnp.float32):
  """Beta error in the shape directions the joints determine: those moving the
  joints by >= 1 mm RMS per unit beta that no change of pose or of the free
  offsets can compensate (eigenvalue >= 1e-6 m^2 of the data information with
  every pose and offset eliminated). Elsewhere the prior decides, by design."""
  nb = model.num_betas
  n = prep.num_frames
  pad = prep.targets.shape[0] - n
  info = shape_information(
      joint_model(model), jnp.asarray(result.betas, dtype), jnp.asarray(result.offsets, dtype),
      jnp.asarray(np.pad(result.poses, ((0, pad), (0, 0), (0, 0))), dtype),
      jnp.asarray(np.pad(result.trans, ((0, pad), (0, 0))), dtype),
      _targets(prep, np.zeros((prep.targets.shape[0], 3)), dtype=dtype), options.loss, prep.structure)
  info = np.asarray(info, np.float64)
  shape_only = info[:nb, :nb] - info[:nb, nb:] @ np.linalg.solve(
      info[nb:, nb:] + 1e-12 * np.eye(len(info) - nb), info[nb:, :nb])
  values, vectors = np.linalg.eigh(shape_only)
  strong = vectors[:, values >= 1e-6]
  return np.abs(strong.T @ (result.betas - truth_betas)).max(), strong.shape[1]


@pytest.mark.parametrize('which', ['demo', 'variant'])
def test_noiseless_truth_is_recovered_exactly(demo_model, variant_model, which):
  """The solver: with a shape prior that only breaks ties (1e-9), in float64,
  joints to < 0.1 mm and betas to < 0.01 wherever the joints determine them."""
  settings = _settings(**{'loss.shape_prior': 1e-9, 'dtype': 'float64'})
  with jax.experimental.enable_x64():
    model = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _models(demo_model, variant_model)[which])
    trial, truth = make_ground_truth_trial(model, settings.prepare.joint_map, num_frames=FRAMES, seed=21)
    prep = prepare_trial(trial, settings.prepare, model.parents)
    result = fit_trial(model, prep, settings.fit)
    beta_error, identified = _identified(model, prep, result, settings.fit, truth['betas'], jnp.float64)
  error = np.linalg.norm(result.points - truth['clean'], axis=-1).mean() * 1000
  assert error < 0.1, error
  assert identified >= 2 and beta_error < 0.01, (identified, beta_error)
  assert np.abs(result.offsets).max() < 2e-3          # no offsets in this truth


@pytest.fixture(scope='module')
def official_variant_model(tmp_path_factory):
  """The variant shape space (strong and weak components) written as an
  official-layout SMPL .pkl (Python-2 chumpy pickle) and loaded back."""
  from jaxfit.io.smpl_file import load_body_model
  from tests.smpl_files import write_model_pkl
  path = str(tmp_path_factory.mktemp('pkl') / 'basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl')
  write_model_pkl(path, variant_body_arrays(seed=1), num_pcs=10)
  return load_body_model(path)


@pytest.mark.parametrize('which', ['demo', 'official_variant'])
def test_default_config_recovers_noiseless_truth_exactly(demo_model, official_variant_model, which):
  """The DEFAULT config on exact data (all 24 joints, SMPL's own definitions):
  the noise-aware shape prior gets out of the way, so every joint is recovered
  to < 0.1 mm and the betas to < 0.05 in every direction the joints determine."""
  model = demo_model if which == 'demo' else official_variant_model
  settings = _settings()
  trial, truth = make_ground_truth_trial(model, {n: n for n in SMPL_JOINT_NAMES}, num_frames=FRAMES,
                                         seed=21)
  prep = prepare_trial(trial, settings.prepare, model.parents)
  assert len(prep.mapping.comparable_index) == 24 and not prep.structure.offset_joints
  result = fit_trial(model, prep, settings.fit)
  error = np.linalg.norm(result.joints - truth['joints'], axis=-1).mean() * 1000
  beta_error, identified = _identified(model, prep, result, settings.fit, truth['betas'])
  assert error < 0.1, error
  assert identified >= 3 and beta_error < 0.05, (identified, beta_error)
  assert result.losses['shape_prior_weight'] < 1e-9     # exact data: (almost) no prior


def test_noise_aware_prior_follows_the_noise(demo_model):
  """The prior's weight is B sigma^2 w_pos / (N M) with sigma^2 the noise
  variance per coordinate that the residual's second differences in time show:
  with 10 mm of noise it is ~1e4x the exact-data floor of 0.1 mm, and it keeps
  |beta| <= 3."""
  settings = _settings()
  weights = []
  for noise in (0.0, 0.01):
    trial, _ = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=FRAMES,
                                       seed=24, noise_m=noise)
    prep = prepare_trial(trial, settings.prepare, demo_model.parents)
    result = fit_trial(demo_model, prep, settings.fit)
    weights.append(result.losses['shape_prior_weight'])
    assert np.abs(result.betas).max() <= 3.0
  slots = FRAMES * len(prep.mapping.source_names)
  expected = 10 * 0.01 ** 2 / slots          # sigma = 10 mm, B = 10, w_pos = 1
  assert 0.5 * expected < weights[1] < 1.5 * expected, (weights, expected)
  assert weights[0] < 1e-3 * weights[1]


def test_a_body_that_cannot_match_is_not_taken_for_noise(demo_model):
  """Exact joints of a body beyond the shape bound (betas 4 and -4, bound 3):
  the residual is misfit, 10 mm RMS, but smooth in time (it moves with the
  pose), so the noise the prior is weighted by stays near the 0.1 mm floor
  (measured: 4x the floor's weight, the hat-matrix correction included), where
  the residual's plain mean square (the rule before) gives ~3000x it."""
  from jaxfit.fit.joint_lm import white_noise_variance
  settings = _settings(learn_offsets=False)
  betas = np.zeros(10)
  betas[:2] = (4.0, -4.0)
  trial, _ = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=FRAMES,
                                     seed=26, betas=betas)
  prep = prepare_trial(trial, settings.prepare, demo_model.parents)
  result = fit_trial(demo_model, prep, settings.fit)
  valid = prep.valid
  residual = result.points - prep.targets[:prep.num_frames]
  comparable = np.asarray(prep.mapping.comparable)
  mean_square = np.mean(np.sum(residual[:, comparable] ** 2, -1)[valid[:, comparable]]) / 3
  slots = prep.num_frames * len(prep.mapping.source_names)
  floor = 10 * 1e-4 ** 2 / slots                   # B (0.1 mm)^2 / (N M)
  assert mean_square > 0.003 ** 2, mean_square            # a misfit of > 3 mm RMS per coordinate
  weight = result.losses['shape_prior_weight']
  assert weight < 10 * floor, (weight, floor)
  assert weight < 1e-2 * 10 * mean_square / slots, (weight, mean_square)
  # The estimator itself: white noise added to a smooth residual is what it reports.
  rng = np.random.default_rng(0)
  t, m = 300, 5
  smooth = 0.01 * np.sin(np.linspace(0, 6, t))[:, None, None] * np.ones((1, m, 3))
  d = smooth + 0.002 * rng.standard_normal((t, m, 3))
  from jaxfit.fit.types import Targets
  targets = Targets(joints=None, weight=np.ones((t, m)), observed=np.ones((t, m)), exists=np.ones(t),
                    contact=None, trans_prior=None, seg_rot=None, seg_weight=None)
  pos_norm = t * m
  rows = (d / np.sqrt(pos_norm)).reshape(t, -1)
  assert white_noise_variance(rows, targets, pos_norm, 1.0) == pytest.approx(0.002 ** 2, rel=0.1)
  assert white_noise_variance(rows * 0 + (smooth / np.sqrt(pos_norm)).reshape(t, -1), targets,
                              pos_norm, 1.0) < 1e-3 * 0.002 ** 2


@pytest.mark.parametrize('which', ['demo', 'variant'])
def test_known_offsets_and_motion_are_recovered(demo_model, variant_model, which):
  """Targets = SMPL joints + known offsets. The motion of every target and the
  SMPL joints are recovered; offsets are recovered where joint centres can
  determine them (the knees: their rotation is pinned by the ankle). Elsewhere
  an offset trades exactly against a pose or shape change no target sees (a
  leaf joint's own rotation, collar and spine posture, the pelvis shape), and
  its prior decides; that is checked through the points, not the values."""
  model = _models(demo_model, variant_model)[which]
  # Offsets on joints whose definitions agree (knees, shoulders) only when asked;
  # every joint weighted alike (the default's noncomparable_weight puts the
  # pelvis, lumbar and toe targets, and with them their offsets, last).
  settings = _settings(**{'offsets.joints': ','.join(TRUE_OFFSETS), 'noncomparable_weight': 1.0})
  trial, truth = make_ground_truth_trial(model, settings.prepare.joint_map, num_frames=FRAMES,
                                         seed=22, offsets=TRUE_OFFSETS, betas=np.zeros(model.num_betas))
  prep = prepare_trial(trial, settings.prepare, model.parents)
  result = fit_trial(model, prep, settings.fit)
  names = prep.mapping.source_names
  assert {names[m] for m in prep.structure.offset_joints} == set(TRUE_OFFSETS) & set(names)
  assert len(prep.structure.offset_joints) == 8
  for m in prep.structure.offset_joints:
    if 'knee' in names[m]:
      np.testing.assert_allclose(result.offsets[m], TRUE_OFFSETS[names[m]], atol=1.5e-3, err_msg=names[m])
  assert np.linalg.norm(result.points - truth['clean'], axis=-1).mean() * 1000 < 1.0
  index = np.asarray(prep.structure.smpl_index)
  others = [m for m, n in enumerate(names) if n not in TRUE_OFFSETS]     # hips, ankles, arms
  err = lambda r: np.linalg.norm(r.joints[:, index[others]] - truth['joints'][:, index[others]],
                                 axis=-1).mean() * 1000
  # Without learned offsets the same data bend the body: those joints are off.
  plain = _settings(**{'offsets.joints': '', 'noncomparable_weight': 1.0})
  result0 = fit_trial(model, prepare_trial(trial, plain.prepare, model.parents), plain.fit)
  assert err(result) < 1.0 and err(result0) > 3.0, (err(result), err(result0))


REAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared',
                    'data', 'real', 'dev_opencap_unfiltered.b3d')


@pytest.mark.skipif(not os.path.exists(REAL), reason='no ../shared/data/real here')
@pytest.mark.parametrize('unmapped', [
    (), ('back', 'mtp_r', 'mtp_l'), ('acromial_r', 'acromial_l', 'elbow_r', 'elbow_l',
                                     'radius_hand_r', 'radius_hand_l'),
    ('ground_pelvis', 'back', 'mtp_r', 'mtp_l', 'acromial_r', 'acromial_l', 'elbow_r', 'elbow_l',
     'radius_hand_r', 'radius_hand_l')])
def test_joint_subsets_of_a_real_trial_keep_a_plausible_shape(variant_model, unmapped):
  """Any subset with the hips, knees and ankles: no divergence, |beta| <= 3.
  Scored as users score it, the raw SMPL joints against the comparable joints
  (the pelvis origin, lumbar and toe targets sit by definition up to ~13 cm
  from their SMPL joints, and the default fits them last)."""
  from jaxfit.io.b3d import read_b3d_trials
  trial = read_b3d_trials(REAL, trials=['walking2'])[0]
  settings = _settings(**{f'joint_map.{name}': '' for name in unmapped})
  prep = prepare_trial(trial, settings.prepare, variant_model.parents)
  result = fit_trial(variant_model, prep, settings.fit)
  keep = list(prep.mapping.comparable_index)
  raw = result.joints[:, np.asarray(prep.structure.smpl_index)[keep]]
  error = np.linalg.norm(raw - prep.targets[:prep.num_frames, keep], axis=-1)[prep.valid[:, keep]].mean() * 1000
  assert np.all(np.isfinite(result.poses)) and error < 25.0, error
  assert np.abs(result.betas).max() <= 3.0, result.betas


def test_joint_solve_starting_outside_the_bound_still_converges(demo_model):
  """An initial shape beyond the bound (the closed-form start can be) is moved
  inside first; otherwise every clipped step is rejected and nothing moves."""
  from jaxfit.fit.joint_lm import joint_lm
  from jaxfit.fit.types import LossWeights
  settings = _settings(**{'offsets.joints': ''})
  trial, truth = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=64, seed=23)
  prep = prepare_trial(trial, settings.prepare, demo_model.parents)
  t = prep.targets.shape[0]
  poses = jnp.asarray(np.pad(truth['poses'], ((0, t - 64), (0, 0), (0, 0))), jnp.float32)
  trans = jnp.asarray(np.pad(truth['trans'], ((0, t - 64), (0, 0))), jnp.float32)
  start = jnp.full((10,), 6.0, jnp.float32)
  weights = LossWeights(position=1.0, pose_reg=1e-6, shape_prior=3e-6)
  solve = lambda iters: joint_lm(joint_model(demo_model), start, jnp.zeros((len(prep.structure.smpl_index), 3)),
                                 poses, trans, _targets(prep, np.zeros((t, 3))), weights, np.int32(iters),
                                 jnp.float32(0.15), jnp.float32(3.0), structure=prep.structure)
  assert np.abs(np.asarray(solve(0)[0])).max() <= 3.0      # inside before the first step
  betas, _, _, _, cost, _ = solve(20)
  assert np.abs(np.asarray(betas)).max() <= 3.0
  assert float(cost) < 1e-5            # converged: mean squared error (m^2) plus the priors


def test_the_joint_solve_stops_once_converged_at_the_same_optimum(demo_model):
  """With rel_tol the solve stops once two accepted steps in a row lower the
  cost by less than that fraction: on noisy data (1 mm, the noise-aware prior
  of the default; rel_tol 1e-3, as this small problem still creeps by 1e-4 an
  iteration along a weak shape direction) it stops in fewer than half of 40
  iterations, at the cost 40 reach to 0.5% (the first iterations take it down
  by 40%) and the same shape to 0.05; rel_tol 0 runs every iteration."""
  from jaxfit.fit import joint_lm as jl
  from jaxfit.fit.types import LossWeights
  # Every joint weighted alike (the joints noncomparable_weight puts last make
  # directions that creep for many more iterations).
  settings = _settings(**{'offsets.joints': '', 'noncomparable_weight': 1.0})
  trial, truth = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=64, seed=29,
                                         noise_m=0.001)
  prep = prepare_trial(trial, settings.prepare, demo_model.parents)
  t = prep.targets.shape[0]
  rng = np.random.default_rng(0)
  poses = np.pad(truth['poses'] + rng.normal(scale=0.05, size=truth['poses'].shape),
                 ((0, t - 64), (0, 0), (0, 0))).astype(np.float32)
  trans = np.pad(truth['trans'], ((0, t - 64), (0, 0))).astype(np.float32)
  weights = LossWeights(position=1.0, pose_reg=1e-6, shape_prior=3e-6)
  counts = {}

  def solve(rel_tol):
    counts[rel_tol] = 0

    def call(fn, args, static=None):
      counts[rel_tol] += fn is jl._chunk_reduce   # once an iteration  # pylint: disable=protected-access
      return compiled.call(fn, args, static)
    return jl.joint_lm(joint_model(demo_model), np.zeros(10, np.float32),
                       np.zeros((len(prep.structure.smpl_index), 3), np.float32), poses, trans,
                       _targets(prep, np.zeros((t, 3))), weights, 40, np.float32(0.15),
                       np.float32(3.0), 1.0, 1e-4, structure=prep.structure, call=call,
                       rel_tol=rel_tol)
  full, early = solve(0.0), solve(1e-3)
  assert counts[0.0] == 40 * (t // 128)          # every iteration, each chunk
  assert counts[1e-3] < counts[0.0] / 2, counts
  assert float(full[4]) <= float(early[4]) <= float(full[4]) * 1.005, (float(early[4]), float(full[4]))
  np.testing.assert_allclose(early[0], full[0], atol=0.05)


def test_bounded_joint_solve_reaches_the_bounded_optimum(demo_model):
  """A body beyond the bound (betas 4.5 and -4): the active-set joint solve
  ends at the optimum of the bounded problem, as found independently by
  scipy's bounded trust-region least squares on the same residuals (no
  priors; the same per-joint weights: the default config doubles the feet in
  ground contact, here every frame). Six frames: more add nothing to what is
  tested, and scipy's dense solve grows as their cube (12 frames took it 35
  s). When the active set came in, clamping alone (no active set) ended 76%
  above the optimum after the same 60 iterations (12 frames)."""
  import scipy.optimize
  from jaxfit.body.model import forward_kinematics
  from jaxfit.fit.joint_lm import joint_lm
  from jaxfit.fit.lm import moving_joints
  from jaxfit.fit.types import LossWeights
  frames = 6
  settings = _settings()
  true_betas = np.zeros(10)
  true_betas[:2] = (4.5, -4.0)
  with jax.experimental.enable_x64():
    model = joint_model(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), demo_model))
    trial, truth = make_ground_truth_trial(demo_model, {n: n for n in SMPL_JOINT_NAMES},
                                           num_frames=frames, seed=25, betas=true_betas)
    prep = prepare_trial(trial, settings.prepare, demo_model.parents)
    t_pad = prep.targets.shape[0]
    poses0 = np.pad(truth['poses'], ((0, t_pad - frames), (0, 0), (0, 0)))
    trans0 = np.pad(truth['trans'], ((0, t_pad - frames), (0, 0)))
    targets = _targets(prep, np.zeros((t_pad, 3)), dtype=np.float64)
    weights = LossWeights(position=1.0)
    betas, _, poses, trans, cost, _ = joint_lm(
        model, jnp.zeros(10), jnp.zeros((24, 3)), jnp.asarray(poses0), jnp.asarray(trans0), targets,
        weights, 60, jnp.zeros(24), 3.0, 0.0, structure=prep.structure)
    # The same problem for scipy: betas in [-3, 3], every frame's pose and
    # translation, the position term with the targets' own weights.
    active = np.asarray(moving_joints(model.parents, prep.structure.smpl_index))
    index = np.asarray(prep.structure.smpl_index)
    target = prep.targets[:frames]
    weight = np.asarray(targets.weight)[:frames]
    scale = np.sqrt(weight / (frames * len(index)))[..., None]

    def unpack(x):
      p = jnp.asarray(poses0[:frames]).at[:, active].set(x[10:10 + frames * len(active) * 3].reshape(frames, -1, 3))
      return x[:10], p, x[10 + frames * len(active) * 3:].reshape(frames, 3)

    @jax.jit
    def residual(x):
      b, p, t = unpack(x)
      joints = jax.vmap(lambda q, u: forward_kinematics(model, b, q, u)[0])(p, t)
      return (scale * (joints[:, index] - target)).ravel()

    jac = jax.jit(jax.jacfwd(residual))
    x0 = np.concatenate([np.zeros(10), poses0[:frames][:, active].ravel(), trans0[:frames].ravel()])
    ref = scipy.optimize.least_squares(lambda x: np.asarray(residual(x)), x0,
                                       jac=lambda x: np.asarray(jac(x)),
                                       bounds=(np.r_[np.full(10, -3.0), np.full(len(x0) - 10, -np.inf)],
                                               np.r_[np.full(10, 3.0), np.full(len(x0) - 10, np.inf)]),
                                       method='trf', xtol=1e-12, ftol=1e-14, gtol=1e-12, max_nfev=400)
  ref_cost = 2 * ref.cost            # scipy's cost is half the sum of squares
  assert np.abs(np.asarray(betas)).max() <= 3.0 + 1e-9
  np.testing.assert_allclose(np.asarray(betas)[:2], (3.0, -3.0), atol=1e-6)
  assert float(cost) <= ref_cost * (1 + 1e-3) + 1e-12, (float(cost), ref_cost)
  np.testing.assert_allclose(np.asarray(betas), ref.x[:10], atol=0.01)



def test_the_joint_solve_cost_is_the_losses_total(demo_model):
  """The joint solve's final cost (position, orientation and pose prior per
  frame; the shape and offset priors shared) is losses' total on the same
  state, before and after steps, on a real trial with the default prepare:
  the joints whose definitions differ (pelvis origin, lumbar, toes) weighted
  noncomparable_weight (1e-4) x their joint weight, the others 1."""
  from jaxfit.fit.joint_lm import joint_lm
  from jaxfit.fit.lm import active_joints
  from tests.conftest import total_loss
  from jaxfit.fit.types import FitParams, LossWeights, empty_anchor
  from tests.conftest import read_real_trial
  settings = _settings(**{'max_frames': 20})
  trial = read_real_trial('dev_opencap_unfiltered.b3d', 'walking2')
  prep = prepare_trial(trial, settings.prepare, demo_model.parents)
  structure = prep.structure
  names = prep.mapping.source_names
  low = {names[m] for m in range(len(names)) if prep.joint_weight[m] < 1}
  assert low == {'ground_pelvis', 'back', 'mtp_r', 'mtp_l'}, low
  np.testing.assert_allclose([prep.joint_weight[names.index(n)] for n in sorted(low)], 1e-4)
  for m in range(len(names)):    # and so do their bones (a bone weighs as its less observed end)
    seen = prep.valid[:, m]
    np.testing.assert_allclose(prep.observed[:prep.num_frames, m][seen], 1e-4 if names[m] in low else 1.0)
  model = joint_model(demo_model)
  t = prep.targets.shape[0]
  rng = np.random.default_rng(8)
  poses = np.zeros((t, 24, 3), np.float32)
  poses[:, 1:] = rng.normal(scale=0.1, size=(t, 23, 3))
  poses[:, np.setdiff1d(np.arange(24), active_joints(model.parents, structure))] = 0.0  # not solved
  trans = np.asarray(prep.filled[:, 0], np.float32)
  offsets = np.zeros((len(structure.smpl_index), 3), np.float32)
  offsets[list(structure.offset_joints)] = rng.normal(scale=0.05, size=(len(structure.offset_joints), 3))
  targets = _targets(prep, trans)
  weights = LossWeights(position=1.0, orientation=1e-2, pose_reg=1e-3, shape_prior=0.1,
                        offset_prior=10.0)
  pad = lambda a: np.concatenate([a, np.zeros((t - len(a),) + a.shape[1:], a.dtype)])
  for iterations in (0, 3):
    betas, offs, new_poses, new_trans, cost, w_shape = joint_lm(
        model, jnp.full(10, 0.5), jnp.asarray(offsets), jnp.asarray(poses), jnp.asarray(trans), targets,
        weights, iterations, np.asarray(prep.offset_bound), 3.0, 0.0, structure=structure)
    assert float(w_shape) == pytest.approx(0.1)
    expected = total_loss(model, FitParams(jnp.asarray(betas), jnp.asarray(pad(new_poses)),
                                           jnp.asarray(pad(new_trans)), jnp.asarray(offs)),
                          targets, empty_anchor(len(structure.smpl_index)), structure, weights)
    np.testing.assert_allclose(float(cost), float(expected), rtol=2e-4)
    if not iterations:   # the shared terms are a visible part of the cost (one dropped shows)
      offset_prior = 10.0 * np.mean(np.asarray(offs)[list(structure.offset_joints)] ** 2)
      shape_prior = 0.1 * np.mean(np.asarray(betas) ** 2)
      assert min(offset_prior, shape_prior) > 1e-3 * float(cost), (offset_prior, shape_prior, float(cost))
    else:
      assert float(cost) < initial
    initial = float(cost)
