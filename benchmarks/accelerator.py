"""Throughput of the whole fit against the batch: frames per compiled call.

Every program of the fit sees a fixed chunk of frames (fit.chunk_frames), so
the chunk is the batch an accelerator works on: `--batches=1,2,...,256` fits
the same trial with chunk_frames = 128 x b (b chunks of 128 frames in one
call) and records, per batch, the fitting time (compilation excluded, median
of --repeats), frames/s, the compile seconds and the MPJPE (the fit must not
depend on the batch beyond rounding and the Adam windows' seams). The trial is
the demo subject's treadmill walk (Rajagopal skeleton, segment rotations,
learned offsets), repeated to --frames frames (default: enough to fill the
largest batch). Writes ACCELERATOR.md and .json with the device it ran on.

  python benchmarks/accelerator.py [--batches=1,2,4,8] [--frames=0] [--repeats=3]
                                   [--unit=128] [--compilation_cache_dir=DIR]
                                   [--out=benchmarks/ACCELERATOR.md]

(--unit shrinks the chunk for a smoke run, e.g. the test suite's on CPU.)

The default chunk per backend (fit.options.AUTO_CHUNK_FRAMES) is what this
measures on each kind of device.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('OMP_NUM_THREADS', '1')

import jax  # noqa: E402

from jaxfit.body.open_body import open_body_path  # noqa: E402
from jaxfit.data.metrics import trial_metrics  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402
from jaxfit.demo.subject import ensure_demo_subject  # noqa: E402
from jaxfit.fit.options import AUTO_CHUNK_FRAMES  # noqa: E402
from jaxfit.fit.pipeline import fit_trial  # noqa: E402
from jaxfit.io.b3d import read_b3d_trials  # noqa: E402
from jaxfit.io.smpl_file import load_body_model  # noqa: E402
from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.runtime import jax_setup  # noqa: E402

UNIT = 128   # frames of one chunk at batch 1 (--unit)


def repeated_trial(trial, frames):
  """The trial's frames repeated (forwards, then backwards, ...) to `frames`
  frames, so the motion stays continuous at every seam."""
  n = trial.joints.shape[0]
  order = np.concatenate([np.arange(n), np.arange(n)[::-1]])
  index = np.resize(order, frames)
  per_frame = {f.name: getattr(trial, f.name)[index] for f in dataclasses.fields(trial)
               if isinstance(getattr(trial, f.name), np.ndarray) and getattr(trial, f.name).shape[:1] == (n,)}
  return dataclasses.replace(trial, **per_frame)


def device_info():
  d = jax.devices()[0]
  return dict(platform=d.platform, device_kind=d.device_kind, device_count=jax.device_count(),
              cpu_count=os.cpu_count(), machine=platform.machine(), processor=platform.processor(),
              jax=jax.__version__, python=platform.python_version(),
              date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
              default_chunk_frames=AUTO_CHUNK_FRAMES.get(d.platform, UNIT))


def measure(model, trial, batches, repeats, unit=UNIT):
  rows = []
  for b in batches:
    c = base_config()
    c.chunk_frames = unit * b
    settings = settings_from_config(c)
    prep = prepare_trial(trial, settings.prepare, model.parents)
    times, result = [], None
    t0 = time.perf_counter()
    first = fit_trial(model, prep, settings.fit)
    first_wall = time.perf_counter() - t0
    for _ in range(repeats):
      result = fit_trial(model, prep, settings.fit)
      times.append(result.time_s['total'])
    fit_s = float(np.median(times))
    metrics, _ = trial_metrics(prep, result, trial.fps)
    rows.append(dict(batch=b, chunk_frames=unit * b, frames=int(prep.num_frames), fit_s=fit_s,
                     frames_per_s=prep.num_frames / fit_s,
                     compile_s=float(first.time_s.get('compile_s', 0.0)),
                     first_call_wall_s=first_wall, mpjpe_mm=float(metrics['mpjpe_mm'])))
    print(f'batch {b:4d} ({unit * b} frames/call): {fit_s:.3f} s, {rows[-1]["frames_per_s"]:.0f} '
          f'frames/s, compile {rows[-1]["compile_s"]:.1f} s, MPJPE {rows[-1]["mpjpe_mm"]:.2f} mm',
          flush=True)
  return rows


def markdown(info, rows, repeats, unit=UNIT):
  lines = ['# Fit throughput against the batch (frames per compiled call)', '',
           f"Device: {info['platform']} ({info['device_kind']}, {info['device_count']} device(s)); "
           f"{info['cpu_count']} CPU cores, {info['processor'] or info['machine']}; jax {info['jax']}; "
           f"{info['date']}.", '',
           f'Whole fit (all stages, default config, open body) of the demo treadmill walk repeated '
           f'to {rows[0]["frames"]} frames; batch b = b chunks of {unit} frames per compiled call '
           f'(fit.chunk_frames = {unit} b); fit time = median of {repeats}, compilation excluded.', '',
           '| batch | frames / call | fit s | frames / s | vs batch 1 | compile s | MPJPE mm |',
           '|---|---|---|---|---|---|---|']
  base = rows[0]['frames_per_s']
  for r in rows:
    lines.append(f"| {r['batch']} | {r['chunk_frames']} | {r['fit_s']:.3f} | {r['frames_per_s']:.0f} | "
                 f"{r['frames_per_s'] / base:.2f}x | {r['compile_s']:.1f} | {r['mpjpe_mm']:.2f} |")
  lines += ['', f"The default on this backend ({info['platform']}): chunk_frames = "
            f"{info['default_chunk_frames']}.", '']
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batches', default='1,2,4,8')
  parser.add_argument('--frames', type=int, default=0, help='0: the largest batch, filled')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--unit', type=int, default=UNIT, help='frames of one chunk (batch 1)')
  parser.add_argument('--compilation_cache_dir', default='none',
                      help="a store of compiled programs ('none': compile here)")
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'ACCELERATOR.md'))
  args = parser.parse_args(argv)
  batches = [int(b) for b in args.batches.split(',') if b]
  frames = args.frames or args.unit * max(batches)
  jax_setup.use_executable_store(args.compilation_cache_dir)
  model = load_body_model(open_body_path('neutral'))
  path = ensure_demo_subject()
  trial = next(t for t in read_b3d_trials(path) if 'walk' in t.name)
  info = device_info()
  rows = measure(model, repeated_trial(trial, frames), batches, args.repeats, args.unit)
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write(markdown(info, rows, args.repeats, args.unit))
  with open(os.path.splitext(args.out)[0] + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(device=info, repeats=args.repeats, unit=args.unit, rows=rows), f, indent=1)
  print('wrote', args.out)


if __name__ == '__main__':
  main()
