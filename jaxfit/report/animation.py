"""The skeleton animation (GIF) and contact sheet: input joints and the fitted
SMPL skeleton, side and front views."""

import numpy as np

from jaxfit.body.model import SMPL_PARENTS
from jaxfit.report.options import ReportOptions
from jaxfit.report.plots import FIT_COLOUR, INPUT_COLOUR, _plt, _save, view_axes
from jaxfit.runtime.files import atomic_write


class _SkeletonView:
  """Side and front views of input joints and the SMPL skeleton, frame by frame
  (one line collection per skeleton and view, so a frame draws in milliseconds)."""

  LEGEND = 'blue: AddBiomechanics joints   red: fitted SMPL skeleton'

  def __init__(self, trial, axes, fig, caption=True):
    from matplotlib.collections import LineCollection  # pylint: disable=import-outside-toplevel
    self.j, self.fig = trial['joints'], fig
    forward, lateral = view_axes(self.j)
    self.basis = [(forward, 'side'), (lateral, 'front')]
    everything = np.concatenate([self.j['targets'].reshape(-1, 3),
                                 self.j['smpl_joints'].reshape(-1, 3)])
    self.ground = float(np.nanmin(everything[:, 1]))
    self.top = float(np.nanmax(everything[:, 1]))
    self.bones = np.asarray(self.j['bones'], int).reshape(-1, 2)
    self.children = np.array([c for c, p in enumerate(SMPL_PARENTS) if p >= 0])
    self.parents = np.array([SMPL_PARENTS[c] for c in self.children])
    self.artists = []
    for ax, (_, label) in zip(axes, self.basis):
      ax.set_aspect('equal')
      ax.set_xlim(-1.0, 1.0)
      ax.set_ylim(self.ground - 0.05, max(self.top, self.ground + 1.0) + 0.1)
      ax.axhline(self.ground, color='0.6', lw=0.8)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(label, fontsize=9)
      smpl = ax.add_collection(LineCollection([], colors=FIT_COLOUR, linewidths=2,
                                              capstyle='round'))
      inp = ax.add_collection(LineCollection([], colors=INPUT_COLOUR, linewidths=1.2))
      dots = ax.plot([], [], 'o', color=INPUT_COLOUR, ms=3)[0]
      self.artists.append((smpl, inp, dots))
    self.label = fig.text(0.01, 0.01, '', fontsize=8)
    if caption:
      fig.text(0.99, 0.01, self.LEGEND, fontsize=8, ha='right')

  def draw(self, t):
    """Poses the artists at frame t."""
    centre = self.j['smpl_joints'][t, 0]
    smpl_j, targets, valid = self.j['smpl_joints'][t], self.j['targets'][t], self.j['valid'][t]
    both = valid[self.bones[:, 0]] & valid[self.bones[:, 1]] if len(self.bones) else []
    for (axis, _), (smpl, inp, dots) in zip(self.basis, self.artists):
      flat = lambda points: np.stack([(points - centre) @ axis, points[:, 1]], -1)  # [N,2]
      s, p = flat(smpl_j), flat(targets)
      smpl.set_segments(np.stack([s[self.parents], s[self.children]], 1))
      bones = self.bones[both] if len(self.bones) else self.bones
      inp.set_segments(np.stack([p[bones[:, 0]], p[bones[:, 1]]], 1) if len(bones) else [])
      dots.set_data(p[valid, 0], p[valid, 1])
    self.label.set_text(f'frame {t}   t = {t / float(self.j["fps"]):.2f} s')

  def _moving(self):
    return [a for artists in self.artists for a in artists] + [self.label]

  def image(self, t):
    """RGB [H,W,3] of frame t. The still parts are drawn once; each frame
    redraws only the skeletons and the frame label over a copy of them."""
    canvas = self.fig.canvas
    if getattr(self, '_background', None) is None:
      for artist in self._moving():
        artist.set_visible(False)
      canvas.draw()
      self._background = canvas.copy_from_bbox(self.fig.bbox)
      for artist in self._moving():
        artist.set_visible(True)
    self.draw(t)
    canvas.restore_region(self._background)
    for artist in self._moving():
      self.fig.draw_artist(artist)
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_animation(trial, path, options: ReportOptions):
  """skeleton.gif: side and front views at real speed. Returns (path, size)."""
  plt = _plt()
  from PIL import Image  # pylint: disable=import-outside-toplevel
  fps = float(trial['joints']['fps'])
  count = len(trial['joints']['targets'])
  step = max(1, int(round(fps / options.animation_fps)))
  frames = np.arange(0, min(count, int(options.animation_s * fps) or 1), step)
  fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6), dpi=80)
  view = _SkeletonView(trial, axes, fig)
  fig.subplots_adjust(left=0.02, right=0.98, top=0.92, bottom=0.07, wspace=0.05)
  images = [Image.fromarray(view.image(int(t))) for t in frames]
  plt.close(fig)
  palette = images[0].quantize(colors=64)
  images = [im.quantize(palette=palette) for im in images]
  with atomic_write(path) as tmp:
    images[0].save(tmp, format='GIF', save_all=True, append_images=images[1:],
                   duration=int(round(1000 * step / fps)), loop=0)
  return path, images[0].size


def contact_sheet(trial, path, count=6):
  plt = _plt()
  j = trial['joints']
  frames = np.linspace(0, len(j['targets']) - 1, count).round().astype(int)
  fig, axes = plt.subplots(2, count, figsize=(1.6 * count, 4.6), dpi=80)
  err = trial['metrics']['per_frame_mpjpe_mm']
  for k, t in enumerate(frames):
    view = _SkeletonView(trial, axes[:, k], fig, caption=k == 0)
    view.draw(int(t))
    view.label.set_text('')
    axes[0, k].set_title(f'side, {t / float(j["fps"]):.2f} s, {err[t] or 0:.1f} mm', fontsize=8)
  fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.06, wspace=0.02, hspace=0.1)
  return _save(fig, path)
