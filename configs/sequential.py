"""Default settings with stage 3 run frame by frame (one Adam state per frame),
each frame's temporal term tied to the previous frame's result."""

from jaxfit.run.config import base_config


def get_config():
  config = base_config()
  config.variant = 'sequential'
  config.pose.iters = 40   # the default solves poses jointly (LM); here stage 3 runs frame by frame
  return config
