"""jaxfit vs a crude baseline on the real AddBiomechanics trials (../shared/data/real).

The baseline is what anyone would write first: plain Adam (optax.adam, lr 0.01,
1500 steps, all frames at once) on betas, poses and translation, with a
position loss on the unambiguous joints only (hips, knees, ankles, shoulders,
elbows, wrists: those whose AddBiomechanics and SMPL definitions agree),
starting from jaxfit's closed-form root orientation (without it, plain Adam
cannot turn a body that faces away from +Z).

Both are scored on exactly those joints (MPJPE, no alignment), with max |beta|
and jitter (mean third difference, mm/frame^3) against the input's own.
Per-joint errors of jaxfit's fitted points (SMPL joints plus learned offsets)
and of its raw SMPL joints go to the JSON.

  python benchmarks/real_data.py [--models=demo,variant] [--out=benchmarks/REAL_DATA.md]
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

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxfit.body.model import SMPL_JOINT_NAMES, forward_kinematics, joint_model  # noqa: E402
from jaxfit.body.rotation import matrix_to_axis_angle  # noqa: E402
from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.demo.body_model import demo_body_arrays, variant_body_arrays  # noqa: E402
from jaxfit.fit.init import root_initialisation  # noqa: E402
from jaxfit.fit.pipeline import fit_trial  # noqa: E402
from jaxfit.io.b3d import read_b3d_trials  # noqa: E402
from jaxfit.io.smpl_file import load_body_model, save_body_model_npz  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402

REAL = os.path.join(ROOT, '..', 'shared', 'data', 'real')
UNAMBIGUOUS = ('left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
               'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist',
               'right_wrist')
BASELINE_STEPS = 1500


def _model(kind, work):
  path = os.path.join(work, f'{kind}_body.npz')
  if not os.path.exists(path):
    save_body_model_npz(path, demo_body_arrays() if kind == 'demo' else variant_body_arrays())
  return load_body_model(path)


def _jitter(x, valid):
  """Mean |third difference| mm/frame^3 over fully observed runs. x [T,M,3]."""
  quad = valid[3:] & valid[2:-1] & valid[1:-2] & valid[:-3]
  jerk = np.linalg.norm(x[3:] - 3 * x[2:-1] + 3 * x[1:-2] - x[:-3], axis=-1) * 1000
  return float(jerk[quad].mean())


def baseline_fit(model, prep, keep):
  """Plain Adam on the `keep` mapped joints; returns joints [T,24,3] and betas."""
  jm = joint_model(model)
  n = prep.num_frames
  idx = np.asarray(prep.structure.smpl_index)[keep]
  target = jnp.asarray(prep.targets[:n, keep], jnp.float32)
  weight = jnp.asarray(prep.valid[:, keep], jnp.float32)
  rot, trans = root_initialisation(jm, jnp.zeros(jm.num_betas), jnp.asarray(prep.filled[:n], jnp.float32),
                                   jnp.asarray(prep.init_weight[:n], jnp.float32), prep.structure.smpl_index)
  poses = jnp.zeros((n, 24, 3)).at[:, 0].set(matrix_to_axis_angle(rot))
  params = dict(betas=jnp.zeros(jm.num_betas), poses=poses, trans=trans)
  fk = jax.vmap(lambda b, p, t: forward_kinematics(jm, b, p, t)[0], in_axes=(None, 0, 0))

  def loss(p):
    pred = fk(p['betas'], p['poses'], p['trans'])[:, idx]
    return jnp.sum(weight[..., None] * (pred - target) ** 2) / jnp.sum(weight)

  opt = optax.adam(0.01)

  @jax.jit
  def run(p):
    def step(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=BASELINE_STEPS)
    return p
  t0 = time.perf_counter()
  p = jax.block_until_ready(run(params))
  return np.asarray(fk(p['betas'], p['poses'], p['trans'])), np.asarray(p['betas']), time.perf_counter() - t0


def evaluate(kind, model, trials, settings):
  rows = []
  for trial in trials:
    prep = prepare_trial(trial, settings.prepare, model.parents)
    names = [SMPL_JOINT_NAMES[j] for j in prep.structure.smpl_index]
    keep = [m for m, nm in enumerate(names) if nm in UNAMBIGUOUS]
    n = prep.num_frames
    target = prep.targets[:n, keep]
    valid = prep.valid[:, keep]
    err = lambda pred: float(np.linalg.norm(pred - target, axis=-1)[valid].mean() * 1000)
    result = fit_trial(model, prep, settings.fit)
    fit_pts = result.points[:, keep]
    base_joints, base_betas, base_time = baseline_fit(model, prep, keep)
    base_pts = base_joints[:, np.asarray(prep.structure.smpl_index)[keep]]
    per_joint = lambda pts: {prep.mapping.source_names[m]: round(float(
        np.linalg.norm(pts[:, i] - prep.targets[:n, m], axis=-1)[prep.valid[:, m]].mean() * 1000), 1)
        for i, m in enumerate(range(len(names)))}
    rows.append(dict(
        model=kind, trial=f'{trial.subject}/{trial.name}', frames=n,
        jaxfit_mpjpe_mm=err(fit_pts), baseline_mpjpe_mm=err(base_pts),
        jaxfit_raw_joints_mpjpe_mm=err(result.joints[:, np.asarray(prep.structure.smpl_index)[keep]]),
        jaxfit_max_abs_beta=float(np.abs(result.betas).max()),
        baseline_max_abs_beta=float(np.abs(base_betas).max()),
        jaxfit_jitter=_jitter(fit_pts, valid), baseline_jitter=_jitter(base_pts, valid),
        input_jitter=_jitter(target, valid),
        jaxfit_time_s=result.time_s['total'], baseline_time_s=base_time,
        jaxfit_all_points_mpjpe_mm=float(np.linalg.norm(result.points - prep.targets[:n], axis=-1)[prep.valid].mean() * 1000),
        per_joint_points_mm=per_joint(result.points),
        per_joint_smpl_joints_mm=per_joint(result.joints[:, list(prep.structure.smpl_index)]),
        offsets_mm={prep.mapping.source_names[m]: [round(1000 * float(v), 1) for v in result.offsets[m]]
                    for m in prep.structure.offset_joints},
        betas=[round(float(b), 2) for b in result.betas]))
    r = rows[-1]
    print(f"{kind:8s} {r['trial']:48s} jaxfit {r['jaxfit_mpjpe_mm']:6.1f} mm |b|<={r['jaxfit_max_abs_beta']:5.2f} "
          f"jit {r['jaxfit_jitter']:.2f} | baseline {r['baseline_mpjpe_mm']:6.1f} mm |b|<={r['baseline_max_abs_beta']:5.2f} "
          f"jit {r['baseline_jitter']:.2f} | input jit {r['input_jitter']:.2f}", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--models', default='demo,variant')
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'REAL_DATA.md'))
  parser.add_argument('--work', default='/tmp/jaxfit_real_bench')
  parser.add_argument('--override', action='append', default=[],
                      help='config overrides field=value (python literal), repeatable')
  args = parser.parse_args()
  os.makedirs(args.work, exist_ok=True)
  config = base_config()
  for item in args.override:
    key, value = item.split('=', 1)
    node = config
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = type(node[last])(eval(value))  # pylint: disable=eval-used
  settings = settings_from_config(config)
  trials = []
  for name in sorted(f for f in os.listdir(REAL) if f.endswith('.b3d')):
    trials += read_b3d_trials(os.path.join(REAL, name))
  rows = []
  for kind in args.models.split(','):
    rows += evaluate(kind, _model(kind, args.work), trials, settings)
  machine = f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}'
  lines = ['# Real AddBiomechanics trials: jaxfit vs a crude baseline', '',
           f'Machine: {machine}. Generated by `python benchmarks/real_data.py` '
           f'({time.strftime("%Y-%m-%d")}). Overrides: {args.override or "none (default config)"}.', '',
           'MPJPE on the unambiguous joints only (hips, knees, ankles, shoulders, elbows, wrists; '
           'what the baseline fits), in mm; jitter: mean third difference of those joints, '
           'mm/frame^3 (input: the targets\' own). Baseline: plain Adam, lr 0.01, '
           f'{BASELINE_STEPS} steps, those joints only.', '',
           'jaxfit MPJPE: its fitted points (SMPL joints plus the learned offsets; among these joints '
           'only the knees carry one); raw: the SMPL joints themselves.', '',
           '| model | trial | frames | jaxfit MPJPE | jaxfit raw SMPL joints | baseline MPJPE | '
           'jaxfit max abs beta | baseline max abs beta | jaxfit jitter | baseline jitter | input jitter | '
           'jaxfit s | baseline s |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['model']} | {r['trial']} | {r['frames']} | {r['jaxfit_mpjpe_mm']:.1f} | "
                 f"{r['jaxfit_raw_joints_mpjpe_mm']:.1f} | {r['baseline_mpjpe_mm']:.1f} | {r['jaxfit_max_abs_beta']:.2f} | "
                 f"{r['baseline_max_abs_beta']:.2f} | {r['jaxfit_jitter']:.2f} | {r['baseline_jitter']:.2f} | "
                 f"{r['input_jitter']:.2f} | {r['jaxfit_time_s']:.2f} | {r['baseline_time_s']:.2f} |")
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.splitext(args.out)[0] + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(machine=machine, overrides=args.override, rows=rows), f, indent=1)


if __name__ == '__main__':
  main()
