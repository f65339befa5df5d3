"""jaxfit's recommended settings, chosen by measurement (benchmarks/RESULTS.md).

Closed-form root and shape initialisation, per-frame Levenberg-Marquardt, then
the Adam stages (simultaneous variant) with decaying learning rates.
"""

from jaxfit.run.config import base_config


def get_config():
  return base_config()
