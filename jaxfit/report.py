"""Reports of fits, built from saved outputs (after fitting, never during).

python -m jaxfit.report <output_dir> [--model_path=SMPL.pkl] [--compilation_cache_dir=DIR]

Per trial, in `<subject>/<trial>/report/`:
  per_joint_mpjpe.png    error of every mapped joint (fitted points and raw SMPL joints);
  error_over_time.png    per-frame MPJPE, foot-contact phases shaded;
  trajectories.png       ankles, knees, wrists: AddBiomechanics input vs fit, per axis;
  segment_orientation.png  twist and swing of every paired segment against its OpenSim
                         body over time (files with segment rotations);
  skeleton.gif           side and front views at real speed (first seconds of the trial):
                         input joints and the fitted SMPL skeleton in two colours;
  contact_sheet.png      a few frames of the side view;
  body.png               the fitted surface, shaded, at a few frames, side and front, beside
                         the skeleton views (with the body model the fit used);
  mesh_frame_NNNNN.obj   the fitted SMPL surface (pose correctives included) at chosen frames
                         (SMPL-H / SMPL-X: the full model, hands / jaw / eyes in their neutral pose);
  animation.glb          the whole trial as a skinned glTF 2.0 animation (shape baked in,
                         linear blend skinning without pose correctives): Blender, three.js,
                         any glTF viewer.
Per subject `<subject>/report.html` (self-contained: images embedded; mesh
links relative) and for the run `index.html`: every trial, worst MPJPE first,
sortable, failed trials with their error. Needs `pip install 'jaxfit[report]'`
(matplotlib, pillow, trimesh, pygltflib).
"""

import base64
import dataclasses
import html
import io
import json
import os
from typing import Dict, List, Optional

import jax
import numpy as np
from absl import logging

from jaxfit.body.family import expand_poses
from jaxfit.body.model import SMPL_PARENTS, shaped_joints, skin_vertices
from jaxfit.errors import JaxfitInputError
from jaxfit.io.atomic import atomic_write

FIT_COLOUR, INPUT_COLOUR = '#d62728', '#1f77b4'   # fitted SMPL red, AddBiomechanics blue
TRAJECTORY_JOINTS = ('left_ankle', 'right_ankle', 'left_knee', 'right_knee', 'left_wrist',
                     'right_wrist')


@dataclasses.dataclass(frozen=True)
class ReportOptions:
  """mesh_frames: .obj meshes per trial (evenly spaced, 0 = none);
  animation_s: seconds of the trial the GIF shows (from the start, real speed);
  animation_fps: GIF frame rate; glb: write the glTF animation."""
  mesh_frames: int = 3
  animation_s: float = 6.0
  animation_fps: float = 15.0
  glb: bool = True


class ReportError(Exception):
  """A report that cannot be made (missing package or outputs): one line."""


def _plt():
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ReportError("reports need matplotlib: pip install 'jaxfit[report]'") from None
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


# ----------------------------------------------------------------------------- loading

def load_trial(trial_dir) -> dict:
  """The saved outputs of one trial: params, joints (trajectories), metrics, config."""
  missing = [f for f in ('params.npz', 'joints.npz', 'metrics.json', 'config.json')
             if not os.path.isfile(os.path.join(trial_dir, f))]
  if missing:
    raise ReportError(f'{trial_dir}: missing {", ".join(missing)} (fitted by an older jaxfit? '
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


# ----------------------------------------------------------------------------- geometry

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


# ----------------------------------------------------------------------------- plots

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
  fig.tight_layout()
  return _save(fig, path)


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


# ----------------------------------------------------------------------------- meshes

def full_poses(model, params):
  """[T,J,3] rad: the fitted poses of params.npz ([T,72], the 24-joint fitting
  view) as the model's full pose (SMPL: themselves)."""
  rest = None if model.rest_pose is None else np.asarray(model.rest_pose)
  return expand_poses(np.asarray(params['poses'], np.float64).reshape(-1, 24, 3), rest)


def posed_vertices(model, params, frames):
  """Vertices [len(frames),V,3] m of the fitted surface (LBS + pose correctives)."""
  from jaxfit.fit import compiled  # pylint: disable=import-outside-toplevel
  poses = full_poses(model, params).astype(np.float32)[frames]
  trans = np.asarray(params['trans'], np.float32)[frames]
  betas = np.asarray(params['betas'][:model.num_betas], np.float32)
  model = jax.tree.map(lambda a: jax.device_put(np.asarray(a, np.float32)), model)
  # Through the compiled-program cache (and its store, where the run has one):
  # compiled once per mesh count, not once per trial.
  return np.asarray(compiled.call(_skin_frames, (model, betas, poses, trans)))


@jax.jit
def _skin_frames(model, betas, poses, trans):
  """Vertices [F,V,3] m of poses [F,J,3] rad, trans [F,3] m."""
  return jax.vmap(lambda p, t: skin_vertices(model, betas, p, t))(poses, trans)


SKIN_COLOUR = np.array([0.86, 0.70, 0.58])


def draw_surface(ax, vertices, faces, right, up=(0.0, 1.0, 0.0), colour=SKIN_COLOUR):
  """Draws a mesh (vertices [V,3] m, faces [F,3]) into a 2D axes, projected
  onto (right, up), Lambert-shaded (two-sided: the light and the viewer
  share a side), far triangles first (painter's algorithm)."""
  from matplotlib.collections import PolyCollection  # pylint: disable=import-outside-toplevel
  right, up = np.asarray(right, float), np.asarray(up, float)
  towards_viewer = np.cross(right, up)
  tri = np.asarray(vertices, float)[np.asarray(faces)]                # [F,3,3]
  normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
  light = 0.8 * towards_viewer + 0.45 * up + 0.25 * right
  light /= np.linalg.norm(light)
  shade = 0.22 + 0.78 * np.abs(normal @ light)
  order = np.argsort(tri.mean(1) @ towards_viewer)
  polygons = np.stack([tri @ right, tri @ up], -1)[order]              # [F,3,2]
  colours = np.clip(colour[None] * shade[order, None], 0.0, 1.0)
  ax.add_collection(PolyCollection(polygons, facecolors=colours, edgecolors=colours,
                                   linewidths=0.3))


def body_views(model, trial, path, count=3):
  """body.png: at `count` frames (evenly spaced), the skeleton views (input
  joints and fitted skeleton) beside the fitted surface, shaded; side (top)
  and front (bottom)."""
  plt = _plt()
  j = trial['joints']
  total = len(trial['params']['poses'])
  frames = np.unique(np.linspace(0, total - 1, count + 2)[1:-1].round().astype(int))
  verts = posed_vertices(model, trial['params'], frames)
  faces = np.asarray(model.faces)
  fig, axes = plt.subplots(2, 2 * len(frames), figsize=(3.2 * len(frames), 7.2), dpi=90)
  axes = axes.reshape(2, -1)
  err = trial['metrics'].get('per_frame_mpjpe_mm') or []
  for k, t in enumerate(frames):
    view = _SkeletonView(trial, axes[:, 2 * k], fig, caption=k == 0)
    view.draw(int(t))
    for ax in axes[:, 2 * k]:
      ax.set_xlim(-0.8, 0.8)
    view.label.set_text('')
    centre = j['smpl_joints'][t, 0]
    for row, (axis, label) in enumerate(view.basis):
      ax = axes[row, 2 * k + 1]
      draw_surface(ax, verts[k] - [centre[0], 0.0, centre[2]], faces, axis)
      ax.set_aspect('equal')
      ax.set_xlim(-0.8, 0.8)
      ax.set_ylim(*axes[row, 2 * k].get_ylim())
      ax.axhline(view.ground, color='0.6', lw=0.8)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f'{label}, surface', fontsize=9)
    e = err[t] if t < len(err) and err[t] is not None else float('nan')
    axes[0, 2 * k].set_title(f'side, {t / float(j["fps"]):.2f} s, {e:.1f} mm', fontsize=8)
  name = (trial['metrics'].get('body_model') or {}).get('name', model.name)
  fig.suptitle(f'Fitted surface ({name}, {model.num_vertices} vertices) beside the skeletons',
               fontsize=10)
  fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.05, wspace=0.02, hspace=0.12)
  return _save(fig, path)


def write_meshes(model, trial, directory, count) -> List[str]:
  """mesh_frame_NNNNN.obj at `count` evenly spaced frames."""
  try:
    import trimesh  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ReportError("meshes need trimesh: pip install 'jaxfit[report]'") from None
  total = len(trial['params']['poses'])
  frames = np.unique(np.linspace(0, total - 1, count).round().astype(int))
  faces = np.asarray(model.faces)
  paths = []
  for t, verts in zip(frames, posed_vertices(model, trial['params'], frames)):
    path = os.path.join(directory, f'mesh_frame_{t:05d}.obj')
    with atomic_write(path) as tmp:
      trimesh.Trimesh(verts, faces, process=False).export(tmp, file_type='obj')
    paths.append(path)
  return paths


def _quaternions_xyzw(axis_angle):
  """[...,3] axis-angle -> [...,4] unit quaternions (x, y, z, w)."""
  angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)
  half = 0.5 * angle
  safe = np.where(angle > 1e-12, angle, 1.0)
  xyz = np.where(angle > 1e-12, axis_angle / safe * np.sin(half), 0.5 * axis_angle)
  return np.concatenate([xyz, np.cos(half)], -1)


def write_glb(model, trial, path):
  """The whole trial as one skinned glTF 2.0 animation (.glb).

  The mesh is the fitted shape at rest (v_template + shapedirs . betas); one
  node per joint of the model (24 SMPL, 52 SMPL-H, 55 SMPL-X) carries the
  per-frame rotations and the root the translation;
  vertices follow by linear blend skinning (4 strongest weights of each
  vertex; SMPL's pose correctives are not representable in glTF).
  """
  try:
    import pygltflib as g  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ReportError("glTF export needs pygltflib: pip install 'jaxfit[report]'") from None
  params = trial['params']
  betas = np.asarray(params['betas'][:model.num_betas], np.float64)
  v_shaped = np.asarray(model.v_template, np.float64) + np.einsum(
      'vcb,b->vc', np.asarray(model.shapedirs, np.float64), betas)
  rest = np.asarray(shaped_joints(model, np.asarray(betas, model.J_template.dtype)),
                    np.float64)                                            # [J,3]
  parents = list(model.parents)
  num_j = len(parents)
  names = tuple(model.joint_names)
  poses = full_poses(model, params)                                        # [T,J,3]
  fps = float(params['mocap_framerate'])
  times = (np.arange(len(poses)) / fps).astype(np.float32)
  weights = np.asarray(model.weights, np.float64)
  top = np.argsort(-weights, axis=1)[:, :4]
  top_w = np.take_along_axis(weights, top, 1)
  top_w /= top_w.sum(1, keepdims=True)
  faces = np.asarray(model.faces).astype(np.uint32)
  local_t = rest - np.where(np.array(parents)[:, None] >= 0, rest[np.maximum(parents, 0)], 0.0)
  root_t = (rest[0] + params['trans']).astype(np.float32)                 # [T,3]
  rotations = _quaternions_xyzw(poses).astype(np.float32)                 # [T,J,4]
  inverse_bind = np.tile(np.eye(4), (num_j, 1, 1))
  inverse_bind[:, :3, 3] = -rest
  blobs = [
      (v_shaped.astype(np.float32), g.ARRAY_BUFFER, g.FLOAT, 'VEC3'),
      (top.astype(np.uint16), g.ARRAY_BUFFER, g.UNSIGNED_SHORT, 'VEC4'),
      (top_w.astype(np.float32), g.ARRAY_BUFFER, g.FLOAT, 'VEC4'),
      (faces.reshape(-1), g.ELEMENT_ARRAY_BUFFER, g.UNSIGNED_INT, 'SCALAR'),
      # glTF matrices are column-major: write each transposed.
      (inverse_bind.transpose(0, 2, 1).astype(np.float32).reshape(num_j, 16), None, g.FLOAT, 'MAT4'),
      (times, None, g.FLOAT, 'SCALAR'),
      (root_t, None, g.FLOAT, 'VEC3'),
  ] + [(rotations[:, k], None, g.FLOAT, 'VEC4') for k in range(num_j)]
  data, views, accessors = bytearray(), [], []
  for array, target, component, kind in blobs:
    array = np.ascontiguousarray(array)
    offset = len(data)
    data += array.tobytes()
    data += b'\0' * (-len(data) % 4)
    views.append(g.BufferView(buffer=0, byteOffset=offset, byteLength=array.nbytes, target=target))
    accessor = g.Accessor(bufferView=len(views) - 1, componentType=component,
                          count=len(array), type=kind)
    if kind in ('VEC3', 'SCALAR') and component == g.FLOAT:
      flat = array.reshape(len(array), -1)
      accessor.min, accessor.max = flat.min(0).tolist(), flat.max(0).tolist()
    accessors.append(accessor)
  joint_nodes = [g.Node(name=names[k] if k < len(names) else f'joint{k}',
                        translation=local_t[k].tolist(),
                        children=[c for c in range(num_j) if parents[c] == k]) for k in range(num_j)]
  mesh_node = g.Node(name='body', mesh=0, skin=0)
  channels, samplers = [], []
  samplers.append(g.AnimationSampler(input=5, output=6, interpolation='LINEAR'))
  channels.append(g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(node=0, path='translation')))
  for k in range(num_j):
    samplers.append(g.AnimationSampler(input=5, output=7 + k, interpolation='LINEAR'))
    channels.append(g.AnimationChannel(sampler=k + 1,
                                       target=g.AnimationChannelTarget(node=k, path='rotation')))
  gltf = g.GLTF2(
      asset=g.Asset(generator='jaxfit'), scene=0,
      scenes=[g.Scene(nodes=[0, num_j])], nodes=joint_nodes + [mesh_node],
      meshes=[g.Mesh(name='smpl', primitives=[g.Primitive(
          attributes=g.Attributes(POSITION=0, JOINTS_0=1, WEIGHTS_0=2), indices=3)])],
      skins=[g.Skin(joints=list(range(num_j)), inverseBindMatrices=4, skeleton=0)],
      animations=[g.Animation(name='fit', samplers=samplers, channels=channels)],
      accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(data))])
  gltf.set_binary_blob(bytes(data))
  with atomic_write(path) as tmp:
    gltf.save_binary(tmp)
  return path


# ----------------------------------------------------------------------------- HTML

def _embed(path):
  mime = {'.png': 'image/png', '.gif': 'image/gif'}[os.path.splitext(path)[1]]
  with open(path, 'rb') as f:
    return f'data:{mime};base64,' + base64.b64encode(f.read()).decode()


def _fmt(v, digits=2):
  if v is None:
    return '-'
  if isinstance(v, float):
    return f'{v:.{digits}f}'
  return html.escape(str(v))


_STYLE = """<style>body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3;cursor:pointer}td:first-child,th:first-child,td.l{text-align:left}
img{max-width:100%;display:block;margin:.5em 0}.bad{color:#b00}pre{background:#f7f7f7;padding:.6em;font-size:12px;overflow:auto}
</style>"""


def _trial_section(trial, images, meshes, subject_dir):
  m = trial['metrics']
  name = m.get('trial') or os.path.basename(trial['dir'])
  rows = [('frames', m.get('frames')), ('fps', m.get('fps')),
          ('MPJPE mm (raw SMPL joints, comparable joints)', m.get('mpjpe_mm')),
          ('PA-MPJPE mm', m.get('pa_mpjpe_mm')),
          ('fit residual mm (joints + offsets, all mapped)', m.get('fit_residual_mm')),
          ('PCK@50 / 100 / 150 mm', ' / '.join(_fmt(m.get(f'pck_{k}mm'), 3) for k in (50, 100, 150))),
          ('max |beta|', m.get('max_abs_beta')),
          ('worst segment twist p95 deg', f'{_fmt(m.get("worst_twist_p95_deg"))} '
                                           f'({m.get("worst_twist_segment") or "-"})'),
          ('jitter fit / input mm/frame^3', f'{_fmt(m.get("jitter_fit_mm_per_frame3"))} / '
                                            f'{_fmt(m.get("jitter_target_mm_per_frame3"))}'),
          ('contact source', m.get('contact_source')), ('joint centres', m.get('joint_centre_source')),
          ('body model', (m.get('body_model') or {}).get('name'))]
  times = m.get('time_s', {})
  parts = [f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>']
  if m.get('warning'):
    parts.append(f'<p class="bad">{html.escape(m["warning"])}</p>')
  if m.get('note'):
    parts.append(f'<p>{html.escape(m["note"])}</p>')
  parts.append('<table>' + ''.join(f'<tr><td class="l">{html.escape(k)}</td><td>{_fmt(v)}</td></tr>'
                                   for k, v in rows) + '</table>')
  parts.append('<p>Time (s): ' + ', '.join(f'{html.escape(k)} {_fmt(v)}' for k, v in times.items())
               + '</p>')
  if m.get('offsets_mm'):
    parts.append('<p>Learned correspondence offsets (mm, in the SMPL joint\'s frame): '
                 + ', '.join(f'{html.escape(k)} {v}' for k, v in m['offsets_mm'].items()) + '</p>')
  for warning in m.get('offset_warnings', ()):
    parts.append(f'<p class="bad">{html.escape(warning)}</p>')
  for key in ('per_joint_mpjpe', 'error_over_time', 'trajectories', 'segment_orientation',
              'skeleton', 'body', 'contact_sheet'):
    if key in images:
      parts.append(f'<img alt="{key}" src="{_embed(images[key])}">')
  if meshes:
    links = ', '.join(f'<a href="{html.escape(os.path.relpath(p, subject_dir))}">'
                      f'{html.escape(os.path.basename(p))}</a>' for p in meshes)
    parts.append(f'<p>Meshes: {links}</p>')
  parts.append(f'<details><summary>config</summary><pre>'
               f'{html.escape(json.dumps(trial["config"], indent=1, sort_keys=True))}</pre></details>')
  return '\n'.join(parts)


IMAGES = ('per_joint_mpjpe.png', 'error_over_time.png', 'trajectories.png', 'skeleton.gif',
          'contact_sheet.png', 'body.png', 'segment_orientation.png')


def render_trial(trial_dir, model, model_sha256, options: ReportOptions):
  """Writes the plots, animation and meshes of one trial into <trial>/report/
  (meshes only with the body model it was fitted with)."""
  trial = load_trial(trial_dir)
  out = os.path.join(trial_dir, 'report')
  os.makedirs(out, exist_ok=True)
  for name in os.listdir(out):   # meshes of an earlier report may be of other frames
    if name.startswith('mesh_frame_') or name == IMAGES[5]:
      os.remove(os.path.join(out, name))
  plot_per_joint(trial, os.path.join(out, IMAGES[0]))
  plot_error_over_time(trial, os.path.join(out, IMAGES[1]))
  plot_trajectories(trial, os.path.join(out, IMAGES[2]))
  render_animation(trial, os.path.join(out, IMAGES[3]), options)
  contact_sheet(trial, os.path.join(out, IMAGES[4]))
  if 'segment_twist_deg' in trial['joints']:
    plot_segment_orientations(trial, os.path.join(out, 'segment_orientation.png'))
  notes = []
  fitted_with = str(trial['params'].get('model_sha256', ''))
  if model is None:
    notes.append('no meshes: the body model file was not found (pass --model_path)')
  elif fitted_with != model_sha256:
    notes.append(f'no meshes: fitted with body model {fitted_with[:12]}..., '
                 f'not the given {model_sha256[:12]}...')
  else:
    body_views(model, trial, os.path.join(out, IMAGES[5]))
    if options.mesh_frames:
      write_meshes(model, trial, out, options.mesh_frames)
    if options.glb:
      write_glb(model, trial, os.path.join(out, 'animation.glb'))
  with atomic_write(os.path.join(out, 'notes.json')) as tmp:
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(notes, f)


def _reported(trial_dir) -> Optional[dict]:
  """What <trial>/report/ holds (for the subject page), or None."""
  out = os.path.join(trial_dir, 'report')
  if not os.path.isfile(os.path.join(out, IMAGES[0])):
    return None
  images = {os.path.splitext(n)[0]: os.path.join(out, n) for n in IMAGES
            if os.path.isfile(os.path.join(out, n))}
  meshes = sorted(os.path.join(out, n) for n in os.listdir(out) if n.endswith(('.obj', '.glb')))
  notes = []
  if os.path.isfile(os.path.join(out, 'notes.json')):
    with open(os.path.join(out, 'notes.json'), encoding='utf-8') as f:
      notes = json.load(f)
  return dict(trial=load_trial(trial_dir), images=images, meshes=meshes, notes=notes)


def write_subject_report(subject_dir, reports: List[dict]):
  """<subject>/report.html: every reported trial of the subject, self-contained."""
  subject = os.path.basename(os.path.normpath(subject_dir))
  body = [f'<h1>{html.escape(subject)}</h1>',
          '<p>' + ' | '.join(f'<a href="#{html.escape(r["trial"]["metrics"].get("trial", ""))}">'
                             f'{html.escape(r["trial"]["metrics"].get("trial", ""))}</a>'
                             for r in reports) + '</p>']
  for r in reports:
    body.append(_trial_section(r['trial'], r['images'], r['meshes'], subject_dir))
    body += [f'<p class="bad">{html.escape(n)}</p>' for n in r['notes']]
  return _write_page(os.path.join(subject_dir, 'report.html'), f'jaxfit: {subject}', body)


def _write_page(path, title, body, script=''):
  """A self-contained HTML page (atomically)."""
  with atomic_write(path) as tmp:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
              f'</title>{_STYLE}</head><body>{"".join(body)}{script}</body></html>')
  return path


_SORT_SCRIPT = """<script>
document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => {
  const col = th.cellIndex, body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
  const dir = th.dataset.dir = th.dataset.dir === 'desc' ? 'asc' : 'desc';
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent;
                     const n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (dir === 'asc' ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}));
</script>"""


def write_index(output_dir, rows: List[dict]):
  """<output_dir>/index.html: the run's trials, worst MPJPE first, sortable;
  failed trials first, with their error. rows: summary rows (jaxfit.dataset)."""
  ok = sorted((r for r in rows if r.get('status') == 'ok'),
              key=lambda r: -(r.get('mpjpe_mm') or 0.0))
  failed = [r for r in rows if r.get('status') != 'ok']
  head = ('<tr><th>subject</th><th>trial</th><th>frames</th><th>MPJPE mm</th><th>PA-MPJPE mm</th>'
          '<th>PCK@50</th><th>PCK@100</th><th>fit residual mm</th><th>max |beta|</th>'
          '<th>fit s</th></tr>')
  lines = []
  for r in ok:
    link = f'{r["subject"]}/report.html'
    has = os.path.isfile(os.path.join(output_dir, link))
    trial = html.escape(r['trial'])
    cell = (f'<a href="{html.escape(link)}#{trial}">{trial}</a>' if has else trial)
    lines.append(f'<tr><td>{html.escape(r["subject"])}</td><td class="l">{cell}</td>'
                 + ''.join(f'<td>{_fmt(r.get(k), d)}</td>' for k, d in
                           (('frames', 0), ('mpjpe_mm', 2), ('pa_mpjpe_mm', 2), ('pck_50mm', 3),
                            ('pck_100mm', 3), ('fit_residual_mm', 2), ('max_abs_beta', 2),
                            ('fit_s', 2))) + '</tr>')
  body = ['<h1>jaxfit run</h1>',
          f'<p>{len(ok)} trials fitted, {len(failed)} failed. Click a column to sort.</p>']
  if failed:
    body.append('<h2>Failed</h2><table><thead><tr><th>subject</th><th>trial</th><th>status</th>'
                '<th>error</th></tr></thead><tbody>'
                + ''.join(f'<tr><td>{html.escape(str(r["subject"]))}</td><td class="l">'
                          f'{html.escape(str(r["trial"]))}</td><td>{html.escape(str(r["status"]))}</td>'
                          f'<td class="l bad">{html.escape(str(r.get("error") or ""))}</td></tr>'
                          for r in failed) + '</tbody></table>')
  body.append(f'<h2>Trials (worst MPJPE first)</h2><table><thead>{head}</thead><tbody>'
              + ''.join(lines) + '</tbody></table>')
  return _write_page(os.path.join(output_dir, 'index.html'), 'jaxfit run', body, _SORT_SCRIPT)


def _model_for(output_dir, trial_dirs, model_path):
  """The body model to mesh with: model_path, else the one the fits' config
  names (the demo body when that is empty). Returns (model or None, sha256)."""
  # pylint: disable=import-outside-toplevel
  from jaxfit.app import file_sha256
  from jaxfit.io.smpl_file import load_body_model
  if not model_path:
    for d in trial_dirs:
      config = os.path.join(d, 'config.json')
      if os.path.isfile(config):
        with open(config, encoding='utf-8') as f:
          config = json.load(f)
        model_path = config.get('model_path', '')
        if not model_path:
          from jaxfit.body.open_body import builtin_body_path
          body = config.get('body', 'demo')
          if body == 'demo':
            from jaxfit.demo.body_model import demo_body_path
            model_path = demo_body_path()
          else:
            model_path = builtin_body_path(body)
        break
  if not model_path or not os.path.isfile(model_path):
    return None, ''
  return load_body_model(model_path), file_sha256(model_path)


def summary_rows(output_dir) -> List[dict]:
  """The run's rows from summary.json, else one row per trial found on disk."""
  path = os.path.join(output_dir, 'summary.json')
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      return json.load(f)['trials']
  from jaxfit.dataset import summary_row  # pylint: disable=import-outside-toplevel
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


def build_report(output_dir, trial_dirs: Optional[List[str]] = None, model_path='',
                 options: ReportOptions = ReportOptions()) -> Dict[str, str]:
  """Reports the given trial folders (default: all under output_dir), rewrites
  their subjects' report.html (with every reported trial of the subject) and
  the run's index.html. Returns dict(index=path, subjects=[paths],
  failed=[trial dir: reason])."""
  trial_dirs = find_trial_dirs(output_dir) if trial_dirs is None else list(trial_dirs)
  model, model_sha = _model_for(output_dir, trial_dirs, model_path) if trial_dirs else (None, '')
  failed = []
  for d in trial_dirs:
    try:
      render_trial(d, model, model_sha, options)
    except ReportError as e:
      logging.warning('report: %s', e)
      failed.append(f'{d}: {e}')
  subjects = []
  for subject_dir in sorted({os.path.dirname(os.path.abspath(d)) for d in trial_dirs}):
    entries = [e for e in (_reported(d) for d in find_trial_dirs(subject_dir)) if e]
    if entries:
      subjects.append(write_subject_report(subject_dir, entries))
  index = write_index(output_dir, summary_rows(output_dir))
  return dict(index=index, subjects=subjects, failed=failed)


def main(argv):
  """python -m jaxfit.report <output_dir> [--model_path=...]"""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if len(argv) != 2:
    raise SystemExit('usage: python -m jaxfit.report <output_dir> [--model_path=SMPL.pkl]')
  output_dir = argv[1]
  if not os.path.isdir(output_dir):
    logging.error('%s: no such output folder', output_dir)
    raise SystemExit(1)
  from jaxfit.app import use_executable_store  # pylint: disable=import-outside-toplevel
  use_executable_store(flags.FLAGS.compilation_cache_dir)   # the meshes' program
  try:
    result = build_report(output_dir, model_path=flags.FLAGS.model_path)
  except (ReportError, JaxfitInputError) as e:
    logging.error('%s', e)
    raise SystemExit(1) from None
  logging.info('report: %s (%d subjects)', result['index'], len(result['subjects']))
  if result['failed']:
    raise SystemExit(1)


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=ungrouped-imports
  flags.DEFINE_string('model_path', '', 'body model for meshes (default: the one the fits used)')
  flags.DEFINE_string('compilation_cache_dir', '',
                      "store of compiled programs ('' = ~/.cache/jaxfit/xla, 'none' = off)")
  app.run(main)
