"""Files: atomic writes (readers never see half-written output) and content hashes."""

import contextlib
import hashlib
import os
import shutil
import tempfile

# In the name of every temporary a write makes (and leaves behind only when
# the process is killed): jaxfit.run.dataset removes them before a run.
TEMP_MARK = '.jaxfit-tmp'


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


# mkstemp/mkdtemp make private (0600/0700) temporaries; outputs get the
# permissions an ordinary file or folder would (readable by a cluster's users).
_UMASK = _umask()


@contextlib.contextmanager
def atomic_write(path):
  """Yields a temporary path beside `path`; renames it into place on success."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + TEMP_MARK, dir=directory)
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_UMASK)
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
  tmp = tempfile.mkdtemp(prefix='.' + os.path.basename(path) + TEMP_MARK, dir=parent)
  os.chmod(tmp, 0o777 & ~_UMASK)
  try:
    yield tmp
    if os.path.isdir(path):
      old = tempfile.mkdtemp(prefix='.' + os.path.basename(path) + TEMP_MARK + '-old', dir=parent)
      os.rmdir(old)
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def cache_root() -> str:
  """jaxfit's cache folder: $JAXFIT_CACHE, else ~/.cache/jaxfit."""
  return os.environ.get('JAXFIT_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'jaxfit')


def file_sha256(path) -> str:
  """sha256 hex digest of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()
