"""SMPL forward kinematics, skinning and rotations against float64 NumPy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from jaxfit.body import (axis_angle_to_matrix, forward_kinematics, matrix_to_axis_angle,
                         shaped_joints, skin_vertices)
from tests import numpy_reference as ref


@pytest.fixture(autouse=True)
def _x64():
  with jax.experimental.enable_x64():
    yield


def _as_numpy(model):
  return dict(v_template=np.asarray(model.v_template, np.float64),
              shapedirs=np.asarray(model.shapedirs, np.float64),
              posedirs=np.asarray(model.posedirs, np.float64).reshape(model.num_vertices * 3, 207).reshape(model.num_vertices, 3, 207),
              J_regressor=np.asarray(model.J_regressor, np.float64),
              weights=np.asarray(model.weights, np.float64), parents=model.parents)


def test_axis_angle_matches_scipy_and_is_orthonormal():
  rng = np.random.default_rng(0)
  aa = rng.normal(size=(200, 3)) * rng.uniform(0, 3, size=(200, 1))
  aa[:3] = [[0, 0, 0], [1e-5, 0, 0], [0, np.pi - 1e-6, 0]]
  mats = np.asarray(axis_angle_to_matrix(jnp.asarray(aa)))
  np.testing.assert_allclose(mats, Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)
  np.testing.assert_allclose(mats @ np.swapaxes(mats, -1, -2), np.broadcast_to(np.eye(3), mats.shape), atol=1e-12)


def test_matrix_to_axis_angle_round_trip_including_near_pi():
  rng = np.random.default_rng(1)
  axis = rng.normal(size=(300, 3))
  axis /= np.linalg.norm(axis, axis=1, keepdims=True)
  angle = np.concatenate([rng.uniform(0, np.pi - 1e-3, 290), np.full(5, 0.0), np.full(5, np.pi - 1e-7)])
  aa = axis * angle[:, None]
  back = np.array(matrix_to_axis_angle(axis_angle_to_matrix(jnp.asarray(aa))))
  np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), Rotation.from_rotvec(aa).as_matrix(), atol=1e-9)
  np.testing.assert_allclose(back[:290], aa[:290], atol=1e-9)


@pytest.mark.parametrize('point', [np.zeros(3), np.array([1e-5, -2e-5, 3e-6]), np.array([0.3, -1.2, 0.7])])
def test_rotation_gradient_matches_finite_differences(point):
  f = lambda aa: jnp.sum(axis_angle_to_matrix(aa) * jnp.arange(9.0).reshape(3, 3))
  grad = np.asarray(jax.grad(f)(jnp.asarray(point)))
  assert np.all(np.isfinite(grad))
  eps = 1e-6
  fd = np.array([(f(jnp.asarray(point + eps * e)) - f(jnp.asarray(point - eps * e))) / (2 * eps)
                 for e in np.eye(3)])
  np.testing.assert_allclose(grad, fd, atol=1e-7)


@pytest.mark.parametrize('which', ['demo', 'random_smpl'])
def test_forward_kinematics_matches_numpy_reference(which, demo_model, random_smpl_model):
  model = demo_model if which == 'demo' else random_smpl_model
  m = _as_numpy(model)
  rng = np.random.default_rng(2)
  for _ in range(5):
    betas = rng.normal(size=model.num_betas)
    poses = rng.normal(scale=0.6, size=(24, 3))
    trans = rng.normal(size=3)
    rest = m['J_regressor'] @ (m['v_template'] + m['shapedirs'] @ betas)
    expected, world = ref.fk(model.parents, rest, poses, trans)
    joints, rotations = forward_kinematics(model, jnp.asarray(betas), jnp.asarray(poses), jnp.asarray(trans))
    chex.assert_shape(joints, (24, 3))
    chex.assert_shape(rotations, (24, 3, 3))
    np.testing.assert_allclose(np.asarray(joints), expected, atol=1e-5 if which == 'demo' else 1e-9)
    np.testing.assert_allclose(np.asarray(rotations), world[:, :3, :3], atol=1e-9)


def test_zero_pose_gives_shaped_rest_joints(demo_model):
  betas = jnp.asarray(np.random.default_rng(3).normal(size=10))
  trans = jnp.asarray([0.1, -0.2, 0.3])
  joints, _ = forward_kinematics(demo_model, betas, jnp.zeros((24, 3)), trans)
  np.testing.assert_allclose(np.asarray(joints), np.asarray(shaped_joints(demo_model, betas) + trans), atol=1e-6)


def test_root_rotation_acts_about_the_pelvis(demo_model):
  poses = jnp.zeros((24, 3)).at[0].set(jnp.asarray([0.0, np.pi / 2, 0.0]))
  joints, _ = forward_kinematics(demo_model, jnp.zeros(10), poses, jnp.zeros(3))
  rest = np.asarray(shaped_joints(demo_model, jnp.zeros(10)))
  np.testing.assert_allclose(np.asarray(joints[0]), rest[0], atol=1e-6)
  # Left hip (+X at rest) turns to -Z under +90 degrees about +Y.
  np.testing.assert_allclose(np.asarray(joints[1] - joints[0]),
                             Rotation.from_rotvec([0, np.pi / 2, 0]).apply(rest[1] - rest[0]), atol=1e-6)


@pytest.mark.parametrize('scale', [0.0, 0.5])
def test_fk_gradients_match_finite_differences(demo_model, scale):
  rng = np.random.default_rng(4)
  betas = rng.normal(size=10)
  poses = rng.normal(scale=scale, size=(24, 3))
  trans = rng.normal(size=3)
  weights = rng.normal(size=(24, 3))
  @jax.jit
  def loss(b, p, t):
    return jnp.sum(weights * forward_kinematics(demo_model, b, p, t)[0])
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(jnp.asarray(betas), jnp.asarray(poses), jnp.asarray(trans))
  eps = 1e-6
  for arg, (g, x) in enumerate(zip(grads, (betas, poses, trans))):
    g = np.asarray(g).ravel()
    assert np.all(np.isfinite(g))
    for i in rng.choice(x.size, size=min(x.size, 12), replace=False):
      dx = np.zeros(x.size); dx[i] = eps
      args_p = [betas, poses, trans]; args_m = [betas, poses, trans]
      args_p[arg] = x + dx.reshape(x.shape); args_m[arg] = x - dx.reshape(x.shape)
      fd = (loss(*map(jnp.asarray, args_p)) - loss(*map(jnp.asarray, args_m))) / (2 * eps)
      np.testing.assert_allclose(g[i], fd, atol=1e-6, rtol=1e-5)


def test_skin_vertices_at_zero_pose_is_the_shaped_template(demo_model):
  betas = np.random.default_rng(5).normal(size=10)
  verts = skin_vertices(demo_model, jnp.asarray(betas), jnp.zeros((24, 3)), jnp.zeros(3))
  expected = np.asarray(demo_model.v_template) + np.asarray(demo_model.shapedirs) @ betas
  chex.assert_shape(verts, (demo_model.num_vertices, 3))
  np.testing.assert_allclose(np.asarray(verts), expected, atol=1e-5)


def test_skin_vertices_match_numpy_lbs_with_pose_correctives(random_smpl_model):
  m = _as_numpy(random_smpl_model)
  rng = np.random.default_rng(6)
  betas, poses, trans = rng.normal(size=10), rng.normal(scale=0.5, size=(24, 3)), rng.normal(size=3)
  expected = ref.lbs(m, betas, poses, trans)
  got = skin_vertices(random_smpl_model, jnp.asarray(betas), jnp.asarray(poses), jnp.asarray(trans))
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-9)


def test_vmapped_fk_over_frames_and_subjects(demo_model):
  rng = np.random.default_rng(7)
  betas = jnp.asarray(rng.normal(size=(2, 10)), jnp.float32)
  poses = jnp.asarray(rng.normal(scale=0.4, size=(2, 5, 24, 3)), jnp.float32)
  trans = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
  per_frame = jax.vmap(lambda b, p, t: forward_kinematics(demo_model, b, p, t)[0], in_axes=(None, 0, 0))
  batched = jax.jit(jax.vmap(per_frame))(betas, poses, trans)
  chex.assert_shape(batched, (2, 5, 24, 3))
  single = jax.jit(forward_kinematics)(demo_model, betas[1], poses[1, 3], trans[1, 3])[0]
  np.testing.assert_allclose(np.asarray(batched[1, 3]), np.asarray(single), atol=1e-5)
