"""Runs file readers that may crash the process in a persistent child process.

nimblephysics is C++; a corrupt, truncated or unusual `.b3d` can end the
process that reads it with a signal (a segmentation fault), which no Python
`try` can catch. Reading happens instead in one child process, started once
and reused for every file (so a folder of files pays its start-up once). When
the child dies or hangs, the caller gets one `MotionFileError` naming the file
and the signal, and the next call starts a fresh child.

Protocol: length-prefixed pickles over the child's stdin / a private copy of
its stdout (the child's own file descriptor 1 goes to /dev/null, so native
chatter can never corrupt the replies). Requests name a function as
'module:function'; only modules under the worker's allowed prefixes
(`jaxfit.io.` by default) are served.
"""

import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time

from jaxfit.errors import JaxfitInputError, MotionFileError

_HEADER = struct.Struct('>Q')
DEFAULT_PREFIXES = ('jaxfit.io.',)


def _write_message(stream, obj):
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  stream.write(_HEADER.pack(len(data)) + data)
  stream.flush()


def _read_exact(fd, size, deadline):
  chunks, remaining = [], size
  while remaining:
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
      raise TimeoutError
    chunk = os.read(fd, min(remaining, 1 << 20))
    if not chunk:
      raise EOFError
    chunks.append(chunk)
    remaining -= len(chunk)
  return b''.join(chunks)


def _signal_name(returncode):
  if returncode is None or returncode >= 0:
    return f'exit status {returncode}'
  try:
    return f'signal {-returncode}, {signal.Signals(-returncode).name}'
  except ValueError:
    return f'signal {-returncode}'


class IsolatedWorker:
  """A persistent child process that runs whitelisted reader functions."""

  def __init__(self, allowed_prefixes=DEFAULT_PREFIXES):
    self._proc = None
    self._lock = threading.Lock()
    self._allowed = tuple(allowed_prefixes)

  def _start(self):
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (package_root, os.getcwd(), env.get('PYTHONPATH')) if p)
    self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-m', 'jaxfit.io.isolated', *self._allowed], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

  def close(self):
    proc, self._proc = self._proc, None
    if proc is not None and proc.poll() is None:
      proc.kill()
      proc.wait()

  def call(self, function, source, *args, timeout_s=600.0):
    """Runs 'module:function'(*args) in the child; returns its result.

    source: the file the call reads (named in errors). Errors raised in the
    child as JaxfitInputError come back as MotionFileError; a crash, a hang
    beyond timeout_s, or anything else becomes one MotionFileError.
    """
    with self._lock:
      if self._proc is None or self._proc.poll() is not None:
        self._start()
      proc = self._proc
      try:
        _write_message(proc.stdin, (function, args))
        deadline = time.monotonic() + timeout_s
        size, = _HEADER.unpack(_read_exact(proc.stdout.fileno(), _HEADER.size, deadline))
        status, payload = pickle.loads(_read_exact(proc.stdout.fileno(), size, deadline))
      except TimeoutError:
        self.close()
        raise MotionFileError(source, f'reading did not finish within {timeout_s:.0f} s '
                              '(corrupt file?); the reader was stopped') from None
      except (EOFError, BrokenPipeError, OSError, pickle.UnpicklingError):
        try:
          returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
          returncode = None
        self.close()
        raise MotionFileError(
            source, f'the .b3d reader (nimblephysics) crashed on this file ({_signal_name(returncode)}): '
            'the file is corrupt, truncated or of an unsupported version') from None
    if status == 'ok':
      return payload
    raise MotionFileError(*payload)


_WORKER = IsolatedWorker()


def call_isolated(function, source, *args, timeout_s=600.0):
  """`IsolatedWorker.call` on the process-wide worker."""
  return _WORKER.call(function, source, *args, timeout_s=timeout_s)


def _serve(allowed_prefixes):
  """The child's loop: read a request, run it, reply; until stdin closes."""
  replies = os.fdopen(os.dup(1), 'wb')
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)  # native chatter must never reach the reply stream
  requests = sys.stdin.buffer
  while True:
    header = requests.read(_HEADER.size)
    if len(header) < _HEADER.size:
      return
    function, args = pickle.loads(requests.read(_HEADER.unpack(header)[0]))
    module_name, name = function.split(':')
    if not module_name.startswith(allowed_prefixes):
      _write_message(replies, ('error', ('<worker>', f'refusing to run {function}')))
      continue
    source = args[0] if args else '<worker>'
    try:
      result = ('ok', getattr(importlib.import_module(module_name), name)(*args))
    except JaxfitInputError as e:
      result = ('error', (e.source, e.problem))
    except Exception as e:  # pylint: disable=broad-except
      result = ('error', (str(source), f'reading failed ({type(e).__name__}: {str(e)[:300]})'))
    _write_message(replies, result)


if __name__ == '__main__':
  _serve(tuple(sys.argv[1:]) or DEFAULT_PREFIXES)
