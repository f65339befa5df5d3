"""Command line: python -m jaxfit.main --config=configs/<name>.py [--config.<field>=value].

Exit status: 0 all trials fitted; 1 some inputs failed (each reported);
2 a bad config value or body-model file.
"""

# Single-threaded BLAS/LAPACK: jaxfit/__init__.py, imported before this
# module, sets OMP_NUM_THREADS=1 (unless set) before numpy loads it.
import json
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxfit.errors import ConfigError, JaxfitInputError, ModelFileError
from jaxfit.run.config import settings_from_config
from jaxfit.run.dataset import run_dataset
from jaxfit.run.summary import summary_table

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file in configs/ (fields overridable as --config.<field>=value).',
    lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if _CONFIG.value is None:
    raise app.UsageError('--config=configs/<name>.py is required (e.g. configs/demo.py)')
  try:
    settings = settings_from_config(_CONFIG.value)
    config_dict = json.loads(_CONFIG.value.to_json_best_effort())
    rows = run_dataset(settings, config_dict)
  except (ConfigError, ModelFileError) as e:
    logging.error('%s', e)
    sys.exit(2)
  except JaxfitInputError as e:
    logging.error('%s', e)
    sys.exit(1)
  logging.info('summary\n%s', summary_table(rows))
  failed = [r for r in rows if r['status'] != 'ok']
  logging.info('wrote %s', os.path.join(settings.output_dir, 'summary.csv'))
  if failed:
    logging.error('%d of %d trials failed (see above and summary.csv)', len(failed), len(rows))
    sys.exit(1)


def run():
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  app.run(main)


if __name__ == '__main__':
  run()
