"""A trial's frames cut into fixed chunks on the host (NumPy), so that every
compiled program sees the same number of frames whatever the trial's length."""

import jax
import numpy as np


def pad_frames(a, length, front=0):
  """a [T,...] with zero frames before (front) and after, to `length` frames."""
  a = np.asarray(a)
  return np.concatenate([np.zeros((front,) + a.shape[1:], a.dtype), a,
                         np.zeros((length - front - a.shape[0],) + a.shape[1:], a.dtype)])


def frame_chunks(tree, size):
  """A pytree of [T,...] arrays as a list of pytrees of `size` frames each,
  the last padded with zero frames (ceil(T / size) chunks)."""
  n = jax.tree.leaves(tree)[0].shape[0]
  length = -(-n // size) * size
  padded = jax.tree.map(lambda a: pad_frames(a, length), tree)
  return [jax.tree.map(lambda a, s=start: a[s:s + size], padded) for start in range(0, length, size)]
