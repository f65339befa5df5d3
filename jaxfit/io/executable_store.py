"""Compiled executables on disk, so a new process skips tracing and compiling.

JAX's persistent compilation cache saves XLA's compile step but still traces
and lowers every function in every process (about 3 s for the pipeline on a
CPU). This store keeps the compiled executables themselves
(jax.experimental.serialize_executable), keyed by everything that decides the
program: the function, its static arguments, argument structure, shapes and
dtypes, jax/jaxlib versions, the backend and device kind, x64, XLA_FLAGS and
a hash of jaxfit's own source. A missing, stale or unreadable entry is
simply compiled again and rewritten.
"""

import hashlib
import os
import pickle

import jax
import jax.numpy as jnp
import jaxlib
from absl import logging
from jax.experimental import serialize_executable

from jaxfit.io.atomic import atomic_write

_FORMAT = 1


def _prepare_linear_algebra_kernels():
  """Linear-algebra kernels (LAPACK on CPU, solver libraries on GPU) are
  registered lazily, when a program using them is first lowered; a loaded
  executable that calls an unregistered kernel crashes. Lowering a small
  program with every decomposition the fit uses registers them (~0.1 s)."""
  def probe(a):
    spd = a @ a.T + jnp.eye(3, dtype=a.dtype)
    return (jnp.linalg.solve(spd, a[0]), jnp.linalg.svd(a), jnp.linalg.eigh(spd),
            jnp.linalg.cholesky(spd), jnp.linalg.qr(a), jnp.linalg.det(a), jnp.linalg.inv(spd))
  for dtype in ((jnp.float32, jnp.float64) if jax.config.jax_enable_x64 else (jnp.float32,)):
    jax.jit(probe).lower(jnp.ones((3, 3), dtype))


def source_hash() -> str:
  """sha256 of every .py file of the jaxfit package (path and contents)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for directory, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        digest.update(os.path.relpath(path, root).encode())
        with open(path, 'rb') as f:
          digest.update(f.read())
  return digest.hexdigest()


class DiskExecutableStore:
  """Executables as files `<directory>/<sha256 of the key>.exe` (pickled)."""

  def __init__(self, directory):
    self.directory = directory
    device = jax.devices()[0]
    self._context = repr((_FORMAT, jax.__version__, jaxlib.__version__, device.platform,
                          device.device_kind, jax.device_count(), bool(jax.config.jax_enable_x64),
                          os.environ.get('XLA_FLAGS', ''), source_hash()))
    self._kernels_ready = False

  def _path(self, key):
    fn, static, treedef, shapes = key
    name = f'{getattr(fn, "__module__", "")}.{getattr(fn, "__qualname__", repr(fn))}'
    text = repr((self._context, name, static, str(treedef), shapes))
    return os.path.join(self.directory, hashlib.sha256(text.encode()).hexdigest() + '.exe')

  def load(self, key):
    path = self._path(key)
    if not os.path.exists(path):
      return None
    if not self._kernels_ready:
      _prepare_linear_algebra_kernels()
      self._kernels_ready = True
    try:
      with open(path, 'rb') as f:
        payload, in_tree, out_tree = pickle.load(f)
      return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('stored executable %s unreadable (%s); compiling again', path, e)
      return None

  def save(self, key, compiled):
    try:
      blob = pickle.dumps(serialize_executable.serialize(compiled), protocol=4)
      os.makedirs(self.directory, exist_ok=True)
      with atomic_write(self._path(key)) as tmp, open(tmp, 'wb') as f:
        f.write(blob)
    except Exception as e:  # pylint: disable=broad-except
      logging.vlog(1, 'executable of %s not stored: %s', key[0], e)
