"""The generated jaxfit demo body: deterministic, SMPL conventions, exact regressor."""

import jax.numpy as jnp
import numpy as np

from jaxfit.body import SMPL_JOINT_NAMES, shaped_joints
from jaxfit.demo.body_model import demo_body_arrays

J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


def test_deterministic():
  a, b = demo_body_arrays(), demo_body_arrays()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_smpl_conventions_and_anthropometry():
  a = demo_body_arrays()
  j = a['J']
  assert a['v_template'].shape[0] > 2000 and a['shapedirs'].shape[2] == 10
  assert j[J['left_hip'], 0] > 0 > j[J['right_hip'], 0]           # left at +X
  assert j[J['left_foot'], 2] > j[J['left_ankle'], 2] + 0.05      # toes forward, +Z
  assert j[J['head'], 1] > j[J['neck'], 1] > j[J['pelvis'], 1] > j[J['left_knee'], 1]  # +Y up
  stature = a['v_template'][:, 1].max() - a['v_template'][:, 1].min()
  assert 1.6 < stature < 1.8
  np.testing.assert_allclose(a['weights'].sum(1), 1.0, atol=1e-12)
  assert not np.any(a['posedirs'])


def test_regressor_reproduces_joints_exactly_for_any_shape(demo_model):
  a = demo_body_arrays()
  rng = np.random.default_rng(0)
  for _ in range(3):
    betas = rng.normal(size=10) * 2
    verts = a['v_template'] + a['shapedirs'] @ betas
    np.testing.assert_allclose(np.asarray(shaped_joints(demo_model, jnp.asarray(betas, jnp.float32))),
                               a['J_regressor'] @ verts, atol=2e-5)


def test_betas_are_standardised_and_beta0_is_stature():
  a = demo_body_arrays()
  y = a['v_template'][:, 1]
  top, bottom = np.argmax(y), np.argmin(y)
  per_beta_height = a['shapedirs'][top, 1] - a['shapedirs'][bottom, 1]
  assert per_beta_height[0] > 0.05                     # about 1 SD of stature (m)
  assert np.abs(per_beta_height[0]) > 5 * np.abs(per_beta_height[1:]).max()
  norms = np.linalg.norm(a['shapedirs'].reshape(-1, 10), axis=0)
  assert np.all(np.diff(norms) <= 1e-9)                # PCA order, decreasing variance
