"""Fit-quality metrics over the mapped joints (pure NumPy; millimetres).

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
