"""Writing fit outputs: <output_dir>/<subject>/<trial>/{params.npz,joints.npz,metrics.json,config.json}
(and, for an SMPL-H / SMPL-X body, the AMASS file <trial>_poses.npz / <trial>_stageii.npz).

The trial directory is written whole into a temporary directory and renamed
into place, so a crash never leaves a half-written result.
"""

import json
import math
import os
import re

import numpy as np

from jaxfit.data import OPENSIM_TO_SMPL
from jaxfit.io.atomic import atomic_directory


def safe_name(name):
  """A file-system-safe directory name for a subject or trial."""
  cleaned = re.sub(r'[^A-Za-z0-9._-]+', '_', str(name)).strip('._')
  return cleaned or 'unnamed'


def trial_dir(output_dir, subject, trial):
  return os.path.join(output_dir, safe_name(subject), safe_name(trial))


def _json_ready(obj):
  if isinstance(obj, dict):
    return {str(k): _json_ready(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_json_ready(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return None if not math.isfinite(float(obj)) else float(obj)
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.ndarray):
    return _json_ready(obj.tolist())
  return obj


def write_trial_outputs(path, *, betas, poses, trans, gender, fps, mapping, model_info,
                        metrics, config, contact_source, offsets, offset_joints=(),
                        trajectories=None, segment_names=(), frame_offsets=None, amass=None):
  """Writes one trial's outputs atomically into directory `path`.

  betas [B]; poses [T,24,3] rad; trans [T,3] m (SMPL world frame); mapping:
  JointMapping; model_info: dict(name, sha256, path); offsets [M,3] m, the
  learned correspondence offsets of the mapped joints listed in
  offset_joints (mapped indices), in their SMPL joint's frame.
  segment_names [S], frame_offsets [S,3,3]: the OpenSim bodies whose
  orientation was fitted and each pair's constant frame offset C
  (R_smpl = world_from_opensim R_opensim C).
  trajectories: dict for joints.npz (what the fit was compared with, for
  reports): targets [T,M,3], fitted [T,M,3], valid [T,M], smpl_joints
  [T,24,3], contact [T,2], bones [K,2] (SMPL world frame, metres).
  amass: (file name, {key: array}) of an AMASS motion file (jaxfit.io.amass),
  written with np.savez in the arrays' order; None for none.
  """
  learned = np.zeros(len(mapping.source_names), bool)
  learned[list(offset_joints)] = True
  with atomic_directory(path) as tmp:
    with open(os.path.join(tmp, 'params.npz'), 'wb') as f:
      np.savez(
          f, betas=np.asarray(betas, np.float64), poses=np.asarray(poses, np.float64).reshape(len(poses), 72),
          trans=np.asarray(trans, np.float64), gender=np.array(gender),
          mocap_framerate=np.array(float(fps)),
          joint_mapping_source=np.array(mapping.source_names),
          joint_mapping_smpl=np.array(mapping.smpl_names),
          model_name=np.array(model_info['name']), model_sha256=np.array(model_info['sha256']),
          num_betas=np.array(len(betas)),
          # True: the generated jaxfit demo body, not SMPL; betas/poses are not SMPL parameters.
          model_is_demo_body=np.array(bool(model_info.get('is_demo_body', False))),
          # 'smpl_file' (the user's model), 'demo' (the mannequin) or 'open' (the open body).
          model_kind=np.array(str(model_info.get('kind', 'smpl_file'))),
          world_from_opensim=OPENSIM_TO_SMPL,
          # Target m corresponds to SMPL joint j plus R_j @ joint_offsets[m] (R_j: the
          # joint's global rotation), constant over the trial; zero where not learned.
          joint_offsets=np.asarray(offsets, np.float64), joint_offset_learned=learned,
          contact_source=np.array(contact_source),
          # Segment orientations fitted: each OpenSim body's rotation R_os maps to the
          # paired SMPL joint's global rotation world_from_opensim @ R_os @ segment_frame_offsets.
          segment_names=np.array(list(segment_names), dtype=str),
          segment_frame_offsets=np.asarray(frame_offsets if frame_offsets is not None
                                           else np.zeros((0, 3, 3)), np.float64).reshape(-1, 3, 3))
    if trajectories is not None:
      with open(os.path.join(tmp, 'joints.npz'), 'wb') as f:
        np.savez_compressed(
            f, joint_names=np.array(mapping.source_names), smpl_names=np.array(mapping.smpl_names),
            fps=np.array(float(fps)),
            **{k: np.asarray(v, np.float32 if np.asarray(v).dtype.kind == 'f' else None)
               for k, v in trajectories.items()})
    if amass is not None:
      with open(os.path.join(tmp, amass[0]), 'wb') as f:
        np.savez(f, **amass[1])
    with open(os.path.join(tmp, 'metrics.json'), 'w', encoding='utf-8') as f:
      json.dump(_json_ready(metrics), f, indent=1, allow_nan=False)
    with open(os.path.join(tmp, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(_json_ready(config), f, indent=1, sort_keys=True, allow_nan=False)
