"""Default settings with stage 3 run simultaneously: all frames in one Adam block."""

from jaxfit.run.config import base_config


def get_config():
  config = base_config()
  config.variant = 'simultaneous'
  return config
