"""The speed targets of issue 22, this checkout and an earlier one side by side.

python benchmarks/speed.py --baseline=DIR [--baseline_label=REV] [--work=/tmp/jaxfit_speed]
                           [--skip_torch]

Every figure is a whole CLI process (what a user waits for) unless said, each
measurement run for both checkouts back to back (same machine, same minutes):
  1. the README's demo command from nothing: an empty cache (demo files
     generated) and an empty store of compiled programs (target <= 15 s);
  2. one 300-frame trial, warm store, against the PyTorch port of the
     reference on the same file (benchmarks/reference_torch.py, its own
     process) (target >= 30x);
  3. one 2000-frame trial, warm: the fit's own time (`time_s.total`,
     target <= 2 s) and the process;
  4. the 12-trial folder of benchmarks/dataset.py in one process, warm
     (target >= 1,000 frames/s wall).
Writes benchmarks/SPEED.md and SPEED.json with the machine and date.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=wrong-import-position
from benchmarks.common import machine  # noqa: E402
from benchmarks.dataset import TRIALS, make_dataset  # noqa: E402
from jaxfit.demo.subject import TrialSpec, write_demo_subject  # noqa: E402
# pylint: enable=wrong-import-position


def process(tree, args, env=None):
  """Wall seconds of `python <args>` run in checkout `tree`."""
  env = dict(os.environ, PYTHONPATH=tree, **(env or {}))
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True,
                        check=False)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f'{args} in {tree}:\n{proc.stderr[-3000:]}')
  return wall, proc.stdout


def fits(out):
  """The metrics.json of every trial under `out`: [(frames, fit s, compile s)]."""
  rows = []
  for root, _, files in os.walk(out):
    if 'metrics.json' in files and '.jaxfit-tmp' not in root:
      with open(os.path.join(root, 'metrics.json'), encoding='utf-8') as f:
        m = json.load(f)
      rows.append((m.get('frames', 0), m['time_s']['total'], m['time_s'].get('compile_s', 0.0)))
  return rows


def cli(tree, data, out, cache, *flags, env=None):
  shutil.rmtree(out, ignore_errors=True)
  wall, _ = process(tree, ['-m', 'jaxfit.main', '--config=configs/default.py', f'--config.input={data}',
                           f'--config.output_dir={out}', f'--config.compilation_cache_dir={cache}',
                           '--config.progress=false', *flags], env)
  return wall, fits(out)


def cold_demo(tree, work, label):
  cache = os.path.join(work, 'cold_' + label)
  shutil.rmtree(cache, ignore_errors=True)
  out = os.path.join(work, 'demo_' + label)
  shutil.rmtree(out, ignore_errors=True)
  wall, _ = process(tree, ['-m', 'jaxfit.main', '--config=configs/demo.py',
                           f'--config.output_dir={out}',
                           f'--config.compilation_cache_dir={os.path.join(cache, "xla")}'],
                    dict(JAXFIT_CACHE=cache))
  rows = fits(out)
  return dict(wall_s=wall, fit_s=sum(r[1] for r in rows), compile_s=sum(r[2] for r in rows))


def warm_trial(tree, path, work, label):
  """The trial twice (the first fills the store); the second's process and fit."""
  cache = os.path.join(work, 'store_' + label)
  out = os.path.join(work, 'out_' + label)
  cli(tree, path, out, cache)
  wall, rows = cli(tree, path, out, cache)
  return dict(wall_s=wall, fit_s=rows[0][1], frames=rows[0][0])


def torch_port(path, work):
  out = os.path.join(work, 'torch')
  shutil.rmtree(out, ignore_errors=True)
  wall, stdout = process(ROOT, [os.path.join('benchmarks', 'run.py'), '--worker', 'reference_torch',
                                path, out])
  result = json.loads(next(l for l in stdout.splitlines() if l.startswith('RESULT '))[7:])
  return dict(wall_s=wall, fit_s=result['time_s']['total'], mpjpe_mm=result['mpjpe_mm'])


def folder(tree, data, work, label):
  cache = os.path.join(work, 'store_' + label)
  out = os.path.join(work, 'folder_' + label)
  cli(tree, data, out, cache)
  wall, rows = cli(tree, data, out, cache)
  frames = sum(t[3] for t in TRIALS)
  assert len(rows) == len(TRIALS), rows
  return dict(wall_s=wall, sum_fit_s=sum(r[1] for r in rows), frames=frames,
              frames_per_s=frames / wall)


def markdown(r):
  now, base = r['now'], r['baseline']
  label = r['baseline_label']
  ratio = lambda a, b: f'{a / b:.2f}x' if b else '-'
  lines = ['# Speed targets (issue 22), side by side', '',
           f"Machine: {r['machine']}; Python {r['python']}; {r['date']}. Whole CLI processes "
           f"unless said; each figure measured for both checkouts back to back. Baseline: {label}.", '',
           '| measure | target | this checkout | baseline | baseline / this |', '|---|---|---|---|---|',
           f"| cold demo (empty cache and store), wall s | <= 15 | {now['cold_demo']['wall_s']:.1f} | "
           f"{base['cold_demo']['wall_s']:.1f} | {ratio(base['cold_demo']['wall_s'], now['cold_demo']['wall_s'])} |",
           f"| of which compiling s | | {now['cold_demo']['compile_s']:.1f} | "
           f"{base['cold_demo']['compile_s']:.1f} | |",
           f"| 300-frame trial, warm process s | | {now['t300']['wall_s']:.2f} | "
           f"{base['t300']['wall_s']:.2f} | {ratio(base['t300']['wall_s'], now['t300']['wall_s'])} |"]
  if r.get('torch'):
    t = r['torch']['wall_s']
    lines.append(f"| PyTorch port / jaxfit, 300 frames, whole processes | >= 30x | "
                 f"{t / now['t300']['wall_s']:.1f}x | {t / base['t300']['wall_s']:.1f}x | |")
  lines += [f"| 2000-frame trial, fit s | <= 2 | {now['t2000']['fit_s']:.2f} | {base['t2000']['fit_s']:.2f} | "
            f"{ratio(base['t2000']['fit_s'], now['t2000']['fit_s'])} |",
            f"| 2000-frame trial, warm process s | | {now['t2000']['wall_s']:.2f} | "
            f"{base['t2000']['wall_s']:.2f} | {ratio(base['t2000']['wall_s'], now['t2000']['wall_s'])} |",
            f"| 12-trial folder, frames / s wall | >= 1000 | {now['folder']['frames_per_s']:.0f} | "
            f"{base['folder']['frames_per_s']:.0f} | "
            f"{ratio(now['folder']['frames_per_s'], base['folder']['frames_per_s'])} (this / baseline) |"]
  if r.get('torch'):
    lines += ['', f"The PyTorch port: {r['torch']['wall_s']:.1f} s as a process, {r['torch']['fit_s']:.1f} s "
              f"fitting, MPJPE {r['torch']['mpjpe_mm']:.1f} mm (its own metric: offset-free joints "
              'against the targets).']
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--baseline', required=True, help='an earlier checkout (git worktree add DIR REV)')
  parser.add_argument('--baseline_label', default='')
  parser.add_argument('--work', default='/tmp/jaxfit_speed')
  parser.add_argument('--skip_torch', action='store_true')
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'SPEED.md'))
  args = parser.parse_args()
  base_tree = os.path.abspath(args.baseline)
  os.makedirs(args.work, exist_ok=True)
  data = os.path.join(args.work, 'data')
  make_dataset(data)
  p300 = os.path.join(args.work, 't300', 't300.b3d')
  p2000 = os.path.join(args.work, 't2000', 't2000.b3d')
  if not os.path.isfile(p300):
    write_demo_subject(p300, (TrialSpec('walk', 'walk', 1.25, 300, 100.0, True, 0.0),), seed=1)
  if not os.path.isfile(p2000):
    write_demo_subject(p2000, (TrialSpec('walk', 'walk', 1.3, 2000, 100.0, True),), seed=7)
  r = dict(now={}, baseline={}, baseline_label=args.baseline_label or base_tree)
  info = machine()
  r.update(machine=f"{info['cpu']}, {info['cores']} cores, JAX {info['jax']} ({info['jax_backend']})",
           python=info['python'], date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
  steps = (('cold_demo', lambda tree, label: cold_demo(tree, args.work, label)),
           ('t300', lambda tree, label: warm_trial(tree, p300, args.work, label)),
           ('t2000', lambda tree, label: warm_trial(tree, p2000, args.work, label)),
           ('folder', lambda tree, label: folder(tree, data, args.work, label)))
  for name, step in steps:
    for label, tree in (('now', ROOT), ('baseline', base_tree)):
      r[label][name] = step(tree, label)
      print(name, label, r[label][name], flush=True)
  r['torch'] = None if args.skip_torch else torch_port(p300, args.work)
  with open(os.path.splitext(args.out)[0] + '.json', 'w', encoding='utf-8') as f:
    json.dump(r, f, indent=1)
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write(markdown(r))
  print(markdown(r))


if __name__ == '__main__':
  main()
