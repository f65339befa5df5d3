"""Benchmark harness: jaxfit (both variants) against the PyTorch reference, side by side.

python benchmarks/run.py [--frames=200,500,2000] [--out=benchmarks/RESULTS.md]

For each trial length, a synthetic treadmill-walking subject (demo generator,
100 Hz) is fitted by each method in its own subprocess (so peak memory is the
method's own and compilation is cold), on the same machine in the same run.
Reported: per-stage and total wall time (compilation apart), MPJPE / PCK over
the mapped joints against the input joint centres, peak RSS, speed ratios;
then scaling (time per frame vs trial length) and the batched throughput of
the compiled core (many trials at once under vmap). Writes Markdown + JSON.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=wrong-import-position
from benchmarks.common import MARK_BEGIN, MARK_END, machine  # noqa: E402
from jaxfit.body.model import joint_model  # noqa: E402
from jaxfit.data.metrics import fit_metrics  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402
from jaxfit.demo.smpl_truth import make_ground_truth_trial  # noqa: E402
from jaxfit.demo.subject import TrialSpec, write_demo_subject  # noqa: E402
from jaxfit.fit.core import fit_blocks  # noqa: E402
from jaxfit.fit.pipeline import _targets, fit_trial, stage_hyper  # noqa: E402
from jaxfit.fit.types import empty_anchor  # noqa: E402
from jaxfit.io.b3d import read_b3d_trials  # noqa: E402  pylint: disable=wrong-import-position
from jaxfit.runtime.files import atomic_write  # noqa: E402  pylint: disable=wrong-import-position
from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.run.trial import settings_model, settings_trials  # noqa: E402
from jaxfit.runtime import jax_setup  # noqa: E402  pylint: disable=wrong-import-position
# pylint: enable=wrong-import-position

METHODS = ('jaxfit_simultaneous', 'jaxfit_sequential', 'reference_torch')


def with_dataset_section(path, text):
  """`text` plus the dataset section benchmarks/dataset.py keeps in `path`."""
  old = open(path, encoding='utf-8').read() if os.path.isfile(path) else ''
  if MARK_BEGIN not in old:
    return text
  section = old[old.index(MARK_BEGIN):old.index(MARK_END) + len(MARK_END)]
  return text.rstrip() + '\n\n' + section + '\n'


def subject_path(work, frames):
  path = os.path.join(work, f'bench_{frames}', f'bench_{frames}.b3d')
  if not os.path.isfile(path):
    write_demo_subject(path, (TrialSpec('walk', 'walk', 1.25, frames, 100.0, True, 0.0),), seed=1)
  return path


def worker(method, path, out_dir, store='none'):
  """Fits one subject with one method; prints one JSON line. store: the
  compiled-program store jaxfit uses ('none': it compiles, timed apart)."""
  t0 = time.perf_counter()
  if method == 'reference_torch':
    from benchmarks.reference_torch import run  # pylint: disable=import-outside-toplevel
    rows = run(path, '', out_dir, log=lambda *a: None)
    metrics = rows[0]['metrics']
    times = dict(metrics['time_s'], compile_s=0.0)
  else:
    jax_setup.use_executable_store(store)
    config = base_config()
    config.body = 'demo'   # the published speed results are on the mannequin
    config.variant = method.split('_')[1]
    if config.variant == 'sequential':
      config.pose.iters = 40   # as configs/sequential.py: stage 3 frame by frame
    settings = settings_from_config(config)
    model, _ = settings_model(settings)
    trial = settings_trials(path, settings)[0]
    prep = prepare_trial(trial, settings.prepare)
    result = fit_trial(model, prep, settings.fit)
    times = result.time_s
    metrics = fit_metrics(result.points, prep.targets[:prep.num_frames], prep.valid,
                          trial.fps, prep.mapping.source_names)
  wall = time.perf_counter() - t0
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  print('RESULT ' + json.dumps(dict(
      method=method, frames=metrics['frames'], time_s=times, wall_s=wall, peak_rss_mb=peak_mb,
      mpjpe_mm=metrics['mpjpe_mm'], pa_mpjpe_mm=metrics['pa_mpjpe_mm'],
      pck_50mm=metrics['pck_50mm'], pck_100mm=metrics['pck_100mm'])))


def batch_throughput(batch_sizes, frames=256, iterations=50):
  """Frames x iterations per second of the compiled Adam core on S trials at once."""
  config = base_config()
  config.body = 'demo'   # the published speed results are on the mannequin
  settings = settings_from_config(config)
  body, _ = settings_model(settings)
  model = joint_model(body)
  trial, _ = make_ground_truth_trial(body, settings.prepare.joint_map, num_frames=frames)
  prep = prepare_trial(trial, settings.prepare)
  targets = jax.tree.map(lambda a: a[None], _targets(prep, np.zeros((prep.targets.shape[0], 3))))
  hyper = stage_hyper(settings.fit, 'sequence', model.num_betas, 0.002, iters=iterations)
  anchor = empty_anchor(len(prep.structure.smpl_index))
  t = prep.targets.shape[0]
  rows = []
  for s in batch_sizes:
    offsets = jnp.zeros((len(prep.structure.smpl_index), 3))
    batched = jax.jit(jax.vmap(lambda b, p, tr, tg: fit_blocks(
        model, b, offsets, p, tr, tg, anchor, hyper, structure=prep.structure)))
    args = (jnp.zeros((s, model.num_betas)), jnp.zeros((s, 1, t, 24, 3)), jnp.zeros((s, 1, t, 3)),
            jax.tree.map(lambda a: jnp.broadcast_to(a, (s,) + a.shape), targets))
    jax.block_until_ready(batched(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(batched(*args))
    dt = time.perf_counter() - t0
    rows.append(dict(trials=s, frames=s * t, seconds=dt,
                     frame_iterations_per_s=s * t * iterations / dt,
                     frames_per_s_at_stage4=s * t / dt))
  return rows


def run_method(method, path, out_dir, store='none'):
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED='1')
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', method, path, out_dir,
                         store],
                        capture_output=True, text=True, env=env, cwd=ROOT)
  for line in proc.stdout.splitlines():
    if line.startswith('RESULT '):
      return json.loads(line[7:])
  raise RuntimeError(f'{method} on {path} failed:\n{proc.stderr[-3000:]}')


def read_times(paths):
  """Seconds to open a .b3d and read its trial (first read in this process)."""
  rows = []
  for frames, path in paths:
    t0 = time.perf_counter()
    read_b3d_trials(path)
    rows.append(dict(frames=frames, seconds=time.perf_counter() - t0))
  return rows


def markdown(results, batch, info, reads=(), findings=''):
  lines = ['# jaxfit benchmarks', '',
           f'Machine: {info["cpu"]}, {info["cores"]} cores; JAX {info["jax"]} '
           f'({info["jax_backend"]}), torch {info["torch"]}, Python {info["python"]}; {info["date"]}.',
           'Each method runs in its own process; times exclude JAX compilation (reported apart).',
           'MPJPE / PCK: fitted points (SMPL joints plus learned correspondence offsets) vs the input joint centres (16 mapped joints, no alignment).',
           '', '| frames | method | total s | init | shape | pose | sequence | compile s | MPJPE mm | PA-MPJPE mm | PCK@50 | PCK@100 | peak RSS MB | speed-up vs torch |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for frames in sorted({r['frames'] for r in results}):
    rows = {r['method']: r for r in results if r['frames'] == frames}
    torch_total = rows.get('reference_torch', {}).get('time_s', {}).get('total')
    for method in METHODS:
      r = rows.get(method)
      if not r:
        continue
      t = r['time_s']
      ratio = f'{torch_total / t["total"]:.0f}x' if torch_total and method != 'reference_torch' else '-'
      lines.append(f'| {frames} | {method} | {t["total"]:.2f} | {t.get("init", 0):.2f} | '
                   f'{t.get("shape", 0):.2f} | {t.get("pose", 0):.2f} | {t.get("sequence", 0):.2f} | '
                   f'{t.get("compile_s", 0):.1f} | {r["mpjpe_mm"]:.1f} | {r["pa_mpjpe_mm"]:.1f} | '
                   f'{r["pck_50mm"]:.3f} | {r["pck_100mm"]:.3f} | {r["peak_rss_mb"]:.0f} | {ratio} |')
  lines += ['', '## Scaling (jaxfit simultaneous)', '', '| frames | total s | ms per frame |', '|---|---|---|']
  for r in sorted((r for r in results if r['method'] == 'jaxfit_simultaneous'), key=lambda r: r['frames']):
    lines.append(f'| {r["frames"]} | {r["time_s"]["total"]:.2f} | {1000 * r["time_s"]["total"] / r["frames"]:.2f} |')
  if batch:
    lines += ['', '## Batched throughput of the compiled core (stage-4 Adam, vmap over trials)', '',
              '| trials x frames | s for 50 iterations | frame-iterations / s | frames / s (one 50-step stage) |',
              '|---|---|---|---|']
    for b in batch:
      lines.append(f'| {b["trials"]} x {b["frames"] // b["trials"]} | {b["seconds"]:.3f} | '
                   f'{b["frame_iterations_per_s"]:.3g} | {b["frames_per_s_at_stage4"]:.3g} |')
  if reads:
    lines += ['', '## Reading .b3d (open + read one trial, joint centres and contact)', '',
              '| frames | seconds |', '|---|---|']
    lines += [f'| {r["frames"]} | {r["seconds"]:.3f} |' for r in reads]
  lines += ['', 'GPU: not measured in this run (no accelerator was available); the column is left empty, not estimated.']
  if findings:
    lines += ['', findings.strip()]
  return '\n'.join(lines) + '\n'


def main():
  if len(sys.argv) > 1 and sys.argv[1] == '--worker':
    worker(*sys.argv[2:6])
    return
  parser = argparse.ArgumentParser(description='jaxfit vs the PyTorch reference')
  parser.add_argument('--frames', default='200,500,2000')
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--batch', default='1,4,16', help="trial counts for the batched core; '' skips")
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'RESULTS.md'))
  parser.add_argument('--work', default=os.path.join(ROOT, 'benchmarks', 'out'))
  parser.add_argument('--compilation_cache_dir', default='none',
                      help="jaxfit's store of compiled programs ('none': each run compiles)")
  parser.add_argument('--render', action='store_true',
                      help='only rebuild --out from its .json and benchmarks/FINDINGS.md')
  args = parser.parse_args()
  findings_path = os.path.join(ROOT, 'benchmarks', 'FINDINGS.md')
  if args.render:
    with open(os.path.splitext(args.out)[0] + '.json', encoding='utf-8') as f:
      data = json.load(f)
    findings = open(findings_path, encoding='utf-8').read() if os.path.isfile(findings_path) else ''
    text = with_dataset_section(args.out, markdown(data['results'], data['batch'],
                                                   data['machine'], data.get('reads', ()),
                                                   findings))
    with open(args.out, 'w', encoding='utf-8') as f:   # (read before it is truncated)
      f.write(text)
    return
  os.environ.setdefault('JAXFIT_CACHE', os.path.join(args.work, 'cache'))
  results, paths = [], []
  for frames in [int(f) for f in args.frames.split(',') if f]:
    path = subject_path(args.work, frames)
    paths.append((frames, path))
    for method in args.methods.split(','):
      r = run_method(method, path, os.path.join(args.work, 'fits', method), args.compilation_cache_dir)
      print(f'{frames:5d} frames  {method:22s} {r["time_s"]["total"]:8.2f} s  '
            f'(+{r["time_s"].get("compile_s", 0):.1f} s compile)  MPJPE {r["mpjpe_mm"]:.1f} mm', flush=True)
      results.append(r)
  batch = batch_throughput([int(b) for b in args.batch.split(',') if b]) if args.batch else []
  reads = read_times(paths)
  info = machine()
  findings = open(findings_path, encoding='utf-8').read() if os.path.isfile(findings_path) else ''
  text = with_dataset_section(args.out, markdown(results, batch, info, reads, findings))
  with atomic_write(args.out) as tmp:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(text)
  with atomic_write(os.path.splitext(args.out)[0] + '.json') as tmp:
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(dict(machine=info, results=results, batch=batch, reads=reads), f, indent=1)
  print(open(args.out, encoding='utf-8').read())


if __name__ == '__main__':
  main()
