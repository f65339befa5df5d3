"""Fit-quality metrics over the mapped joints (pure NumPy; millimetres).

`mpjpe_mm` is the user's metric (the reference pipeline's): the raw SMPL
joints against the targets over the comparable joints (`data.COMPARABLE_JOINTS`),
no alignment. The fitted points (joints plus learned offsets) against all
mapped targets are the fit residual (`fit_residual_mm`), never called MPJPE.

MPJPE is global: predicted and target joints are compared in the same world
frame with no alignment (translation is fitted). PA-MPJPE aligns each frame by
a similarity transform (rotation, translation, scale) first.
"""

import numpy as np

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


def trial_metrics(prep, result, fps) -> dict:
  """metrics.json's measures of one fit: MPJPE the user's way (raw SMPL joints,
  comparable joints, no alignment), the fit residual (offset points, all mapped
  joints) beside it, and the learned offsets with their warnings."""
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
  return metrics
