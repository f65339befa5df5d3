"""Command line: python -m jaxfit.main --config=configs/<name>.py [--config.<field>=value].

Exit status: 0 all trials fitted; 1 some inputs failed (each reported);
2 a bad config value or body-model file.
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxfit.app import run_job, summary_table
from jaxfit.config import settings_from_config
from jaxfit.errors import ConfigError, JaxfitInputError, ModelFileError

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
    rows = run_job(settings, config_dict)
  except (ConfigError, ModelFileError) as e:
    logging.error('%s', e)
    sys.exit(2)
  except JaxfitInputError as e:
    logging.error('%s', e)
    sys.exit(1)
  logging.info('summary\n%s', summary_table(rows))
  if any('error' in r for r in rows):
    logging.error('%d of %d inputs failed (see above)', sum('error' in r for r in rows), len(rows))
    sys.exit(1)


def run():
  import logging as std_logging  # pylint: disable=import-outside-toplevel
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  app.run(main)


if __name__ == '__main__':
  run()
