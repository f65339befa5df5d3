"""Ahead-of-time compilation cache: compile once per (function, statics, shapes).

Every jitted solver of the pipeline is called through `call`, so compilation
time is measured apart from run time, nothing is traced twice for the same
shapes, and tests can count the executables of a function (`num_compiled`).

An optional executable store (`set_store`, kept at the I/O edge in
jaxfit.runtime.store) persists compiled executables across processes:
a later process loads them without tracing, lowering or compiling.
"""

import concurrent.futures
import hashlib
import os
import threading
import time
from typing import Dict, Optional, Protocol

import jax

_CACHE: Dict[tuple, object] = {}
_PENDING: Dict[tuple, concurrent.futures.Future] = {}
_OUT_INFO: Dict[tuple, object] = {}   # output shapes of the pending programs
_POOL: Optional[concurrent.futures.ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()


class ExecutableStore(Protocol):
  """Persists compiled executables under a signature key (see `call`)."""

  def load(self, key: tuple):
    """The stored executable for `key`, or None."""

  def save(self, key: tuple, compiled) -> None:
    """Stores `compiled` (best effort: never raises)."""

  def compiling(self, key: tuple):
    """A context held while `key` is compiled (a store shared by processes
    lets one compile and the others then load)."""


_STORE: Optional[ExecutableStore] = None


def set_store(store: Optional[ExecutableStore]):
  """Uses `store` (None: none) for executables not yet compiled in this process."""
  global _STORE  # pylint: disable=global-statement
  _STORE = store


def current_store() -> Optional[ExecutableStore]:
  """The store in use (None: none)."""
  return _STORE


def _signature(fn, args, static):
  leaves, treedef = jax.tree.flatten(args)
  shapes = tuple((getattr(x, 'shape', ()), str(getattr(x, 'dtype', type(x)))) for x in leaves)
  return (fn, tuple(sorted(static.items())), treedef, shapes)


def _log_compile(key, seconds):
  """Appends one line per compilation to $JAXFIT_COMPILE_LOG, when set (a
  diagnostic: which programs a run or a test suite compiles, and how long)."""
  path = os.environ.get('JAXFIT_COMPILE_LOG')
  if not path:
    return
  fn, static, _, shapes = key
  name = getattr(fn, '__name__', repr(fn))
  digest = hashlib.sha1(repr((static, shapes)).encode()).hexdigest()[:10]
  statics = hashlib.sha1(repr(static).encode()).hexdigest()[:10]
  with open(path, 'a', encoding='utf-8') as f:
    f.write(f'{os.getpid()}\t{name}\t{digest}\t{seconds:.2f}\t{statics}\t{shapes[:6]}\n')


def _compile(key, lowered):
  """The executable of `lowered`: compiled and stored, or, when another
  process sharing the store compiled it meanwhile (it held the key's lock),
  loaded."""
  if _STORE is None:
    return _compile_now(key, lowered)
  with _STORE.compiling(key):
    compiled = _STORE.load(key)
    if compiled is None:
      compiled = _compile_now(key, lowered)
      _STORE.save(key, compiled)
  return compiled


def _compile_now(key, lowered):
  t0 = time.perf_counter()
  compiled = lowered.compile()
  _log_compile(key, time.perf_counter() - t0)
  return compiled


def _pool():
  global _POOL  # pylint: disable=global-statement
  with _POOL_LOCK:
    if _POOL is None:
      _POOL = concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1),
                                                    thread_name_prefix='jaxfit-compile')
  return _POOL


def _add_compile_time(timings, t0):
  if timings is not None:
    timings['compile_s'] = timings.get('compile_s', 0.0) + time.perf_counter() - t0


def prefetch(fn, args, static=None, timings=None):
  """Makes `fn(*args, **static)` ready for a later `call` with arguments of
  the same shapes: loaded from the store, or lowered now and compiled on a
  worker thread (XLA compiles without the GIL, so several compile at once).
  Returns the shapes and dtypes of its outputs (jax.ShapeDtypeStruct pytree)."""
  static = static or {}
  key = _signature(fn, args, static)
  if key in _CACHE:
    return _CACHE[key].out_info
  if key in _PENDING:
    return _OUT_INFO[key]
  t0 = time.perf_counter()
  compiled = _STORE.load(key) if _STORE is not None else None
  if compiled is not None:
    _CACHE[key] = compiled
    out_info = compiled.out_info
  else:
    lowered = fn.lower(*args, **static)
    _PENDING[key] = _pool().submit(_compile, key, lowered)
    out_info = _OUT_INFO[key] = lowered.out_info
  _add_compile_time(timings, t0)
  return out_info


def _finish_pending(timings):
  """Waits for every prefetched compilation, so that no program runs while
  others compile on the same cores (that would slow it and blur its time)."""
  t0 = time.perf_counter()
  for key in list(_PENDING):
    _CACHE[key] = _PENDING.pop(key).result()
    _OUT_INFO.pop(key, None)
  _add_compile_time(timings, t0)


def call(fn, args, static=None, timings=None, name=None):
  """Runs jitted `fn(*args, **static)` from the cache; adds seconds to
  timings['compile_s'] (first time only) and timings[name] (every time)."""
  static = static or {}
  if _PENDING:
    _finish_pending(timings)
  key = _signature(fn, args, static)
  compiled = _CACHE.get(key)
  if compiled is None:
    t0 = time.perf_counter()
    compiled = _STORE.load(key) if _STORE is not None else None
    if compiled is None:
      compiled = _compile(key, fn.lower(*args, **static))
    _CACHE[key] = compiled
    _add_compile_time(timings, t0)
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  if timings is not None and name:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
  return out


def num_compiled(fn=None) -> int:
  """How many executables of `fn` (None: of every function) the cache holds
  or is compiling."""
  return sum(1 for key in list(_CACHE) + list(_PENDING) if fn is None or key[0] is fn)


def clear(fn=None):
  """Drops cached executables (of `fn` only, when given)."""
  for cache in (_CACHE, _PENDING, _OUT_INFO):
    for key in [k for k in cache if fn is None or k[0] is fn]:
      del cache[key]
