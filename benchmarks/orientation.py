"""The segment-orientation term: what it buys and what it costs, side by side.

For every trial of ../shared/data/real (and the generated demo subject), fits
the default config with the orientation term (loss.orientation) and without
it (0), interleaved, and records per trial: the user's MPJPE (raw SMPL joints,
comparable joints), each segment's twist p95 against its OpenSim body (best
constant offset removed), the worst knee/elbow out-of-hinge rotation, and the
fitting time (compilation excluded, median of --repeats). Writes
benchmarks/ORIENTATION.md and .json with the machine and date.

  python benchmarks/orientation.py [--repeats=3] [--max_frames=0] [--model_path=...]
"""

import argparse
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

from jaxfit.body.model import shaped_joints  # noqa: E402
from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.demo.body_model import ensure_demo_body  # noqa: E402
from jaxfit.demo.subject import ensure_demo_subject  # noqa: E402
from jaxfit.fit.pipeline import fit_trial  # noqa: E402
from jaxfit.io.b3d import read_b3d_trials  # noqa: E402
from jaxfit.io.smpl_file import load_body_model  # noqa: E402
from jaxfit.data.metrics import trial_metrics  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402

REAL = os.path.join(ROOT, '..', 'shared', 'data', 'real')
SEGMENT_KINDS = ('femur', 'tibia', 'calcn', 'toes', 'humerus', 'radius', 'hand', 'pelvis', 'torso')


NOTES = """**The term's cost.** The orientation residual is 3 rows per segment,
vee(E - E^T) / sqrt(1 + tr E) for E = T^T G (losses.orientation_error), whose squared norm is
the chordal distance ||G - T||^2 / 2 = 4 sin^2(theta/2) that the earlier 9 rows (G - T) / sqrt(2)
had: the same loss in a third of the rows, with its analytic Jacobian
(lm.orientation_error_jacobian). In the joint solve the pose prior's diagonal J^T J is added
directly, the shared unknowns' blocks come from the position rows only, each step factors each
frame's block once, and the hat-matrix trace solves for J_pos^T. Before these changes the term
cost 1.50x (12.1 s against 8.1 s, 2026-12-01); what remains is mostly the wrists, unknowns that
only the hand orientation sees (the frame blocks grow from 57 to 63 unknowns on full-body trials)."""


def _settings(orientation, max_frames):
  c = base_config()
  c.loss.orientation = orientation
  c.max_frames = max_frames
  return settings_from_config(c)


def _fit(model, trial, settings):
  prep = prepare_trial(trial, settings.prepare, model.parents)
  result = fit_trial(model, prep, settings.fit)
  metrics, _ = trial_metrics(prep, result, trial.fps,
                             np.asarray(shaped_joints(model, result.betas), np.float64))
  return result, metrics


def _twists(metrics):
  """Worst twist p95 (deg) per segment kind (both sides together)."""
  out = {}
  for name, e in metrics['segment_orientation_deg'].items():
    kind = name.split('_')[0]
    out[kind] = max(out.get(kind, 0.0), e['twist_p95_deg'])
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--max_frames', type=int, default=0)
  parser.add_argument('--model_path', default='')
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'ORIENTATION.md'))
  args = parser.parse_args()
  load_start = os.getloadavg()[0]     # the machine may be shared: the ratios are of interleaved runs
  model = load_body_model(args.model_path or ensure_demo_body())
  on, off = _settings(base_config().loss.orientation, args.max_frames), _settings(0.0, args.max_frames)
  trials = read_b3d_trials(ensure_demo_subject())
  for name in sorted(f for f in os.listdir(REAL) if f.endswith('.b3d')) if os.path.isdir(REAL) else []:
    trials += read_b3d_trials(os.path.join(REAL, name))
  rows = []
  for trial in trials:
    times = {'on': [], 'off': []}
    for k in range(args.repeats + 1):           # the first round compiles
      for key, settings in (('on', on), ('off', off)):
        result, metrics = _fit(model, trial, settings)
        if k:
          times[key].append(result.time_s['total'])
        if key == 'on':
          m_on, betas_on = metrics, result.betas
        else:
          m_off = metrics
    hinge = lambda m: max((v['p95_deg'] for v in m['hinge_deviation_deg'].values()), default=None)
    rows.append(dict(
        trial=f'{trial.subject}/{trial.name}', frames=int(m_on['frames']),
        mpjpe_on=m_on['mpjpe_mm'], mpjpe_off=m_off['mpjpe_mm'],
        twist_on=_twists(m_on), twist_off=_twists(m_off),
        hinge_on=hinge(m_on), hinge_off=hinge(m_off),
        time_on=float(np.median(times['on'])), time_off=float(np.median(times['off'])),
        max_abs_beta_on=float(np.abs(betas_on).max())))
    r = rows[-1]
    print(f"{r['trial']:52s} MPJPE {r['mpjpe_on']:.2f} vs {r['mpjpe_off']:.2f} mm, worst twist "
          f"{max(r['twist_on'].values(), default=0):.1f} vs {max(r['twist_off'].values(), default=0):.1f} deg, "
          f"time {r['time_on']:.2f} vs {r['time_off']:.2f} s", flush=True)
  machine = (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, '
             f'load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end')
  kinds = [k for k in SEGMENT_KINDS if any(k in r['twist_on'] for r in rows)]
  lines = ['# The segment-orientation term: with and without, side by side', '',
           f'Machine: {machine}. `python benchmarks/orientation.py` ({time.strftime("%Y-%m-%d")}), '
           f'default config with `loss.orientation` = {on.fit.loss.orientation:g} ("on") and 0 '
           f'("off"), body {model.name}, first {args.max_frames or "all"} frames of each trial; '
           f'fit times: median of {args.repeats} interleaved runs, compilation excluded.', '',
           'MPJPE: the user\'s metric (raw SMPL joints against the AddBiomechanics joint centres, '
           'comparable joints, no alignment). Twist: 95th percentile of each segment\'s rotation '
           'about its own axis against its OpenSim body, after the best constant offset per pair; '
           'worst of the two sides. Hinge: worst p95 out-of-hinge rotation of the SMPL knees and '
           'elbows.', '',
           '| trial | frames | MPJPE on / off mm | ' + ' | '.join(f'{k} twist on / off' for k in kinds)
           + ' | hinge on / off | fit s on / off | time ratio |',
           '|---|---|---|' + '---|' * len(kinds) + '---|---|---|']
  fmt = lambda v: '-' if v is None else f'{v:.1f}'
  for r in rows:
    lines.append(f"| {r['trial']} | {r['frames']} | {r['mpjpe_on']:.2f} / {r['mpjpe_off']:.2f} | "
                 + ' | '.join(f"{fmt(r['twist_on'].get(k))} / {fmt(r['twist_off'].get(k))}" for k in kinds)
                 + f" | {fmt(r['hinge_on'])} / {fmt(r['hinge_off'])} | {r['time_on']:.2f} / "
                 f"{r['time_off']:.2f} | {r['time_on'] / r['time_off']:.2f} |")
  total_on, total_off = sum(r['time_on'] for r in rows), sum(r['time_off'] for r in rows)
  lines += ['', f'All trials: fitting time {total_on:.1f} s with the term, {total_off:.1f} s without '
            f'(ratio {total_on / total_off:.2f}); worst MPJPE change '
            f"{max(r['mpjpe_on'] - r['mpjpe_off'] for r in rows):+.2f} mm."]
  bar_kinds = ('femur', 'tibia', 'calcn', 'humerus', 'radius', 'hand')
  worst_twist = max((r['twist_on'][k] for r in rows for k in bar_kinds if k in r['twist_on']),
                    default=0.0)
  worst_mpjpe = max(r['mpjpe_on'] - r['mpjpe_off'] for r in rows)
  ratio = total_on / total_off
  lines += ['', f"The bar (issue 19): fitting time ratio <= 1.25 ({ratio:.2f}: "
            f"{'met' if ratio <= 1.25 else 'NOT met'}); twist p95 <= 5 deg for the femur, tibia, "
            f"foot (calcn), humerus, forearm (radius) and hand on every trial (worst {worst_twist:.1f}: "
            f"{'met' if worst_twist <= 5 else 'NOT met'}); raw-joint MPJPE at most 0.5 mm above "
            f"the fit without the term (worst {worst_mpjpe:+.2f} mm: "
            f"{'met' if worst_mpjpe <= 0.5 else 'NOT met'}).", '', NOTES]
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.splitext(args.out)[0] + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(machine=machine, date=time.strftime('%Y-%m-%d'), rows=rows), f, indent=1)


if __name__ == '__main__':
  main()
