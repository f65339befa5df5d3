"""The joint shape-and-pose solve, learned correspondence offsets and the shape
prior, on generated truth (known betas, poses and offsets) and on real trials."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit.body.model import joint_model, make_body_model
from jaxfit.demo.body_model import variant_body_arrays
from jaxfit.demo.smpl_truth import make_ground_truth_trial
from jaxfit.fit.joint_lm import shape_information
from jaxfit.fit.pipeline import _targets, fit_trial
from jaxfit.data.prepare import prepare_trial
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


@pytest.mark.parametrize('which', ['demo', 'variant'])
def test_default_prior_costs_little_on_noiseless_truth(demo_model, variant_model, which):
  """The default shape prior (1e-5, chosen on real trials) pulls weakly
  determined shape directions towards the mean: a bounded cost on exact data."""
  model = _models(demo_model, variant_model)[which]
  settings = _settings()
  trial, truth = make_ground_truth_trial(model, settings.prepare.joint_map, num_frames=FRAMES, seed=21)
  prep = prepare_trial(trial, settings.prepare, model.parents)
  result = fit_trial(model, prep, settings.fit)
  assert np.linalg.norm(result.points - truth['clean'], axis=-1).mean() * 1000 < 0.6
  assert np.abs(result.betas).max() <= 3.0


@pytest.mark.parametrize('which', ['demo', 'variant'])
def test_known_offsets_and_motion_are_recovered(demo_model, variant_model, which):
  """Targets = SMPL joints + known offsets. The motion of every target and the
  SMPL joints are recovered; offsets are recovered where joint centres can
  determine them (the knees: their rotation is pinned by the ankle). Elsewhere
  an offset trades exactly against a pose or shape change no target sees (a
  leaf joint's own rotation, collar and spine posture, the pelvis shape), and
  its prior decides; that is checked through the points, not the values."""
  model = _models(demo_model, variant_model)[which]
  settings = _settings()
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
  betas, _, _, _, cost = solve(20)
  assert np.abs(np.asarray(betas)).max() <= 3.0
  assert float(cost) < 1e-5            # converged: mean squared error (m^2) plus the priors
