"""Trial preparation (data layer): a Trial in, arrays ready to fit out.

Maps the source joints to SMPL joints, converts to SMPL's frame, fills gaps,
finds foot contact, builds per-joint weights, and pads to a multiple of
frame_bucket frames. NumPy only.
"""

import dataclasses
import math
from typing import Mapping, Tuple

import numpy as np

from jaxfit.body.model import SMPL_JOINT_NAMES, SMPL_PARENTS
from jaxfit.data.trial import (DEFAULT_JOINT_MAP, OPENSIM_TO_SMPL, SEGMENT_GROUPS, SEGMENT_PAIRS,
                               JointMapping, Trial, contact_from_kinematics, opensim_to_smpl,
                               resolve_mapping, segment_rest_offset)
from jaxfit.errors import MotionFileError, check
from jaxfit.fit.types import FitStructure, TrialArrays

FOOT_JOINTS = {'left': ('left_ankle', 'left_foot'), 'right': ('right_ankle', 'right_foot')}
# AddBiomechanics joints whose definition is not SMPL's, so a constant
# correspondence offset (in the SMPL joint's frame) is learned for them by
# default: the OpenSim pelvis origin (between the ASIS, 5-9 cm anterior and
# superior of SMPL's pelvis joint), the lumbosacral joint `back` (mapped to
# spine1) and the toe joint (mtp_*). Joints whose definitions agree
# (hips, knees, ankles, shoulders, elbows, wrists) get no offset unless asked
# (--config.offsets.joints): an offset there would hide a body that does not
# match the subject (measured: benchmarks/FINDINGS.md).
DEFAULT_OFFSET_JOINTS = ('ground_pelvis', 'back', 'mtp_r', 'mtp_l')
# Per source joint: (typical size, bound) of its offset in metres. The bound is
# anatomical: how far the two definitions can be apart on an adult (Rajagopal:
# pelvis origin 9.7 cm from the hip-centre midpoint; lumbar joint 4-6 cm from
# spine1; toe joint vs SMPL's toe base a few cm). An offset above its typical
# size, or at its bound, is a warning: the body model cannot match the subject there.
OFFSET_LIMITS_M = {
    'ground_pelvis': (0.10, 0.12), 'back': (0.06, 0.08),
    'mtp_r': (0.04, 0.06), 'mtp_l': (0.04, 0.06),
    'acromial_r': (0.04, 0.06), 'acromial_l': (0.04, 0.06),
    'walker_knee_r': (0.02, 0.03), 'walker_knee_l': (0.02, 0.03),
    'knee_r': (0.02, 0.03), 'knee_l': (0.02, 0.03),
}
OTHER_OFFSET_LIMIT_M = (0.02, 0.03)   # any other joint the user gives an offset
CONTACT_SOURCES = ('auto', 'file', 'heuristic', 'none')


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How a trial becomes fit targets.

  joint_map: source joint -> SMPL joint ('' = not fitted); joint_weights: 24
  per-SMPL-joint weights of the position term; gap_fill in [0, 1]: weight of
  interpolated targets for missing samples (relative to an observed one);
  contact_weight: foot weight multiplier in ground contact; contact_source:
  auto (file, else heuristic) | file | heuristic | none; the heuristic's
  vertical_speed_threshold (m/s) and height_margin (m); max_frames: > 0 fits
  only the first max_frames frames; frame_bucket: the padding unit (lengths
  are padded to a multiple of it, `padded_length`);
  offset_joints: source joints whose correspondence offset to their SMPL
  joint is learned (those the trial has and maps); offset_limits: source
  joint -> (typical, bound) m, other_offset_limit for joints not listed;
  orientations: fit the OpenSim segment orientations the trial carries
  (segment_rotations), each paired segment weighted by its group's
  orientation_weights entry (data.SEGMENT_GROUPS; 0 = not fitted);
  noncomparable_weight in [0, 1]: multiplies the position weight of every
  mapped joint whose definition differs from its SMPL joint's (not
  `is_comparable`: the OpenSim pelvis origin, the lumbar joint, the toes), so
  the comparable joints are fitted first and those points decide only what the
  comparable joints leave free (the pelvis and foot pitch, the spine's bend).
  1e-4 (benchmarks/FINDINGS.md, issue 18): at 1, a body that cannot match the
  subject spreads its misfit onto the scored joints (open body, DJ1: 1.57 mm
  against 0.30 mm at 1e-4, the default config).
  """
  joint_map: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_JOINT_MAP))
  joint_weights: Tuple[float, ...] = (1.0,) * 24
  gap_fill: float = 0.1
  contact_weight: float = 2.0
  contact_source: str = 'auto'
  vertical_speed_threshold: float = 0.4
  height_margin: float = 0.03
  max_frames: int = 0
  frame_bucket: int = 128
  offset_joints: Tuple[str, ...] = DEFAULT_OFFSET_JOINTS
  offset_limits: Mapping[str, Tuple[float, float]] = dataclasses.field(
      default_factory=lambda: dict(OFFSET_LIMITS_M))
  other_offset_limit: Tuple[float, float] = OTHER_OFFSET_LIMIT_M
  orientations: bool = True
  orientation_weights: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {g: 1.0 for g in sorted(set(SEGMENT_GROUPS.values()))})
  noncomparable_weight: float = 1e-4

  def __post_init__(self):
    for name, smpl in self.joint_map.items():
      check(not smpl or smpl in SMPL_JOINT_NAMES, f'joint_map.{name}',
            f'{smpl!r} is not an SMPL joint; expected one of {SMPL_JOINT_NAMES} or ""')
    check(len(self.joint_weights) == 24, 'joint_weights', 'must be 24 weights')
    for name, w in zip(SMPL_JOINT_NAMES, self.joint_weights):
      check(math.isfinite(w) and w >= 0, f'joint_weights.{name}', f'must be >= 0, got {w}')
    check(math.isfinite(self.noncomparable_weight) and 0 <= self.noncomparable_weight <= 1,
          'noncomparable_weight', f'must be in [0, 1], got {self.noncomparable_weight}')
    check(0 <= self.gap_fill <= 1, 'loss.gap_fill', f'must be in [0, 1], got {self.gap_fill}')
    check(math.isfinite(self.contact_weight) and self.contact_weight >= 0, 'loss.contact_weight',
          f'must be >= 0, got {self.contact_weight}')
    check(self.contact_source in CONTACT_SOURCES, 'contact.source',
          f'must be one of {CONTACT_SOURCES}, got {self.contact_source!r}')
    check(isinstance(self.max_frames, int) and self.max_frames >= 0, 'max_frames',
          f'must be an integer >= 0, got {self.max_frames!r}')
    check(isinstance(self.frame_bucket, int) and self.frame_bucket >= 1, 'frame_bucket',
          f'must be a positive integer, got {self.frame_bucket!r}')
    for group, w in self.orientation_weights.items():
      check(group in SEGMENT_GROUPS.values(), f'orientation_weights.{group}',
            f'unknown segment group; groups are {sorted(set(SEGMENT_GROUPS.values()))}')
      check(math.isfinite(w) and w >= 0, f'orientation_weights.{group}', f'must be >= 0, got {w}')
    for name, (typical, bound) in dict(self.offset_limits, other=self.other_offset_limit).items():
      check(math.isfinite(bound) and 0 <= bound <= 0.3, f'offsets.bound_m.{name}',
            f'must be in [0, 0.3] m, got {bound}')
      check(math.isfinite(typical) and 0 <= typical <= bound, f'offsets.typical_m.{name}',
            f'must be in [0, bound = {bound}] m, got {typical}')

  def offset_limit(self, name):
    """(typical, bound) m of a source joint's offset."""
    return tuple(self.offset_limits.get(name, self.other_offset_limit))


@dataclasses.dataclass(frozen=True)
class PreparedTrial(TrialArrays):
  """A trial ready to fit: the arrays `fit_trial` takes (TrialArrays: SMPL
  frame, mapped joints only, padded to T_pad) and where they came from: the
  trial, its joint mapping, the contact source, the frames with 4 or more
  valid joints; offset_typical [M] m: each learned offset's typical size (0
  where none is learned); segment_names [S]: the paired OpenSim bodies whose
  orientation is fitted (their SMPL joints: structure.segment_joints)."""
  trial: Trial
  mapping: JointMapping
  contact_source: str
  num_valid_frames: int
  offset_typical: np.ndarray
  segment_names: Tuple[str, ...]


def padded_length(num_frames, unit=128):
  """The padded length of a trial: the next multiple of unit. The fit's
  programs see fixed chunks of frames whatever the length (fit.chunk_frames),
  so padding serves only whole chunks and wastes less than one unit."""
  return max(1, -(-int(num_frames) // unit)) * unit


def mapped_bones(smpl_index, parents=SMPL_PARENTS):
  """(parent, child) pairs over mapped joints: each mapped joint's nearest
  mapped ancestor in the model's tree (`parents`) is its bone parent."""
  position = {j: m for m, j in enumerate(smpl_index)}
  bones = []
  for m, j in enumerate(smpl_index):
    p = parents[j]
    while p >= 0 and p not in position:
      p = parents[p]
    if p >= 0:
      bones.append((position[p], m))
  return tuple(bones)


def fill_gaps(values, valid):
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


def prepare_trial(trial: Trial, options: PrepareOptions, parents=SMPL_PARENTS) -> PreparedTrial:
  """Maps, converts to the SMPL frame, weights, pads. Raises MotionFileError.

  parents: the body model's kinematic tree (bones follow it).
  """
  mapping = resolve_mapping(trial.joint_names, options.joint_map, trial.source)
  joints = trial.joints[:, list(mapping.source_index)]
  valid = trial.valid[:, list(mapping.source_index)]
  if options.max_frames:
    joints, valid = joints[:options.max_frames], valid[:options.max_frames]
  num_frames = len(joints)
  frame_ok = valid.sum(1) >= 4
  if not frame_ok.any():
    raise MotionFileError(trial.source, f'trial {trial.name!r}: no frame has 4 or more valid mapped joints')
  smpl_index = mapping.smpl_index
  joints = opensim_to_smpl(np.where(valid[..., None], joints, 0.0))
  filled = fill_gaps(joints, valid)
  never = ~valid.any(0)
  if never.any():  # joints never observed: a finite stand-in (weight 0 everywhere)
    filled[:, never] = filled[:, [np.flatnonzero(~never)[0]] * int(never.sum())]
  position = {SMPL_JOINT_NAMES[j]: m for m, j in enumerate(smpl_index)}
  feet = {side: tuple(position[n] for n in names if n in position)   # (ankle, toes) order
          for side, names in FOOT_JOINTS.items()}
  contact, contact_source = _contact(trial, filled, feet, options, num_frames)
  # Missing samples of joints seen elsewhere in the trial target their temporal
  # interpolation with weight gap_fill, so gaps are filled smoothly.
  gap = ~valid & ~never[None]
  # A joint whose definition differs counts noncomparable_weight of a sample,
  # in its position weight and in the bones that end at it.
  priority = np.where(mapping.comparable, 1.0, options.noncomparable_weight)
  user_weight = np.asarray(options.joint_weights, np.float64)[list(smpl_index)]
  joint_weight = user_weight * priority
  observed = (valid + options.gap_fill * gap) * priority[None] * (joint_weight > 0)[None]
  weight = observed * user_weight[None]
  for s, side in enumerate(('left', 'right')):
    for m in feet[side]:
      weight[:, m] *= 1.0 + (options.contact_weight - 1.0) * contact[:, s]
  t_pad = padded_length(num_frames, options.frame_bucket)
  pad = lambda a: np.concatenate([a, np.repeat(a[-1:] * 0, t_pad - num_frames, 0)], 0)
  pad_edge = lambda a: np.concatenate([a, np.repeat(a[-1:], t_pad - num_frames, 0)], 0)
  offset_joints = tuple(m for m, name in enumerate(mapping.source_names)
                        if name in options.offset_joints and joint_weight[m] > 0 and valid[:, m].any())
  segments, seg_rot, seg_weight = _segments(trial, options, num_frames)
  structure = FitStructure(smpl_index=tuple(smpl_index), bones=mapped_bones(smpl_index, parents),
                           left_foot=feet['left'], right_foot=feet['right'],
                           offset_joints=offset_joints,
                           segment_joints=tuple(SMPL_JOINT_NAMES.index(SEGMENT_PAIRS[n])
                                                for n in segments))
  limits = np.zeros((len(smpl_index), 2))
  for m in offset_joints:
    limits[m] = options.offset_limit(mapping.source_names[m])
  return PreparedTrial(
      trial=trial, mapping=mapping, structure=structure,
      targets=pad(np.where(gap[..., None], filled, joints)), filled=pad_edge(filled), valid=valid,
      observed=pad(observed), weight=pad(weight),
      exists=pad(np.ones(num_frames)), contact=pad(contact.astype(np.float64)),
      contact_source=contact_source, num_frames=num_frames,
      num_valid_frames=int(frame_ok.sum()), joint_weight=joint_weight,
      offset_bound=limits[:, 1], offset_typical=limits[:, 0],
      segment_names=segments, segment_rotations=pad_edge(seg_rot), segment_weight=pad(seg_weight),
      segment_rest_offset=np.asarray([segment_rest_offset(SEGMENT_PAIRS[n]) for n in segments]
                                     ).reshape(-1, 3, 3))


def _segments(trial, options, num_frames):
  """(names [S], rotations [T,S,3,3] in the SMPL world, weight [T,S]) of the
  paired segments to fit: those the trial has, with a weight > 0."""
  if not options.orientations or trial.segment_rotations is None:
    return (), np.zeros((num_frames, 0, 3, 3)), np.zeros((num_frames, 0))
  names = tuple(n for n in trial.segment_names if n in SEGMENT_PAIRS
                and options.orientation_weights.get(SEGMENT_GROUPS[n], 0.0) > 0)
  columns = [list(trial.segment_names).index(n) for n in names]
  rot = np.asarray(trial.segment_rotations[:num_frames][:, columns], np.float64)
  ok = np.all(np.isfinite(rot), axis=(-1, -2))
  rot = np.where(ok[..., None, None], rot, np.eye(3))
  weight = ok * np.asarray([options.orientation_weights[SEGMENT_GROUPS[n]] for n in names])[None]
  return names, np.einsum('ab,tsbc->tsac', OPENSIM_TO_SMPL, rot), weight.reshape(num_frames, -1)


def _contact(trial, filled, feet, options, num_frames):
  source = options.contact_source
  if source in ('auto', 'file') and trial.contact is not None:
    return np.asarray(trial.contact[:num_frames], bool), 'file'
  if source == 'file':
    raise MotionFileError(trial.source, f'trial {trial.name!r} has no contact data; '
                          'use --config.contact.source=auto or heuristic')
  if source == 'none' or not (feet['left'] and feet['right']):
    return np.zeros((num_frames, 2), bool), 'none'
  # The most distal foot joint of each side (toes if mapped, else the ankle).
  lowest = np.stack([filled[:, feet[side][-1]] for side in ('left', 'right')], 1)
  return contact_from_kinematics(lowest, trial.fps, options.vertical_speed_threshold,
                                 options.height_margin), 'heuristic'
