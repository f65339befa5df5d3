"""The staged fitting pipeline of the reference, on one compiled Adam core.

  1. init:     (closed-form shape) betas from the distances of rigidly linked
               joints, which do not depend on pose; Kabsch root orientation from
               the pelvis joints; then per-frame IK of all frames at once, by
               Levenberg-Marquardt (default) or Adam (the reference);
  2. shape:    (joint_lm, default) one Levenberg-Marquardt solve of every
               frame's pose with the shared betas and correspondence offsets
               (Schur complement, joint_lm.py); or (closed_form) least-squares
               betas for a sample's rotations alternated with per-frame LM; or
               (the reference) Adam on betas and the sample's poses;
  3. pose:     per-frame refinement with Adam: `sequential` runs frame by frame
               (T blocks of 1 frame), each tied to the previous frame;
               `simultaneous` optimises all frames in one block;
  4. sequence: Adam on all frames jointly with bone-length, smoothness and
               contact terms; stages 3+4 repeat `max_passes` times.
Pure: arrays in, arrays out; no file I/O.
"""

import dataclasses
import functools
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.body.model import BodyModel, forward_kinematics, joint_model, shaped_joints
from jaxfit.body.rotation import continuous_axis_angle, matrix_to_axis_angle
from jaxfit.fit import compiled
from jaxfit.fit.core import fit_blocks
from jaxfit.fit.init import (REST_POSE, rigid_pairs, root_initialisation_jit, shape_from_distances_jit,
                             solve_betas_jit)
from jaxfit.fit.joint_lm import joint_lm
from jaxfit.fit.lm import active_joints, lm_frames
from jaxfit.fit.losses import posed_mapped_joints
from jaxfit.fit.options import FitOptions
from jaxfit.fit.types import (LOSS_TERMS, FitParams, LossWeights, StageHyper, Targets,
                              empty_anchor)
from jaxfit.prepare import PreparedTrial

LM_CHUNK = 128  # frames per Levenberg-Marquardt call (independent frames)


@dataclasses.dataclass(frozen=True)
class FitResult:
  """betas [B]; poses [T,24,3] rad; trans [T,3] m (SMPL frame); joints [T,24,3] m;
  offsets [M,3] m (each mapped joint's learned correspondence offset, in the
  joint's frame; zero where none is learned); points [T,M,3] m: the mapped
  joints plus their offsets, what was compared with the targets;
  rotations [T,24,3,3]: every joint's global rotation (SMPL world);
  frame_offsets [S,3,3]: each fitted segment pair's constant frame offset C
  (R_smpl = A R_opensim C, prep.segment_names);
  time_s: seconds per stage (compilation excluded) and compile_s; loss per stage."""
  betas: np.ndarray
  poses: np.ndarray
  trans: np.ndarray
  joints: np.ndarray
  offsets: np.ndarray
  points: np.ndarray
  rotations: np.ndarray
  frame_offsets: np.ndarray
  time_s: Dict[str, float]
  losses: Dict[str, float]


def target_distances(prep: PreparedTrial, pairs):
  """Median target distance [P] m and a weight [P] (fraction of frames seen)."""
  a = np.asarray([p for p, _ in pairs])
  b = np.asarray([q for _, q in pairs])
  n = prep.num_frames
  d = np.linalg.norm(prep.targets[:n, b] - prep.targets[:n, a], axis=-1)
  seen = prep.valid[:, a] & prep.valid[:, b] & prep.used[a] & prep.used[b]
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


def stage_hyper(options: FitOptions, stage: str, num_betas: int, betas_lr: float,
                pose_lr: Optional[float] = None, iters: Optional[int] = None,
                warm_start: float = 0.0, dtype=np.float32,
                beta_basis=None, active_joints=None) -> StageHyper:
  """The traced hyperparameters of a stage (weights of unused terms are 0).

  active_joints: SMPL joints Adam may move (None = all); the others keep their
  initial rotation (their learning-rate multiplier is 0).
  """
  s = options.stage(stage)
  weights = LossWeights(**{t: (getattr(options.loss, t) if t in s.terms else 0.0)
                           for t in LOSS_TERMS})
  lr = pose_lr if pose_lr is not None else s.lr
  joint_mult = np.asarray(options.joint_lr, np.float64)
  if active_joints is not None:
    joint_mult = joint_mult * np.isin(np.arange(24), active_joints)
  mult = FitParams(betas=np.full((num_betas,), betas_lr / lr),
                   poses=joint_mult[:, None], trans=np.ones((1,)), offsets=np.zeros((1, 1)))
  hyper = StageHyper(weights=weights, lr=lr, lr_final_ratio=s.lr_final_ratio,
                     num_steps=np.int32(s.iters if iters is None else iters),
                     lr_mult=mult, warm_start=warm_start,
                     beta_basis=np.eye(num_betas) if beta_basis is None else beta_basis)
  return jax.tree.map(lambda x: np.asarray(x, dtype if np.asarray(x).dtype.kind == 'f'
                                           else np.asarray(x).dtype), hyper)


def _blocks(x, n, k):
  return x.reshape((n, k) + x.shape[1:])


def _targets(prep: PreparedTrial, trans_prior, index=None, dtype=np.float32, frame_offsets=None):
  """Targets of the fit; frame_offsets [S,3,3]: each segment pair's constant
  offset C (default: from the rest poses), so the SMPL joint targets A R_os C."""
  sel = (lambda a: a) if index is None else (lambda a: a[index])
  c = prep.segment_rest_offset if frame_offsets is None else frame_offsets
  return Targets(joints=np.asarray(sel(prep.targets), dtype),
                 weight=np.asarray(sel(prep.weight), dtype),
                 observed=np.asarray(sel(prep.observed), dtype),
                 exists=np.asarray(sel(prep.exists), dtype),
                 contact=np.asarray(sel(prep.contact), dtype),
                 trans_prior=np.asarray(sel(trans_prior), dtype),
                 seg_rot=np.asarray(np.einsum('tsab,sbc->tsac', sel(prep.segment_rotations), c), dtype),
                 seg_weight=np.asarray(sel(prep.segment_weight), dtype))


def refine_frame_offsets(segment_rotations, segment_weight, fitted, rest_offsets, prior=1.0):
  """Each segment pair's constant frame offset C, refined on a trial: the
  rotation nearest (chordal mean, projected onto SO(3)) to C_t = (A R_os,t)^T G_t
  over the frames, with the rest-pose value as a prior worth `prior` times the
  frames' total weight.

  segment_rotations [T,S,3,3] A R_os (SMPL world); segment_weight [T,S];
  fitted [T,S,3,3] the paired joints' global rotations; rest_offsets [S,3,3].
  Returns [S,3,3].
  """
  w = np.asarray(segment_weight, np.float64)
  total = w.sum(0)                                                       # [S]
  mean = np.einsum('ts,tsba,tsbc->sac', w, segment_rotations, fitted)
  mean = mean + prior * total[:, None, None] * rest_offsets
  u, _, vt = np.linalg.svd(mean)
  d = np.sign(np.linalg.det(u @ vt))
  return u @ (np.eye(3)[None] * np.stack([np.ones_like(d), np.ones_like(d), d], -1)[:, None]) @ vt


def _call(fn, args, static=None, timings=None, name=None):
  """compiled.call with host (NumPy) results: the glue between stages stays
  on the host, so no operation outside the compiled programs is traced or
  compiled (each would cost milliseconds to compile in every process)."""
  return jax.tree.map(np.asarray, compiled.call(fn, args, static, timings, name))


_axis_angle_jit = jax.jit(matrix_to_axis_angle)


class _StageRunner:
  """Runs the one compiled core on a block layout (1 x T or T x 1 blocks)."""

  def __init__(self, model, structure, timings):
    self.model, self.structure, self.timings = model, structure, timings

  def program(self, betas, offsets, poses, trans, targets, hyper, num_blocks):
    """(fn, args, static) of the core on this layout (for compiled.call/prefetch)."""
    k = poses.shape[0] // num_blocks
    args = (self.model, betas, offsets, _blocks(poses, num_blocks, k), _blocks(trans, num_blocks, k),
            jax.tree.map(lambda a: _blocks(a, num_blocks, k), targets),
            jax.tree.map(np.asarray, empty_anchor(len(self.structure.smpl_index), poses.dtype)),
            hyper)
    return fit_blocks, args, dict(structure=self.structure)

  def __call__(self, name, betas, offsets, poses, trans, targets, hyper, num_blocks):
    """Returns (betas, poses, trans, loss); offsets stay as they are (multiplier 0)."""
    betas, _, poses_b, trans_b, losses = _call(
        *self.program(betas, offsets, poses, trans, targets, hyper, num_blocks), self.timings, name)
    return betas, poses_b.reshape(poses.shape), trans_b.reshape(trans.shape), float(np.sum(losses))


@functools.partial(jax.jit, static_argnames=('structure',))
def _posed(model, betas, offsets, poses, trans, structure):
  """Joints [T,24,3] m, global rotations [T,24,3,3] and mapped points [T,M,3] m
  (joints plus offsets)."""
  joints, rotations = jax.vmap(lambda p, t: forward_kinematics(model, betas, p, t))(poses, trans)
  points = posed_mapped_joints(model, FitParams(betas, poses, trans, offsets), structure)
  return joints, rotations, points


def _sample_frames(prep: PreparedTrial, count: int):
  """Evenly spaced frames with at least 4 observed joints (repeats if few)."""
  frames = np.flatnonzero(prep.valid.sum(1) >= 4)
  return frames[np.round(np.linspace(0, len(frames) - 1, count)).astype(int)]


def fit_trial(model: BodyModel, prep: PreparedTrial, options: FitOptions,
              progress: Optional[Callable[[str], None]] = None) -> FitResult:
  """Runs the four stages on one prepared trial. model: BodyModel or JointModel.

  float64 (options.dtype) needs jax_enable_x64 on before any array is made.
  """
  model = joint_model(model)  # fitting never touches vertices
  dtype = np.float64 if options.dtype == 'float64' else np.float32
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    raise ValueError('dtype float64 needs jax.config.update("jax_enable_x64", True) first')
  model = jax.tree.map(lambda a: jax.device_put(np.asarray(a, dtype)), model)
  progress = progress or (lambda stage: None)
  timings: Dict[str, float] = {}
  losses: Dict[str, float] = {}
  run = _StageRunner(model, prep.structure, timings)
  structure = prep.structure
  t_pad = prep.targets.shape[0]
  nb = model.num_betas
  basis = whitening_basis(model, structure.smpl_index) if options.whiten_betas else np.eye(nb)
  init, shape = options.init, options.shape
  all_frames = np.asarray(prep.init_weight, dtype)
  filled = np.asarray(prep.filled, dtype)
  sample = _sample_frames(prep, shape.frames)
  init_weights = stage_hyper(options, 'init', nb, 0.0, dtype=dtype).weights
  index = structure.smpl_index
  # Joints whose rotation moves no mapped point (the arms of a lower-body
  # skeleton, hands, head) are left in a neutral rest pose, never optimised.
  active = active_joints(model.parents, structure)
  hyper = lambda stage, betas_lr, **kw: stage_hyper(options, stage, nb, betas_lr, dtype=dtype,
                                                     active_joints=active, **kw)
  offsets = np.zeros((len(index), 3), dtype)
  sequential = options.variant == 'sequential'

  def lm_program(betas, poses, trans, targets, iters):
    return (lm_frames, (model, betas, offsets, poses, trans, targets, init_weights, np.int32(iters)),
            dict(structure=structure, terms=init.terms))

  def joint_lm_program(betas, poses, trans, targets):
    return (joint_lm, (model, betas, offsets, poses, trans, targets, options.loss,
                       np.int32(shape.joint_iters), np.asarray(prep.offset_bound, dtype),
                       np.asarray(shape.beta_bound, dtype),
                       np.asarray(1.0 if shape.prior == 'auto' else 0.0, dtype),
                       np.asarray(shape.noise_floor_m, dtype)), dict(structure=structure))

  def prefetch():
    # Lower the default path's programs now and compile them on worker threads
    # while the next is lowered (shapes are known before any value is): a cold
    # process compiles them in parallel instead of one stage at a time.
    betas, poses = np.zeros((nb,), dtype), np.zeros((t_pad, 24, 3), dtype)
    trans = np.zeros((t_pad, 3), dtype)
    targets = _targets(prep, trans, dtype=dtype)
    chunk = lambda a: a[:LM_CHUNK] if len(a) >= LM_CHUNK else np.resize(a, (LM_CHUNK,) + a.shape[1:])
    programs = []
    if init.solver == 'lm':
      programs.append(lm_program(betas, chunk(poses), chunk(trans), jax.tree.map(chunk, targets),
                                 init.iters))
    if shape.method == 'joint_lm':
      programs.append(joint_lm_program(betas, poses, trans, targets))
    if options.pose.iters and sequential:
      programs.append(run.program(betas, offsets, poses, trans, targets,
                                  hyper('pose', 0.0, iters=0), t_pad))
    programs.append(run.program(betas, offsets, poses, trans, targets,
                                hyper('sequence', options.sequence.betas_lr, beta_basis=basis), 1))
    programs.append((continuous_axis_angle, (poses,), {}))
    programs.append((_posed, (model, betas, offsets, poses, trans), dict(structure=structure)))
    for fn, args, static in programs:
      compiled.prefetch(fn, args, static, timings)

  prefetch()

  def lm(name, betas, poses, trans, targets, iters):
    # Frames are independent here: one executable for fixed chunks of LM_CHUNK
    # frames serves every trial length and the shape sample (one compilation).
    n = poses.shape[0]
    padded = -(-n // LM_CHUNK) * LM_CHUNK
    pad = lambda a: np.concatenate([a, np.zeros((padded - n,) + a.shape[1:], a.dtype)])
    poses_p, trans_p = pad(poses), pad(trans)
    targets_p = jax.tree.map(pad, targets)
    out_poses, out_trans, cost = [], [], 0.0
    for start in range(0, padded, LM_CHUNK):
      chunk = slice(start, start + LM_CHUNK)
      p, t, c = _call(*lm_program(betas, poses_p[chunk], trans_p[chunk],
                                  jax.tree.map(lambda a: a[chunk], targets_p), iters), timings, name)
      out_poses.append(p)
      out_trans.append(t)
      cost += float(np.sum(c))
    losses[name] = cost
    return np.concatenate(out_poses)[:n], np.concatenate(out_trans)[:n]

  def posed_root(name, betas, poses, frames_filled, frames_weight):
    rot, trans = _call(root_initialisation_jit, (model, betas, frames_filled, frames_weight),
                       dict(smpl_index=index), timings, name)
    poses = poses.copy()
    poses[:, 0] = _call(_axis_angle_jit, (rot,), None, timings, name)
    return poses, trans

  # Stage 1: initial pose of every frame (frames are independent here).
  progress('init')
  betas = np.zeros((nb,), dtype)
  if shape.method != 'adam':  # pose-free shape from rigidly linked joint distances
    pairs = rigid_pairs(structure.smpl_index, model.parents)
    distances, pair_weight = target_distances(prep, pairs)
    betas = _call(shape_from_distances_jit,
                          (model, np.asarray(distances, dtype), np.asarray(pair_weight, dtype)),
                          dict(pairs=pairs, smpl_index=index,
                               ridge=options.loss.shape_prior), timings, 'init')
  inactive = np.setdiff1d(np.arange(24), active)
  poses = np.zeros((t_pad, 24, 3), dtype)
  poses[:, inactive] = REST_POSE[inactive]
  if init.root == 'kabsch':
    poses, trans = posed_root('init', betas, poses, filled, all_frames)
  else:  # the reference: zero rotation, translation from the pelvis target
    trans = filled[:, 0] - shaped_joints(model, betas)[structure.smpl_index[0]]
  trans_prior = np.asarray(trans)
  targets = _targets(prep, trans_prior, dtype=dtype)
  if init.solver == 'lm':
    poses, trans = lm('init', betas, poses, trans, targets, init.iters)
  else:
    _, poses, trans, losses['init'] = run('init', betas, offsets, poses, trans, targets,
                                          hyper('init', 0.0), 1)

  # The constant frame offset of each segment pair, refined on this trial's
  # stage-1 fit (which followed the rest-pose offsets), prior at the rest pose.
  frame_offsets = prep.segment_rest_offset
  if structure.segment_joints:
    _, rotations, _ = _call(_posed, (model, betas, offsets, poses, trans), dict(structure=structure))
    n = prep.num_frames
    frame_offsets = refine_frame_offsets(
        prep.segment_rotations[:n], prep.segment_weight[:n],
        rotations[:n][:, list(structure.segment_joints)], prep.segment_rest_offset)
    targets = _targets(prep, trans_prior, dtype=dtype, frame_offsets=frame_offsets)

  # Stage 2: the shape (and the correspondence offsets).
  progress('shape')
  shape_targets = _targets(prep, trans_prior, sample, dtype, frame_offsets)
  if shape.method == 'joint_lm':
    # Every frame's pose, the betas and the offsets in one Gauss-Newton solve.
    betas, offsets, poses, trans, cost, prior_weight = _call(
        *joint_lm_program(betas, poses, trans, targets), timings, 'shape')
    losses['shape'] = float(cost)
    losses['shape_prior_weight'] = float(prior_weight)
  elif shape.method == 'closed_form':
    # Exact least-squares betas for the sample's rotations, alternated with
    # per-frame LM of the sample; then every frame is re-solved for that shape.
    sample_poses, sample_trans = poses[sample], trans[sample]
    for _ in range(shape.rounds):
      betas = _call(solve_betas_jit,
                            (model, sample_poses, shape_targets.joints, shape_targets.weight),
                            dict(smpl_index=index, ridge=options.loss.shape_prior),
                            timings, 'shape')
      sample_poses, sample_trans = posed_root('shape', betas, sample_poses, filled[sample],
                                              all_frames[sample])
      sample_poses, sample_trans = lm('shape', betas, sample_poses, sample_trans,
                                      shape_targets, init.iters)
    if shape.resolve_iters:
      poses, trans = posed_root('shape', betas, poses, filled, all_frames)
      poses, trans = lm('shape', betas, poses, trans, targets, shape.resolve_iters)
  if shape.iters:  # Adam on betas and the sample's poses (the reference's stage 2)
    betas, sample_poses, sample_trans, losses['shape'] = run(
        'shape', betas, offsets, poses[sample], trans[sample], shape_targets,
        hyper('shape', shape.lr, pose_lr=shape.pose_lr, beta_basis=basis), 1)
    poses, trans = poses.copy(), trans.copy()
    poses[sample], trans[sample] = sample_poses, sample_trans

  for p in range(options.max_passes):
    suffix = '' if p == 0 else f'_pass{p + 1}'
    pose_iters = options.pose.iters if p == 0 else options.pose.iters // 2
    # Stage 3: per-frame pose refinement (frame by frame, or all frames at once).
    progress('pose' + suffix)
    _, poses, trans, losses['pose' + suffix] = run(
        'pose', betas, offsets, poses, trans, targets,
        hyper('pose', 0.0, iters=pose_iters,
              warm_start=options.pose.warm_start if sequential else 0.0),
        t_pad if sequential else 1)
    # Stage 4: whole-sequence refinement.
    progress('sequence' + suffix)
    betas, poses, trans, losses['sequence' + suffix] = run(
        'sequence', betas, offsets, poses, trans, targets,
        hyper('sequence', options.sequence.betas_lr, beta_basis=basis), 1)

  n = prep.num_frames
  poses = _call(continuous_axis_angle, (poses,))  # no 2 pi jumps between frames
  joints, rotations, points = _call(_posed, (model, betas, offsets, poses, trans),
                                    dict(structure=structure))
  timings['total'] = sum(v for k, v in timings.items() if k != 'compile_s')
  return FitResult(betas=np.asarray(betas), poses=np.asarray(poses)[:n],
                   trans=np.asarray(trans)[:n], joints=np.asarray(joints)[:n],
                   offsets=np.asarray(offsets), points=np.asarray(points)[:n],
                   rotations=np.asarray(rotations)[:n], frame_offsets=np.asarray(frame_offsets),
                   time_s=timings, losses=losses)
