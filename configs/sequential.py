"""Default settings with stage 3 run frame by frame (one Adam state per frame),
each frame's temporal term tied to the previous frame's result, then stage 4
over the whole sequence, as the reference pipeline runs them (stage 4 removes
what per-frame Adam leaves), every joint weighted alike as the reference does:
Adam steps every parameter at its learning rate whatever the size of its
gradient, so the poses that only the down-weighted joints (noncomparable_weight)
see would wander (SMPL truth: 1.54 mm with them down-weighted, 0.34 alike)."""

from jaxfit.run.config import base_config


def get_config():
  config = base_config()
  config.variant = 'sequential'
  config.pose.iters = 40   # the default solves poses jointly (LM); here stage 3 runs frame by frame
  config.sequence.iters = 60
  config.noncomparable_weight = 1.0
  return config
