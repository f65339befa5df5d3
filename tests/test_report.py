"""Reports: a tiny trial fitted and reported by the CLI, then everything it
wrote opened and checked (images decode at their size, meshes have the
model's counts, the glTF animation skins like SMPL, HTML links resolve)."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('matplotlib')
trimesh = pytest.importorskip('trimesh')
gltf = pytest.importorskip('pygltflib')
from PIL import Image  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 60


def _run(module_args):
  return subprocess.run([sys.executable, '-m', *module_args], cwd=ROOT, capture_output=True,
                        text=True, timeout=900)


@pytest.fixture(scope='module')
def reported(demo_b3d, executable_cache, tmp_path_factory):
  """A folder run with a good subject (two short trials) and a broken file."""
  data = tmp_path_factory.mktemp('data')
  os.symlink(demo_b3d[0], data / 'subject01.b3d')
  (data / 'broken.b3d').write_bytes(b'\x00garbage' * 64)
  out = tmp_path_factory.mktemp('report') / 'out'
  proc = _run(['jaxfit.main', '--config=configs/default.py', f'--config.input={data}',
               f'--config.output_dir={out}', f'--config.max_frames={FRAMES}',
               f'--config.compilation_cache_dir={executable_cache}', '--config.report=true',
               '--config.body=demo',   # the mannequin: <= 4 weights a vertex, so the glTF is exact
               '--config.report_mesh_frames=2'])
  assert proc.returncode == 1, proc.stderr[-3000:]   # the broken file
  assert 'Traceback' not in proc.stderr
  return out


def test_body_views_show_the_shaded_surface(reported):
  """body.png: skeleton views beside the fitted surface, Lambert-shaded in a
  skin tone (many distinct shades of it: a lit surface, not a flat fill)."""
  with Image.open(reported / 'subject01' / 'walk' / 'report' / 'body.png') as im:
    rgb = np.asarray(im.convert('RGB'), float)
  skin = ((rgb[..., 0] > rgb[..., 1] + 10) & (rgb[..., 1] > rgb[..., 2] + 5)
          & (rgb.sum(-1) > 120) & (rgb.sum(-1) < 720))
  assert skin.mean() > 0.01, skin.mean()
  assert len(np.unique(rgb[skin].astype(int) // 8, axis=0)) > 30
  html_text = (reported / 'subject01' / 'report.html').read_text()
  assert 'alt="body"' in html_text


def _links(html_text):
  return re.findall(r'(?:href|src)="([^"]+)"', html_text)


def test_images_decode_at_their_size(reported):
  report = reported / 'subject01' / 'walk' / 'report'
  sizes = {'per_joint_mpjpe.png': (800, 320), 'error_over_time.png': (800, 260),
           'skeleton.gif': (512, 288), 'contact_sheet.png': (768, 368)}
  for name, size in sizes.items():
    with Image.open(report / name) as im:
      im.load()
      assert im.size == size, name
  with Image.open(report / 'trajectories.png') as im:
    im.load()
    assert im.size[0] == 900 and im.size[1] > 300
  with Image.open(report / 'skeleton.gif') as gif:
    # 100 Hz trial, 15 frames/s GIF: every 7th frame, shown for 70 ms (real speed).
    assert gif.n_frames == len(range(0, FRAMES, 7)) and gif.info['duration'] == 70


def test_meshes_have_the_models_counts(reported, demo_model):
  report = reported / 'subject01' / 'run' / 'report'
  objs = sorted(p for p in os.listdir(report) if p.endswith('.obj'))
  assert objs == ['mesh_frame_00000.obj', f'mesh_frame_{FRAMES - 1:05d}.obj']
  for name in objs:
    mesh = trimesh.load(report / name, process=False)
    assert mesh.vertices.shape == (demo_model.num_vertices, 3)
    assert mesh.faces.shape == np.asarray(demo_model.faces).shape


def _glb_vertices(path, frame):
  """Linear blend skinning of the .glb at one animation frame, in NumPy."""
  g = gltf.GLTF2().load(str(path))
  blob = g.binary_blob()

  def read(index):
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    dtype = {gltf.FLOAT: np.float32, gltf.UNSIGNED_SHORT: np.uint16,
             gltf.UNSIGNED_INT: np.uint32}[acc.componentType]
    width = {'SCALAR': 1, 'VEC3': 3, 'VEC4': 4, 'MAT4': 16}[acc.type]
    return np.frombuffer(blob, dtype, acc.count * width, view.byteOffset).reshape(acc.count, width)

  prim = g.meshes[0].primitives[0]
  rest = read(prim.attributes.POSITION).astype(np.float64)
  joints, weights = read(prim.attributes.JOINTS_0), read(prim.attributes.WEIGHTS_0)
  inverse_bind = read(g.skins[0].inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
  local = {k: np.eye(4) for k in range(24)}
  for k in range(24):
    local[k][:3, 3] = g.nodes[k].translation
  for channel in g.animations[0].channels:
    values = read(g.animations[0].samplers[channel.sampler].output)[frame]
    node = channel.target.node
    if channel.target.path == 'translation':
      local[node][:3, 3] = values
    else:
      x, y, z, w = values
      local[node][:3, :3] = np.array([
          [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
          [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
          [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
  world = {}
  for k in range(24):   # parents come before children in SMPL's order
    parent = next((p for p in range(24) if k in (g.nodes[p].children or [])), None)
    world[k] = local[k] if parent is None else world[parent] @ local[k]
  skin = np.stack([world[k] @ inverse_bind[k] for k in range(24)])
  homogeneous = np.concatenate([rest, np.ones((len(rest), 1))], 1)
  per_joint = np.einsum('vkij,vj->vki', skin[joints.astype(int)], homogeneous)[..., :3]
  return (per_joint * weights[..., None]).sum(1), g


def test_glb_animation_skins_like_smpl(reported, demo_model):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxfit.body.model import skin_vertices  # pylint: disable=import-outside-toplevel
  trial = reported / 'subject01' / 'walk'
  with np.load(trial / 'params.npz') as p:
    betas, poses, trans = p['betas'], p['poses'].reshape(-1, 24, 3), p['trans']
  frame = 37
  glb, g = _glb_vertices(trial / 'report' / 'animation.glb', frame)
  assert g.accessors[g.animations[0].samplers[0].input].count == FRAMES
  assert len(glb) == demo_model.num_vertices
  # SMPL's LBS without the pose correctives (which glTF cannot express); the
  # demo body's weights are spread over at most 4 joints, so this is exact.
  lbs = dataclasses.replace(demo_model, posedirs=jnp.zeros_like(demo_model.posedirs))
  expected = np.asarray(skin_vertices(lbs, jnp.asarray(betas, jnp.float32),
                                      jnp.asarray(poses[frame], jnp.float32),
                                      jnp.asarray(trans[frame], jnp.float32)))
  assert np.abs(glb - expected).max() < 2e-4


def test_html_references_only_files_that_exist(reported):
  index = (reported / 'index.html').read_text()
  subject_page = reported / 'subject01' / 'report.html'
  text = subject_page.read_text()
  for link in _links(index):
    target, _, anchor = link.partition('#')
    assert (reported / target).is_file(), link
    if anchor:
      assert f'id="{anchor}"' in (reported / target).read_text()
  links = _links(text)
  assert sum(l.startswith('data:image/png;base64,') for l in links) == 12   # 6 per trial
  assert sum(l.startswith('data:image/gif;base64,') for l in links) == 2
  files = [l for l in links if not l.startswith(('data:', '#'))]
  assert len(files) == 2 * 3   # two meshes and the animation per trial
  for link in files:
    assert (subject_page.parent / link).is_file(), link


def test_index_lists_worst_first_and_the_failure(reported):
  index = (reported / 'index.html').read_text()
  assert 'broken.b3d' in index and 'Failed' in index
  summary = json.loads((reported / 'summary.json').read_text())['trials']
  ok = sorted((r for r in summary if r['status'] == 'ok'), key=lambda r: -r['mpjpe_mm'])
  positions = [index.index(f'#{r["trial"]}"') for r in ok]
  assert positions == sorted(positions)


def test_report_later_from_saved_outputs(reported, executable_cache, tmp_path):
  copy = tmp_path / 'out'
  shutil.copytree(reported, copy)
  for trial in ('walk', 'run'):
    shutil.rmtree(copy / 'subject01' / trial / 'report')
  (copy / 'index.html').unlink()
  proc = _run(['jaxfit.report', str(copy), f'--compilation_cache_dir={executable_cache}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (copy / 'index.html').is_file()
  for trial in ('walk', 'run'):
    assert len(os.listdir(copy / 'subject01' / trial / 'report')) == 12   # 7 images, 2 meshes, animation.glb, notes.json
    assert (copy / 'subject01' / trial / 'report' / 'segment_orientation.png').is_file()
