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
from jaxfit.fit.losses import total_loss
from jaxfit.fit.pipeline import _targets
from jaxfit.fit.types import FitParams, LossWeights, empty_anchor
from tests.conftest import make_settings


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
