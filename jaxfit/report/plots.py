"""The report's plots: per-joint error, error over time, joint trajectories."""

import os

import numpy as np

from jaxfit.report.options import ReportError
from jaxfit.runtime.files import atomic_write

FIT_COLOUR, INPUT_COLOUR = '#d62728', '#1f77b4'   # fitted SMPL red, AddBiomechanics blue
TRAJECTORY_JOINTS = ('left_ankle', 'right_ankle', 'left_knee', 'right_knee', 'left_wrist',
                     'right_wrist')


def _plt():
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ReportError("reports need matplotlib: pip install 'jaxfit[report]'") from None
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def view_axes(joints: dict):
  """Unit horizontal (forward, lateral) axes of the subject (SMPL frame, +Y up):
  lateral from the hips (left minus right), else the pelvis' main direction of travel."""
  names = [str(n) for n in joints['smpl_names']]
  targets, valid = joints['targets'], joints['valid']
  lateral = None
  if 'left_hip' in names and 'right_hip' in names:
    l, r = names.index('left_hip'), names.index('right_hip')
    ok = valid[:, l] & valid[:, r]
    if ok.any():
      lateral = (targets[ok, l] - targets[ok, r]).mean(0)
  if lateral is None:
    path = targets[:, 0] - targets[:, 0].mean(0)
    _, _, vt = np.linalg.svd(path[:, [0, 2]], full_matrices=False)
    lateral = np.array([-vt[0, 1], 0.0, vt[0, 0]])
  lateral = np.array([lateral[0], 0.0, lateral[2]])
  lateral /= max(np.linalg.norm(lateral), 1e-9)
  forward = np.cross(lateral, [0.0, 1.0, 0.0])   # +Y up: left x up = forward
  return forward / max(np.linalg.norm(forward), 1e-9), lateral


def _contact_spans(contact, fps):
  """[(start_s, end_s)] of each run of True in contact [T]."""
  edges = np.flatnonzero(np.diff(np.concatenate([[0], contact.astype(int), [0]])))
  return [(a / fps, b / fps) for a, b in zip(edges[::2], edges[1::2])]


def _shade_contact(ax, contact, fps):
  """Shades the contact phases of contact [T,2] (left, right), one artist a
  side (a span per phase would be thousands of artists on a long trial)."""
  spans = [(np.array(_contact_spans(contact[:, side], fps)), colour)
           for side, colour in ((0, '#9467bd'), (1, '#2ca02c'))]
  for edges, colour in spans:
    if len(edges):
      # Each phase as a step up and down: x = a, a, b, b; y = 0, 1, 1, 0 (axes fraction).
      x = np.repeat(edges, 2, axis=1).ravel()
      y = np.tile([0.0, 1.0, 1.0, 0.0], len(edges))
      ax.fill(x, y, color=colour, alpha=0.12, lw=0, transform=ax.get_xaxis_transform())


def _save(fig, path):
  with atomic_write(path) as tmp:
    fig.savefig(tmp, format=os.path.splitext(path)[1][1:], dpi=fig.dpi)
  _plt().close(fig)
  return path


def plot_per_joint(trial, path):
  plt = _plt()
  m = trial['metrics']
  raw_all = m.get('per_joint_raw_mm', {})
  names = list(raw_all)
  comparable = set(m.get('mpjpe_joints', ()))
  raw = [raw_all[n] or 0.0 for n in names]
  fitted = [(m.get('fit_residual', {}).get('per_joint_mm', {}).get(n) or 0.0) for n in names]
  fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
  x = np.arange(len(names))
  ax.bar(x - 0.2, raw, 0.4, color=FIT_COLOUR, label='raw SMPL joint (MPJPE)')
  ax.bar(x + 0.2, fitted, 0.4, color='#ff9896', label='fitted point, joint + offset (fit residual)')
  ax.set_xticks(x, [n if n in comparable else f'({n})' for n in names], rotation=60, ha='right',
                fontsize=8)
  ax.set_ylabel('error (mm)')
  ax.set_title(f'Per-joint error: MPJPE {m["mpjpe_mm"]:.1f} mm over the comparable joints '
               f'(in brackets: defined differently), max |beta| '
               f'{m.get("max_abs_beta", float("nan")):.2f}', fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def plot_error_over_time(trial, path):
  plt = _plt()
  j, m = trial['joints'], trial['metrics']
  fps = float(j['fps'])
  err = np.array([np.nan if v is None else v for v in m['per_frame_mpjpe_mm']], float)
  t = np.arange(len(err)) / fps
  fig, ax = plt.subplots(figsize=(8, 2.6), dpi=100)
  _shade_contact(ax, j['contact'], fps)
  ax.plot(t, err, color=FIT_COLOUR, lw=1)
  ax.set_xlabel('time (s)')
  ax.set_ylabel('MPJPE (mm, raw SMPL joints)')
  ax.set_xlim(0, max(t[-1], 1e-3))
  ax.set_title('Error over time (shaded: left (purple) / right (green) foot contact)', fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def plot_segment_orientations(trial, path):
  """Twist (about each segment's long axis) and swing of every paired
  segment against its OpenSim body over time, the best constant offset removed."""
  plt = _plt()
  j, m = trial['joints'], trial['metrics']
  fps = float(j['fps'])
  names = [str(n) for n in j['segment_names']]
  t = np.arange(len(j['segment_twist_deg'])) / fps
  fig, axes = plt.subplots(2, 1, figsize=(8, 4.6), dpi=100, sharex=True)
  for ax, key, label in ((axes[0], 'segment_twist_deg', 'twist (deg)'),
                         (axes[1], 'segment_swing_deg', 'swing (deg)')):
    _shade_contact(ax, j['contact'], fps)
    for s, name in enumerate(names):
      ax.plot(t, j[key][:, s], lw=0.8, label=name)
    ax.set_ylabel(label)
  axes[0].axhline(0, color='k', lw=0.5)
  axes[1].set_xlabel('time (s)')
  axes[1].set_xlim(0, max(t[-1], 1e-3))
  worst = m.get('worst_twist_segment')
  axes[0].set_title('Segment orientation vs the OpenSim bodies' + (
      f' (worst twist p95: {worst} {m.get("worst_twist_p95_deg", 0):.1f} deg)' if worst else ''),
      fontsize=10)
  axes[0].legend(fontsize=6, ncol=4, loc='upper right')
  fig.tight_layout()
  return _save(fig, path)


def plot_trajectories(trial, path):
  plt = _plt()
  j = trial['joints']
  names = [str(n) for n in j['smpl_names']]
  shown = [n for n in TRAJECTORY_JOINTS if n in names] or names[:4]
  fps = float(j['fps'])
  t = np.arange(len(j['targets'])) / fps
  fig, axes = plt.subplots(len(shown), 3, figsize=(10, 1.5 * len(shown) + 0.6), dpi=90,
                           sharex=True, squeeze=False)
  for row, name in enumerate(shown):
    m = names.index(name)
    valid = j['valid'][:, m]
    for c, axis in enumerate('xyz'):
      ax = axes[row, c]
      _shade_contact(ax, j['contact'], fps)
      ax.plot(t, np.where(valid, j['targets'][:, m, c], np.nan), color=INPUT_COLOUR, lw=1.2,
              label='AddBiomechanics')
      ax.plot(t, j['fitted'][:, m, c], color=FIT_COLOUR, lw=0.9, ls='--', label='fitted SMPL')
      ax.tick_params(labelsize=7)
      if c == 0:
        ax.set_ylabel(f'{name}\n(m)', fontsize=8)
      if row == 0:
        ax.set_title(f'{axis} (SMPL frame, +y up)', fontsize=9)
  axes[0, 0].legend(fontsize=7, loc='best')
  for ax in axes[-1]:
    ax.set_xlabel('time (s)', fontsize=8)
  fig.suptitle('Joint trajectories (shaded: left / right foot contact)', fontsize=10)
  # Fixed margins in inches (tight_layout measures every label: 0.72 -> 0.46 s a figure).
  height = fig.get_figheight()
  fig.subplots_adjust(left=0.085, right=0.99, wspace=0.24, hspace=0.18,
                      top=1.0 - 0.62 / height, bottom=0.45 / height)
  return _save(fig, path)
