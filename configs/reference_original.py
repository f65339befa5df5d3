"""The reference pipeline's original (pre-tuning) settings: stage 3 80
iterations, stage 4 50, shape 150, three refinement passes."""

import importlib.util
import os


def _reference():
  spec = importlib.util.spec_from_file_location(
      'jaxfit_reference_config', os.path.join(os.path.dirname(__file__), 'reference.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  c = _reference().get_config()
  c.pose.iters = 80
  c.sequence.iters = 50
  c.shape.iters = 150
  c.max_passes = 3
  return c
