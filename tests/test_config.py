"""One set of defaults, one validator, and the resume hash from the typed options."""

import dataclasses

import pytest

from jaxfit.data.prepare import PrepareOptions
from jaxfit.errors import ConfigError
from jaxfit.fit.options import FitOptions
from jaxfit.run.config import RunOptions, base_config, config_sha256, settings_from_config
from tests.conftest import make_settings


def test_the_typed_defaults_are_the_config_defaults():
  settings = settings_from_config(base_config())
  assert settings.fit == FitOptions()
  assert settings.prepare == PrepareOptions()
  assert FitOptions().init.iters == 15 and FitOptions().sequence.betas_lr == 0.0


def _with(**changes):
  """Settings of the default config with changes (`loss__temporal`: loss.temporal)."""
  return make_settings(**{k.replace('__', '.'): v for k, v in changes.items()})


def test_the_resume_hash_ignores_run_options_and_follows_every_fit_option():
  base = config_sha256(_with(), 'model')
  run_changes = dict(input='x.b3d', output_dir='elsewhere', model_path='m.npz', body='demo',
                     trials='a,b',
                     read_timeout_s=5.0, compilation_cache_dir='none', engine='ray',
                     ray_address='auto', ray_cpus_per_task=2.0, ray_gpus_per_task=0.0,
                     resume=False, progress=False, report=True, report_mesh_frames=0,
                     report_animation_s=1.0)
  assert set(run_changes) == {f.name for f in dataclasses.fields(RunOptions)}
  for key, value in run_changes.items():
    assert config_sha256(_with(**{key: value}), 'model') == base, key
  fit_changes = dict(num_betas=8, processing_pass='dynamics', joint_centres='fk', max_frames=9,
                     variant='sequential', frame_bucket=64, dtype='float64',
                     joint_map__back='spine2', joint_weights__head=0.5, joint_lr__hips=1.0,
                     loss__temporal=0.5, loss__gap_fill=0.2, loss__orientation=0.0,
                     offsets__joints='', offsets__bound_m__back=0.07, offsets__typical_m__other=0.01,
                     orientation_weights__pelvis=0.5, shape__prior='fixed',
                     contact__source='none', init__iters=3, shape__frames=7, pose__warm_start=0.5,
                     sequence__terms='position', max_passes=2, whiten_betas=False,
                     chunk_frames=64, shape__joint_tol=0.0, noncomparable_weight=1.0)
  for key, value in fit_changes.items():
    assert config_sha256(_with(**{key: value}), 'model') != base, key
  assert config_sha256(_with(), 'other model') != base


@pytest.mark.parametrize('key, value, field', [
    ('shape__frames', 0, 'shape.frames'), ('loss__temporal', -1.0, 'loss.temporal'),
    ('joint_weights__head', -1.0, 'joint_weights.head'), ('engine', 'x', 'engine'),
    ('report_mesh_frames', -1, 'report_mesh_frames'), ('contact__source', 'x', 'contact.source'),
    ('chunk_frames', 8, 'chunk_frames'), ('shape__joint_tol', 1.5, 'shape.joint_tol'),
    ('noncomparable_weight', 2.0, 'noncomparable_weight')])
def test_one_error_type_names_the_field(key, value, field):
  with pytest.raises(ConfigError) as e:
    _with(**{key: value})
  assert e.value.field == field and str(e.value).startswith(f'--config.{field}: ')
