"""The staged fitting pipeline of the reference, on one compiled Adam core.

  1. init:     (closed-form shape) betas from the distances of rigidly linked
               joints, which do not depend on pose; Kabsch root orientation from
               the pelvis joints; then per-frame IK of all frames at once, by
               Levenberg-Marquardt (default) or Adam (the reference);
  2. shape:    (closed-form) least-squares betas for the fitted rotations of a
               sample of frames, alternated with LM on the sample, then every
               frame re-solved; or (the reference) Adam on betas and the
               sample's poses;
  3. pose:     per-frame refinement with Adam: `sequential` runs frame by frame
               (T blocks of 1 frame), each tied to the previous frame;
               `simultaneous` optimises all frames in one block;
  4. sequence: Adam on all frames jointly with bone-length, smoothness and
               contact terms; stages 3+4 repeat `max_passes` times.
Pure: arrays in, arrays out; no file I/O.
"""

import dataclasses
import time
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.body.model import (SMPL_JOINT_NAMES, SMPL_PARENTS, BodyModel, forward_kinematics,
                               joint_model, shaped_joints)
from jaxfit.body.rotation import matrix_to_axis_angle
from jaxfit.config import Settings
from jaxfit.data import JointMapping, Trial, contact_from_kinematics, opensim_to_smpl, resolve_mapping
from jaxfit.errors import MotionFileError
from jaxfit.fit.core import empty_anchor, fit_blocks
from jaxfit.fit import compiled
from jaxfit.fit.init import (rigid_pairs, root_initialisation_jit, shape_from_distances_jit,
                             solve_betas_jit)
from jaxfit.fit.lm import lm_frames
from jaxfit.fit.types import LOSS_TERMS, FitParams, FitStructure, LossWeights, StageHyper, Targets

FOOT_JOINTS = {'left': ('left_ankle', 'left_foot'), 'right': ('right_ankle', 'right_foot')}
LM_CHUNK = 128  # frames per Levenberg-Marquardt call (independent frames)


@dataclasses.dataclass(frozen=True)
class PreparedTrial:
  """A trial ready to fit (SMPL frame, mapped joints only, padded to T_pad).

  targets [T_pad,M,3] m (gaps: interpolated, low weight; 0 where never seen);
  filled [T_pad,M,3] gaps linearly interpolated (for initialisation);
  valid [T,M] observed (unpadded);
  weight [T_pad,M]; exists [T_pad];
  contact [T_pad,2] (left, right) float; num_frames: real frames T.
  """
  trial: Trial
  mapping: JointMapping
  structure: FitStructure
  targets: np.ndarray
  filled: np.ndarray
  valid: np.ndarray
  weight: np.ndarray
  exists: np.ndarray
  contact: np.ndarray
  contact_source: str
  num_frames: int
  num_valid_frames: int

  @property
  def init_weight(self):
    """[T_pad,M] for closed-form initialisation: every real frame's gap-filled
    joints, but never a joint the trial never observed (its values are stand-ins)."""
    return self.exists[:, None] * self.valid.any(0)[None]


def mapped_bones(smpl_index):
  """(parent, child) pairs over mapped joints: each mapped joint's nearest
  mapped SMPL ancestor is its bone parent."""
  position = {j: m for m, j in enumerate(smpl_index)}
  bones = []
  for m, j in enumerate(smpl_index):
    p = SMPL_PARENTS[j]
    while p >= 0 and p not in position:
      p = SMPL_PARENTS[p]
    if p >= 0:
      bones.append((position[p], m))
  return tuple(bones)


def _fill_gaps(values, valid):
  """Linear interpolation over time of invalid samples. [T,M,3], [T,M]."""
  out = values.copy()
  t = np.arange(len(values))
  for m in range(values.shape[1]):
    ok = valid[:, m]
    if ok.all() or not ok.any():
      continue
    for c in range(3):
      out[~ok, m, c] = np.interp(t[~ok], t[ok], values[ok, m, c])
  return out


def prepare_trial(trial: Trial, settings: Settings) -> PreparedTrial:
  """Maps, converts to the SMPL frame, weights, pads. Raises MotionFileError."""
  mapping = resolve_mapping(trial.joint_names, settings.joint_map, trial.source)
  joints = trial.joints[:, list(mapping.source_index)]
  valid = trial.valid[:, list(mapping.source_index)]
  if settings.max_frames:
    joints, valid = joints[:settings.max_frames], valid[:settings.max_frames]
  num_frames = len(joints)
  frame_ok = valid.sum(1) >= 4
  if not frame_ok.any():
    raise MotionFileError(trial.source, f'trial {trial.name!r}: no frame has 4 or more valid mapped joints')
  smpl_index = mapping.smpl_index
  joints = opensim_to_smpl(np.where(valid[..., None], joints, 0.0))
  filled = _fill_gaps(joints, valid)
  if not valid.all(0).all():  # joints never observed: a finite stand-in (weight 0 everywhere)
    never = ~valid.any(0)
    filled[:, never] = filled[:, [np.flatnonzero(~never)[0]] * int(never.sum())]
  position = {SMPL_JOINT_NAMES[j]: m for m, j in enumerate(smpl_index)}
  feet = {side: tuple(position[n] for n in names if n in position)   # (ankle, toes) order
          for side, names in FOOT_JOINTS.items()}
  contact, contact_source = _contact(trial, filled, feet, settings, num_frames)
  joint_weight = settings.joint_weights[list(smpl_index)][None]
  # Missing entries of joints seen elsewhere in the trial target their temporal
  # interpolation with a small weight, so gaps are filled smoothly.
  gap = ~valid & valid.any(0, keepdims=True)
  weight = (valid + settings.gap_fill * gap) * joint_weight
  for s, side in enumerate(('left', 'right')):
    for m in feet[side]:
      weight[:, m] *= 1.0 + (settings.contact_weight - 1.0) * contact[:, s]
  bucket = settings.frame_bucket
  t_pad = -(-num_frames // bucket) * bucket
  pad = lambda a: np.concatenate([a, np.repeat(a[-1:] * 0, t_pad - num_frames, 0)], 0)
  pad_edge = lambda a: np.concatenate([a, np.repeat(a[-1:], t_pad - num_frames, 0)], 0)
  structure = FitStructure(smpl_index=tuple(smpl_index), bones=mapped_bones(smpl_index),
                           left_foot=feet['left'], right_foot=feet['right'])
  return PreparedTrial(
      trial=trial, mapping=mapping, structure=structure,
      targets=pad(np.where(gap[..., None], filled, joints)), filled=pad_edge(filled), valid=valid,
      weight=pad(weight),
      exists=pad(np.ones(num_frames)), contact=pad(contact.astype(np.float64)),
      contact_source=contact_source, num_frames=num_frames,
      num_valid_frames=int(frame_ok.sum()))


def _contact(trial, filled, feet, settings, num_frames):
  source = settings.contact_source
  if source in ('auto', 'file') and trial.contact is not None:
    return np.asarray(trial.contact[:num_frames], bool), 'file'
  if source == 'file':
    raise MotionFileError(trial.source, f'trial {trial.name!r} has no contact data; '
                          'use --config.contact.source=auto or heuristic')
  if source == 'none' or not (feet['left'] and feet['right']):
    return np.zeros((num_frames, 2), bool), 'none'
  # The most distal foot joint of each side (toes if mapped, else the ankle).
  lowest = np.stack([filled[:, feet[side][-1]] for side in ('left', 'right')], 1)
  return contact_from_kinematics(lowest, trial.fps, settings.contact_vertical_speed_threshold,
                                 settings.contact_height_margin), 'heuristic'


@dataclasses.dataclass(frozen=True)
class FitResult:
  """betas [B]; poses [T,24,3] rad; trans [T,3] m (SMPL frame); joints [T,24,3] m;
  time_s: seconds per stage (compilation excluded) and compile_s; loss per stage."""
  betas: np.ndarray
  poses: np.ndarray
  trans: np.ndarray
  joints: np.ndarray
  time_s: Dict[str, float]
  losses: Dict[str, float]


def target_distances(prep: PreparedTrial, pairs):
  """Median target distance [P] m and a weight [P] (fraction of frames seen)."""
  a = np.asarray([p for p, _ in pairs])
  b = np.asarray([q for _, q in pairs])
  n = prep.num_frames
  d = np.linalg.norm(prep.targets[:n, b] - prep.targets[:n, a], axis=-1)
  seen = prep.valid[:, a] & prep.valid[:, b]
  median = np.array([np.median(d[seen[:, k], k]) if seen[:, k].any() else 0.0
                     for k in range(len(pairs))])
  return median, seen.mean(0)


def whitening_basis(model: BodyModel, smpl_index, floor=0.02):
  """[B,B] basis P with betas = P z, in which each unit of z moves the mapped
  joints (translation removed) by about 1 m RMS; directions that barely move
  them are capped at 1/floor of the strongest so they cannot run away."""
  a = np.asarray(model.J_shapedirs, np.float64)[list(smpl_index)]   # [M,3,B]
  a = (a - a.mean(0, keepdims=True)).reshape(-1, a.shape[-1])
  _, sv, vt = np.linalg.svd(a, full_matrices=False)
  sv = np.maximum(sv, floor * sv[0])
  return vt.T / sv[None]


def stage_hyper(settings: Settings, stage: str, num_betas: int, betas_lr: float,
                pose_lr: Optional[float] = None, iters: Optional[int] = None,
                warm_start: float = 0.0, dtype=jnp.float32,
                beta_basis=None) -> StageHyper:
  """The traced hyperparameters of a stage (weights of unused terms are 0)."""
  s = settings.stages[stage]
  weights = LossWeights(**{t: (getattr(settings.loss, t) if t in s.terms else 0.0)
                           for t in LOSS_TERMS})
  lr = pose_lr if pose_lr is not None else s.lr
  mult = FitParams(betas=np.full((num_betas,), betas_lr / lr),
                   poses=settings.joint_lr[:, None], trans=np.ones((1,)))
  hyper = StageHyper(weights=weights, lr=lr, lr_final_ratio=s.lr_final_ratio,
                     num_steps=np.int32(s.iters if iters is None else iters),
                     lr_mult=mult, warm_start=warm_start,
                     beta_basis=np.eye(num_betas) if beta_basis is None else beta_basis)
  return jax.tree.map(lambda x: jnp.asarray(x, dtype if np.asarray(x).dtype.kind == 'f'
                                            else np.asarray(x).dtype), hyper)


def _blocks(x, n, k):
  return x.reshape((n, k) + x.shape[1:])


def _targets(prep: PreparedTrial, trans_prior, index=None, dtype=jnp.float32):
  sel = (lambda a: a) if index is None else (lambda a: a[index])
  return Targets(joints=jnp.asarray(sel(prep.targets), dtype),
                 weight=jnp.asarray(sel(prep.weight), dtype),
                 exists=jnp.asarray(sel(prep.exists), dtype),
                 contact=jnp.asarray(sel(prep.contact), dtype),
                 trans_prior=jnp.asarray(sel(trans_prior), dtype))


class _StageRunner:
  """Runs the one compiled core on a block layout (1 x T or T x 1 blocks)."""

  def __init__(self, model, structure, timings):
    self.model, self.structure, self.timings = model, structure, timings

  def __call__(self, name, betas, poses, trans, targets, hyper, num_blocks):
    k = poses.shape[0] // num_blocks
    args = (self.model, betas, _blocks(poses, num_blocks, k), _blocks(trans, num_blocks, k),
            jax.tree.map(lambda a: _blocks(a, num_blocks, k), targets),
            empty_anchor(len(self.structure.smpl_index), poses.dtype), hyper)
    betas, poses_b, trans_b, losses = compiled.call(
        fit_blocks, args, dict(structure=self.structure), self.timings, name)
    return betas, poses_b.reshape(poses.shape), trans_b.reshape(trans.shape), float(jnp.sum(losses))


@jax.jit
def _posed_joints(model, betas, poses, trans):
  """[T,24,3] m for betas [B], poses [T,24,3], trans [T,3]."""
  return jax.vmap(lambda p, t: forward_kinematics(model, betas, p, t)[0])(poses, trans)


def _sample_frames(prep: PreparedTrial, count: int):
  """Evenly spaced frames with at least 4 observed joints (repeats if few)."""
  frames = np.flatnonzero(prep.valid.sum(1) >= 4)
  return frames[np.round(np.linspace(0, len(frames) - 1, count)).astype(int)]


def fit_trial(model: BodyModel, prep: PreparedTrial, settings: Settings,
              progress: Optional[Callable[[str], None]] = None) -> FitResult:
  """Runs the four stages on one prepared trial. model: BodyModel or JointModel."""
  model = joint_model(model)  # fitting never touches vertices
  dtype = jnp.float64 if settings.dtype == 'float64' else jnp.float32
  progress = progress or (lambda stage: None)
  timings: Dict[str, float] = {}
  losses: Dict[str, float] = {}
  run = _StageRunner(model, prep.structure, timings)
  structure = prep.structure
  t_pad = prep.targets.shape[0]
  nb = model.num_betas
  basis = whitening_basis(model, structure.smpl_index) if settings.whiten_betas else np.eye(nb)
  init, shape = settings.stages['init'], settings.stages['shape']
  closed_form_shape = shape.extra['method'] == 'closed_form'
  all_frames = jnp.asarray(prep.init_weight, dtype)
  filled = jnp.asarray(prep.filled, dtype)
  sample = _sample_frames(prep, int(shape.extra['frames']))
  init_weights = stage_hyper(settings, 'init', nb, 0.0, dtype=dtype).weights
  index = structure.smpl_index

  def lm(name, betas, poses, trans, targets, iters):
    # Frames are independent here: one executable for fixed chunks of LM_CHUNK
    # frames serves every trial length and the shape sample (one compilation).
    n = poses.shape[0]
    padded = -(-n // LM_CHUNK) * LM_CHUNK
    pad = lambda a: jnp.concatenate([a, jnp.zeros((padded - n,) + a.shape[1:], a.dtype)])
    poses_p, trans_p = pad(poses), pad(trans)
    targets_p = jax.tree.map(pad, targets)
    out_poses, out_trans, cost = [], [], 0.0
    for start in range(0, padded, LM_CHUNK):
      chunk = slice(start, start + LM_CHUNK)
      p, t, c = compiled.call(
          lm_frames, (model, betas, poses_p[chunk], trans_p[chunk],
                      jax.tree.map(lambda a: a[chunk], targets_p), init_weights, np.int32(iters)),
          dict(structure=structure, terms=init.terms), timings, name)
      out_poses.append(p)
      out_trans.append(t)
      cost += float(jnp.sum(c))
    losses[name] = cost
    return jnp.concatenate(out_poses)[:n], jnp.concatenate(out_trans)[:n]

  def posed_root(name, betas, poses, frames_filled, frames_weight):
    rot, trans = compiled.call(root_initialisation_jit,
                               (model, betas, frames_filled, frames_weight),
                               dict(smpl_index=index), timings, name)
    return poses.at[:, 0].set(matrix_to_axis_angle(rot)), trans

  # Stage 1: initial pose of every frame (frames are independent here).
  progress('init')
  betas = jnp.zeros((nb,), dtype)
  if closed_form_shape:  # pose-free shape from rigidly linked joint distances
    pairs = rigid_pairs(structure.smpl_index, model.parents)
    distances, pair_weight = target_distances(prep, pairs)
    betas = compiled.call(shape_from_distances_jit,
                          (model, jnp.asarray(distances, dtype), jnp.asarray(pair_weight, dtype)),
                          dict(pairs=pairs, smpl_index=index,
                               ridge=settings.loss.shape_prior), timings, 'init')
  poses = jnp.zeros((t_pad, 24, 3), dtype)
  if init.extra['root'] == 'kabsch':
    poses, trans = posed_root('init', betas, poses, filled, all_frames)
  else:  # the reference: zero rotation, translation from the pelvis target
    trans = filled[:, 0] - shaped_joints(model, betas)[structure.smpl_index[0]]
  trans_prior = np.asarray(trans)
  targets = _targets(prep, trans_prior, dtype=dtype)
  if init.extra['solver'] == 'lm':
    poses, trans = lm('init', betas, poses, trans, targets, init.iters)
  else:
    _, poses, trans, losses['init'] = run(
        'init', betas, poses, trans, targets, stage_hyper(settings, 'init', nb, 0.0, dtype=dtype), 1)

  # Stage 2: shape on a sample of frames.
  progress('shape')
  shape_targets = _targets(prep, trans_prior, sample, dtype)
  if closed_form_shape:
    # Exact least-squares betas for the sample's rotations, alternated with
    # per-frame LM of the sample; then every frame is re-solved for that shape.
    sample_poses, sample_trans = poses[sample], trans[sample]
    for _ in range(int(shape.extra['rounds'])):
      betas = compiled.call(solve_betas_jit,
                            (model, sample_poses, shape_targets.joints, shape_targets.weight),
                            dict(smpl_index=index, ridge=settings.loss.shape_prior),
                            timings, 'shape')
      sample_poses, sample_trans = posed_root('shape', betas, sample_poses, filled[sample],
                                              all_frames[sample])
      sample_poses, sample_trans = lm('shape', betas, sample_poses, sample_trans,
                                      shape_targets, init.iters)
    if shape.extra['resolve_iters']:
      poses, trans = posed_root('shape', betas, poses, filled, all_frames)
      poses, trans = lm('shape', betas, poses, trans, targets, int(shape.extra['resolve_iters']))
  if shape.iters:  # Adam on betas and the sample's poses (the reference's stage 2)
    betas, sample_poses, sample_trans, losses['shape'] = run(
        'shape', betas, poses[sample], trans[sample], shape_targets,
        stage_hyper(settings, 'shape', nb, shape.lr, pose_lr=shape.extra['pose_lr'],
                    dtype=dtype, beta_basis=basis), 1)
    poses, trans = poses.at[sample].set(sample_poses), trans.at[sample].set(sample_trans)

  sequential = settings.variant == 'sequential'
  for p in range(settings.max_passes):
    suffix = '' if p == 0 else f'_pass{p + 1}'
    pose_iters = settings.stages['pose'].iters if p == 0 else settings.stages['pose'].iters // 2
    # Stage 3: per-frame pose refinement (frame by frame, or all frames at once).
    progress('pose' + suffix)
    _, poses, trans, losses['pose' + suffix] = run(
        'pose', betas, poses, trans, targets,
        stage_hyper(settings, 'pose', nb, 0.0, iters=pose_iters,
                    warm_start=settings.stages['pose'].extra['warm_start'] if sequential else 0.0,
                    dtype=dtype),
        t_pad if sequential else 1)
    # Stage 4: whole-sequence refinement.
    progress('sequence' + suffix)
    betas, poses, trans, losses['sequence' + suffix] = run(
        'sequence', betas, poses, trans, targets,
        stage_hyper(settings, 'sequence', nb, settings.stages['sequence'].extra['betas_lr'],
                    dtype=dtype, beta_basis=basis), 1)

  joints = compiled.call(_posed_joints, (model, betas, poses, trans))
  n = prep.num_frames
  timings['total'] = sum(v for k, v in timings.items() if k != 'compile_s')
  return FitResult(betas=np.asarray(betas), poses=np.asarray(poses)[:n],
                   trans=np.asarray(trans)[:n], joints=np.asarray(joints)[:n],
                   time_s=timings, losses=losses)
