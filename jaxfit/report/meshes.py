"""Meshes of a fit: .obj frames of the fitted surface and the whole trial as a
skinned glTF 2.0 animation (.glb)."""

import os
from typing import List

import jax
import numpy as np

from jaxfit.body.model import SMPL_JOINT_NAMES, shaped_joints, skin_frames
from jaxfit.report.options import ReportError
from jaxfit.runtime import compiled
from jaxfit.runtime.files import atomic_write


def posed_vertices(model, params, frames):
  """Vertices [len(frames),V,3] m of the fitted surface (LBS + pose correctives)."""
  poses = np.asarray(params['poses'], np.float32).reshape(-1, 24, 3)[frames]
  trans = np.asarray(params['trans'], np.float32)[frames]
  betas = np.asarray(params['betas'][:model.num_betas], np.float32)
  model = jax.tree.map(lambda a: jax.device_put(np.asarray(a, np.float32)), model)
  # Through the compiled-program cache (and its store, where the run has one):
  # compiled once per mesh count, not once per trial.
  return np.asarray(compiled.call(skin_frames, (model, betas, poses, trans)))


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

  The mesh is the fitted shape at rest (v_template + shapedirs . betas); 24
  joint nodes carry the per-frame rotations and the root the translation;
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
                    np.float64)                                            # [24,3]
  parents = list(model.parents)
  poses = params['poses'].reshape(-1, 24, 3)
  fps = float(params['mocap_framerate'])
  times = (np.arange(len(poses)) / fps).astype(np.float32)
  weights = np.asarray(model.weights, np.float64)
  top = np.argsort(-weights, axis=1)[:, :4]
  top_w = np.take_along_axis(weights, top, 1)
  top_w /= top_w.sum(1, keepdims=True)
  faces = np.asarray(model.faces).astype(np.uint32)
  local_t = rest - np.where(np.array(parents)[:, None] >= 0, rest[np.maximum(parents, 0)], 0.0)
  root_t = (rest[0] + params['trans']).astype(np.float32)                 # [T,3]
  rotations = _quaternions_xyzw(poses).astype(np.float32)                 # [T,24,4]
  inverse_bind = np.tile(np.eye(4), (24, 1, 1))
  inverse_bind[:, :3, 3] = -rest
  blobs = [
      (v_shaped.astype(np.float32), g.ARRAY_BUFFER, g.FLOAT, 'VEC3'),
      (top.astype(np.uint16), g.ARRAY_BUFFER, g.UNSIGNED_SHORT, 'VEC4'),
      (top_w.astype(np.float32), g.ARRAY_BUFFER, g.FLOAT, 'VEC4'),
      (faces.reshape(-1), g.ELEMENT_ARRAY_BUFFER, g.UNSIGNED_INT, 'SCALAR'),
      # glTF matrices are column-major: write each transposed.
      (inverse_bind.transpose(0, 2, 1).astype(np.float32).reshape(24, 16), None, g.FLOAT, 'MAT4'),
      (times, None, g.FLOAT, 'SCALAR'),
      (root_t, None, g.FLOAT, 'VEC3'),
  ] + [(rotations[:, k], None, g.FLOAT, 'VEC4') for k in range(24)]
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
  joint_nodes = [g.Node(name=SMPL_JOINT_NAMES[k] if k < len(SMPL_JOINT_NAMES) else f'joint{k}',
                        translation=local_t[k].tolist(),
                        children=[c for c in range(24) if parents[c] == k]) for k in range(24)]
  mesh_node = g.Node(name='body', mesh=0, skin=0)
  channels, samplers = [], []
  samplers.append(g.AnimationSampler(input=5, output=6, interpolation='LINEAR'))
  channels.append(g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(node=0, path='translation')))
  for k in range(24):
    samplers.append(g.AnimationSampler(input=5, output=7 + k, interpolation='LINEAR'))
    channels.append(g.AnimationChannel(sampler=k + 1,
                                       target=g.AnimationChannelTarget(node=k, path='rotation')))
  gltf = g.GLTF2(
      asset=g.Asset(generator='jaxfit'), scene=0,
      scenes=[g.Scene(nodes=[0, 24])], nodes=joint_nodes + [mesh_node],
      meshes=[g.Mesh(name='smpl', primitives=[g.Primitive(
          attributes=g.Attributes(POSITION=0, JOINTS_0=1, WEIGHTS_0=2), indices=3)])],
      skins=[g.Skin(joints=list(range(24)), inverseBindMatrices=4, skeleton=0)],
      animations=[g.Animation(name='fit', samplers=samplers, channels=channels)],
      accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(data))])
  gltf.set_binary_blob(bytes(data))
  with atomic_write(path) as tmp:
    gltf.save_binary(tmp)
  return path
