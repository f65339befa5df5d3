"""Measures which SMPL spine joint should receive AddBiomechanics' 'back' joint.

Two measurements, written to docs/joint_mapping.md:
  1. geometry: where the Rajagopal 'back' joint sits between the hip-centre
     and shoulder-centre heights (nimblephysics, q = 0), against each SMPL spine
     joint of the body model in use;
  2. fit: the demo subject fitted with 'back' mapped to each candidate (or
     unmapped); the MPJPE over the joints other than 'back' shows which
     target distorts the rest of the fit least.
Run: python benchmarks/spine_mapping.py [--model_path=SMPL.pkl]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxfit.body.model import SMPL_JOINT_NAMES  # noqa: E402
from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.data.trial import ADDB_JOINT_NAMES  # noqa: E402
from jaxfit.demo.subject import ensure_demo_subject  # noqa: E402
from jaxfit.fit.pipeline import fit_trial  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402
from jaxfit.io.b3d import read_b3d_trials  # noqa: E402
from jaxfit.io.nimble import import_nimble, quiet_native_output  # noqa: E402
from jaxfit.run.trial import settings_model  # noqa: E402

CANDIDATES = ('pelvis_unmapped', 'spine1', 'spine2', 'spine3')


def rajagopal_ratio():
  nimble = import_nimble()
  with quiet_native_output():
    skel = nimble.RajagopalHumanBodyModel().skeleton
  skel.setPositions(np.zeros(skel.getNumDofs()))
  joints = [skel.getJoint(i) for i in range(skel.getNumJoints())]
  pos = np.asarray(skel.getJointWorldPositions(joints)).reshape(-1, 3)
  y = {n: pos[ADDB_JOINT_NAMES.index(n), 1] for n in ('hip_r', 'hip_l', 'back', 'acromial_r', 'acromial_l')}
  hip, shoulder = (y['hip_r'] + y['hip_l']) / 2, (y['acromial_r'] + y['acromial_l']) / 2
  return (y['back'] - hip) / (shoulder - hip)


def smpl_ratios(model):
  j = np.asarray(model.J_template)
  idx = {n: SMPL_JOINT_NAMES.index(n) for n in SMPL_JOINT_NAMES}
  hip = (j[idx['left_hip'], 1] + j[idx['right_hip'], 1]) / 2
  shoulder = (j[idx['left_shoulder'], 1] + j[idx['right_shoulder'], 1]) / 2
  return {n: (j[idx[n], 1] - hip) / (shoulder - hip) for n in ('pelvis', 'spine1', 'spine2', 'spine3')}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model_path', default='')
  parser.add_argument('--out', default='docs/joint_mapping.md')
  args = parser.parse_args()
  config = base_config()
  config.model_path = args.model_path
  model, info = settings_model(settings_from_config(config))
  trials = read_b3d_trials(ensure_demo_subject())
  rows = []
  for candidate in CANDIDATES:
    c = base_config()
    c.joint_map.back = '' if candidate == 'pelvis_unmapped' else candidate
    settings = settings_from_config(c)
    errs_other, errs_back = [], []
    for trial in trials:
      prep = prepare_trial(trial, settings.prepare)
      result = fit_trial(model, prep, settings.fit)
      idx = list(prep.structure.smpl_index)
      err = np.linalg.norm(result.joints[:, idx] - prep.targets[:prep.num_frames], axis=-1) * 1000
      names = prep.mapping.source_names
      other = [k for k, n in enumerate(names) if n != 'back']
      errs_other.append(err[:, other].mean())
      if 'back' in names:
        errs_back.append(err[:, names.index('back')].mean())
    rows.append((candidate, np.mean(errs_other), np.mean(errs_back) if errs_back else float('nan')))
    print(rows[-1], flush=True)
  ratio = rajagopal_ratio()
  smpl = smpl_ratios(model)
  lines = [
      '# Joint mapping: AddBiomechanics (Rajagopal) -> SMPL',
      '',
      'The default table is `DEFAULT_JOINT_MAP` in `jaxfit/data/trial.py` (overridable per joint,',
      'e.g. `--config.joint_map.back=spine2`, or `--config.joint_map.mtp_r=""` to drop one).',
      '',
      '| AddB joint | SMPL joint | note |', '|---|---|---|',
      '| ground_pelvis | pelvis | OpenSim pelvis origin: between the ASIS, ~5.6 cm anterior and ~7.9 cm superior of the hip centres (Rajagopal, 1.67 m); SMPL\'s pelvis joint is defined differently, so expect a few cm of residual here |',
      '| hip_r/l | right/left_hip | |', '| walker_knee_r/l | right/left_knee | |',
      '| ankle_r/l | right/left_ankle | |', '| subtalar_r/l | - | no SMPL joint; 4-5 cm below/behind the ankle inside SMPL\'s ankle-foot segment, would fight the ankle target |',
      '| mtp_r/l | right/left_foot | SMPL\'s foot joint sits at the toe base |',
      '| back | spine1 | measured, below |',
      '| acromial_r/l | right/left_shoulder | |', '| elbow_r/l | right/left_elbow | |',
      '| radioulnar_r/l | - | a point on the pronation axis 2-3 cm from the elbow centre; SMPL has no such joint |',
      '| radius_hand_r/l | right/left_wrist | |',
      '',
      '## Which spine joint for `back`: measured',
      '',
      f'Body model: {info["name"]} (sha256 {info["sha256"][:12]}). Regenerate with',
      '`python benchmarks/spine_mapping.py [--model_path=<your SMPL file>]`.',
      '',
      '1. Geometry: height above the hip centres as a fraction of the hip-to-shoulder height, rest pose.',
      '',
      '| joint | fraction |', '|---|---|',
      f'| Rajagopal `back` | {ratio:.2f} |',
  ] + [f'| model `{n}` | {v:.2f} |' for n, v in smpl.items()] + [
      '',
      '2. Fit of the demo subject (both trials) with `back` mapped to each candidate:',
      '',
      '| back -> | MPJPE of the other 15 joints (mm) | error at back (mm) |', '|---|---|---|',
  ] + [f'| {c} | {o:.1f} | {b:.1f} |' for c, o, b in rows] + [
      '',
      'Default: **spine1**. Anatomically `back` is the lumbosacral (L5/S1) joint between the',
      'OpenSim pelvis and torso bodies, and in the rest geometry spine1 is the nearest SMPL',
      'joint to it (pelvis is well below, spine2/3 far above). The fit measurement depends on',
      'the body model: on the generated demo body (whose spine joints are placed from',
      'anthropometry, not SMPL) spine2 distorts the other joints less, and leaving `back`',
      'unmapped distorts them least, at the price of leaving the lumbar spine free.',
      'With the official SMPL file, rerun this script with `--model_path` and choose with',
      '`--config.joint_map.back=<joint>` (or `""` to leave it unmapped).',
  ]
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
