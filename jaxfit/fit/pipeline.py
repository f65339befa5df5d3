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
               (blocks of 1 frame), each tied to the previous frame;
               `simultaneous` optimises all frames together;
  4. sequence: Adam on all frames jointly with bone-length, smoothness and
               contact terms; stages 3+4 repeat `max_passes` times.
Every program sees a fixed chunk of frames (options.chunk_frames), whatever
the trial's length: the per-frame programs chunk by chunk, the joint solve
summing its chunks' reduced systems (joint_lm.py), Adam on overlapping
windows (simultaneous) or a frame-to-frame chain carried across chunks
(sequential); see `_Fit.adam`.
`fit_plan(options)` lists the stage methods to run, each a `_Fit` method
FitState -> FitState; a stage of zero steps is left out. The plan is run
twice: first to make every program ready (prefetch: no values, shapes only),
then to fit. Pure: arrays in, arrays out; no file I/O.
"""

import dataclasses
import functools
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.body.model import BodyModel, forward_kinematics, joint_model, shaped_joints
from jaxfit.body.rotation import continuous_axis_angle, matrix_to_axis_angle
from jaxfit.runtime import compiled
from jaxfit.fit.chunks import frame_chunks, pad_frames
from jaxfit.fit.core import fit_blocks
from jaxfit.fit.init import (REST_POSE, rigid_pairs, root_initialisation_jit, shape_from_distances_jit,
                             solve_betas_jit)
from jaxfit.fit.joint_lm import joint_lm
from jaxfit.fit.lm import active_joints, lm_frames
from jaxfit.fit.losses import posed_mapped_joints
from jaxfit.fit.options import FitOptions, auto_chunk_frames
from jaxfit.fit.types import (LOSS_TERMS, FitParams, FitStructure, LossWeights, StageHyper,
                              Targets, TrialArrays, empty_anchor)

# The Adam windows' overlap: each window of chunk_frames frames keeps its
# middle chunk_frames - 2 * halo frames and gives the halo on either side
# (frames the neighbouring windows keep) only as context for the temporal terms.
HALO_FRACTION = 16   # halo = chunk_frames // HALO_FRACTION frames


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


def target_distances(prep: TrialArrays, pairs):
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


def _targets(prep: TrialArrays, trans_prior, index=None, dtype=np.float32, frame_offsets=None):
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


def _call(fn, args, static=None, timings=None, name=None, host=True):
  """compiled.call with host (NumPy) results: the glue between stages stays
  on the host, so no operation outside the compiled programs is traced or
  compiled (each would cost milliseconds to compile in every process).
  host=False leaves them on the device (a solver's chunks between calls)."""
  out = compiled.call(fn, args, static, timings, name)
  return jax.tree.map(np.asarray, out) if host else out


_axis_angle_jit = jax.jit(matrix_to_axis_angle)


@jax.jit
def _continuous_chunk(poses, previous, first):
  """continuous_axis_angle of one chunk [K,24,3] of a trial's poses, continuing
  from the previous chunk's last frame [24,3]; first=1 for the first chunk
  (its frame 0 is kept as it is)."""
  return jnp.where(first > 0, continuous_axis_angle(poses), continuous_axis_angle(poses, previous))


@functools.partial(jax.jit, static_argnames=('structure',))
def _posed(model, betas, offsets, poses, trans, structure):
  """Joints [T,24,3] m, global rotations [T,24,3,3] and mapped points [T,M,3] m
  (joints plus offsets)."""
  joints, rotations = jax.vmap(lambda p, t: forward_kinematics(model, betas, p, t))(poses, trans)
  points = posed_mapped_joints(model, FitParams(betas, poses, trans, offsets), structure)
  return joints, rotations, points


def options_chunk_frames(options: FitOptions) -> int:
  """Frames per compiled call: options.chunk_frames, or the backend's default."""
  return auto_chunk_frames(options.chunk_frames, jax.default_backend())


def _sample_frames(prep: TrialArrays, count: int):
  """Evenly spaced frames with at least 4 observed joints (repeats if few)."""
  frames = np.flatnonzero(prep.valid.sum(1) >= 4)
  return frames[np.round(np.linspace(0, len(frames) - 1, count)).astype(int)]


@dataclasses.dataclass
class FitState:
  """What the stages hand on. betas [B]; offsets [M,3] m (in each mapped
  joint's frame); poses [T_pad,24,3] rad; trans [T_pad,3] m; trans_prior
  [T_pad,3] m: the initial root path (what the trans regulariser pulls to);
  frame_offsets [S,3,3]: each segment pair's constant frame offset (None: the
  rest-pose offsets, TrialArrays.segment_rest_offset)."""
  betas: np.ndarray
  offsets: np.ndarray
  poses: np.ndarray
  trans: np.ndarray
  trans_prior: Optional[np.ndarray] = None
  frame_offsets: Optional[np.ndarray] = None


def fit_plan(options: FitOptions, structure: FitStructure):
  """The stages `fit_trial` runs, in order: (stage, _Fit method, keyword
  arguments). Prefetching and fitting both run this plan; a stage of zero
  steps is not in it."""
  init, shape = options.init, options.shape
  plan = []
  if shape.method != 'adam':
    plan.append(('init', 'init_shape_from_distances', {}))
  plan.append(('init', 'init_root_' + init.root, {}))
  plan.append(('init', 'init_' + init.solver, {}))
  if structure.segment_joints:
    plan.append(('init', 'init_frame_offsets', {}))
  if shape.method != 'adam':
    plan.append(('shape', 'shape_' + shape.method, {}))
  if shape.iters:   # the reference's Adam, also after the other methods
    plan.append(('shape', 'shape_adam', {}))
  for p in range(options.max_passes):
    suffix = '' if p == 0 else f'_pass{p + 1}'
    pose_iters = options.pose.iters if p == 0 else options.pose.iters // 2
    if pose_iters:
      plan.append(('pose' + suffix, 'pose_adam', dict(iters=pose_iters, loss_name='pose' + suffix)))
    if options.sequence.iters:
      plan.append(('sequence' + suffix, 'sequence_adam', dict(loss_name='sequence' + suffix)))
  return tuple(plan)


class _Fit:
  """One trial's fit: its constants and one method per stage method, each
  FitState -> FitState. With prefetch=True no program runs: each is made
  ready (loaded from the store, or lowered and compiled on a worker thread)
  and stands in with zeros of its output's shape, so a cold process compiles
  the whole plan in parallel before the first stage runs."""

  def __init__(self, model, prep: TrialArrays, options: FitOptions, dtype, timings, losses,
               prefetch=False):
    self.model, self.prep, self.options, self.dtype = model, prep, options, dtype
    self.timings, self.losses, self.prefetch = timings, losses, prefetch
    self.structure = structure = prep.structure
    self.index = structure.smpl_index
    self.nb = model.num_betas
    self.basis = (whitening_basis(model, structure.smpl_index) if options.whiten_betas
                  else np.eye(self.nb))
    self.all_frames = np.asarray(prep.init_weight, dtype)
    self.filled = np.asarray(prep.filled, dtype)
    self.sample = _sample_frames(prep, options.shape.frames)
    self.init_weights = stage_hyper(options, 'init', self.nb, 0.0, dtype=dtype).weights
    # Joints whose rotation moves no mapped point (the arms of a lower-body
    # skeleton, hands, head) are left in a neutral rest pose, never optimised.
    self.active = active_joints(model.parents, structure)
    self.sequential = options.variant == 'sequential'
    self.chunk = options_chunk_frames(options)

  def initial_state(self) -> FitState:
    """Zero shape and offsets; rest pose; translation set by stage 1."""
    t_pad = self.prep.targets.shape[0]
    inactive = np.setdiff1d(np.arange(24), self.active)
    poses = np.zeros((t_pad, 24, 3), self.dtype)
    poses[:, inactive] = REST_POSE[inactive]
    return FitState(betas=np.zeros((self.nb,), self.dtype),
                    offsets=np.zeros((len(self.index), 3), self.dtype),
                    poses=poses, trans=np.zeros((t_pad, 3), self.dtype))

  # ---- the compiled programs and the helpers around them

  def call(self, fn, args, static=None, name=None, host=True):
    """Runs a compiled program (host results; host=False: on the device);
    with prefetch, readies it."""
    if self.prefetch:
      out = compiled.prefetch(fn, args, static, self.timings)
      return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), out)
    return _call(fn, args, static, self.timings, name, host)

  def per_frame(self, fn, args, frame_args, static=None, name=None):
    """fn on fixed chunks of self.chunk frames: the arguments at positions
    frame_args (pytrees with leading [T]) are cut into chunks (the last padded
    with zero frames), the others passed whole; every output has leading
    [chunk] and is joined back to [T]. One executable for every length."""
    n = jax.tree.leaves(args[frame_args[0]])[0].shape[0]
    chunks = frame_chunks(tuple(args[i] for i in frame_args), self.chunk)
    outs = []
    for chunk in chunks:
      pieces = dict(zip(frame_args, chunk))
      outs.append(self.call(fn, tuple(pieces.get(i, x) for i, x in enumerate(args)), static, name))
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *outs)

  def hyper(self, stage, betas_lr, **kw):
    return stage_hyper(self.options, stage, self.nb, betas_lr, dtype=self.dtype,
                       active_joints=self.active, **kw)

  def targets(self, s: FitState, index=None):
    """Targets of state s (its root path prior and frame offsets), of frames `index`."""
    return _targets(self.prep, s.trans_prior, index, self.dtype, s.frame_offsets)

  def adam(self, name, state, poses, trans, targets, hyper, mode='windows', loss_name=None):
    """The one compiled Adam core (fit_blocks) on the frames: (betas, poses,
    trans); offsets stay as they are (multiplier 0). Times go to `name`, the
    loss to loss_name (default name). mode:
      'windows'    (the simultaneous variant): overlapping windows of
                   self.chunk frames, one Adam state each, every frame kept
                   from the window it is central in (`_adam_windows`);
      'sequential' chunks of self.chunk blocks of 1 frame, each frame
                   warm-started from and tied to the previous one, the chain
                   carried from call to call (the anchor);
      'whole'      all frames in one block (a fixed-size sample: the shape stage).
    Every trial length thus runs the same executables (windows, sequential),
    and betas learned by a stage are carried from window to window."""
    if mode == 'whole':
      args = (self.model, state.betas, state.offsets, poses[None], trans[None],
              jax.tree.map(lambda a: a[None], targets), self.no_anchor(poses.dtype), hyper)
      betas, _, poses_b, trans_b, losses, _ = self.call(fit_blocks, args,
                                                        dict(structure=self.structure), name)
      self.losses[loss_name or name] = float(np.sum(losses))
      return betas, poses_b[0], trans_b[0]
    if mode == 'sequential':
      return self._adam_sequential(name, state, poses, trans, targets, hyper, loss_name)
    return self._adam_windows(name, state, poses, trans, targets, hyper, loss_name)

  def no_anchor(self, dtype):
    return jax.tree.map(np.asarray, empty_anchor(len(self.index), dtype))

  def _adam_windows(self, name, state, poses, trans, targets, hyper, loss_name):
    """Window c holds frames [c S - h, c S + S + h) (S = chunk - 2 h, zero
    frames beyond the trial), keeps [c S, c S + S). With the shape held (the
    default), the windows are independent: Adam is elementwise, and the terms
    of a frame reach only its neighbours (temporal, acceleration), which the
    halo supplies. Windows hold at least one real frame (padding frames past
    the last real one, whose terms are all zero, keep their values). The loss
    is the frame-weighted mean of the windows'."""
    n, w = poses.shape[0], self.chunk
    h = max(1, w // HALO_FRACTION)
    stride = w - 2 * h
    exists = np.asarray(targets.exists, np.float64)
    real = int(np.flatnonzero(exists)[-1]) + 1 if exists.any() else 1
    count = -(-real // stride)
    length = max(count * stride, n) + 2 * h
    ext = lambda a: pad_frames(a, length, front=h)
    poses_e, trans_e = ext(poses), ext(trans)
    targets_e = jax.tree.map(ext, targets)
    betas, out_poses, out_trans, loss = state.betas, [], [], 0.0
    for c in range(count):
      window = slice(c * stride, c * stride + w)
      args = (self.model, betas, state.offsets, poses_e[window][None], trans_e[window][None],
              jax.tree.map(lambda a: a[window][None], targets_e), self.no_anchor(poses.dtype), hyper)
      betas, _, poses_b, trans_b, losses, _ = self.call(fit_blocks, args,
                                                        dict(structure=self.structure), name)
      out_poses.append(poses_b[0, h:h + stride])
      out_trans.append(trans_b[0, h:h + stride])
      loss += float(np.sum(losses)) * exists[c * stride:(c + 1) * stride].sum()
    self.losses[loss_name or name] = loss / max(exists.sum(), 1.0)
    done = min(n, count * stride)
    poses, trans = poses.copy(), trans.copy()
    poses[:done], trans[:done] = np.concatenate(out_poses)[:done], np.concatenate(out_trans)[:done]
    return betas, poses, trans

  def _adam_sequential(self, name, state, poses, trans, targets, hyper, loss_name):
    """Frame by frame in chunks of self.chunk one-frame blocks; the anchor (the
    last frame fitted) and the betas go from each call to the next."""
    n = poses.shape[0]
    anchor, betas = self.no_anchor(poses.dtype), state.betas
    out_poses, out_trans, loss = [], [], 0.0
    for chunk in frame_chunks((poses, trans, targets), self.chunk):
      poses_k, trans_k, targets_k = jax.tree.map(lambda a: a[:, None], chunk)   # K blocks of 1
      args = (self.model, betas, state.offsets, poses_k, trans_k, targets_k, anchor, hyper)
      betas, _, poses_b, trans_b, losses, anchor = self.call(fit_blocks, args,
                                                             dict(structure=self.structure), name)
      out_poses.append(poses_b[:, 0])
      out_trans.append(trans_b[:, 0])
      loss += float(np.sum(losses))
    self.losses[loss_name or name] = loss
    return betas, np.concatenate(out_poses)[:n], np.concatenate(out_trans)[:n]

  def lm(self, name, betas, offsets, poses, trans, targets, iters):
    """Per-frame LM (frames are independent here), in chunks of self.chunk frames."""
    poses, trans, cost = self.per_frame(
        lm_frames, (self.model, betas, offsets, poses, trans, targets, self.init_weights,
                    np.int32(iters)), (3, 4, 5),
        dict(structure=self.structure, terms=self.options.init.terms), name)
    self.losses[name] = float(np.sum(cost))
    return poses, trans

  def posed_root(self, name, betas, poses, frames_filled, frames_weight):
    """Closed-form (Kabsch) root rotation and translation of every frame."""
    rot, trans = self.per_frame(root_initialisation_jit,
                                (self.model, betas, frames_filled, frames_weight), (2, 3),
                                dict(smpl_index=self.index), name)
    poses = poses.copy()
    poses[:, 0] = self.per_frame(_axis_angle_jit, (rot,), (0,), None, name)
    return poses, trans

  def posed(self, betas, offsets, poses, trans):
    """(joints [T,24,3], rotations [T,24,3,3], points [T,M,3]) of these poses."""
    return self.per_frame(_posed, (self.model, betas, offsets, poses, trans), (3, 4),
                          dict(structure=self.structure))

  # ---- stage 1: the initial pose of every frame (frames are independent here)

  def init_shape_from_distances(self, s: FitState) -> FitState:
    """Pose-free shape from the distances of rigidly linked joints."""
    pairs = rigid_pairs(self.index, self.model.parents)
    distances, pair_weight = target_distances(self.prep, pairs)
    betas = self.call(shape_from_distances_jit,
                      (self.model, np.asarray(distances, self.dtype),
                       np.asarray(pair_weight, self.dtype)),
                      dict(pairs=pairs, smpl_index=self.index,
                           ridge=self.options.loss.shape_prior), 'init')
    return dataclasses.replace(s, betas=betas)

  def init_root_kabsch(self, s: FitState) -> FitState:
    poses, trans = self.posed_root('init', s.betas, s.poses, self.filled, self.all_frames)
    return dataclasses.replace(s, poses=poses, trans=trans, trans_prior=np.asarray(trans))

  def init_root_pelvis(self, s: FitState) -> FitState:
    """The reference: zero rotation, translation from the pelvis target."""
    trans = self.filled[:, 0] - shaped_joints(self.model, s.betas)[self.index[0]]
    return dataclasses.replace(s, trans=trans, trans_prior=np.asarray(trans))

  def init_lm(self, s: FitState) -> FitState:
    poses, trans = self.lm('init', s.betas, s.offsets, s.poses, s.trans,
                           self.targets(s), self.options.init.iters)
    return dataclasses.replace(s, poses=poses, trans=trans)

  def init_adam(self, s: FitState) -> FitState:
    _, poses, trans = self.adam('init', s, s.poses, s.trans, self.targets(s),
                                self.hyper('init', 0.0))
    return dataclasses.replace(s, poses=poses, trans=trans)

  def init_frame_offsets(self, s: FitState) -> FitState:
    """The constant frame offset of each segment pair, refined on this trial's
    stage-1 fit (which followed the rest-pose offsets), prior at the rest pose."""
    _, rotations, _ = self.posed(s.betas, s.offsets, s.poses, s.trans)
    n, prep = self.prep.num_frames, self.prep
    frame_offsets = refine_frame_offsets(
        prep.segment_rotations[:n], prep.segment_weight[:n],
        rotations[:n][:, list(self.structure.segment_joints)], prep.segment_rest_offset)
    return dataclasses.replace(s, frame_offsets=frame_offsets)

  # ---- stage 2: the shape (and the correspondence offsets)

  def shape_joint_lm(self, s: FitState) -> FitState:
    """Every frame's pose, the betas and the offsets in one Gauss-Newton solve
    (in chunks of self.chunk frames: joint_lm)."""
    options, shape = self.options, self.options.shape
    betas, offsets, poses, trans, cost, prior_weight = joint_lm(
        self.model, s.betas, s.offsets, s.poses, s.trans, self.targets(s), options.loss,
        shape.joint_iters, np.asarray(self.prep.offset_bound, self.dtype), shape.beta_bound,
        1.0 if shape.prior == 'auto' else 0.0, shape.noise_floor_m, structure=self.structure,
        chunk_frames=self.chunk, rel_tol=shape.joint_tol,
        call=lambda fn, args, static=None: self.call(fn, args, static, 'shape', host=False))
    self.losses['shape'] = float(cost)
    self.losses['shape_prior_weight'] = float(prior_weight)
    return dataclasses.replace(s, betas=np.asarray(betas, self.dtype),
                               offsets=np.asarray(offsets, self.dtype), poses=poses, trans=trans)

  def shape_closed_form(self, s: FitState) -> FitState:
    """Exact least-squares betas for the sample's rotations, alternated with
    per-frame LM of the sample; then every frame is re-solved for that shape."""
    shape, sample = self.options.shape, self.sample
    shape_targets = self.targets(s, sample)
    betas, poses, trans = s.betas, s.poses, s.trans
    sample_poses, sample_trans = poses[sample], trans[sample]
    for _ in range(shape.rounds):
      betas = self.call(solve_betas_jit,
                        (self.model, sample_poses, shape_targets.joints, shape_targets.weight),
                        dict(smpl_index=self.index, ridge=self.options.loss.shape_prior), 'shape')
      sample_poses, sample_trans = self.posed_root('shape', betas, sample_poses,
                                                   self.filled[sample], self.all_frames[sample])
      sample_poses, sample_trans = self.lm('shape', betas, s.offsets, sample_poses, sample_trans,
                                           shape_targets, self.options.init.iters)
    if shape.resolve_iters:
      poses, trans = self.posed_root('shape', betas, poses, self.filled, self.all_frames)
      poses, trans = self.lm('shape', betas, s.offsets, poses, trans, self.targets(s),
                             shape.resolve_iters)
    return dataclasses.replace(s, betas=betas, poses=poses, trans=trans)

  def shape_adam(self, s: FitState) -> FitState:
    """The reference's stage 2: Adam on betas and the sample's poses."""
    shape, sample = self.options.shape, self.sample
    betas, sample_poses, sample_trans = self.adam(
        'shape', s, s.poses[sample], s.trans[sample], self.targets(s, sample),
        self.hyper('shape', shape.lr, pose_lr=shape.pose_lr, beta_basis=self.basis), 'whole')
    poses, trans = s.poses.copy(), s.trans.copy()
    poses[sample], trans[sample] = sample_poses, sample_trans
    return dataclasses.replace(s, betas=betas, poses=poses, trans=trans)

  # ---- stages 3 and 4

  def pose_adam(self, s: FitState, iters, loss_name='pose') -> FitState:
    """Per-frame pose refinement: frame by frame (sequential) or all at once."""
    hyper = self.hyper('pose', 0.0, iters=iters,
                       warm_start=self.options.pose.warm_start if self.sequential else 0.0)
    _, poses, trans = self.adam('pose', s, s.poses, s.trans, self.targets(s), hyper,
                                'sequential' if self.sequential else 'windows', loss_name)
    return dataclasses.replace(s, poses=poses, trans=trans)

  def sequence_adam(self, s: FitState, loss_name='sequence') -> FitState:
    """Whole-sequence refinement (smoothness, bone lengths, contact)."""
    betas, poses, trans = self.adam('sequence', s, s.poses, s.trans, self.targets(s),
                                    self.hyper('sequence', self.options.sequence.betas_lr,
                                               beta_basis=self.basis), 'windows', loss_name)
    return dataclasses.replace(s, betas=betas, poses=poses, trans=trans)

  def outputs(self, s: FitState):
    """Continuous poses (no 2 pi jumps between frames), joints [T,24,3],
    global rotations [T,24,3,3] and points [T,M,3]."""
    parts, previous = [], s.poses[0]
    for c, chunk in enumerate(frame_chunks(s.poses, self.chunk)):
      parts.append(self.call(_continuous_chunk, (chunk, previous, np.asarray(c == 0, self.dtype))))
      previous = parts[-1][-1]
    poses = np.concatenate(parts)[:s.poses.shape[0]]
    joints, rotations, points = self.posed(s.betas, s.offsets, poses, s.trans)
    return poses, joints, rotations, points


def fit_trial(model: BodyModel, prep: TrialArrays, options: FitOptions,
              progress: Optional[Callable[[str], None]] = None) -> FitResult:
  """Runs the stages of `fit_plan(options)` on one trial's arrays
  (`TrialArrays`, e.g. a jaxfit.data.prepare.PreparedTrial). model:
  BodyModel or JointModel.

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
  plan = fit_plan(options, prep.structure)
  # Every program of the plan made ready first (shapes are known before any
  # value is): a cold process compiles them in parallel, not stage by stage.
  ready = _Fit(model, prep, options, dtype, timings, {}, prefetch=True)
  state = ready.initial_state()
  for _, method, kwargs in plan:
    state = getattr(ready, method)(state, **kwargs)
  ready.outputs(state)

  fit = _Fit(model, prep, options, dtype, timings, losses)
  state = fit.initial_state()
  stage = None
  for name, method, kwargs in plan:
    if name != stage:
      progress(name)
      stage = name
    state = getattr(fit, method)(state, **kwargs)
  poses, joints, rotations, points = fit.outputs(state)
  n = prep.num_frames
  timings['total'] = sum(v for k, v in timings.items() if k != 'compile_s')
  return FitResult(betas=np.asarray(state.betas), poses=np.asarray(poses)[:n],
                   trans=np.asarray(state.trans)[:n], joints=np.asarray(joints)[:n],
                   offsets=np.asarray(state.offsets), points=np.asarray(points)[:n],
                   rotations=np.asarray(rotations)[:n],
                   frame_offsets=np.asarray(prep.segment_rest_offset if state.frame_offsets is None
                                            else state.frame_offsets),
                   time_s=timings, losses=losses)
