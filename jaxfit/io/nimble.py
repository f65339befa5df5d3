"""The one place that imports nimblephysics.

nimblephysics prints diagnostics from C++ straight to file descriptor 1 and
raises context-free exceptions; `quiet_native_output` captures that text so
callers can keep stdout clean and put the real reason into their errors.
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_native_output():
  """Redirects fd 1 (C++ stdout) to a buffer; yields a list that receives it."""
  captured = []
  sys.stdout.flush()
  saved = os.dup(1)
  with tempfile.TemporaryFile(mode='w+b') as sink:
    os.dup2(sink.fileno(), 1)
    try:
      yield captured
    finally:
      sys.stdout.flush()
      os.dup2(saved, 1)
      os.close(saved)
      sink.seek(0)
      captured.append(sink.read().decode('utf-8', 'replace').strip())


def import_nimble():
  """Imports nimblephysics (and its torch) lazily, once."""
  with quiet_native_output():
    import nimblephysics  # pylint: disable=import-outside-toplevel
  return nimblephysics


def import_nimble_biomechanics():
  """nimblephysics' `biomechanics` module, from its compiled core when possible
  (0.2 s, no torch import; enough for reading .b3d files and skeleton FK)."""
  try:
    with quiet_native_output():
      from nimblephysics_libs import _nimblephysics  # pylint: disable=import-outside-toplevel
    return _nimblephysics.biomechanics
  except ImportError:
    return import_nimble().biomechanics


def rajagopal_osim_path():
  """Path of the Rajagopal 2015 OpenSim model bundled with nimblephysics."""
  nimble = import_nimble()
  return os.path.join(os.path.dirname(nimble.__file__), 'models',
                      'rajagopal_data', 'Rajagopal2015.osim')
