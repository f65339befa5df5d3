"""Compiled executables on disk, so a new process skips tracing and compiling.

JAX's persistent compilation cache saves XLA's compile step but still traces
and lowers every function in every process (about 3 s for the pipeline on a
CPU). This store keeps the compiled executables themselves
(jax.experimental.serialize_executable), keyed by everything that decides the
program: the function, its static arguments, argument structure, shapes and
dtypes, jax/jaxlib versions, the backend and device kind, x64 (when the key is
made), XLA_FLAGS and
a hash of the code that shapes the programs (jaxfit.body and jaxfit.fit,
`program_source_hash`; editing a report or the CLI keeps every program).

An entry is a pickle, and unpickling runs code, so the store only ever
unpickles what it wrote itself: it refuses a directory that is not the
user's own or that others can write (then there is no store, and every
program is compiled), and every entry carries an HMAC-SHA256, over its name
and bytes, under a per-user key (`<directory>.key` beside the folder, 32
random bytes, mode 0600, in a folder only the user can write); an entry whose MAC does not verify is never unpickled, but compiled
again and rewritten. A missing, stale or unreadable entry is too.
"""

import contextlib
import fcntl
import hashlib
import hmac
import os
import pickle
import stat

import jax
import jax.numpy as jnp
import jaxlib
from absl import logging
from jax.experimental import serialize_executable

from jaxfit.runtime.files import atomic_write

_FORMAT = 2
_MAC_SIZE = 32
# The packages whose code decides the compiled programs.
PROGRAM_PACKAGES = ('body', 'fit')


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


def program_source_hash() -> str:
  """sha256 of the .py files of jaxfit.body and jaxfit.fit (paths and contents)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for package in PROGRAM_PACKAGES:
    for directory, dirs, files in sorted(os.walk(os.path.join(root, package))):
      dirs.sort()
      for name in sorted(files):
        if name.endswith('.py'):
          path = os.path.join(directory, name)
          digest.update(os.path.relpath(path, root).encode())
          with open(path, 'rb') as f:
            digest.update(f.read())
  return digest.hexdigest()


def _private(st) -> bool:
  """Owned by this user and writable by no one else."""
  return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _user_key(directory) -> bytes:
  """The store's HMAC key: `<directory>.key` (beside the entries, so nothing
  in the folder but entries), made on first use (0600); refused
  (PermissionError) unless this user's own and private, in a folder only
  this user can write."""
  path = os.path.normpath(os.path.abspath(directory)) + '.key'
  if not _private(os.stat(os.path.dirname(path))):
    raise PermissionError(f'{os.path.dirname(path)} is not yours alone (others can write it)')
  if not os.path.exists(path):
    # Written aside, then linked into place: a process starting at the same
    # moment sees either no key or the whole key, never a partial one.
    fresh = f'{path}.{os.getpid()}.new'
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as f:
      f.write(os.urandom(32))
    try:
      os.link(fresh, path)
    except FileExistsError:
      pass
    finally:
      os.unlink(fresh)
  fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
  with os.fdopen(fd, 'rb') as f:
    st = os.fstat(f.fileno())
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
      raise PermissionError(f'{path}: the key must be yours and mode 0600')
    key = f.read()
  if len(key) != 32:
    raise PermissionError(f'{path}: not a store key')
  return key


class DiskExecutableStore:
  """Executables as files `<directory>/<sha256 of the key>.exe`: an
  HMAC-SHA256 (32 bytes) then the pickle. A directory that is not private to
  this user is refused (no store: load finds nothing, save keeps nothing)."""

  def __init__(self, directory):
    self.directory = directory
    device = jax.devices()[0]
    self._context = repr((_FORMAT, jax.__version__, jaxlib.__version__, device.platform,
                          device.device_kind, jax.device_count(),
                          os.environ.get('XLA_FLAGS', ''), program_source_hash()))
    self._kernels_ready = False
    self._unreadable = {}   # path -> (mtime, size) of entries found unreadable
    self._key = None
    try:
      os.makedirs(directory, mode=0o700, exist_ok=True)
      if not _private(os.stat(directory)):
        raise PermissionError(f'{directory} is not yours alone (others can write it)')
      self._key = _user_key(directory)
    except OSError as e:
      logging.warning('no store of compiled programs: %s; programs are compiled in each '
                      'process (give --config.compilation_cache_dir a folder only you can write)', e)

  def _mac(self, path, blob):
    return hmac.new(self._key, os.path.basename(path).encode() + b'\0' + blob,
                    hashlib.sha256).digest()

  def _path(self, key):
    fn, static, treedef, shapes = key
    name = f'{getattr(fn, "__module__", "")}.{getattr(fn, "__qualname__", repr(fn))}'
    # x64 as it is now (it decides default dtypes inside a program), not at start.
    text = repr((self._context, bool(jax.config.jax_enable_x64), name, static, str(treedef), shapes))
    return os.path.join(self.directory, hashlib.sha256(text.encode()).hexdigest() + '.exe')

  def load(self, key):
    if self._key is None:
      return None
    path = self._path(key)
    try:
      st = os.stat(path)
    except OSError:
      return None
    if self._unreadable.get(path) == (st.st_mtime_ns, st.st_size):
      return None     # found unreadable already (and said so); unchanged since
    if not self._kernels_ready:
      _prepare_linear_algebra_kernels()
      self._kernels_ready = True
    try:
      with open(path, 'rb') as f:
        data = f.read()
      mac, blob = data[:_MAC_SIZE], data[_MAC_SIZE:]
      if not hmac.compare_digest(mac, self._mac(path, blob)):
        raise ValueError('not written by this store (its MAC does not verify); not unpickled')
      payload, in_tree, out_tree = pickle.loads(blob)
      loaded = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('stored executable %s unreadable (%s); compiling again', path, e)
      self._unreadable[path] = (st.st_mtime_ns, st.st_size)
      return None
    logging.vlog(1, 'loaded stored executable %s', path)   # --verbosity=1 lists them
    return loaded

  @contextlib.contextmanager
  def compiling(self, key):
    """Held while `key` is compiled: an exclusive lock (flock) on its own lock
    file in `<directory>.locks`, so processes sharing the store (test workers,
    Ray tasks on one machine) compile a program once; the others wait, then
    load it. Released when the process ends, however it ends."""
    if self._key is None:
      yield
      return
    locks = os.path.normpath(os.path.abspath(self.directory)) + '.locks'
    try:
      os.makedirs(locks, mode=0o700, exist_ok=True)
      fd = os.open(os.path.join(locks, os.path.basename(self._path(key)) + '.lock'),
                   os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
      yield
      return
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      yield
    finally:
      os.close(fd)

  def save(self, key, compiled):
    if self._key is None:
      return
    try:
      blob = pickle.dumps(serialize_executable.serialize(compiled), protocol=4)
      path = self._path(key)
      with atomic_write(path) as tmp, open(tmp, 'wb') as f:
        f.write(self._mac(path, blob) + blob)
    except Exception as e:  # pylint: disable=broad-except
      logging.vlog(1, 'executable of %s not stored: %s', key[0], e)
