"""Compiled programs persist across processes (jaxfit.runtime.store), are
compiled once by processes sharing a store, and lengths pad to whole units."""

import hashlib
import json
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import time

import jax
import numpy as np

from jaxfit.data.prepare import padded_length
from jaxfit.runtime import compiled
from jaxfit.runtime.store import DiskExecutableStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fit(data, out, cache, log=None, *flags):
  """The CLI on the demo walk's first 40 frames with store `cache`; `log`:
  its $JAXFIT_COMPILE_LOG (one line per program it compiled)."""
  env = dict(os.environ, JAXFIT_COMPILE_LOG=str(log)) if log else None
  proc = subprocess.run(
      [sys.executable, '-m', 'jaxfit.main', '--config=configs/default.py', f'--config.input={data}',
       f'--config.output_dir={out}', f'--config.compilation_cache_dir={cache}',
       '--config.trials=walk', '--config.max_frames=40', '--config.resume=false', *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(out / 'subject01' / 'walk' / 'params.npz') as p:
    poses = p['poses']
  metrics = json.loads((out / 'subject01' / 'walk' / 'metrics.json').read_text())
  return proc, poses, metrics['time_s']['compile_s']


def _compiled(log):
  return log.read_text().splitlines() if log.exists() else []


def test_a_second_process_loads_instead_of_compiling(demo_b3d, tmp_path, executable_cache):
  """The first process uses the suite's store (it compiles what no earlier test
  did, for the later ones); a second process with a copy of that store compiles
  nothing and fits the same."""
  _, poses, _ = _fit(demo_b3d[0], tmp_path / 'a', executable_cache)
  cache = tmp_path / 'cache'
  cache.mkdir()
  shutil.copy2(os.path.join(executable_cache, 'executables.key'), cache / 'executables.key')
  shutil.copytree(os.path.join(executable_cache, 'executables'), cache / 'executables',   # whole
                  ignore=lambda _, names: [n for n in names if not n.endswith('.exe')])  # entries only
  stored = sorted(os.listdir(cache / 'executables'))
  log = tmp_path / 'second.log'
  proc, again, compile_second = _fit(demo_b3d[0], tmp_path / 'b', cache, log, '--verbosity=1')
  assert _compiled(log) == []                                           # nothing compiled
  assert sorted(os.listdir(cache / 'executables')) == stored            # nothing written
  loaded = sorted(set(re.findall(r'loaded stored executable (\S+\.exe)', proc.stderr)))
  assert len(loaded) >= 5   # init, joint solve, per-frame LM, output FK, ...
  np.testing.assert_array_equal(poses, again)
  # A damaged entry (the largest this fit loads: the joint solve) is compiled
  # again, with a warning, the others load, and the fit is the same. (Every
  # entry goes through the same per-entry check; damaging one keeps this
  # process from compiling all.)
  damaged = pathlib.Path(max(loaded, key=os.path.getsize))
  damaged.write_bytes(b'damaged')
  log = tmp_path / 'third.log'
  proc, third, compile_third = _fit(demo_b3d[0], tmp_path / 'c', cache, log)
  assert proc.stderr.count('unreadable') == 1 and 'Traceback' not in proc.stderr
  assert damaged.read_bytes() != b'damaged'                            # rewritten
  assert len(_compiled(log)) == 1                                       # that one only
  assert compile_second < compile_third
  np.testing.assert_array_equal(poses, third)


def test_padding_wastes_less_than_one_unit():
  """Every length runs the same programs (tests/test_fit.py,
  test_every_trial_length_runs_the_same_executables), so lengths need no
  buckets: the next multiple of the unit."""
  for n in range(1, 16385):
    p = padded_length(n)
    assert p % 128 == 0 and n <= p < n + 128, (n, p)
  assert padded_length(300) == 384 and padded_length(1000) == 1024 and padded_length(1100) == 1152


class _Planted:
  """Unpickling this creates the file `path`: what a planted entry could run."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, 'w'))


def _double_plus_one(x):
  return 2.0 * x + 1.0


def test_a_planted_entry_is_refused_and_recompiled(tmp_path):
  directory = tmp_path / 'store'
  fn = jax.jit(_double_plus_one)
  x = np.arange(3, dtype=np.float32)
  session_store = compiled.current_store()
  compiled.set_store(DiskExecutableStore(str(directory)))
  try:
    compiled.clear(fn)
    expected = np.asarray(compiled.call(fn, (x,)))
    assert oct(os.stat(str(directory) + '.key').st_mode & 0o777) == '0o600'
    entries = [n for n in os.listdir(directory) if n.endswith('.exe')]
    assert len(entries) == 1
    marker = tmp_path / 'ran'
    planted = pickle.dumps(_Planted(str(marker)))
    for mac in (b'\0' * 32, hashlib.sha256(planted).digest()):   # no key, a wrong key
      (directory / entries[0]).write_bytes(mac + planted)
      compiled.clear(fn)
      np.testing.assert_array_equal(np.asarray(compiled.call(fn, (x,))), expected)
      assert not marker.exists()                                     # never unpickled
      assert (directory / entries[0]).read_bytes()[32:] != planted   # recompiled, rewritten
    # The rewritten entry is the store's own: a new process state loads it.
    compiled.clear(fn)
    key = compiled._signature(fn, (x,), {})  # pylint: disable=protected-access
    assert DiskExecutableStore(str(directory)).load(key) is not None
  finally:
    compiled.set_store(session_store)   # the suite's (tests/conftest.py)
    compiled.clear(fn)


def test_a_directory_others_can_write_is_refused(tmp_path):
  directory = tmp_path / 'shared'
  directory.mkdir()
  os.chmod(directory, 0o777)
  store = DiskExecutableStore(str(directory))
  fn = jax.jit(_double_plus_one)
  session_store = compiled.current_store()
  compiled.set_store(store)
  try:
    compiled.clear(fn)
    compiled.call(fn, (np.ones(2, np.float32),))
    assert os.listdir(directory) == [] and not os.path.exists(str(directory) + '.key')
    assert store.load(compiled._signature(fn, (np.ones(2, np.float32),), {})) is None  # pylint: disable=protected-access
  finally:
    compiled.set_store(session_store)   # the suite's (tests/conftest.py)
    compiled.clear(fn)


_WAITER = """
import sys, numpy as np
from jaxfit.runtime import compiled, jax_setup
from jaxfit.fit.pipeline import _axis_angle_jit
jax_setup.use_executable_store(sys.argv[1])
print('calling', flush=True)
out = compiled.call(_axis_angle_jit, (np.tile(np.eye(3, dtype=np.float32), (5, 1, 1)),))
print('done', float(np.abs(np.asarray(out)).max()), flush=True)
"""


def test_processes_sharing_a_store_compile_a_program_once(tmp_path):
  """While one process compiles a program (holding its lock), another that
  needs it waits, then loads it: it compiles nothing ($JAXFIT_COMPILE_LOG)."""
  from jaxfit.fit.pipeline import _axis_angle_jit
  cache = tmp_path / 'cache'
  store = DiskExecutableStore(str(cache / 'executables'))
  args = (np.tile(np.eye(3, dtype=np.float32), (5, 1, 1)),)
  key = compiled._signature(_axis_angle_jit, args, {})   # pylint: disable=protected-access
  log = tmp_path / 'compile.log'
  env = dict(os.environ, JAXFIT_COMPILE_LOG=str(log), PYTHONPATH=ROOT)
  with store.compiling(key):
    proc = subprocess.Popen([sys.executable, '-c', _WAITER, str(cache)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'calling'
    time.sleep(2.0)                  # it reaches the lock and waits (unlocked, it would compile)
    assert proc.poll() is None
    store.save(key, _axis_angle_jit.lower(*args).compile())
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert out.strip() == 'done 0.0'
  assert _compiled(log) == []
