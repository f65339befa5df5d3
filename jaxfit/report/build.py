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

import json
import os
from typing import Dict, List, Optional

from absl import logging

from jaxfit.demo.body_model import demo_body_path
from jaxfit.demo.builtin import builtin_body_path
from jaxfit.errors import JaxfitInputError
from jaxfit.io.outputs import find_trial_dirs, load_trial, read_summary
from jaxfit.io.smpl_file import load_body_model
from jaxfit.report.animation import contact_sheet, render_animation
from jaxfit.report.html import write_index, write_subject_report
from jaxfit.report.meshes import body_views, write_glb, write_meshes
from jaxfit.report.options import IMAGES, ReportError, ReportOptions
from jaxfit.report.plots import (plot_error_over_time, plot_per_joint, plot_segment_orientations,
                                 plot_trajectories)
from jaxfit.runtime.files import atomic_write, file_sha256


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


def _model_for(output_dir, trial_dirs, model_path):
  """The body model to mesh with: model_path, else the one the fits' config
  names (the demo body when that is empty). Returns (model or None, sha256)."""
  if not model_path:
    for d in trial_dirs:
      config = os.path.join(d, 'config.json')
      if os.path.isfile(config):
        with open(config, encoding='utf-8') as f:
          config = json.load(f)
        model_path = config.get('model_path', '')
        if not model_path:
          body = config.get('body', 'demo')
          model_path = demo_body_path() if body == 'demo' else builtin_body_path(body)
        break
  if not model_path or not os.path.isfile(model_path):
    return None, ''
  return load_body_model(model_path), file_sha256(model_path)


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
    except (ReportError, JaxfitInputError) as e:   # a missing package; missing outputs
      logging.warning('report: %s', e)
      failed.append(f'{d}: {e}')
  subjects = []
  for subject_dir in sorted({os.path.dirname(os.path.abspath(d)) for d in trial_dirs}):
    entries = [e for e in (_reported(d) for d in find_trial_dirs(subject_dir)) if e]
    if entries:
      subjects.append(write_subject_report(subject_dir, entries))
  index = write_index(output_dir, read_summary(output_dir))
  return dict(index=index, subjects=subjects, failed=failed)
