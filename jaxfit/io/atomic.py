"""Atomic file and directory writes: readers never see half-written output."""

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_write(path):
  """Yields a temporary path beside `path`; renames it into place on success."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                             suffix='.tmp', dir=directory)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def atomic_directory(path):
  """Yields a temporary directory; on success it replaces `path` whole."""
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.' + os.path.basename(path) + '.', dir=parent)
  try:
    yield tmp
    if os.path.isdir(path):
      old = tempfile.mkdtemp(prefix='.' + os.path.basename(path) + '.old.', dir=parent)
      os.rmdir(old)
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
