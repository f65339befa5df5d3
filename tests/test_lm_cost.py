"""The per-frame Levenberg-Marquardt solve minimises the loss of
jaxfit.fit.losses: its cost per frame is that loss's total on the same terms
(the joint solve's: tests/test_fit.py::test_joint_solve_cost_is_the_losses_total)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.body.model import joint_model
from jaxfit.data.prepare import prepare_trial
from jaxfit.demo.smpl_truth import make_ground_truth_trial
from jaxfit.fit.lm import active_joints, lm_frames
from jaxfit.fit.pipeline import _targets
from jaxfit.fit.types import FitParams, LossWeights, empty_anchor
from tests.conftest import make_settings, read_real_trial, total_loss


def _state(demo_model, seed=3, frames=40):
  """A prepared trial and a perturbed state: betas [B], offsets [M,3] m,
  poses [T_pad,24,3] rad (joints that move no target left at 0), trans [T_pad,3] m."""
  settings = make_settings()
  trial, truth = make_ground_truth_trial(demo_model, settings.prepare.joint_map, num_frames=frames,
                                         seed=seed)
  prep = prepare_trial(trial, settings.prepare, demo_model.parents)
  rng = np.random.default_rng(seed)
  t = prep.targets.shape[0]
  active = list(active_joints(demo_model.parents, prep.structure))
  poses = np.zeros((t, 24, 3))
  poses[:frames] = truth['poses']
  poses[:, active] += 0.05 * rng.normal(size=(t, len(active), 3))
  poses[:, [k for k in range(24) if k not in active]] = 0.0
  trans = np.pad(truth['trans'], ((0, t - frames), (0, 0))) + 0.01 * rng.normal(size=(t, 3))
  offsets = np.zeros((len(prep.structure.smpl_index), 3))
  offsets[list(prep.structure.offset_joints)] = 0.02 * rng.normal(size=(len(prep.structure.offset_joints), 3))
  betas = 0.5 * rng.normal(size=10)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return prep, f32(betas), f32(offsets), f32(poses), f32(trans)


def test_the_per_frame_solve_cost_is_the_losses_total(demo_model):
  prep, betas, offsets, poses, trans = _state(demo_model)
  model = joint_model(demo_model)
  targets = _targets(prep, np.asarray(trans))
  weights = LossWeights(position=1.0, pose_reg=1e-3)
  terms = ('position', 'pose_reg')
  *_, cost = lm_frames(model, betas, offsets, poses, trans, targets, weights, np.int32(0),
                       structure=prep.structure, terms=terms)
  # Frame by frame: each frame is a block of its own in losses' normalisation.
  anchor = empty_anchor(len(prep.structure.smpl_index))
  for t in (0, 7, 39):
    one = lambda a: a[t:t + 1]
    expected = total_loss(model, FitParams(betas, one(poses), one(trans), offsets),
                          jax.tree.map(one, targets), anchor, prep.structure, weights)
    np.testing.assert_allclose(float(cost[t]), float(expected), rtol=1e-5)


def _random_rotations(rng, n, max_angle):
  """[n,3,3] rotations of angles uniform in [0, max_angle) rad about random axes."""
  from scipy.spatial.transform import Rotation
  axes = rng.normal(size=(n, 3))
  axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
  return Rotation.from_rotvec(axes * rng.uniform(0, max_angle, (n, 1))).as_matrix()


def test_the_three_row_orientation_error_is_the_chordal_distance():
  """||orientation_error(g, t)||^2 = ||g - t||^2 / 2 = 4 sin^2(theta/2), and the
  error is 2 sin(theta/2) times the axis of t^T g, for errors up to 175 deg."""
  from jaxfit.fit.losses import orientation_error
  from scipy.spatial.transform import Rotation
  rng = np.random.default_rng(4)
  t = _random_rotations(rng, 50, np.pi)
  e = _random_rotations(rng, 50, np.radians(175.0))
  g = t @ e
  with jax.experimental.enable_x64():
    r = np.asarray(orientation_error(jnp.asarray(g), jnp.asarray(t)))
  np.testing.assert_allclose(np.sum(r * r, -1), np.sum((g - t) ** 2, (-2, -1)) / 2, rtol=1e-9)
  rotvec = Rotation.from_matrix(e).as_rotvec()
  theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)
  np.testing.assert_allclose(r, 2 * np.sin(theta / 2) * rotvec / theta, atol=1e-9)


def test_orientation_error_jacobian_matches_finite_differences():
  """lm.orientation_error_jacobian's dr/da (g <- exp([a]x) g, a world axis)
  against central differences in float64, for errors up to 170 deg."""
  from jaxfit.body.rotation import axis_angle_to_matrix
  from jaxfit.fit.lm import orientation_error_jacobian
  from jaxfit.fit.losses import orientation_error
  rng = np.random.default_rng(5)
  t = _random_rotations(rng, 30, np.pi)
  g = t @ _random_rotations(rng, 30, np.radians(170.0))
  h = 1e-6
  with jax.experimental.enable_x64():
    r, jac = orientation_error_jacobian(jnp.asarray(g), jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(r), np.asarray(orientation_error(jnp.asarray(g), jnp.asarray(t))),
                               atol=1e-12)
    columns = []
    for i in range(3):
      step = np.zeros(3)
      step[i] = h
      turned = lambda s: orientation_error(axis_angle_to_matrix(jnp.asarray(s)) @ jnp.asarray(g),
                                           jnp.asarray(t))
      columns.append((np.asarray(turned(step)) - np.asarray(turned(-step))) / (2 * h))
  np.testing.assert_allclose(np.asarray(jac), np.stack(columns, -1), atol=1e-6)


def test_the_per_frame_solve_cost_with_orientations_is_the_losses_total(demo_model):
  """With the segment-orientation term (3 rows per segment, analytic Jacobian)
  the per-frame solve's cost is still losses' total, before and after steps."""
  settings = make_settings(**{'max_frames': 20})
  trial = read_real_trial('dev_opencap_unfiltered.b3d', 'walking2')
  prep = prepare_trial(trial, settings.prepare, demo_model.parents)
  assert prep.structure.segment_joints
  model = joint_model(demo_model)
  t = prep.targets.shape[0]
  rng = np.random.default_rng(6)
  poses = jnp.asarray(rng.normal(scale=0.3, size=(t, 24, 3)), jnp.float32)
  trans = jnp.asarray(np.asarray(prep.filled[:, 0]), jnp.float32)
  targets = _targets(prep, np.asarray(trans))
  weights = LossWeights(position=1.0, orientation=1e-2, pose_reg=1e-3)
  terms = ('position', 'orientation', 'pose_reg')
  inactive = np.setdiff1d(np.arange(24), active_joints(model.parents, prep.structure))
  poses = poses.at[:, inactive].set(0.0)
  betas, offsets = jnp.zeros(10, jnp.float32), jnp.zeros((len(prep.structure.smpl_index), 3))
  anchor = empty_anchor(len(prep.structure.smpl_index))
  for iterations in (0, 3):
    new_poses, new_trans, cost = lm_frames(model, betas, offsets, poses, trans, targets, weights,
                                           np.int32(iterations), structure=prep.structure,
                                           terms=terms)
    for f in (0, 11):
      one = lambda a: a[f:f + 1]
      expected = total_loss(model, FitParams(betas, one(new_poses), one(new_trans), offsets),
                            jax.tree.map(one, targets), anchor, prep.structure, weights)
      np.testing.assert_allclose(float(cost[f]), float(expected), rtol=1e-5)
    if iterations:
      assert float(jnp.sum(cost[:12])) < float(jnp.sum(initial[:12]))
    initial = cost
