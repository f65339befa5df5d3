"""Ahead-of-time compilation cache: compile once per (function, statics, shapes).

Every jitted solver of the pipeline is called through `call`, so compilation
time is measured apart from run time, nothing is traced twice for the same
shapes, and tests can count the executables of a function (`num_compiled`).
"""

import time
from typing import Dict

import jax

_CACHE: Dict[tuple, object] = {}


def _signature(fn, args, static):
  leaves, treedef = jax.tree.flatten(args)
  shapes = tuple((getattr(x, 'shape', ()), str(getattr(x, 'dtype', type(x)))) for x in leaves)
  return (fn, tuple(sorted(static.items())), treedef, shapes)


def call(fn, args, static=None, timings=None, name=None):
  """Runs jitted `fn(*args, **static)` from the cache; adds seconds to
  timings['compile_s'] (first time only) and timings[name] (every time)."""
  static = static or {}
  key = _signature(fn, args, static)
  compiled = _CACHE.get(key)
  if compiled is None:
    t0 = time.perf_counter()
    compiled = fn.lower(*args, **static).compile()
    _CACHE[key] = compiled
    if timings is not None:
      timings['compile_s'] = timings.get('compile_s', 0.0) + time.perf_counter() - t0
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  if timings is not None and name:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
  return out


def num_compiled(fn) -> int:
  """How many executables of `fn` the cache holds (one per shape/static set)."""
  return sum(1 for key in _CACHE if key[0] is fn)


def clear(fn=None):
  """Drops cached executables (of `fn` only, when given)."""
  for key in [k for k in _CACHE if fn is None or k[0] is fn]:
    del _CACHE[key]
