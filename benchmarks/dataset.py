"""Dataset-scale benchmark: per-trial overhead, folder runs, engines.

python benchmarks/dataset.py [--work=/tmp/jaxfit_dataset_bench]

On a generated dataset of 12 mixed-length trials (5 subjects, 200-800
frames), each measured as whole processes of the CLI (what a user waits for):
  1. one 300-frame trial, cold (empty executable store) and warm;
  2. the folder in one process (local engine, warm store): wall time against
     the sum of the fits' own times (the per-trial overhead), frames/s;
     1 and 2 also for --baseline (an earlier checkout), side by side;
  3. the same 12 trials one process each (`--config.trials=<name>`), warm;
  4. the folder on the Ray engine (local Ray, one task per subject), warm;
  5. reporting one 2000-frame trial.
Writes benchmarks/DATASET.json and the "Dataset runs" section of
benchmarks/RESULTS.md (between its markers).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import MARK_BEGIN, MARK_END, machine  # noqa: E402  pylint: disable=wrong-import-position
from jaxfit.demo.subject import TrialSpec, write_demo_subject  # noqa: E402  pylint: disable=wrong-import-position
from jaxfit.report.build import build_report  # noqa: E402  pylint: disable=wrong-import-position

# (subject, trial, motion, frames, fps): 12 trials, 5 subjects, 200-800 frames.
TRIALS = (
    ('S01', 'walk_a', 'walk', 200, 100.0), ('S01', 'walk_b', 'walk', 310, 100.0),
    ('S01', 'walk_long', 'walk', 800, 100.0),
    ('S02', 'run_a', 'run', 240, 150.0), ('S02', 'walk_a', 'walk', 420, 100.0),
    ('S03', 'walk_a', 'walk', 260, 100.0), ('S03', 'walk_b', 'walk', 520, 100.0),
    ('S04', 'run_a', 'run', 200, 150.0), ('S04', 'walk_a', 'walk', 230, 100.0),
    ('S04', 'walk_b', 'walk', 280, 100.0),
    ('S05', 'run_a', 'run', 210, 150.0), ('S05', 'walk_a', 'walk', 310, 100.0),
)


def make_dataset(folder):
  subjects = sorted({t[0] for t in TRIALS})
  for seed, subject in enumerate(subjects):
    path = os.path.join(folder, subject, subject + '.b3d')
    if os.path.isfile(path):
      continue
    specs = tuple(TrialSpec(name, motion, 1.3 if motion == 'walk' else 3.0, frames, fps,
                            motion == 'walk') for s, name, motion, frames, fps in TRIALS
                  if s == subject)
    write_demo_subject(path, specs, height_m=1.6 + 0.05 * seed, seed=seed)


def cli(data, out, cache, *flags, tree=ROOT):
  """Runs the CLI of the jaxfit checkout `tree`; returns (wall seconds, the
  fits' own seconds summed from their metrics.json, what the fits were)."""
  if os.path.isdir(out):
    shutil.rmtree(out)
  cmd = [sys.executable, '-m', 'jaxfit.main', '--config=configs/default.py',
         f'--config.input={data}', f'--config.output_dir={out}',
         f'--config.compilation_cache_dir={cache}', *flags]
  if tree == ROOT:
    cmd.append('--config.progress=false')   # (an older checkout has no progress bar)
    cmd.append('--config.body=demo')        # the mannequin, as an older checkout's default
  env = dict(os.environ, PYTHONPATH=tree)
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr[-3000:])
  fits = []
  for root, _, files in os.walk(out):
    if 'metrics.json' in files and '.jaxfit-tmp' not in root:
      with open(os.path.join(root, 'metrics.json'), encoding='utf-8') as f:
        fits.append(json.load(f)['time_s']['total'])
  return wall, sum(fits), len(fits)


def one_trial_and_folder(data, work, tree, label):
  """Whole-process times of one 310-frame trial (cold, warm) and of the
  folder in one process (warm), for the checkout `tree`."""
  out = os.path.join(work, 'out_' + label)
  cold_cache = os.path.join(work, 'cache_cold_' + label)
  shutil.rmtree(cold_cache, ignore_errors=True)
  one = os.path.join(data, 'S01', 'S01.b3d')
  r = {}
  r['one_trial_cold_s'], r['one_trial_cold_fit_s'], _ = cli(one, out, cold_cache,
                                                            '--config.trials=walk_b', tree=tree)
  r['one_trial_warm_s'], r['one_trial_warm_fit_s'], _ = cli(one, out, cold_cache,
                                                            '--config.trials=walk_b', tree=tree)
  cache = os.path.join(work, 'cache_' + label)
  cli(data, out, cache, tree=tree)   # fills the cache / store
  wall, fits, count = cli(data, out, cache, tree=tree)
  assert count == len(TRIALS), count
  r['folder_local'] = dict(wall_s=wall, sum_fit_s=fits, overhead_ratio=wall / fits,
                           frames_per_s=sum(t[3] for t in TRIALS) / wall)
  return r


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--work', default='/tmp/jaxfit_dataset_bench')
  parser.add_argument('--json', default=os.path.join(ROOT, 'benchmarks', 'DATASET.json'))
  parser.add_argument('--results', default=os.path.join(ROOT, 'benchmarks', 'RESULTS.md'))
  parser.add_argument('--baseline', default='',
                      help='a checkout of an earlier jaxfit (git worktree add DIR REV), '
                           'measured side by side in the same run')
  parser.add_argument('--baseline_label', default='')
  args = parser.parse_args()
  data = os.path.join(args.work, 'data')
  make_dataset(data)
  frames = sum(t[3] for t in TRIALS)
  info = machine()
  result = dict(machine=f'{info["cpu"]}, {info["cores"]} cores, JAX {info["jax"]} '
                        f'({info["jax_backend"]})',
                python=info['python'], date=info['date'],
                trials=len(TRIALS), subjects=len({t[0] for t in TRIALS}), frames=frames)

  # 1-2. One 310-frame trial cold and warm, the folder in one process: this
  # checkout, and the baseline right after it (same machine, same minutes).
  result.update(one_trial_and_folder(data, args.work, ROOT, 'now'))
  if args.baseline:
    result['baseline'] = one_trial_and_folder(data, args.work, os.path.abspath(args.baseline),
                                              'baseline')
    result['baseline']['label'] = args.baseline_label or args.baseline
  cache = os.path.join(args.work, 'cache_now')
  out = os.path.join(args.work, 'out')

  # 3. The same trials, one process each.
  walls, fits_each = [], []
  for subject, name, *_ in TRIALS:
    w, f, _ = cli(os.path.join(data, subject, subject + '.b3d'), out, cache,
                  f'--config.trials={name}')
    walls.append(w)
    fits_each.append(f)
  result['one_process_each'] = dict(wall_s=sum(walls), sum_fit_s=sum(fits_each),
                                    overhead_ratio=sum(walls) / sum(fits_each),
                                    frames_per_s=frames / sum(walls))

  # 4. The folder on local Ray (one task per subject, 1 CPU each).
  try:
    import ray  # pylint: disable=import-outside-toplevel,unused-import
    cli(data, out, cache, '--config.engine=ray')   # workers warm their own store entries
    wall, fits, _ = cli(data, out, cache, '--config.engine=ray')
    result['folder_ray'] = dict(wall_s=wall, sum_fit_s=fits, overhead_ratio=wall / fits,
                                frames_per_s=frames / wall)
  except ImportError:
    result['folder_ray'] = None

  # 5. Reporting a 2000-frame trial (whole `python -m jaxfit.report` process, and in-process).
  long_path = os.path.join(args.work, 'long', 'L01.b3d')
  if not os.path.isfile(long_path):
    write_demo_subject(long_path, (TrialSpec('walk_2000', 'walk', 1.3, 2000, 100.0, True),), seed=7)
  long_out = os.path.join(args.work, 'out_long')
  cli(long_path, long_out, cache)
  subprocess.run([sys.executable, '-m', 'jaxfit.report', long_out,
                  f'--compilation_cache_dir={cache}'], cwd=ROOT, check=True, capture_output=True)
  t0 = time.perf_counter()   # second process: the meshes' program is stored
  subprocess.run([sys.executable, '-m', 'jaxfit.report', long_out,
                  f'--compilation_cache_dir={cache}'], cwd=ROOT, check=True, capture_output=True)
  result['report_2000_frames_process_s'] = time.perf_counter() - t0
  t0 = time.perf_counter()
  build_report(long_out)
  result['report_2000_frames_s'] = time.perf_counter() - t0

  with open(args.json, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  write_section(args.results, result)
  print(json.dumps(result, indent=1))


def write_section(path, r):
  local, each, ray, base = r['folder_local'], r['one_process_each'], r['folder_ray'], r.get('baseline')
  lines = [MARK_BEGIN, '## Dataset runs (`python benchmarks/dataset.py`)', '',
           f'Machine: {r["machine"]}, Python {r["python"]}, {r["date"]}. Whole CLI processes, '
           f'warm store of compiled programs unless said. {r["trials"]} trials of {r["subjects"]} '
           f'subjects, 200-800 frames, {r["frames"]} frames in all. "wall / fits" is the whole '
           'run against the sum of the fits\' own times (`time_s.total`): 1.0 = no overhead.', '',
           '| run | wall s | sum of fits s | wall / fits | frames / s |', '|---|---|---|---|---|']
  rows = [('folder, one process (local engine)', local),
          ('same trials, one process each', each),
          ('folder, Ray engine (local, 2 CPUs, 1 per task)', ray)]
  if base:
    rows.append((f'folder, one process: baseline ({base["label"]})', base['folder_local']))
  for label, m in rows:
    if m:
      lines.append(f'| {label} | {m["wall_s"]:.1f} | {m["sum_fit_s"]:.1f} | '
                   f'{m["overhead_ratio"]:.2f} | {m["frames_per_s"]:.0f} |')
  lines += ['', '| one 310-frame trial, whole process | warm s | fit s | warm / fit | cold s |',
            '|---|---|---|---|---|']
  for label, m in (('this checkout', r),) + ((('baseline (' + base['label'] + ')', base),) if base else ()):
    lines.append(f'| {label} | {m["one_trial_warm_s"]:.2f} | {m["one_trial_warm_fit_s"]:.2f} | '
                 f'{m["one_trial_warm_s"] / m["one_trial_warm_fit_s"]:.2f} | '
                 f'{m["one_trial_cold_s"]:.1f} |')
  if base:
    lines += ['', f'Side by side in this run: warm single trial {base["one_trial_warm_s"] / r["one_trial_warm_s"]:.1f}x '
              f'faster than the baseline, cold {base["one_trial_cold_s"] / r["one_trial_cold_s"]:.2f}x, '
              f'the folder {base["folder_local"]["wall_s"] / local["wall_s"]:.1f}x.']
  lines += ['', f'Reporting one 2000-frame trial (plots, 6 s GIF, 3 meshes, glTF animation): '
            f'{r["report_2000_frames_s"]:.1f} s in-process, '
            f'{r["report_2000_frames_process_s"]:.1f} s as a whole `python -m jaxfit.report` process.',
            '', 'GPU: not measured (no accelerator was lent to this task).', MARK_END]
  text = open(path, encoding='utf-8').read() if os.path.isfile(path) else ''
  section = '\n'.join(lines)
  if MARK_BEGIN in text:
    text = re.sub(re.escape(MARK_BEGIN) + '.*?' + re.escape(MARK_END), lambda _: section, text,
                  flags=re.S)
  else:
    text = text.rstrip() + '\n\n' + section + '\n'
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


if __name__ == '__main__':
  main()
