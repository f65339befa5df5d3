"""Fit-quality metrics over the mapped joints (pure NumPy; millimetres).

`mpjpe_mm` is the user's metric (the reference pipeline's): the raw SMPL
joints against the targets over the comparable joints (`data.COMPARABLE_JOINTS`),
no alignment. The fitted points (joints plus learned offsets) against all
mapped targets are the fit residual (`fit_residual_mm`), never called MPJPE.

MPJPE is global: predicted and target joints are compared in the same world
frame with no alignment (translation is fitted). PA-MPJPE aligns each frame by
a similarity transform (rotation, translation, scale) first. Segment
orientation errors (degrees) compare OpenSim body rotations with the paired
SMPL joints' global rotations after a constant offset per pair.
"""

import numpy as np

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.body.rotation import axis_angle_to_matrix
from jaxfit.data.trial import OPENSIM_TO_SMPL, SEGMENT_PAIRS, rotation_about

PCK_THRESHOLDS_MM = (50, 100, 150)


def procrustes_aligned(pred, target, valid):
  """Per-frame similarity alignment of pred [T,M,3] onto target; valid [T,M]."""
  w = valid.astype(np.float64)
  n = np.maximum(w.sum(1, keepdims=True), 1e-12)[..., None]
  mp = (w[..., None] * pred).sum(1, keepdims=True) / n
  mt = (w[..., None] * target).sum(1, keepdims=True) / n
  p, t = (pred - mp) * w[..., None], (target - mt) * w[..., None]
  h = np.einsum('tmi,tmj->tij', p, t)
  u, s, vt = np.linalg.svd(h)
  d = np.sign(np.linalg.det(np.einsum('tji,tkj->tik', vt, u)))
  d = np.where(d == 0, 1.0, d)
  s[:, 2] *= d
  vt_fixed = vt.copy()
  vt_fixed[:, 2] *= d[:, None]
  rot = np.einsum('tji,tkj->tik', vt_fixed, u)  # R = V D U^T
  var = (p ** 2).sum((1, 2))
  scale = s.sum(1) / np.maximum(var, 1e-12)
  return scale[:, None, None] * np.einsum('tij,tmj->tmi', rot, pred - mp) + mt


def fit_metrics(pred, target, valid, fps, joint_names):
  """Metrics dict. pred, target [T,M,3] metres (same frame); valid [T,M] bool."""
  valid = np.asarray(valid, bool)
  if not valid.any():   # no joint to measure (e.g. no comparable joint mapped)
    nan = float('nan')
    return dict(mpjpe_mm=nan, mpjpe_alignment='none (global positions, SMPL world frame)',
                pa_mpjpe_mm=nan, max_joint_error_mm=nan, per_joint_mpjpe_mm={},
                per_frame_mpjpe_mm=[None] * len(valid), frames=int(len(valid)),
                valid_joint_samples=0, fps=float(fps),
                **{f'pck_{mm}mm': nan for mm in PCK_THRESHOLDS_MM})
  err = np.linalg.norm(pred - target, axis=-1) * 1000.0
  err_valid = err[valid]
  frames_ok = valid.sum(1) >= 3
  pa = np.linalg.norm(procrustes_aligned(pred, target, valid) - target, axis=-1) * 1000.0
  pa_valid = pa[valid & frames_ok[:, None]]
  per_frame = np.where(valid.any(1), (err * valid).sum(1) / np.maximum(valid.sum(1), 1), np.nan)
  metrics = dict(
      mpjpe_mm=float(err_valid.mean()),
      mpjpe_alignment='none (global positions, SMPL world frame)',
      pa_mpjpe_mm=float(pa_valid.mean()) if pa_valid.size else float('nan'),
      max_joint_error_mm=float(err_valid.max()),
      per_joint_mpjpe_mm={n: float(err[valid[:, j], j].mean()) if valid[:, j].any() else None
                          for j, n in enumerate(joint_names)},
      per_frame_mpjpe_mm=[None if np.isnan(v) else round(float(v), 3) for v in per_frame],
      frames=int(len(pred)),
      valid_joint_samples=int(valid.sum()),
  )
  for mm in PCK_THRESHOLDS_MM:
    metrics[f'pck_{mm}mm'] = float((err_valid < mm).mean())
  if len(pred) >= 3:
    trip = valid[2:] & valid[1:-1] & valid[:-2]
    acc = lambda x: x[2:] - 2 * x[1:-1] + x[:-2]
    acc_err = np.linalg.norm(acc(pred) - acc(target), axis=-1) * 1000.0
    metrics['accel_error_mm_per_frame2'] = float(acc_err[trip].mean()) if trip.any() else None
  if len(pred) >= 4:
    quad = valid[3:] & valid[2:-1] & valid[1:-2] & valid[:-3]
    jerk = lambda x: np.linalg.norm(x[3:] - 3 * x[2:-1] + 3 * x[1:-2] - x[:-3], axis=-1) * 1000.0
    metrics['jitter_fit_mm_per_frame3'] = float(jerk(pred)[quad].mean()) if quad.any() else None
    metrics['jitter_target_mm_per_frame3'] = float(jerk(target)[quad].mean()) if quad.any() else None
  metrics['fps'] = float(fps)
  return metrics


MPJPE_DEFINITION = ('raw SMPL joints against the target joint centres, over the comparable joints '
                    '(mpjpe_joints: those whose definitions agree, data.COMPARABLE_JOINTS), no '
                    'alignment; pa_mpjpe_mm and pck_* on the same joints')
FIT_RESIDUAL_DEFINITION = ('the fitted points (SMPL joints plus the learned correspondence offsets) '
                           'against every mapped target: what the fit minimised, not accuracy')


# The SMPL joint that gives each paired segment's long (twist) axis in the rest
# pose: the segment runs from the joint to this child (the toes, a leaf, use
# the ankle -> toe base line).
TWIST_AXIS = {'pelvis': ('pelvis', 'spine1'), 'left_hip': ('left_hip', 'left_knee'),
              'right_hip': ('right_hip', 'right_knee'), 'left_knee': ('left_knee', 'left_ankle'),
              'right_knee': ('right_knee', 'right_ankle'), 'left_ankle': ('left_ankle', 'left_foot'),
              'right_ankle': ('right_ankle', 'right_foot'), 'left_foot': ('left_ankle', 'left_foot'),
              'right_foot': ('right_ankle', 'right_foot'), 'spine3': ('spine3', 'neck'),
              'left_shoulder': ('left_shoulder', 'left_elbow'),
              'right_shoulder': ('right_shoulder', 'right_elbow'),
              'left_elbow': ('left_elbow', 'left_wrist'), 'right_elbow': ('right_elbow', 'right_wrist'),
              'left_wrist': ('left_wrist', 'left_hand'), 'right_wrist': ('right_wrist', 'right_hand')}


def _trial_segments(trial, rotations, rest_joints, num_frames):
  """(names [S], r_opensim [T,S,3,3], r_smpl [T,S,3,3], valid [T,S], twist
  axes [S,3]) of the paired segments a trial has, or None."""
  if trial.segment_rotations is None:
    return None
  names = [n for n in trial.segment_names if n in SEGMENT_PAIRS]
  if not names:
    return None
  columns = [list(trial.segment_names).index(n) for n in names]
  joints = [SMPL_JOINT_NAMES.index(SEGMENT_PAIRS[n]) for n in names]
  axes = []
  for j in joints:
    a, b = TWIST_AXIS[SMPL_JOINT_NAMES[j]]
    v = rest_joints[SMPL_JOINT_NAMES.index(b)] - rest_joints[SMPL_JOINT_NAMES.index(a)]
    axes.append(v / max(np.linalg.norm(v), 1e-12))
  r_os = np.asarray(trial.segment_rotations[:num_frames][:, columns], np.float64)
  r_smpl = np.asarray(rotations[:num_frames][:, joints], np.float64)
  valid = np.all(np.isfinite(r_os), axis=(-1, -2))
  return names, r_os, r_smpl, valid, np.asarray(axes)


def trial_segment_orientations(trial, rotations, rest_joints, num_frames):
  """Per-segment orientation error of a fit against the trial's OpenSim bodies.

  trial: a Trial with segment_names / segment_rotations [T,S,3,3] (or none);
  rotations [T,24,3,3]: the fit's global joint rotations (SMPL world);
  rest_joints [24,3] m: the fitted shape's rest joints (twist axes).
  Returns ({segment: stats} (`segment_orientation_metrics`, best constant
  offset per pair removed), per-frame dict(names, total, swing, twist [T,S]
  degrees, twist signed)) for the paired segments the trial has, or ({}, None).
  """
  inputs = _trial_segments(trial, rotations, rest_joints, num_frames)
  if inputs is None:
    return {}, None
  names, r_os, r_smpl, valid, axes = inputs
  stats = segment_orientation_metrics(r_os, r_smpl, valid, axes, names)
  offsets = np.asarray([stats[n]['offset'] for n in names])
  total, swing, twist, _ = segment_orientation_errors(r_os, r_smpl, valid, axes, offsets)
  return stats, dict(names=names, total=total, swing=swing, twist=twist)


# SMPL's hinge joints and their flexion axes in the rest (T-pose, palms down)
# frame: the knees flex about the left-right axis (+X), the elbows about the
# vertical (+Y). OpenSim's knee and elbow are hinges; the forearm's pronation,
# which OpenSim puts in the radioulnar joint below the elbow, is in SMPL's
# elbow rotation, about the forearm's long axis (+X at rest): it is removed
# before the elbow is measured.
HINGE_AXES = {'left_knee': (1.0, 0.0, 0.0), 'right_knee': (1.0, 0.0, 0.0),
              'left_elbow': (0.0, 1.0, 0.0), 'right_elbow': (0.0, 1.0, 0.0)}
PRONATION_AXES = {'left_elbow': (1.0, 0.0, 0.0), 'right_elbow': (1.0, 0.0, 0.0)}


def hinge_deviation(poses, joints=None):
  """How far the SMPL knees and elbows leave their hinge: the angle (degrees)
  of each joint's local rotation once the rotation about its flexion axis is
  removed (and, for the elbows, first the pronation about the forearm axis).
  poses [T,24,3] axis-angle rad. Returns {joint: dict(mean_deg, p95_deg,
  flexion_range_deg)}."""
  out = {}
  for name in (HINGE_AXES if joints is None else joints):
    local = np.asarray(axis_angle_to_matrix(np.asarray(poses, np.float32)[:, SMPL_JOINT_NAMES.index(name)]),
                       np.float64)
    if name in PRONATION_AXES:
      _, _, pronation = swing_twist_deg(local[:, None], np.asarray([PRONATION_AXES[name]]))
      local = local @ np.swapaxes(rotation_about(PRONATION_AXES[name], np.radians(pronation[:, 0])),
                                  -1, -2)
    _, swing, flexion = swing_twist_deg(local[:, None], np.asarray([HINGE_AXES[name]]))
    out[name] = dict(mean_deg=float(np.mean(swing)), p95_deg=float(np.percentile(swing, 95)),
                     flexion_range_deg=float(np.ptp(flexion)))
  return out


def trial_metrics(prep, result, fps, rest_joints=None) -> dict:
  """metrics.json's measures of one fit: MPJPE the user's way (raw SMPL joints,
  comparable joints, no alignment), the fit residual (offset points, all mapped
  joints) beside it, the learned offsets with their warnings, and (rest_joints
  [24,3] given, the trial with OpenSim body rotations) the segment orientation
  errors with the worst segment's twist. Returns (metrics, the per-frame
  segment errors of `trial_segment_orientations` or None)."""
  names = prep.mapping.source_names
  index = np.asarray(prep.structure.smpl_index)
  n = prep.num_frames
  keep = list(prep.mapping.comparable_index)
  raw = result.joints[:, index]
  metrics = fit_metrics(raw[:, keep], prep.targets[:n, keep], prep.valid[:, keep], fps,
                        [names[m] for m in keep])
  metrics['mpjpe_joints'] = [names[m] for m in keep]
  metrics['mpjpe_definition'] = MPJPE_DEFINITION
  metrics['per_joint_raw_mm'] = fit_metrics(raw, prep.targets[:n], prep.valid, fps,
                                            names)['per_joint_mpjpe_mm']
  residual = fit_metrics(result.points, prep.targets[:n], prep.valid, fps, names)
  metrics['fit_residual_mm'] = residual['mpjpe_mm']
  metrics['fit_residual'] = dict(definition=FIT_RESIDUAL_DEFINITION,
                                 pa_mm=residual['pa_mpjpe_mm'],
                                 max_mm=residual['max_joint_error_mm'],
                                 per_joint_mm=residual['per_joint_mpjpe_mm'],
                                 per_frame_mm=residual['per_frame_mpjpe_mm'])
  metrics['offsets_mm'] = {names[m]: [round(1000 * float(v), 2) for v in result.offsets[m]]
                           for m in prep.structure.offset_joints}
  metrics['offset_limits_mm'] = {names[m]: dict(typical=round(1000 * float(prep.offset_typical[m]), 1),
                                                bound=round(1000 * float(prep.offset_bound[m]), 1))
                                 for m in prep.structure.offset_joints}
  warnings = []
  for m in prep.structure.offset_joints:
    size, bound, typical = (float(np.linalg.norm(result.offsets[m])), float(prep.offset_bound[m]),
                            float(prep.offset_typical[m]))
    if size >= 0.98 * bound or size > typical:
      warnings.append(f'learned offset of {names[m]} is {1000 * size:.0f} mm '
                      f'({"at its bound" if size >= 0.98 * bound else "above its typical size"} '
                      f'of {1000 * (bound if size >= 0.98 * bound else typical):.0f} mm): the body '
                      'model cannot match this subject there')
  metrics['offset_warnings'] = warnings
  if 'shape_prior_weight' in result.losses:
    metrics['shape_prior_weight'] = result.losses['shape_prior_weight']
  segments, series = ({}, None) if rest_joints is None else trial_segment_orientations(
      prep.trial, result.rotations, np.asarray(rest_joints), n)
  metrics['segment_orientation_deg'] = {k: {f: v for f, v in e.items() if f != 'offset'}
                                        for k, e in segments.items()}
  metrics['segment_frame_offsets'] = {k: e['offset'] for k, e in segments.items()}
  # The constant frame offsets the fit used (rest poses, refined on the trial).
  metrics['fitted_frame_offsets'] = {name: np.round(result.frame_offsets[s], 6).tolist()
                                     for s, name in enumerate(prep.segment_names)}
  fitted = set(prep.mapping.smpl_names)
  metrics['hinge_deviation_deg'] = hinge_deviation(
      result.poses, [j for j in HINGE_AXES if j in fitted])
  twists = {k: e['twist_p95_deg'] for k, e in segments.items() if e['twist_p95_deg'] is not None}
  worst = max(twists, key=twists.get) if twists else None
  metrics['worst_twist_segment'] = worst
  metrics['worst_twist_p95_deg'] = twists[worst] if worst else None
  return metrics, series


# Segment orientations: OpenSim body rotations against the paired SMPL joints'
# global rotations (pairs: jaxfit.data.SEGMENT_PAIRS). Degrees.


def _project_to_so3(m):
  """Nearest rotation (Frobenius) to each matrix [...,3,3]: U diag(1,1,det) V^T."""
  u, _, vt = np.linalg.svd(m)
  d = np.sign(np.linalg.det(u @ vt))
  d = np.where(d == 0, 1.0, d)
  u = u.copy()
  u[..., :, 2] *= d[..., None]
  return u @ vt


def _quaternions(r):
  """Unit quaternions (w, x, y, z) [...,4] of rotations [...,3,3], w >= 0."""
  r = np.asarray(r, np.float64)
  m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
  tr = m00 + m11 + m22
  # Shepperd: divide by the largest of 4w^2, 4x^2, 4y^2, 4z^2 for accuracy.
  cand = np.stack([1 + tr, 1 + 2 * m00 - tr, 1 + 2 * m11 - tr, 1 + 2 * m22 - tr], -1)
  best = np.argmax(np.nan_to_num(cand, nan=-1.0), -1)
  s = np.sqrt(np.maximum(np.take_along_axis(cand, best[..., None], -1)[..., 0], 1e-300))
  a = (r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1])
  b = (r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1])
  rows = [np.stack([s, a[0] / s, a[1] / s, a[2] / s], -1),           # w largest
          np.stack([a[0] / s, s, b[0] / s, b[1] / s], -1),           # x largest
          np.stack([a[1] / s, b[0] / s, s, b[2] / s], -1),           # y largest
          np.stack([a[2] / s, b[1] / s, b[2] / s, s], -1)]           # z largest
  q = np.choose(best[..., None], rows) * 0.5
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  return np.where(q[..., :1] < 0, -q, q)


def swing_twist_deg(e, twist_axes):
  """(total, swing, twist) angles in degrees of rotations e [...,S,3,3].

  twist_axes [S,3]: the axis (in the frame e acts in) each twist is measured
  about. e = swing . twist (either order gives the same angles): twist is the
  signed angle about the axis (right hand, in (-180, 180]), swing the angle of
  the remaining rotation (about an axis perpendicular to it), total the angle
  of e. NaN in, NaN out.
  """
  axes = np.asarray(twist_axes, np.float64)
  axes = axes / np.linalg.norm(axes, axis=-1, keepdims=True)
  q = _quaternions(e)
  w, v = q[..., 0], q[..., 1:]
  along = np.sum(v * axes, -1)
  across = np.linalg.norm(v - along[..., None] * axes, axis=-1)
  total = 2 * np.arctan2(np.linalg.norm(v, axis=-1), w)
  swing = 2 * np.arctan2(across, np.hypot(w, along))
  twist = 2 * np.arctan2(along, w)               # w >= 0: within [-180, 180]
  return tuple(np.degrees(x) for x in (total, swing, twist))


def _segment_valid(r_opensim, r_smpl, valid):
  finite = (np.all(np.isfinite(r_opensim), (-2, -1)) & np.all(np.isfinite(r_smpl), (-2, -1)))
  return np.asarray(valid, bool) & finite


def estimate_segment_offsets(r_opensim, r_smpl, valid):
  """Best constant offset C [S,3,3] per segment: the chordal mean of
  (A R_os)^T R_smpl over valid frames, projected onto SO(3) (A =
  jaxfit.data.OPENSIM_TO_SMPL). NaN for a segment with no valid frame.

  r_opensim [T,S,3,3] body -> OpenSim world; r_smpl [T,S,3,3] SMPL rest ->
  SMPL world; valid [T,S] bool.
  """
  r_opensim, r_smpl = np.asarray(r_opensim, np.float64), np.asarray(r_smpl, np.float64)
  ok = _segment_valid(r_opensim, r_smpl, valid)
  rel = np.einsum('ij,tsjk->tsik', OPENSIM_TO_SMPL, r_opensim)       # A R_os
  rel = np.einsum('tsji,tsjk->tsik', np.where(ok[..., None, None], rel, 0.0),
                  np.where(ok[..., None, None], r_smpl, 0.0))        # (A R_os)^T R_smpl
  mean = rel.sum(0) / np.maximum(ok.sum(0), 1)[:, None, None]
  offsets = _project_to_so3(mean)
  offsets[~ok.any(0)] = np.nan
  return offsets


def segment_orientation_errors(r_opensim, r_smpl, valid, twist_axes, offsets=None):
  """Per-frame residual angles after the constant offset, for plots.

  Residual E = C^T (A R_os)^T R_smpl (a rotation in SMPL's rest frame; A =
  OPENSIM_TO_SMPL); offsets [S,3,3] = C, or None to estimate them
  (`estimate_segment_offsets`). twist_axes [S,3]: each segment's rest bone axis
  in SMPL's rest frame. Returns (total, swing, twist) [T,S] degrees (twist
  signed), NaN where not valid, and the offsets [S,3,3] used.
  """
  r_opensim, r_smpl = np.asarray(r_opensim, np.float64), np.asarray(r_smpl, np.float64)
  if r_opensim.shape != r_smpl.shape or r_opensim.shape[-2:] != (3, 3) or r_opensim.ndim != 4:
    raise ValueError(f'r_opensim and r_smpl must both be [T,S,3,3], got {r_opensim.shape}, {r_smpl.shape}')
  ok = _segment_valid(r_opensim, r_smpl, valid)
  if offsets is None:
    offsets = estimate_segment_offsets(r_opensim, r_smpl, ok)
  offsets = np.asarray(offsets, np.float64)
  predicted = np.einsum('ij,tsjk,skl->tsil', OPENSIM_TO_SMPL, r_opensim, offsets)  # A R_os C
  e = np.einsum('tsji,tsjk->tsik', predicted, r_smpl)
  e = np.where(ok[..., None, None], e, np.nan)
  total, swing, twist = swing_twist_deg(e, twist_axes)
  return total, swing, twist, offsets


def segment_orientation_metrics(r_opensim, r_smpl, valid, twist_axes, names, offsets=None):
  """Orientation error per segment, degrees (see `segment_orientation_errors`).

  names [S]: segment names (the OpenSim bodies). Returns {name: dict(frames,
  total_mean_deg, total_p95_deg, swing_mean_deg, swing_p95_deg, twist_mean_deg,
  twist_p95_deg (of |twist|), twist_signed_mean_deg, offset [3,3] list: C)};
  the statistics are None for a segment with no valid frame.
  """
  total, swing, twist, offsets = segment_orientation_errors(r_opensim, r_smpl, valid, twist_axes,
                                                            offsets)
  out = {}
  for s, name in enumerate(names):
    ok = np.isfinite(total[:, s])
    entry = dict(frames=int(ok.sum()))
    for key, values in (('total', total[ok, s]), ('swing', swing[ok, s]), ('twist', np.abs(twist[ok, s]))):
      entry[f'{key}_mean_deg'] = float(values.mean()) if ok.any() else None
      entry[f'{key}_p95_deg'] = float(np.percentile(values, 95)) if ok.any() else None
    entry['twist_signed_mean_deg'] = float(twist[ok, s].mean()) if ok.any() else None
    entry['offset'] = offsets[s].tolist()
    out[str(name)] = entry
  return out
