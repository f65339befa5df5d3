"""Shared fixtures: generated models and data, built once per test session."""

import os

import jax
import numpy as np
import pytest

from jaxfit.body.model import make_body_model
from jaxfit.fit import losses as _losses

# The loss functions jitted, as the fitting code runs them (the structure,
# argument 4, static): one program per block shape, not every operation
# dispatched on its own.
term_losses = jax.jit(_losses.term_losses, static_argnums=4)
total_loss = jax.jit(_losses.total_loss, static_argnums=4)


# The real AddBiomechanics trials (read in place, never copied into the repo).
REAL_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared',
                         'data', 'real')


def read_real_trial(file_name, trial):
  """One trial of a real .b3d in REAL_DATA (the test is skipped where there is none)."""
  path = os.path.join(REAL_DATA, file_name)
  if not os.path.exists(path):
    pytest.skip('no ../shared/data/real here')
  from jaxfit.io.b3d import read_b3d_trials  # pylint: disable=import-outside-toplevel
  return read_b3d_trials(path, trials=[trial])[0]


def load_config_file(name):
  """The ConfigDict of configs/<name> (its get_config())."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', name)
  spec = importlib.util.spec_from_file_location(f'jaxfit_config_{name[:-3]}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def make_settings(learn_offsets=True, **overrides):
  """Validated settings from the default config with dotted overrides
  ('loss.temporal': 0.1). variant='sequential' starts from configs/sequential.py
  (stage 3 frame by frame, then stage 4). learn_offsets=False for SMPL-generated truth: it
  has SMPL's own joint definitions, so no correspondence offsets to learn (free
  ones would trade against weakly determined shape directions)."""
  from jaxfit.run.config import base_config, settings_from_config  # pylint: disable=import-outside-toplevel
  c = load_config_file('sequential.py') if overrides.get('variant') == 'sequential' else base_config()
  if not learn_offsets:
    c.offsets.joints = ''
  for key, value in overrides.items():
    node = c
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return settings_from_config(c)


@pytest.fixture(scope='session', autouse=True)
def _isolated_cache(tmp_path_factory):
  """Generated demo assets go to a fresh cache, never the user's."""
  os.environ['JAXFIT_CACHE'] = str(tmp_path_factory.mktemp('jaxfit_cache'))


@pytest.fixture(scope='session')
def executable_cache(tmp_path_factory):
  """The session's compiled-program folder (--config.compilation_cache_dir; a
  fresh one, never the user's), shared by every worker of the run (pytest-xdist),
  the CLI subprocesses and, through `_session_store`, the in-process fits: a
  program one test compiled, every later one loads."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent          # the run's folder, above each worker's own
  return str(root / 'compiled_programs')


@pytest.fixture(scope='session', autouse=True)
def _session_store(executable_cache):
  """In-process fits use the session's store (the one the CLI runs use)."""
  from jaxfit.runtime import compiled, jax_setup  # pylint: disable=import-outside-toplevel
  jax_setup.use_executable_store(executable_cache)
  yield
  compiled.set_store(None)


@pytest.fixture(scope='session')
def demo_body_file():
  from jaxfit.demo.body_model import ensure_demo_body
  return ensure_demo_body()


@pytest.fixture(scope='session')
def demo_model(demo_body_file):
  from jaxfit.io.smpl_file import load_body_model
  return load_body_model(demo_body_file)


def random_smpl_arrays(seed=0, num_vertices=6890, num_betas=10):
  """Arrays with real SMPL shapes and a plausible joint layout (random values)."""
  rng = np.random.default_rng(seed)
  from jaxfit.demo.body_model import demo_body_arrays
  demo = demo_body_arrays()
  joints = demo['J']
  v_template = rng.normal(scale=0.3, size=(num_vertices, 3))
  j_regressor = rng.uniform(size=(24, num_vertices)) * (rng.uniform(size=(24, num_vertices)) < 0.01)
  j_regressor /= j_regressor.sum(1, keepdims=True)
  # Shift template so the regressed joints sit at the demo body's joints.
  v_template += np.linalg.lstsq(j_regressor, joints - j_regressor @ v_template, rcond=None)[0]
  weights = rng.uniform(size=(num_vertices, 24)) ** 4
  weights /= weights.sum(1, keepdims=True)
  return dict(
      v_template=v_template,
      shapedirs=rng.normal(scale=0.01, size=(num_vertices, 3, num_betas)),
      posedirs=rng.normal(scale=0.001, size=(num_vertices, 3, 207)),
      J_regressor=j_regressor, weights=weights,
      kintree_table=np.stack([np.array([2**32 - 1] + [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], np.int64),
                              np.arange(24)]).astype(np.uint32),
      f=rng.integers(0, num_vertices, size=(13776, 3)).astype(np.uint32))


@pytest.fixture(scope='session')
def random_smpl_model():
  a = random_smpl_arrays()
  parents = a['kintree_table'][0].astype(np.int64)
  parents[0] = -1
  import jax  # pylint: disable=import-outside-toplevel
  with jax.experimental.enable_x64():
    return make_body_model(a['v_template'], a['shapedirs'], a['posedirs'], a['J_regressor'],
                           a['weights'], a['f'], parents=tuple(parents), dtype=np.float64)


@pytest.fixture(scope='session')
def demo_b3d(tmp_path_factory):
  """A generated .b3d subject and the truth it was written from."""
  from jaxfit.demo.subject import TrialSpec, write_demo_subject
  path = str(tmp_path_factory.mktemp('b3d') / 'subject01.b3d')
  trials = (TrialSpec('walk', 'walk', 1.25, 120, 100.0, True, 0.0),
            TrialSpec('run', 'run', 3.0, 90, 150.0, False, 0.0))
  truth = write_demo_subject(path, trials, height_m=1.80)
  return path, truth
