"""Functions the isolated-reader tests run in the child process (never in pytest's own)."""

import ctypes
import time


def crash_with_segfault(path):
  """Ends the process with SIGSEGV, as a C++ reader does on a bad file."""
  del path
  ctypes.string_at(0)


def hang(path):
  del path
  time.sleep(3600)


def nimble_load_all_frames(path):
  """The call that crashes nimblephysics 0.10.52 on files without joint centres."""
  from jaxfit.io.nimble import import_nimble_biomechanics
  subject = import_nimble_biomechanics().SubjectOnDisk(path)
  subject.loadAllFrames()
  return subject.getNumTrials()


def echo(path, *args):
  return (path,) + args
