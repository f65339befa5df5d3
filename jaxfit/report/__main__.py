"""python -m jaxfit.report <output_dir> [--model_path=SMPL.pkl] [--compilation_cache_dir=DIR]

Reports saved fits (see jaxfit.report.build). Exit status 1 when a trial
could not be reported.
"""

import os

from absl import app, flags, logging

from jaxfit.errors import JaxfitInputError
from jaxfit.report.build import build_report
from jaxfit.report.options import ReportError
from jaxfit.runtime.jax_setup import use_executable_store

flags.DEFINE_string('model_path', '', 'body model for meshes (default: the one the fits used)')
flags.DEFINE_string('compilation_cache_dir', '',
                    "store of compiled programs ('' = ~/.cache/jaxfit/xla, 'none' = off)")


def main(argv):
  """python -m jaxfit.report <output_dir> [--model_path=...]"""
  if len(argv) != 2:
    raise SystemExit('usage: python -m jaxfit.report <output_dir> [--model_path=SMPL.pkl]')
  output_dir = argv[1]
  if not os.path.isdir(output_dir):
    logging.error('%s: no such output folder', output_dir)
    raise SystemExit(1)
  use_executable_store(flags.FLAGS.compilation_cache_dir)   # the meshes' program
  try:
    result = build_report(output_dir, model_path=flags.FLAGS.model_path)
  except (ReportError, JaxfitInputError) as e:
    logging.error('%s', e)
    raise SystemExit(1) from None
  logging.info('report: %s (%d subjects)', result['index'], len(result['subjects']))
  if result['failed']:
    raise SystemExit(1)


if __name__ == '__main__':
  app.run(main)
