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
  """The prior's weight is B sigma^2 w_pos / (N M) with sigma^2 the residual's
  variance per coordinate: with 10 mm of noise it is ~1e4x the exact-data
  floor of 0.1 mm, and it keeps |beta| <= 3."""
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


@pytest.mark.parametrize('which', ['demo', 'variant'])
def test_known_offsets_and_motion_are_recovered(demo_model, variant_model, which):
  """Targets = SMPL joints + known offsets. The motion of every target and the
  SMPL joints are recovered; offsets are recovered where joint centres can
  determine them (the knees: their rotation is pinned by the ankle). Elsewhere
  an offset trades exactly against a pose or shape change no target sees (a
  leaf joint's own rotation, collar and spine posture, the pelvis shape), and
  its prior decides; that is checked through the points, not the values."""
  model = _models(demo_model, variant_model)[which]
  # Offsets on joints whose definitions agree (knees, shoulders) only when asked.
  settings = _settings(**{'offsets.joints': ','.join(TRUE_OFFSETS)})
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
  plain = _settings(**{'offsets.joints': ''})
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
  """Any subset with the hips, knees and ankles: no divergence, |beta| <= 3."""
  from jaxfit.io.b3d import read_b3d_trials
  trial = read_b3d_trials(REAL, trials=['walking2'])[0]
  settings = _settings(**{f'joint_map.{name}': '' for name in unmapped})
  prep = prepare_trial(trial, settings.prepare, variant_model.parents)
  result = fit_trial(variant_model, prep, settings.fit)
  error = np.linalg.norm(result.points - prep.targets[:prep.num_frames], axis=-1)[prep.valid].mean() * 1000
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
  settings = _settings(**{'offsets.joints': ''})
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
  ground contact, here every frame). Clamping alone (no active set) ends at
  2.3e-3 after the same 60 iterations, 76% above the optimum (1.316e-3)."""
  import scipy.optimize
  from jaxfit.body.model import forward_kinematics
  from jaxfit.fit.joint_lm import joint_lm
  from jaxfit.fit.lm import moving_joints
  from jaxfit.fit.types import LossWeights
  frames = 12
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
