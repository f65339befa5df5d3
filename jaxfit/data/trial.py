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
  contact: [T,2] bool (left, right foot on the ground) or None when unknown;
  segment_names: [S] OpenSim body names (may be empty); segment_rotations:
    [T,S,3,3] each body's rotation, body frame -> source world frame (OpenSim
    for .b3d: v_world = R v_body), NaN where missing; None when unknown.
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
  joint_centre_source: Optional[str] = None  # 'file' (stored) or 'fk' (computed from poses)
  segment_names: Tuple[str, ...] = ()
  segment_rotations: Optional[np.ndarray] = None

  @property
  def num_frames(self) -> int:
    return self.joints.shape[0]


def make_trial(subject, name, source, joint_names, joints, fps, segment_names=(),
               segment_rotations=None, **kwargs):
  """Builds a Trial, checking shapes; NaN joint centres become invalid.

  segment_rotations: [T,S,3,3] (S = len(segment_names)) or None; non-finite
  frames are kept (NaN = missing).
  """
  joints = np.asarray(joints, np.float64)
  if joints.ndim != 3 or joints.shape[2] != 3 or joints.shape[1] != len(joint_names):
    raise MotionFileError(source, f'trial {name!r}: joints must be [T,{len(joint_names)},3], got {joints.shape}')
  if joints.shape[0] == 0:
    raise MotionFileError(source, f'trial {name!r} has zero frames')
  if not np.isfinite(fps) or fps <= 0:
    raise MotionFileError(source, f'trial {name!r}: invalid frame rate {fps}')
  segment_names = tuple(str(n) for n in segment_names)
  if segment_rotations is not None:
    try:
      segment_rotations = np.array(segment_rotations, np.float64)
    except (TypeError, ValueError) as e:
      raise MotionFileError(source, f'trial {name!r}: segment rotations are not numbers ({e})') from None
    expected = (joints.shape[0], len(segment_names), 3, 3)
    if segment_rotations.shape != expected:
      raise MotionFileError(source, f'trial {name!r}: segment rotations must be [T,S,3,3] = '
                            f'{list(expected)} ({len(segment_names)} segment names), got '
                            f'{list(segment_rotations.shape)}')
    segment_rotations.setflags(write=False)
  elif segment_names:
    raise MotionFileError(source, f'trial {name!r}: segment names {list(segment_names)} without rotations')
  valid = np.all(np.isfinite(joints), axis=-1)
  joints.setflags(write=False)
  valid.setflags(write=False)
  return Trial(subject=subject, name=name, source=str(source),
               joint_names=tuple(joint_names), joints=joints, fps=float(fps),
               valid=valid, segment_names=segment_names,
               segment_rotations=segment_rotations, **kwargs)


# AddBiomechanics (OpenSim) joint name -> SMPL joint; '' = known but not fitted.
# Covers the skeletons AddBiomechanics uses: Rajagopal 2015 / Lai-Uhlrich
# (walker_knee_*, arms), gait2392-family lower-body models (knee_*, no arms),
# and models with patellae (patellofemoral_*).
# subtalar_*: SMPL has no subtalar joint; it sits 4-5 cm below/behind the ankle
#   centre, inside SMPL's ankle-foot segment, so it would fight the ankle target.
# radioulnar_*: a forearm pronation axis point 2-3 cm from the elbow centre,
#   not a joint SMPL has; elbow_* already pins the elbow.
# patellofemoral_*: the patella, not a joint centre SMPL has.
# back -> spine1: measured (docs/joint_mapping.md, benchmarks/spine_mapping.py):
#   the Rajagopal lumbar (L5/S1) joint sits 30% of the way from the hip centres
#   to the shoulders; spine1 is the nearest SMPL joint (40% on the demo body).
DEFAULT_JOINT_MAP = {
    'ground_pelvis': 'pelvis',
    'hip_r': 'right_hip', 'hip_l': 'left_hip',
    'walker_knee_r': 'right_knee', 'walker_knee_l': 'left_knee',
    'knee_r': 'right_knee', 'knee_l': 'left_knee',
    'patellofemoral_r': '', 'patellofemoral_l': '',
    'ankle_r': 'right_ankle', 'ankle_l': 'left_ankle',
    'subtalar_r': '', 'subtalar_l': '',
    'mtp_r': 'right_foot', 'mtp_l': 'left_foot',
    'back': 'spine1',
    'acromial_r': 'right_shoulder', 'acromial_l': 'left_shoulder',
    'elbow_r': 'right_elbow', 'elbow_l': 'left_elbow',
    'radioulnar_r': '', 'radioulnar_l': '',
    'radius_hand_r': 'right_wrist', 'radius_hand_l': 'left_wrist',
}

# Source joints whose definition agrees with their SMPL joint's (a joint
# centre at the same anatomical place): the joints the reference pipeline
# scores, and the only ones MPJPE is computed over (`mpjpe_mm`). The others
# (ground_pelvis: the OpenSim pelvis origin between the ASIS; back: the
# lumbosacral joint; mtp_*: the toe joint) name a different point than their
# SMPL joint, so their error says how the definitions differ, not how well the
# body fits. A joint named by its SMPL name (a joints .npz in SMPL names) is
# that joint, so it is comparable too.
COMPARABLE_JOINTS = frozenset((
    'hip_r', 'hip_l', 'walker_knee_r', 'walker_knee_l', 'knee_r', 'knee_l',
    'ankle_r', 'ankle_l', 'acromial_r', 'acromial_l', 'elbow_r', 'elbow_l',
    'radius_hand_r', 'radius_hand_l'))


def is_comparable(source_name: str, smpl_name: str) -> bool:
  """True when the source joint and the SMPL joint it is mapped to are defined
  alike (a comparable joint mapped elsewhere by the user is not)."""
  return source_name == smpl_name or (source_name in COMPARABLE_JOINTS
                                      and DEFAULT_JOINT_MAP[source_name] == smpl_name)


# OpenSim body -> the SMPL joint whose global rotation turns that segment (SMPL
# joint j's global rotation turns the segment between j and its child; SMPL
# 'left' = OpenSim '_l'). Each pair differs by a constant rotation (the two
# rest-pose conventions: OpenSim's bodies align with its world at q = 0, arms
# down; SMPL's rest is a T-pose). calcn, not talus, is the foot (the subtalar
# DOF turns calcn); torso pairs with spine3 (spine1/2 share the lumbar motion);
# radius pairs with the elbow (the forearm), hand (welded to the radius in
# AddBiomechanics models) with the wrist. Bodies not listed (talus, ulna) are
# not compared.
SEGMENT_PAIRS = {
    'pelvis': 'pelvis',
    'femur_r': 'right_hip', 'femur_l': 'left_hip',
    'tibia_r': 'right_knee', 'tibia_l': 'left_knee',
    'calcn_r': 'right_ankle', 'calcn_l': 'left_ankle',
    'toes_r': 'right_foot', 'toes_l': 'left_foot',
    'torso': 'spine3',
    'humerus_r': 'right_shoulder', 'humerus_l': 'left_shoulder',
    'radius_r': 'right_elbow', 'radius_l': 'left_elbow',
    'hand_r': 'right_wrist', 'hand_l': 'left_wrist',
}


def rotation_about(axis, angle):
  """[...,3,3] rotations by `angle` [...] rad about the unit `axis` [3] (Rodrigues, NumPy)."""
  k = np.asarray(axis, np.float64)
  kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
  a = np.asarray(angle, np.float64)[..., None, None]
  return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)


def _about_z(angle):
  return rotation_about((0.0, 0.0, 1.0), angle)


def _about_x(angle):
  return rotation_about((1.0, 0.0, 0.0), angle)


# The SMPL global rotation (SMPL world) of each paired joint when the body
# stands as OpenSim's q = 0 does (upright, arms hanging, palms forward): the
# identity, except the arms, which SMPL's T-pose holds out sideways, palms
# down: the left arm (+X) turned down by -90 degrees about +Z (forward), the
# right one by +90 degrees, and the forearms and hands also supinated by 90
# degrees about their own axis (measured on the real trials: the constant
# offset of radius and hand is 110-116 degrees about the forearm axis without
# it, 20-26 with it; the rest is the trials' mean posture).
SMPL_POSE_AT_OPENSIM_ZERO = {
    'left_shoulder': _about_z(-np.pi / 2), 'right_shoulder': _about_z(np.pi / 2),
    'left_elbow': _about_z(-np.pi / 2) @ _about_x(-np.pi / 2),
    'left_wrist': _about_z(-np.pi / 2) @ _about_x(-np.pi / 2),
    'right_elbow': _about_z(np.pi / 2) @ _about_x(-np.pi / 2),
    'right_wrist': _about_z(np.pi / 2) @ _about_x(-np.pi / 2)}

# Paired OpenSim bodies grouped for their orientation weights (config
# `orientation_weights.<group>`).
SEGMENT_GROUPS = {'pelvis': 'pelvis', 'femur_r': 'femur', 'femur_l': 'femur', 'tibia_r': 'tibia',
                  'tibia_l': 'tibia', 'calcn_r': 'foot', 'calcn_l': 'foot', 'toes_r': 'toes',
                  'toes_l': 'toes', 'torso': 'torso', 'humerus_r': 'humerus',
                  'humerus_l': 'humerus', 'radius_r': 'forearm', 'radius_l': 'forearm',
                  'hand_r': 'hand', 'hand_l': 'hand'}


def segment_rest_offset(smpl_joint: str) -> np.ndarray:
  """[3,3] C with R_smpl = A R_opensim C (A = OPENSIM_TO_SMPL) when the two
  bodies stand alike: at OpenSim's q = 0 every body frame is the world's
  (R_opensim = I), so C = A^T G, G the SMPL joint's global rotation in that
  stance (`SMPL_POSE_AT_OPENSIM_ZERO`). Maps SMPL rest-frame vectors to the
  OpenSim body frame."""
  return OPENSIM_TO_SMPL.T @ SMPL_POSE_AT_OPENSIM_ZERO.get(smpl_joint, np.eye(3))


# A trial can be fitted only with these observed (after mapping): the pelvis
# or both hips (they fix the root), and both knees and ankles (the legs).
REQUIRED_SMPL_JOINTS = (('pelvis',), ('left_hip', 'right_hip'))  # one of these groups
REQUIRED_LEG_JOINTS = ('left_knee', 'right_knee', 'left_ankle', 'right_ankle')


@dataclasses.dataclass(frozen=True)
class JointMapping:
  """Resolved correspondence: source joint i -> SMPL joint smpl_index[i].

  ignored: source joints that are not fitted (known-unmapped or unknown names).
  comparable: per mapped joint, True when its definition agrees with its SMPL
  joint's (`COMPARABLE_JOINTS`): the joints MPJPE is computed over.
  """
  source_names: Tuple[str, ...]
  source_index: Tuple[int, ...]   # columns of Trial.joints used
  smpl_index: Tuple[int, ...]     # SMPL joints they are compared with
  ignored: Tuple[str, ...] = ()
  comparable: Tuple[bool, ...] = ()

  @property
  def smpl_names(self):
    return tuple(SMPL_JOINT_NAMES[i] for i in self.smpl_index)

  @property
  def comparable_index(self) -> Tuple[int, ...]:
    """Mapped-joint indices of the comparable joints."""
    return tuple(m for m, c in enumerate(self.comparable) if c)


def resolve_mapping(joint_names: Sequence[str], table: Mapping[str, str],
                    source='input') -> JointMapping:
  """Maps a trial's joint names to SMPL joints.

  table: source name -> SMPL joint name ('' or None = not fitted). Names that
  are SMPL joint names and not in the table map to themselves; other names
  are not fitted (listed in `ignored`). Mapped joints the file lacks are
  simply unobserved. Raises MotionFileError naming the problem when the table
  names an unknown SMPL joint, two joints map to one SMPL joint, or the
  mapped joints cannot determine a body (see REQUIRED_*).
  """
  names = list(joint_names)
  for addb, smpl in table.items():
    if smpl and smpl not in SMPL_JOINT_NAMES:
      raise MotionFileError(source, f'joint mapping sends {addb!r} to unknown SMPL joint {smpl!r}')
  pairs, ignored = [], []
  for n in names:
    target = table[n] if n in table else (n if n in SMPL_JOINT_NAMES else '')
    if target:
      pairs.append((n, target))
    else:
      ignored.append(n)
  targets = [s for _, s in pairs]
  dupes = sorted({s for s in targets if targets.count(s) > 1})
  if dupes:
    raise MotionFileError(source, f'several joints map to the same SMPL joints {dupes}: '
                          f'{[p for p in pairs if p[1] in dupes]}')
  have = set(targets)
  missing = [j for j in REQUIRED_LEG_JOINTS if j not in have]
  if not any(all(j in have for j in group) for group in REQUIRED_SMPL_JOINTS):
    missing = ['pelvis (or both hips)'] + missing
  if missing:
    raise MotionFileError(
        source, f'cannot fit this skeleton: no joint maps to SMPL {missing} (needed: the pelvis or '
        f'both hips, both knees and both ankles); the file has joints {names}; map names with '
        '--config.joint_map.<name>=<smpl joint>')
  return JointMapping(
      source_names=tuple(a for a, _ in pairs),
      source_index=tuple(names.index(a) for a, _ in pairs),
      smpl_index=tuple(SMPL_JOINT_NAMES.index(s) for _, s in pairs),
      ignored=tuple(ignored),
      comparable=tuple(is_comparable(a, s) for a, s in pairs))


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
