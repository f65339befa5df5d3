"""Fit speed per frame with SMPL, SMPL-H and SMPL-X bodies (issue 21's claim).

Fits real trials (../shared/data/real) with the demo body (SMPL layout) and
with generated SMPL-H / SMPL-X stand-ins built from it (tests/smpl_family_files.py),
in one process, the models interleaved, after one warm-up fit each (so no
compile time is counted). Reports the compile time of each warm-up (the
SMPL-H / SMPL-X fits reuse the SMPL fit's compiled programs: same 24-joint
shapes), the median fit time per frame, wall and process CPU (CPU time is the
steadier number on a shared machine), the time of the AMASS output (expanding
the pose, the FK check, the Z-up conversion), and whether the body poses are
identical to the SMPL fit's.

  python benchmarks/body_families.py [--reps=5] [--trials=walking2,DJ1]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.demo.body_model import ensure_demo_body  # noqa: E402
from jaxfit.fit.pipeline import fit_trial  # noqa: E402
from jaxfit.io.amass import amass_outputs  # noqa: E402
from jaxfit.io.b3d import read_b3d_trials  # noqa: E402
from jaxfit.io.smpl_file import load_body_model  # noqa: E402
from jaxfit.body.model import joint_model  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402
from tests import smpl_family_files as sf  # noqa: E402

REAL = os.path.join(ROOT, '..', 'shared', 'data', 'real', 'dev_opencap_unfiltered.b3d')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--trials', default='walking2,DJ1')
  args = parser.parse_args()
  settings = settings_from_config(base_config())
  work = tempfile.mkdtemp(prefix='jaxfit_families_')
  models = {
      'smpl': load_body_model(ensure_demo_body()),
      'smplh': load_body_model(sf.write_amass_smplh_npz(work, sf.family_arrays('smplh'), 'male')),
      'smplx': load_body_model(sf.write_smplx_npz(os.path.join(work, 'SMPLX_NEUTRAL.npz'),
                                                  sf.family_arrays('smplx', 10, 10))),
  }
  trials = read_b3d_trials(REAL, trials=args.trials.split(','))
  for trial in trials:
    preps = {k: prepare_trial(trial, settings.prepare, joint_model(m).parents)
             for k, m in models.items()}
    results = {k: fit_trial(m, preps[k], settings.fit) for k, m in models.items()}   # warm-up
    compile_s = {k: r.time_s.get('compile_s', 0.0) for k, r in results.items()}
    fit_s = {k: [] for k in models}
    cpu_s = {k: [] for k in models}
    out_s = {k: [] for k in models}
    for _ in range(args.reps):
      for k, m in models.items():
        c0 = time.process_time()
        r = fit_trial(m, preps[k], settings.fit)
        cpu_s[k].append(time.process_time() - c0)
        fit_s[k].append(r.time_s['total'])
        t0 = time.perf_counter()
        amass_outputs(m, r.betas, r.poses, r.trans, trial.fps, r.joints)
        out_s[k].append(time.perf_counter() - t0)
        results[k] = r
    n = trial.num_frames
    print(f'{trial.name}: {n} frames, median of {args.reps}')
    base, base_cpu = np.median(fit_s['smpl']), np.median(cpu_s['smpl'])
    for k in models:
      same = np.array_equal(results[k].poses[:, :22], results['smpl'].poses[:, :22])
      print(f'  {k:6s} warm-up compile {compile_s[k]:6.1f} s; '
            f'fit wall {1000 * np.median(fit_s[k]) / n:7.3f} ms/frame ({np.median(fit_s[k]) / base:5.2f} x SMPL), '
            f'CPU {1000 * np.median(cpu_s[k]) / n:7.3f} ms/frame ({np.median(cpu_s[k]) / base_cpu:5.2f} x SMPL); '
            f'AMASS output {1000 * np.median(out_s[k]) / n:6.3f} ms/frame; '
            f'body poses identical to SMPL fit: {same}')
      print(f'         min wall {1000 * min(fit_s[k]) / n:7.3f} ms/frame, min CPU '
            f'{1000 * min(cpu_s[k]) / n:7.3f} ms/frame; wall runs '
            f'{", ".join(f"{v:.2f}" for v in fit_s[k])} s; CPU runs {", ".join(f"{v:.2f}" for v in cpu_s[k])} s')


if __name__ == '__main__':
  main()
