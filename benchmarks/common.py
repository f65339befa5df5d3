"""What the benchmark scripts share: the machine they ran on, and the
markers of the dataset section that benchmarks/dataset.py keeps in RESULTS.md."""

import os
import platform
import time

import jax
import numpy as np

MARK_BEGIN, MARK_END = '<!-- dataset:begin -->', '<!-- dataset:end -->'


def machine():
  """CPU, cores, versions and the date."""
  import torch  # pylint: disable=import-outside-toplevel  (the reference's, optional and heavy)
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
              jax=jax.__version__, jax_backend=jax.default_backend(),
              jax_devices=[str(d) for d in jax.devices()], torch=torch.__version__,
              numpy=np.__version__, date=time.strftime('%Y-%m-%d'))
