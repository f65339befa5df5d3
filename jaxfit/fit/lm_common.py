"""What both Levenberg-Marquardt solvers (lm.py per frame, joint_lm.py for all
frames with the shared shape) do alike at each step: damp the Gauss-Newton
matrix, bound the step, update rotations by right-multiplied increments, and
accept the step (less damping) or reject it (more)."""

import jax.numpy as jnp

from jaxfit.body.rotation import axis_angle_to_matrix, matrix_to_axis_angle

# Damping floor, relative to the mean curvature: directions the residuals barely
# see (limb twists, unobserved leaf joints) still get damped.
DAMPING_FLOOR = 1e-2
# Trust region: the largest change of a rotation coordinate in one step (rad);
# the linearisation of rotations is poor beyond about half a radian.
MAX_ROTATION_STEP = 0.5


def damped(h, damping):
  """h [...,n,n] + damping * diag(h_ii + DAMPING_FLOOR * mean_i h_ii) (Marquardt's
  scaling). lm.py writes the same sum for its one [n,n] matrix in its own
  order of operations: float32 rounding there differs in the last bit, which
  its iterations amplify, and fits stay bit-identical to earlier versions."""
  diag = jnp.diagonal(h, axis1=-2, axis2=-1)
  floor = DAMPING_FLOOR * jnp.mean(diag, -1, keepdims=True) + 1e-12
  return h + damping * (diag + floor)[..., None] * jnp.eye(h.shape[-1], dtype=h.dtype)


def step_scale(delta, bound, axis=None):
  """The factor in (0, 1] that brings max |delta| (over `axis`, all by default) within bound."""
  return jnp.minimum(1.0, bound / (jnp.max(jnp.abs(delta), axis, keepdims=axis is not None) + 1e-12))


def rotate(axis_angle, increment):
  """Rotations [...,3] rad after the local increments [...,3] rad: R <- R exp(d)."""
  return matrix_to_axis_angle(axis_angle_to_matrix(axis_angle) @ axis_angle_to_matrix(increment))


# An accepted step divides the damping by DAMPING_DOWN, a rejected one multiplies it by DAMPING_UP.
DAMPING_DOWN, DAMPING_UP = 3.0, 4.0


def next_damping(better, damping):
  """Accepted step: a third of the damping; rejected: four times it."""
  return jnp.where(better, damping / DAMPING_DOWN, damping * DAMPING_UP)
