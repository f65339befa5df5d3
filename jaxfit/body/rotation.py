"""Rotation conversions with finite, exact gradients at zero rotation.

All angles are radians; axis-angle vectors have shape [..., 3] and rotation
matrices [..., 3, 3]. Pure jax.numpy, vmappable and jittable in any dtype.
"""

import jax
import jax.numpy as jnp

# Below this squared angle the closed forms are replaced by their Taylor series.
# The series are accurate to machine precision there for float32 and float64.
_SMALL_ANGLE_SQ = 1e-6


def skew(v):
  """[..., 3] -> [..., 3, 3] cross-product matrix."""
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  zero = jnp.zeros_like(x)
  return jnp.stack([
      jnp.stack([zero, -z, y], -1),
      jnp.stack([z, zero, -x], -1),
      jnp.stack([-y, x, zero], -1),
  ], -2)


def axis_angle_to_matrix(axis_angle):
  """Rodrigues' formula. axis_angle: [..., 3] radians -> [..., 3, 3].

  Uses the 'double where' pattern so that value and gradient are finite and
  exact at zero rotation (unlike jax.scipy's Rotation.from_rotvec).
  """
  theta_sq = jnp.sum(axis_angle * axis_angle, axis=-1)
  small = theta_sq < _SMALL_ANGLE_SQ
  safe_sq = jnp.where(small, 1.0, theta_sq)
  theta = jnp.sqrt(safe_sq)
  sin_over_theta = jnp.where(
      small, 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0,
      jnp.sin(theta) / theta)
  one_minus_cos_over_theta_sq = jnp.where(
      small, 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0,
      (1.0 - jnp.cos(theta)) / safe_sq)
  k = skew(axis_angle)
  eye = jnp.eye(3, dtype=axis_angle.dtype)
  return (eye + sin_over_theta[..., None, None] * k +
          one_minus_cos_over_theta_sq[..., None, None] * (k @ k))


def matrix_to_quaternion(matrix):
  """[..., 3, 3] rotation -> [..., 4] unit quaternion (w, x, y, z), w >= 0.

  Shepperd's method: picks the numerically best of four candidate formulas.
  """
  m = matrix
  m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
  trace = m00 + m11 + m22
  candidates = jnp.stack([
      jnp.stack([1.0 + trace, m[..., 2, 1] - m[..., 1, 2],
                 m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
      jnp.stack([m[..., 2, 1] - m[..., 1, 2], 1.0 + m00 - m11 - m22,
                 m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
      jnp.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                 1.0 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
      jnp.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                 m[..., 1, 2] + m[..., 2, 1], 1.0 - m00 - m11 + m22], -1),
  ], -2)  # [..., 4 candidates, 4]
  diag = jnp.stack([trace, m00, m11, m22], -1)
  best = jnp.argmax(diag, axis=-1)
  q = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
  return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(quaternion):
  """[..., 4] (w, x, y, z) -> [..., 3] axis-angle with angle in [0, pi]."""
  q = jnp.where(quaternion[..., :1] < 0, -quaternion, quaternion)
  w, xyz = q[..., 0], q[..., 1:]
  sin_half_sq = jnp.sum(xyz * xyz, axis=-1)
  small = sin_half_sq < _SMALL_ANGLE_SQ
  sin_half = jnp.sqrt(jnp.where(small, 1.0, sin_half_sq))
  angle = 2.0 * jnp.arctan2(sin_half, w)
  # angle / sin(angle/2); near zero: 2/w * (1 + sin_half^2 / (3 w^2)).
  scale = jnp.where(small, 2.0 / w * (1.0 + sin_half_sq / (3.0 * w * w)),
                    angle / sin_half)
  return xyz * scale[..., None]


def matrix_to_axis_angle(matrix):
  """[..., 3, 3] rotation matrix -> [..., 3] axis-angle, radians."""
  return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


@jax.jit
def continuous_axis_angle(axis_angle, previous=None):
  """[T, ..., 3] -> the same rotations with, frame by frame, the axis-angle
  representative (angle + 2 pi k about the same axis) nearest the previous
  frame's, so trajectories have no 2 pi jumps. Frame 0 is kept as it is, or,
  given previous [..., 3] (the frame before, e.g. the last of the previous
  chunk of a trial), made nearest to it."""
  def nearest(prev, v):
    angle = jnp.sqrt(jnp.sum(v * v, -1, keepdims=True))
    axis = v / jnp.where(angle > 0, angle, 1.0)
    # (angle + 2 pi k) axis closest to prev: k = round((axis . prev - angle) / 2 pi).
    k = jnp.round((jnp.sum(axis * prev, -1, keepdims=True) - angle) / (2 * jnp.pi))
    out = jnp.where(angle > 0, (angle + 2 * jnp.pi * k) * axis, v)
    return out, out
  if previous is not None:
    return jax.lax.scan(nearest, previous, axis_angle)[1]
  _, rest = jax.lax.scan(nearest, axis_angle[0], axis_angle[1:])
  return jnp.concatenate([axis_angle[:1], rest], 0)
