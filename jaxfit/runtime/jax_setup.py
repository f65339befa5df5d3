"""JAX set-up for a run: float64 on request and the store of compiled programs."""

import os

import jax

from jaxfit.runtime import compiled
from jaxfit.runtime.files import cache_root
from jaxfit.runtime.store import DiskExecutableStore


def configure_jax(dtype: str, cache_dir: str):
  """Before any array exists: float64 when dtype is 'float64', and the store
  of compiled programs (compile once per config and length, across runs)."""
  jax.config.update('jax_enable_x64', dtype == 'float64')
  use_executable_store(cache_dir)


def use_executable_store(cache_dir: str):
  """Stores compiled programs under cache_dir ('' = ~/.cache/jaxfit/xla,
  'none' = no store): a later process loads them instead of tracing,
  lowering and compiling."""
  if cache_dir == 'none':
    compiled.set_store(None)
    return
  directory = cache_dir or os.path.join(cache_root(), 'xla')
  # Whole compiled executables. (JAX's own persistent cache stays off: an
  # executable it loaded cannot be serialized again on CPU, and this store
  # covers what it would.)
  compiled.set_store(DiskExecutableStore(os.path.join(directory, 'executables')))
