"""Where jaxfit stands: the user's metric against a fair bounded baseline (issue 18, item 5).

On every trial of ../shared/data/real/*.b3d and on SMPL-generated truth
(noiseless and with Gaussian noise), with each body model (the demo body, its
shape-space variant, and optionally a user's SMPL file), one run fits:

  jaxfit:   `fit_trial` with the configuration given (default: the default config);
  baseline: plain Adam (optax) on betas = 3 tanh(u) (so |beta| <= 3), every
            frame's pose and translation, a position loss on ONLY the comparable
            joints (see COMPARABLE_JOINTS), no priors, a decaying learning rate,
            then L-BFGS on the same loss to finish the descent (Adam alone
            crawls along the shape-pose valley: 1% per 1000 steps after 4000),
            several restarts (u = 0, u from jaxfit's closed-form shape, random u),
            the best final loss kept. Each restart starts from jaxfit's
            closed-form root orientation (`root_initialisation`) for its betas.
            Every restart's convergence is recorded (Adam's last-1000-step and
            L-BFGS's last-50-iteration loss drop).

Both are scored the user's way, computed here from the fitted SMPL joints
(`FitResult.joints`, not jaxfit's offset points and not its metric keys):
  MPJPE    raw SMPL joints against the targets over the comparable joints the
           trial has, no alignment (mm);
  PA-MPJPE the same after a per-frame similarity alignment (mm);
  PCK@50   fraction of those joint samples within 50 mm;
  max |beta|.
Beside them, jaxfit's fit residual (its offset points against all mapped
targets) and its learned offsets per joint (norms, mm). On generated truth,
also the MPJPE of all 24 joints against the noiseless truth and the beta error.

  python benchmarks/real_data.py [--models=demo,variant] [--model_path=my_smpl.pkl]
      [--trials=DJ1,smpl_truth] [--max_frames=0] [--baseline_steps=4000] [--polish_steps=500]
      [--restarts=3] [--out=benchmarks/REAL_DATA.md]
"""

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxfit.body.model import SMPL_JOINT_NAMES, forward_kinematics, joint_model, shaped_joints  # noqa: E402
from jaxfit.body.rotation import matrix_to_axis_angle  # noqa: E402
from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.demo.builtin import builtin_body_path  # noqa: E402
from jaxfit.data.trial import COMPARABLE_JOINTS  # noqa: E402
from jaxfit.demo.body_model import demo_body_arrays, variant_body_arrays  # noqa: E402
from jaxfit.demo.smpl_truth import make_ground_truth_trial  # noqa: E402
from jaxfit.fit.init import (REST_POSE, rigid_pairs, root_initialisation_jit,  # noqa: E402
                             shape_from_distances_jit)
from jaxfit.fit.pipeline import fit_trial, target_distances  # noqa: E402
from jaxfit.io.b3d import read_b3d_trials  # noqa: E402
from jaxfit.io.smpl_file import load_body_model, save_body_model_npz  # noqa: E402
from jaxfit.data.metrics import procrustes_aligned  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402
from jaxfit.runtime import jax_setup  # noqa: E402

REAL = os.path.join(ROOT, '..', 'shared', 'data', 'real')
# AddBiomechanics joints whose definition agrees with the SMPL joint they map
# to (hips, knees, ankles, shoulders, elbows, wrists): the joints the user's
# MPJPE is computed on and the only ones the baseline fits.
BETA_BOUND = 3.0
PCK_MM = 50.0
TRUTH_CASES = (('noiseless', 0.0), ('noise_10mm', 0.01))   # (name, Gaussian noise sigma m)
TRUTH_SEED = 0
VERDICT_TOL_MM = 0.05   # jaxfit MPJPE <= baseline + this (the tables show 0.1 mm)
RESTART_KINDS = ('zero', 'closed_form')   # then random_1, random_2, ...
BASELINE_LR = 0.03
BASELINE_FINAL_LR_RATIO = 0.01   # the learning rate decays to BASELINE_LR * this
BASELINE_POLISH_STEPS = 500     # L-BFGS iterations after Adam


# ----------------------------------------------------------------------------- bodies and trials

def _demo_model(kind, work):
  path = os.path.join(work, f'{kind}_body.npz')
  if not os.path.exists(path):
    save_body_model_npz(path, demo_body_arrays() if kind == 'demo' else variant_body_arrays())
  return load_body_model(path)


def load_bodies(models, model_path, work):
  """[(name, BodyModel)]: the named demo bodies, then the user's file if given."""
  bodies = []
  for kind in [m for m in models.split(',') if m]:
    if kind not in ('open', 'demo', 'variant'):
      raise SystemExit(f'--models: unknown body {kind!r} (open, demo, variant; a file: --model_path)')
    bodies.append((kind, load_body_model(builtin_body_path('open')) if kind == 'open'
                   else _demo_model(kind, work)))
  if model_path:
    name = os.path.splitext(os.path.basename(model_path))[0]
    bodies.append((name, load_body_model(model_path)))
  return bodies


def real_trials(directory):
  trials = []
  if os.path.isdir(directory):
    for name in sorted(f for f in os.listdir(directory) if f.endswith('.b3d')):
      trials += read_b3d_trials(os.path.join(directory, name))
  return trials


def _selected(label, filters):
  return not filters or any(f in label for f in filters)


# ----------------------------------------------------------------------------- scoring

def comparable_columns(prep):
  """Mapped columns (of prep.targets) of the comparable joints the trial observes."""
  return [m for m, name in enumerate(prep.mapping.source_names)
          if name in COMPARABLE_JOINTS and prep.valid[:, m].any()]


def score(joints, prep, columns, targets=None):
  """The user's metrics of SMPL joints [T,24,3] (SMPL frame) over `columns`,
  against the trial's targets (or `targets` [T,M,3], all valid: the truth)."""
  n = prep.num_frames
  idx = np.asarray(prep.structure.smpl_index)[columns]
  pred = np.asarray(joints, np.float64)[:n][:, idx]
  if targets is None:
    target = np.asarray(prep.targets, np.float64)[:n, columns]
    valid = np.asarray(prep.valid, bool)[:, columns]
  else:
    target = np.asarray(targets, np.float64)[:n, columns]
    valid = np.ones(target.shape[:2], bool)
  err = np.linalg.norm(pred - target, axis=-1) * 1000.0
  aligned = procrustes_aligned(pred, target, valid)
  enough = valid & (valid.sum(1) >= 3)[:, None]
  pa = np.linalg.norm(aligned - target, axis=-1) * 1000.0
  names = [prep.mapping.source_names[m] for m in columns]
  return dict(
      mpjpe_mm=float(err[valid].mean()),
      pa_mpjpe_mm=float(pa[enough].mean()) if enough.any() else float('nan'),
      pck_50mm=float((err[valid] < PCK_MM).mean()),
      per_joint_mpjpe_mm={nm: round(float(err[valid[:, i], i].mean()), 2) for i, nm in enumerate(names)})


def fit_residual_mm(points, prep):
  """jaxfit's fit residual: its offset points [T,M,3] against all mapped targets."""
  n = prep.num_frames
  err = np.linalg.norm(np.asarray(points, np.float64)[:n] - prep.targets[:n], axis=-1) * 1000.0
  used = prep.valid & prep.used[None]
  return float(err[used].mean())


def truth_scores(joints, betas, truth, model, prep, columns):
  """Against the noiseless truth: the comparable joints (MPJPE, PA-MPJPE), all
  24 joints and the mapped ones (MPJPE), and the shape error."""
  n = len(joints)
  mapped_smpl = prep.structure.smpl_index
  clean = truth['clean'][:, [truth['names'].index(nm) for nm in prep.mapping.source_names]]
  vs_truth = score(joints, prep, columns, clean)
  err = np.linalg.norm(np.asarray(joints, np.float64) - truth['joints'][:n], axis=-1) * 1000.0
  mapped = sorted(set(mapped_smpl))
  jm = joint_model(model)
  d_beta = np.asarray(betas, np.float64) - truth['betas']
  rest = lambda b: np.asarray(shaped_joints(jm, jnp.asarray(b, jnp.float32)), np.float64)
  rest_err = np.linalg.norm(rest(betas) - rest(truth['betas']), axis=-1) * 1000.0
  return dict(mpjpe_vs_truth_mm=vs_truth['mpjpe_mm'], pa_mpjpe_vs_truth_mm=vs_truth['pa_mpjpe_mm'],
              mpjpe_all24_vs_truth_mm=float(err.mean()),
              mpjpe_mapped_vs_truth_mm=float(err[:, mapped].mean()),
              per_joint_vs_truth_mm={SMPL_JOINT_NAMES[k]: round(float(err[:, k].mean()), 2) for k in range(24)},
              beta_error_max=float(np.abs(d_beta).max()),
              beta_error_norm=float(np.linalg.norm(d_beta)),
              rest_joint_error_mm=float(rest_err.mean()))


# ----------------------------------------------------------------------------- the baseline

def _arctanh_start(betas):
  return np.arctanh(np.clip(np.asarray(betas, np.float64) / BETA_BOUND, -0.95, 0.95))


def _betas_of(u):
  return BETA_BOUND * jnp.tanh(u)


@functools.lru_cache(maxsize=None)
def _baseline_programs(parents, idx, chunk, polish_chunk, total, lr, final_lr_ratio):
  """The baseline's compiled programs, shared by every trial (and body) with the
  same comparable joints and padded length. data = (JointModel, target [T,C,3],
  weight [T,C])."""
  def fk(jm, betas, poses, trans):
    jm = type(jm)(jm.J_template, jm.J_shapedirs, parents)
    return jax.vmap(lambda p, t: forward_kinematics(jm, betas, p, t)[0])(poses, trans)

  def predict(p, data):
    return fk(data[0], _betas_of(p['u']), p['poses'], p['trans'])[:, np.asarray(idx)]

  def loss(p, data):   # mm^2
    _, target, weight = data
    return 1e6 * jnp.sum(weight[..., None] * (predict(p, data) - target) ** 2) / jnp.sum(weight)

  schedule = optax.exponential_decay(lr, transition_steps=total, decay_rate=final_lr_ratio)
  adam = optax.adam(schedule)
  lbfgs = optax.lbfgs()

  def adam_chunk(p, s, data):
    def step(carry, _):
      p, s = carry
      g = jax.grad(loss)(p, data)
      u, s = adam.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, s), _ = jax.lax.scan(step, (p, s), None, length=chunk)
    return p, s

  def lbfgs_chunk(p, s, data):
    f = lambda q: loss(q, data)
    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry, _):
      p, s = carry
      value, grad = value_and_grad(p, state=s)
      u, s = lbfgs.update(grad, s, p, value=value, grad=grad, value_fn=f)
      return (optax.apply_updates(p, u), s), None
    (p, s), _ = jax.lax.scan(step, (p, s), None, length=polish_chunk)
    return p, s

  def evaluate(p, data):
    weight = data[2]
    err = jnp.linalg.norm(predict(p, data) - data[1], axis=-1)
    return loss(p, data), 1000.0 * jnp.sum(weight * err) / jnp.sum(weight)

  return types.SimpleNamespace(
      adam=adam, lbfgs=lbfgs, adam_chunk=jax.jit(adam_chunk), lbfgs_chunk=jax.jit(lbfgs_chunk),
      evaluate=jax.jit(evaluate), joints=jax.jit(fk))


def baseline_fit(model, prep, columns, steps, restarts, polish_steps=BASELINE_POLISH_STEPS,
                 lr=BASELINE_LR, final_lr_ratio=BASELINE_FINAL_LR_RATIO, chunk=250, polish_chunk=50,
                 rel_tol=1e-9, ridge=3e-6, seed=0):
  """Plain Adam on betas = 3 tanh(u), poses, trans; position loss on `columns` only.

  Restarts: u = 0; u from jaxfit's closed-form shape (pose-free, from rigidly
  linked joint distances); then random u ~ N(0, 0.5). Each starts from the
  closed-form root orientation for its betas and the neutral rest pose (arms
  down). Adam's learning rate decays exponentially from lr to lr *
  final_lr_ratio over `steps`; then `polish_steps` of L-BFGS (optax.lbfgs, the
  same loss and parametrisation) finish the descent that Adam, on this
  ill-conditioned shape-pose valley, only crawls along. A phase stops early
  when its loss changes by less than rel_tol (relative) over one chunk. The
  loss is the mean squared error in mm^2 (the scale only helps L-BFGS's line
  search in float32). Returns the best restart's joints [T,24,3], betas, and
  every restart's convergence record.
  """
  jm = joint_model(model)
  n = prep.num_frames
  t_pad = prep.targets.shape[0]   # padded frames weigh 0: trials of one length bucket share programs
  smpl_index = tuple(prep.structure.smpl_index)
  idx = tuple(int(i) for i in np.asarray(smpl_index)[columns])
  weight = np.zeros((t_pad, len(columns)), np.float32)
  weight[:n] = prep.valid[:, columns]
  data = (jm, jnp.asarray(prep.targets[:, columns], jnp.float32), jnp.asarray(weight))
  chunk = max(1, min(chunk, steps))
  polish_chunk = max(1, min(polish_chunk, polish_steps))
  num_chunks = -(-steps // chunk)
  prog = _baseline_programs(tuple(jm.parents), idx, chunk, polish_chunk, num_chunks * chunk,
                            float(lr), float(final_lr_ratio))
  betas_of = _betas_of

  pairs = rigid_pairs(smpl_index, jm.parents)
  distances, pair_weight = target_distances(prep, pairs)
  closed_form = np.asarray(shape_from_distances_jit(
      jm, jnp.asarray(distances, jnp.float32), jnp.asarray(pair_weight, jnp.float32),
      pairs=pairs, smpl_index=smpl_index, ridge=ridge))
  rng = np.random.default_rng(seed)
  starts = []
  for k in range(restarts):
    if k < len(RESTART_KINDS):
      kind = RESTART_KINDS[k]
      u0 = np.zeros(jm.num_betas) if kind == 'zero' else _arctanh_start(closed_form)
    else:
      kind = f'random_{k - len(RESTART_KINDS) + 1}'
      u0 = rng.normal(0.0, 0.5, jm.num_betas)
    starts.append((kind, u0))

  def run_phase(p, s, run, chunk_steps, num, history, offset):
    for c in range(num):
      p, s = run(p, s, data)
      value, mpjpe = (float(v) for v in prog.evaluate(p, data))
      history.append((offset + (c + 1) * chunk_steps, value, mpjpe))
      previous = history[-2][1]
      if not np.isfinite(value) or abs(previous - value) <= rel_tol * max(abs(value), 1e-30):
        break
    return p, history[-1][0]

  def window(history, end, length=1000):
    before = [h for h in history if h[0] <= end - length] or history[:1]
    return before[-1]

  filled = jnp.asarray(prep.filled, jnp.float32)
  init_weight = jnp.asarray(prep.init_weight, jnp.float32)
  records, best = [], None
  t0 = time.perf_counter()
  for kind, u0 in starts:
    t_restart = time.perf_counter()
    u0 = jnp.asarray(u0, jnp.float32)
    rot, trans = root_initialisation_jit(jm, betas_of(u0), filled, init_weight, smpl_index=smpl_index)
    poses = jnp.broadcast_to(jnp.asarray(REST_POSE, jnp.float32), (t_pad, 24, 3))
    poses = poses.at[:, 0].set(matrix_to_axis_angle(rot))
    p = dict(u=u0, poses=poses, trans=trans)
    value, mpjpe = (float(v) for v in prog.evaluate(p, data))
    history = [(0, value, mpjpe)]
    p, adam_done = run_phase(p, prog.adam.init(p), prog.adam_chunk, chunk, num_chunks, history, 0)
    adam_loss, adam_mpjpe = history[-1][1], history[-1][2]
    ref = window(history, adam_done)
    polish, reverted = [], False
    if polish_steps > 0:
      polish = [history[-1]]
      p_adam = p
      p, _ = run_phase(p, prog.lbfgs.init(p), prog.lbfgs_chunk, polish_chunk,
                       -(-polish_steps // polish_chunk), polish, adam_done)
      history += polish[1:]
      if not np.isfinite(polish[-1][1]) or polish[-1][1] > adam_loss:   # never worse than Adam
        p, reverted = p_adam, True
    value, mpjpe = (float(v) for v in prog.evaluate(p, data))
    betas = np.asarray(betas_of(p['u']))
    record = dict(start=kind, adam_steps=adam_done, polish_steps=history[-1][0] - adam_done,
                  loss_mm2=value, mpjpe_mm=mpjpe,
                  max_abs_beta=float(np.abs(betas).max()),
                  betas=[round(float(b), 3) for b in betas],
                  start_loss_mm2=history[0][1], start_mpjpe_mm=history[0][2],
                  adam_loss_mm2=adam_loss, adam_mpjpe_mm=adam_mpjpe,
                  adam_window_steps=adam_done - ref[0],
                  adam_loss_drop_last_1000_rel=(ref[1] - adam_loss) / max(adam_loss, 1e-30),
                  adam_mpjpe_drop_last_1000_mm=ref[2] - adam_mpjpe,
                  polish_loss_drop_rel=(adam_loss - value) / max(value, 1e-30),
                  polish_mpjpe_drop_mm=adam_mpjpe - mpjpe,
                  polish_reverted=reverted,
                  polish_last_chunk_rel=((polish[-2][1] - polish[-1][1]) / max(value, 1e-30)
                                         if len(polish) >= 2 else None),
                  time_s=time.perf_counter() - t_restart,
                  history=[(h[0], h[1], round(h[2], 4)) for h in history])
    records.append(record)
    if best is None or value < best[0]:
      best = (value, p, betas, kind)
  _, p, betas, kind = best
  joints = np.asarray(prog.joints(jm, betas_of(p['u']), p['poses'], p['trans']))[:n]
  return dict(joints=joints, betas=betas, best_start=kind, restarts=records,
              time_s=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- one case

def evaluate(body, model, trial, settings, args, truth=None):
  prep = prepare_trial(trial, settings.prepare, model.parents)
  columns = comparable_columns(prep)
  n = prep.num_frames
  result = fit_trial(model, prep, settings.fit)
  names = prep.mapping.source_names
  offset_mm = {names[m]: round(float(np.linalg.norm(result.offsets[m])) * 1000.0, 1)
               for m in prep.structure.offset_joints}
  comparable_offsets = [v for k, v in offset_mm.items() if k in COMPARABLE_JOINTS]
  jax_row = dict(score(result.joints, prep, columns),
                 max_abs_beta=float(np.abs(result.betas).max()),
                 fit_residual_mm=fit_residual_mm(result.points, prep),
                 offsets_mm=offset_mm,
                 max_offset_on_comparable_mm=max(comparable_offsets, default=0.0),
                 betas=[round(float(b), 3) for b in result.betas],
                 time_s=float(result.time_s.get('total', float('nan'))),
                 compile_s=float(result.time_s.get('compile_s', float('nan'))))
  base = baseline_fit(model, prep, columns, args.baseline_steps, args.restarts,
                      polish_steps=args.polish_steps, seed=args.seed)
  base_row = dict(score(base['joints'], prep, columns),
                  max_abs_beta=float(np.abs(base['betas']).max()),
                  betas=[round(float(b), 3) for b in base['betas']],
                  best_start=base['best_start'], restarts=base['restarts'],
                  time_s=base['time_s'])
  if truth is not None:
    jax_row.update(truth_scores(result.joints, result.betas, truth, model, prep, columns))
    base_row.update(truth_scores(base['joints'], base['betas'], truth, model, prep, columns))
  # On generated truth the figure that counts is the error against the truth
  # (a fit that follows noisy targets more closely is not better).
  key = 'mpjpe_mm' if truth is None else 'mpjpe_vs_truth_mm'
  beats = jax_row[key] <= base_row[key] + VERDICT_TOL_MM
  bounded = jax_row['max_abs_beta'] <= BETA_BOUND + 1e-6
  failures = [w for w, ok in (('MPJPE', beats), ('|beta|', bounded)) if not ok]
  row = dict(body=body, trial=f'{trial.subject}/{trial.name}', frames=n,
             kind='truth' if truth is not None else 'real',
             comparable_joints=[names[m] for m in columns],
             jaxfit=jax_row, baseline=base_row,
             mpjpe_le_baseline=bool(beats), max_abs_beta_le_3=bool(bounded),
             verdict='yes' if not failures else 'no (' + ', '.join(failures) + ')')
  if truth is not None:
    row['truth_betas'] = [round(float(b), 3) for b in truth['betas']]
  j, b = jax_row, base_row
  print(f"{body:8s} {row['trial']:50s} {n:5d} fr | jaxfit MPJPE {j['mpjpe_mm']:6.2f} PA {j['pa_mpjpe_mm']:6.2f} "
        f"|b| {j['max_abs_beta']:4.2f} resid {j['fit_residual_mm']:5.2f} | baseline MPJPE {b['mpjpe_mm']:6.2f} "
        f"PA {b['pa_mpjpe_mm']:6.2f} |b| {b['max_abs_beta']:4.2f} ({b['best_start']}) | {row['verdict']}"
        + ('' if truth is None else f" | vs truth: jaxfit {j['mpjpe_vs_truth_mm']:.2f}, baseline "
           f"{b['mpjpe_vs_truth_mm']:.2f}; 24 joints {j['mpjpe_all24_vs_truth_mm']:.2f} / "
           f"{b['mpjpe_all24_vs_truth_mm']:.2f}; beta err {j['beta_error_max']:.3f} / {b['beta_error_max']:.3f}"),
        flush=True)
  return row


# ----------------------------------------------------------------------------- report

def _machine():
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{cpu}, {os.cpu_count()} cores, {jax.devices()[0].platform}, jax {jax.__version__}'


def _f(x, fmt='.1f'):
  return 'n/a' if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def render(rows, meta):
  lines = ['# Where jaxfit stands: the user\'s metric against a bounded baseline', '',
           f"Machine: {meta['machine']}. Date: {meta['date']}. Command: `{meta['command']}` "
           f"(jaxfit config overrides: {meta['overrides'] or 'none, the default config'}; "
           f"max_frames {meta['max_frames'] or 'all'}; baseline {meta['baseline_steps']} steps x "
           f"{meta['restarts']} restarts, then {meta['polish_steps']} L-BFGS). Total wall time {meta['wall_s']:.0f} s.", '',
           'Figures (mm unless stated):', '',
           '- **MPJPE** (the user\'s metric): the fitted body\'s raw SMPL joints against the file\'s joint '
           'centres over the comparable joints the trial has (hips, knees, ankles, shoulders `acromial_*`, '
           'elbows, wrists `radius_hand_*`: those whose AddBiomechanics and SMPL definitions agree), '
           'no alignment.',
           '- **PA-MPJPE**: the same joints after a per-frame similarity (Procrustes) alignment.',
           f'- **PCK@50**: the fraction of those joint samples within {PCK_MM:.0f} mm.',
           '- **max |beta|**: the largest shape coefficient (the shape space is trusted to |beta| <= 3).',
           '- **fit residual** (jaxfit only, not an MPJPE): jaxfit\'s fitted points (SMPL joints plus its '
           'learned per-trial offsets) against all mapped targets: what its optimiser minimised.',
           '- **offsets**: the norm of each learned correspondence offset; **on comparable**: the largest '
           'on a comparable joint (the issue asks for none).',
           '- **baseline**: plain Adam (optax) on betas = 3 tanh(u), every frame\'s pose and translation, '
           'a position loss on only the comparable joints, no priors, learning rate '
           f"{meta['baseline_lr']} decaying exponentially to {meta['baseline_lr'] * meta['baseline_final_lr_ratio']:g}, "
           f"then {meta['polish_steps']} iterations of L-BFGS (optax.lbfgs) on the same loss and parameters, "
           'from jaxfit\'s closed-form root orientation; restarts from u = 0, from jaxfit\'s closed-form '
           'shape and from random u, the best final loss kept (convergence per restart below).',
           f'- **verdict**: yes when jaxfit\'s MPJPE (on generated truth: MPJPE vs truth) <= the baseline\'s '
           f'(+{VERDICT_TOL_MM} mm) and its max |beta| <= 3; otherwise what failed.',
           '- On generated truth (SMPL joints of a known body and gait, optionally with Gaussian noise on '
           'the targets): **MPJPE vs truth** (the lead figure, and the verdict\'s) is the MPJPE over the '
           'comparable joints against the noiseless truth instead of the (noisy) targets, which a fit can '
           'overfit; **MPJPE** is against the targets as on real data; **MPJPE 24 vs truth** is all 24 SMPL joints against the noiseless truth '
           '(the joints no target constrains, head, hands, collars, upper spine, follow the truth only as '
           'far as the shape and the observed joints fix them; the baseline fits only the comparable joints, '
           'so its pelvis, spine and feet are unconstrained too); **mapped vs truth**: the same over the '
           'SMPL joints that have a target; '
           '**beta err** is max |beta - beta_true|; **rest err** the mean displacement of the 24 rest joints '
           'that the beta error causes.', '']
  real = [r for r in rows if r['kind'] == 'real']
  truth = [r for r in rows if r['kind'] == 'truth']
  if real:
    lines += ['## Real AddBiomechanics trials', '',
              '| body | trial | frames | jaxfit MPJPE | baseline MPJPE | jaxfit PA-MPJPE | baseline PA-MPJPE | '
              'jaxfit PCK@50 | baseline PCK@50 | jaxfit max abs beta | baseline max abs beta | verdict | '
              'jaxfit fit residual | jaxfit offset on comparable (max) | jaxfit s | baseline s |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in real:
      j, b = r['jaxfit'], r['baseline']
      lines.append(f"| {r['body']} | {r['trial']} | {r['frames']} | {_f(j['mpjpe_mm'])} | {_f(b['mpjpe_mm'])} | "
                   f"{_f(j['pa_mpjpe_mm'])} | {_f(b['pa_mpjpe_mm'])} | {_f(j['pck_50mm'], '.3f')} | "
                   f"{_f(b['pck_50mm'], '.3f')} | {_f(j['max_abs_beta'], '.2f')} | {_f(b['max_abs_beta'], '.2f')} | "
                   f"{r['verdict']} | {_f(j['fit_residual_mm'], '.2f')} | "
                   f"{_f(j['max_offset_on_comparable_mm'])} | {_f(j['time_s'], '.2f')} | {_f(b['time_s'], '.1f')} |")
    lines.append('')
  if truth:
    lines += ['## Generated SMPL truth', '',
              '| body | trial | frames | jaxfit MPJPE vs truth | baseline MPJPE vs truth | jaxfit MPJPE | '
              'baseline MPJPE | jaxfit PA-MPJPE vs truth | baseline PA-MPJPE vs truth | '
              'jaxfit MPJPE 24 vs truth | baseline MPJPE 24 vs truth | jaxfit MPJPE mapped vs truth | '
              'baseline MPJPE mapped vs truth | jaxfit beta err | '
              'baseline beta err | jaxfit rest err | baseline rest err | jaxfit max abs beta | '
              'baseline max abs beta | verdict | jaxfit fit residual |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in truth:
      j, b = r['jaxfit'], r['baseline']
      lines.append(f"| {r['body']} | {r['trial']} | {r['frames']} | {_f(j['mpjpe_vs_truth_mm'], '.2f')} | "
                   f"{_f(b['mpjpe_vs_truth_mm'], '.2f')} | {_f(j['mpjpe_mm'], '.2f')} | "
                   f"{_f(b['mpjpe_mm'], '.2f')} | {_f(j['pa_mpjpe_vs_truth_mm'], '.2f')} | "
                   f"{_f(b['pa_mpjpe_vs_truth_mm'], '.2f')} | {_f(j['mpjpe_all24_vs_truth_mm'], '.2f')} | "
                   f"{_f(b['mpjpe_all24_vs_truth_mm'], '.2f')} | {_f(j['mpjpe_mapped_vs_truth_mm'], '.2f')} | "
                   f"{_f(b['mpjpe_mapped_vs_truth_mm'], '.2f')} | {_f(j['beta_error_max'], '.3f')} | "
                   f"{_f(b['beta_error_max'], '.3f')} | {_f(j['rest_joint_error_mm'], '.2f')} | "
                   f"{_f(b['rest_joint_error_mm'], '.2f')} | {_f(j['max_abs_beta'], '.2f')} | "
                   f"{_f(b['max_abs_beta'], '.2f')} | {r['verdict']} | {_f(j['fit_residual_mm'], '.2f')} |")
    lines.append('')
  if rows:
    lines += ['## Baseline convergence, per restart', '',
              'Loss: mean squared error over the comparable joints, mm^2. Per restart: Adam\'s final loss and '
              'MPJPE and how much they still fell over its last 1000 steps (or the whole run if shorter); then '
              'L-BFGS\'s final loss and MPJPE and its relative loss drop over its last 50 iterations. The best '
              'restart (lowest final loss) is the one scored above.', '',
              '| body | trial | start | start MPJPE | Adam steps | Adam loss | Adam MPJPE | Adam loss drop, '
              'last 1000 (rel) | Adam MPJPE drop, last 1000 | L-BFGS steps | final loss | final MPJPE | '
              'L-BFGS loss drop, last 50 (rel) | max abs beta | best |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
      for rec in r['baseline']['restarts']:
        last = rec['polish_last_chunk_rel']
        lines.append(f"| {r['body']} | {r['trial']} | {rec['start']} | {_f(rec['start_mpjpe_mm'])} | "
                     f"{rec['adam_steps']} | {rec['adam_loss_mm2']:.3f} | {_f(rec['adam_mpjpe_mm'], '.2f')} | "
                     f"{rec['adam_loss_drop_last_1000_rel']:.1e} | {_f(rec['adam_mpjpe_drop_last_1000_mm'], '.3f')} | "
                     f"{rec['polish_steps']} | {rec['loss_mm2']:.3f} | {_f(rec['mpjpe_mm'], '.2f')} | "
                     f"{'n/a' if last is None else format(last, '.1e')} | {_f(rec['max_abs_beta'], '.2f')} | "
                     f"{'yes' if rec['start'] == r['baseline']['best_start'] else ''} |")
    lines += ['', '## jaxfit\'s learned offsets (norm per joint, mm)', '',
              '| body | trial | offsets |', '|---|---|---|']
    for r in rows:
      offs = ', '.join(f'{k} {v:.1f}' for k, v in r['jaxfit']['offsets_mm'].items()) or 'none'
      lines.append(f"| {r['body']} | {r['trial']} | {offs} |")
    lines.append('')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- main

def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='open,demo,variant',
                      help='bodies: open (the default body), demo (the mannequin), variant (comma-separated)')
  parser.add_argument('--model_path', default='', help='a user SMPL .pkl/.npz, added as another body')
  parser.add_argument('--trials', default='', help='comma-separated substrings of subject/trial '
                      '(generated truth: smpl_truth_0/noiseless, smpl_truth_0/noise_10mm); empty = all')
  parser.add_argument('--max_frames', type=int, default=0, help='> 0: only the first frames of each trial')
  parser.add_argument('--truth_frames', type=int, default=300, help='frames of each generated truth trial')
  parser.add_argument('--baseline_steps', type=int, default=4000, help='Adam steps per baseline restart')
  parser.add_argument('--restarts', type=int, default=3)
  parser.add_argument('--polish_steps', type=int, default=BASELINE_POLISH_STEPS,
                      help='L-BFGS iterations after Adam in each baseline restart (0: Adam only)')
  parser.add_argument('--seed', type=int, default=0, help='random restarts of the baseline')
  parser.add_argument('--data', default=REAL, help='folder of .b3d files')
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'REAL_DATA.md'))
  parser.add_argument('--work', default='/tmp/jaxfit_real_bench')
  parser.add_argument('--compilation_cache_dir', default='none',
                      help="jaxfit's store of compiled programs ('none': compile here)")
  parser.add_argument('--override', action='append', default=[],
                      help='jaxfit config overrides field=value (python literal), repeatable')
  args = parser.parse_args(argv)
  if args.restarts < 1 or args.baseline_steps < 1:
    raise SystemExit('--restarts and --baseline_steps must be >= 1')
  t_start = time.perf_counter()
  os.makedirs(args.work, exist_ok=True)
  jax_setup.use_executable_store(args.compilation_cache_dir)
  config = base_config()
  for item in args.override:
    key, value = item.split('=', 1)
    node = config
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = type(node[last])(eval(value))  # pylint: disable=eval-used
  config.max_frames = args.max_frames
  settings = settings_from_config(config)
  filters = [f for f in args.trials.split(',') if f]
  trials = [t for t in real_trials(args.data) if _selected(f'{t.subject}/{t.name}', filters)]
  truth_frames = min(args.truth_frames, args.max_frames) if args.max_frames else args.truth_frames
  rows = []
  for body, model in load_bodies(args.models, args.model_path, args.work):
    for trial in trials:
      rows.append(evaluate(body, model, trial, settings, args))
    for name, noise in TRUTH_CASES:
      if not _selected(f'smpl_truth_{TRUTH_SEED}/{name}', filters):
        continue
      trial, truth = make_ground_truth_trial(model, settings.prepare.joint_map, num_frames=truth_frames,
                                             seed=TRUTH_SEED, noise_m=noise)
      trial = dataclasses.replace(trial, name=name)
      rows.append(evaluate(body, model, trial, settings, args, truth))
  if not rows:
    raise SystemExit('no trial selected')
  meta = dict(machine=_machine(), date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
              command='python benchmarks/real_data.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
              overrides=args.override, max_frames=args.max_frames, baseline_steps=args.baseline_steps,
              restarts=args.restarts, polish_steps=args.polish_steps, baseline_lr=BASELINE_LR, baseline_final_lr_ratio=BASELINE_FINAL_LR_RATIO,
              comparable_joints=sorted(COMPARABLE_JOINTS), beta_bound=BETA_BOUND,
              wall_s=time.perf_counter() - t_start)
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write(render(rows, meta))
  with open(os.path.splitext(args.out)[0] + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(meta, rows=rows), f, indent=1)
  print(f"wrote {args.out} ({len(rows)} rows, {meta['wall_s']:.0f} s)")


if __name__ == '__main__':
  main()
