"""Meshes of a fit: the shaded surface beside the skeletons (body.png), .obj
frames of the fitted surface and the whole trial as a skinned glTF 2.0
animation (.glb)."""

import os
from typing import List

import jax
import numpy as np

from jaxfit.body.family import expand_poses
from jaxfit.body.model import shaped_joints, skin_frames
from jaxfit.report.animation import _SkeletonView
from jaxfit.report.options import ReportError
from jaxfit.report.plots import _plt, _save
from jaxfit.runtime import compiled
from jaxfit.runtime.files import atomic_write


def full_poses(model, params):
  """[T,J,3] rad: the fitted poses of params.npz ([T,72], the 24-joint fitting
  view) as the model's full pose (SMPL: themselves)."""
  rest = None if model.rest_pose is None else np.asarray(model.rest_pose)
  return expand_poses(np.asarray(params['poses'], np.float64).reshape(-1, 24, 3), rest)


def posed_vertices(model, params, frames):
  """Vertices [len(frames),V,3] m of the fitted surface (LBS + pose correctives)."""
  poses = full_poses(model, params).astype(np.float32)[frames]
  trans = np.asarray(params['trans'], np.float32)[frames]
  betas = np.asarray(params['betas'][:model.num_betas], np.float32)
  model = jax.tree.map(lambda a: jax.device_put(np.asarray(a, np.float32)), model)
  # Through the compiled-program cache (and its store, where the run has one):
  # compiled once per mesh count, not once per trial.
  return np.asarray(compiled.call(skin_frames, (model, betas, poses, trans)))


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
