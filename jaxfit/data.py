"""Motion data records and the pure transforms on them (no file I/O here).

A `Trial` holds joint-centre trajectories in the frame of their source
(OpenSim / AddBiomechanics: metres, +Y up, subject faces +X at zero pelvis
angles, right side +Z). `opensim_to_smpl` is the one conversion into SMPL's
frame (+Y up, faces +Z, left +X).
"""

import dataclasses
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from jaxfit.body.model import SMPL_JOINT_NAMES
from jaxfit.errors import MotionFileError

# The 20 joints of the Rajagopal-family skeletons used by AddBiomechanics.
ADDB_JOINT_NAMES = (
    'ground_pelvis', 'hip_r', 'walker_knee_r', 'ankle_r', 'subtalar_r', 'mtp_r',
    'hip_l', 'walker_knee_l', 'ankle_l', 'subtalar_l', 'mtp_l', 'back',
    'acromial_r', 'elbow_r', 'radioulnar_r', 'radius_hand_r', 'acromial_l',
    'elbow_l', 'radioulnar_l', 'radius_hand_l')

# OpenSim -> SMPL: a proper rotation of -90 degrees about +Y,
# (x, y, z)_smpl = (-z, y, x)_osim. Rows map OpenSim axes into SMPL axes.
OPENSIM_TO_SMPL = np.array([[0.0, 0.0, -1.0],
                            [0.0, 1.0, 0.0],
                            [1.0, 0.0, 0.0]])


def opensim_to_smpl(points):
  """Points [..., 3] in the OpenSim/AddBiomechanics frame -> SMPL frame (m).

  OpenSim: +Y up, facing +X, right +Z. SMPL: +Y up, facing +Z, left +X.
  The lab heading of a trial is left to SMPL's global orientation.
  """
  return np.asarray(points) @ OPENSIM_TO_SMPL.T


@dataclasses.dataclass(frozen=True)
class Trial:
  """One trial's joint-centre trajectories, immutable.

  joints: [T,J,3] metres in the source frame (OpenSim for .b3d and joints
    .npz), NaN where missing; valid: [T,J] bool; fps: Hz;
  contact: [T,2] bool (left, right foot on the ground) or None when unknown.
  """
  subject: str
  name: str
  source: str
  joint_names: Tuple[str, ...]
  joints: np.ndarray
  fps: float
  valid: np.ndarray
  contact: Optional[np.ndarray] = None
  height_m: Optional[float] = None
  mass_kg: Optional[float] = None
  sex: Optional[str] = None
  processing_pass: Optional[str] = None

  @property
  def num_frames(self) -> int:
    return self.joints.shape[0]


def make_trial(subject, name, source, joint_names, joints, fps, **kwargs):
  """Builds a Trial, checking shapes; NaN joint centres become invalid."""
  joints = np.asarray(joints, np.float64)
  if joints.ndim != 3 or joints.shape[2] != 3 or joints.shape[1] != len(joint_names):
    raise MotionFileError(source, f'trial {name!r}: joints must be [T,{len(joint_names)},3], got {joints.shape}')
  if joints.shape[0] == 0:
    raise MotionFileError(source, f'trial {name!r} has zero frames')
  if not np.isfinite(fps) or fps <= 0:
    raise MotionFileError(source, f'trial {name!r}: invalid frame rate {fps}')
  valid = np.all(np.isfinite(joints), axis=-1)
  joints.setflags(write=False)
  valid.setflags(write=False)
  return Trial(subject=subject, name=name, source=str(source),
               joint_names=tuple(joint_names), joints=joints, fps=float(fps),
               valid=valid, **kwargs)


@dataclasses.dataclass(frozen=True)
class JointMapping:
  """Resolved correspondence: source joint i -> SMPL joint smpl_index[i]."""
  source_names: Tuple[str, ...]
  source_index: Tuple[int, ...]   # columns of Trial.joints used
  smpl_index: Tuple[int, ...]     # SMPL joints they are compared with

  @property
  def smpl_names(self):
    return tuple(SMPL_JOINT_NAMES[i] for i in self.smpl_index)


def resolve_mapping(joint_names: Sequence[str], table: Mapping[str, str],
                    source='input') -> JointMapping:
  """Maps a trial's joint names to SMPL joints.

  table: AddB name -> SMPL joint name ('' or None = unmapped). Joint names that
  are already SMPL names map to themselves. Unknown names in the table or the
  file, and mapped joints the file lacks, raise MotionFileError naming them.
  """
  names = list(joint_names)
  for addb, smpl in table.items():
    if smpl and smpl not in SMPL_JOINT_NAMES:
      raise MotionFileError(source, f'joint mapping sends {addb!r} to unknown SMPL joint {smpl!r}')
  if all(n in SMPL_JOINT_NAMES for n in names):
    pairs = [(n, n) for n in names]
  else:
    unknown = [n for n in names if n not in table]
    if unknown:
      raise MotionFileError(source, f'joints {unknown} are neither in the joint mapping nor SMPL joint names; '
                            f'expected the AddBiomechanics/Rajagopal joints {list(ADDB_JOINT_NAMES)}')
    missing = [a for a, s in table.items() if s and a not in names]
    if missing:
      raise MotionFileError(source, f'the file lacks mapped joints {missing} (a different skeleton?); '
                            f'it has {names}')
    pairs = [(n, table[n]) for n in names if table[n]]
  targets = [s for _, s in pairs]
  dupes = sorted({s for s in targets if targets.count(s) > 1})
  if dupes:
    raise MotionFileError(source, f'several joints map to the same SMPL joints {dupes}')
  if len(pairs) < 4:
    raise MotionFileError(source, f'only {len(pairs)} mapped joints; at least 4 are needed')
  return JointMapping(
      source_names=tuple(a for a, _ in pairs),
      source_index=tuple(names.index(a) for a, _ in pairs),
      smpl_index=tuple(SMPL_JOINT_NAMES.index(s) for _, s in pairs))


def contact_from_kinematics(foot_positions, fps, vertical_speed_threshold=0.4,
                            height_margin=0.03):
  """Heuristic foot contact when the file has none.

  foot_positions: [T,2,3] (left, right) metres, +Y up: each foot's lowest
  joint (toes). A foot is in contact while it is within height_margin m of its
  lowest height in the trial and moving vertically slower than
  vertical_speed_threshold m/s. Horizontal speed is not used, so treadmill
  stance (the foot moving back with the belt) counts as contact.
  Returns [T,2] bool.
  """
  height = np.asarray(foot_positions, np.float64)[..., 1]
  vertical = np.gradient(height, axis=0) * fps if len(height) > 1 else np.zeros_like(height)
  low = np.nanmin(height, axis=0, keepdims=True)
  with np.errstate(invalid='ignore'):
    return (height < low + height_margin) & (np.abs(vertical) < vertical_speed_threshold)
