"""Paths users take that used to be wrong without an error: float64, headings
across +-pi, gap-filled targets, padding, repeated passes, per-joint weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit.body.rotation import axis_angle_to_matrix, continuous_axis_angle, matrix_to_axis_angle
from jaxfit.demo.smpl_truth import make_ground_truth_trial
from jaxfit.fit.pipeline import fit_trial
from jaxfit.data.prepare import prepare_trial
from tests.conftest import make_settings

FRAMES = 120


def _settings(**overrides):
  return make_settings(learn_offsets=False, **overrides)   # SMPL-generated truth


def _fit(model, trial, settings):
  prep = prepare_trial(trial, settings.prepare, model.parents)
  return prep, fit_trial(model, prep, settings.fit)


def _mpjpe_mm(result, prep, clean):
  return np.linalg.norm(result.joints[:, list(prep.structure.smpl_index)] - clean, axis=-1).mean() * 1000


def test_continuous_axis_angle_keeps_rotations_and_removes_jumps():
  t = np.linspace(0, 1, 400)
  heading = 4 * np.pi * t                                   # two full turns about +Y
  raw = np.stack([0.1 * np.sin(9 * t), heading, 0.05 * np.cos(7 * t)], -1)[:, None]
  wrapped = np.asarray(jax.vmap(lambda r: matrix_to_axis_angle(
      axis_angle_to_matrix(r)))(jnp.asarray(raw)))          # angles folded into [0, pi]
  assert np.abs(np.diff(wrapped, axis=0)).max() > 3.0       # the jumps the fix removes
  smooth = np.asarray(continuous_axis_angle(jnp.asarray(wrapped)))
  assert np.abs(np.diff(smooth, axis=0)).max() < 0.1
  np.testing.assert_allclose(np.asarray(axis_angle_to_matrix(jnp.asarray(smooth))),
                             np.asarray(axis_angle_to_matrix(jnp.asarray(raw))), atol=1e-5)


@pytest.mark.parametrize('variant', ['simultaneous', 'sequential'])
def test_a_trial_turning_two_full_turns_fits_like_a_straight_one(demo_model, variant):
  settings = _settings(variant=variant, **{'loss.temporal': 0.1})   # the reference's weight
  errors = {}
  for turns in (0.0, 2.0):
    trial, truth = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=FRAMES,
                                           seed=11, turns=turns)
    prep, result = _fit(demo_model, trial, settings)
    errors[turns] = _mpjpe_mm(result, prep, truth['clean'])
    if variant == 'simultaneous':
      # Saved poses are continuous. (Where the heading passes a multiple of 2 pi
      # the rotation is near identity and a continuous axis-angle path amplifies
      # rotation error by 2 pi k / angle; the sequential variant's last frames,
      # ~1 degree off in root twist, can jump there, so only the default is held
      # to this.)
      jumps = np.abs(np.diff(result.poses, axis=0)).max()
      assert jumps < np.pi / 2, (turns, jumps)
  assert errors[2.0] < 1.0 and abs(errors[2.0] - errors[0.0]) < 0.1, errors


def test_float64_is_really_float64(demo_model):
  # Offsets learned (the default): the programs of
  # test_joint_solve.py::test_noiseless_truth_is_recovered_exactly, compiled once.
  settings = make_settings(dtype='float64')
  trial, truth = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=FRAMES, seed=2)
  with jax.experimental.enable_x64():
    prep, result = _fit(demo_model, trial, settings)
  for name in ('betas', 'poses', 'trans', 'joints'):
    assert getattr(result, name).dtype == np.float64, name
  assert _mpjpe_mm(result, prep, truth['clean']) < 1.0
  with pytest.raises(ValueError, match='jax_enable_x64'):
    fit_trial(demo_model, prep, settings.fit)                # x64 off: refused, not silently float32


@pytest.mark.parametrize('variant', ['simultaneous', 'sequential'])
def test_gap_filled_targets_pull_only_as_much_as_gap_fill_says(demo_model, variant):
  """All joints missing for 40 frames: inside the gap the targets are a linear
  interpolation, which a strong pose prior opposes. With gap_fill 0.1 the fit
  must follow the interpolation less than with gap_fill 1 (per-frame blocks used
  to renormalise the 0.1 away)."""
  base = _settings()
  trial, _ = make_ground_truth_trial(demo_model, base.prepare.joint_map, num_frames=FRAMES, seed=4)
  joints = np.array(trial.joints)
  joints[40:80] = np.nan
  gappy = type(trial)(**{**trial.__dict__, 'joints': joints, 'valid': np.all(np.isfinite(joints), -1)})
  deviation = {}
  for gap_fill in (0.1, 1.0):
    s = _settings(variant=variant, **{'loss.gap_fill': gap_fill, 'loss.pose_reg': 3e-2})
    prep, result = _fit(demo_model, gappy, s)
    inside = result.joints[45:75][:, list(prep.structure.smpl_index)]
    deviation[gap_fill] = np.linalg.norm(inside - prep.targets[45:75], axis=-1).mean()
    observed = result.joints[:35][:, list(prep.structure.smpl_index)]
    assert np.linalg.norm(observed - prep.targets[:35], axis=-1).mean() < 0.03
  assert deviation[0.1] > 1.5 * deviation[1.0], deviation


def test_padding_does_not_change_the_fit(demo_model):
  trial, _ = make_ground_truth_trial(demo_model, _settings().prepare.joint_map, num_frames=100, seed=6)
  results = {}
  for bucket in (1, 128):
    s = _settings(frame_bucket=bucket)
    prep, results[bucket] = _fit(demo_model, trial, s)
    assert prep.targets.shape[0] == (100 if bucket == 1 else 128)   # prepare.padded_length
  np.testing.assert_allclose(results[1].joints, results[128].joints, atol=2e-4)
  # float32 sums over differently sized arrays: weak shape directions drift a little
  np.testing.assert_allclose(results[1].betas, results[128].betas, atol=2e-2)


def test_second_pass_runs_and_keeps_the_accuracy(demo_model):
  s = _settings(max_passes=2, **{'sequence.iters': 20})
  trial, truth = make_ground_truth_trial(demo_model, s.prepare.joint_map, num_frames=FRAMES, seed=8)
  prep, result = _fit(demo_model, trial, s)
  assert 'sequence_pass2' in result.losses
  assert not {'pose', 'pose_pass2'} & set(result.losses)   # stage 3 has 0 steps: not run
  assert _mpjpe_mm(result, prep, truth['clean']) < 1.0


def test_a_zero_joint_weight_ignores_that_joint(demo_model):
  base = _settings()
  trial, truth = make_ground_truth_trial(demo_model, base.prepare.joint_map, num_frames=FRAMES, seed=9)
  names = list(trial.joint_names)
  joints = np.array(trial.joints)
  joints[:, names.index('radius_hand_l')] += [0.0, 0.15, 0.0]       # a wrong wrist target
  bad = type(trial)(**{**trial.__dict__, 'joints': joints})
  errors = {}
  for weight in (1.0, 0.0):
    s = _settings(**{'joint_weights.left_wrist': weight})
    prep, result = _fit(demo_model, bad, s)
    m = list(prep.mapping.source_names).index('radius_hand_l')
    assert float(prep.weight[:FRAMES, m].max()) == pytest.approx(weight)
    others = [i for i in range(len(prep.structure.smpl_index)) if i != m]
    fitted = result.joints[:, list(prep.structure.smpl_index)]
    errors[weight] = (np.linalg.norm(fitted[:, others] - truth['clean'][:, others], axis=-1).mean() * 1000,
                      np.linalg.norm(fitted[:, m] - prep.targets[:FRAMES, m], axis=-1).mean() * 1000)
  print(errors)
  # weight 1: the wrong target drags the wrist (and the rest); weight 0: ignored.
  assert errors[1.0][1] < 0.5 * errors[0.0][1]
  assert errors[0.0][0] < 1.0 < errors[1.0][0]


def test_max_frames_fits_the_first_frames_only(demo_model):
  s = _settings(max_frames=50)
  trial, truth = make_ground_truth_trial(demo_model, s.prepare.joint_map, num_frames=FRAMES, seed=10)
  prep, result = _fit(demo_model, trial, s)
  assert prep.num_frames == 50 and result.poses.shape == (50, 24, 3)
  assert _mpjpe_mm(result, prep, truth['clean'][:50]) < 1.0
