"""The SMPL-family body model as a JAX pytree and pure functions on it.

Conventions (those of the official SMPL files): metres, +Y up, the body faces
+Z, the subject's left is +X. Poses are [J, 3] axis-angle in radians (SMPL:
J = 24, SMPL-H 52, SMPL-X 55; jaxfit.body.family); joint 0 is the global
orientation, the others are relative to their parent. The root rotation acts
about the shaped pelvis joint and `trans` is added afterwards. Fitting sees
every family through a 24-joint `JointModel` (`joint_model`).

Fitting only ever needs `shaped_joints` / `forward_kinematics`, which never
touch vertices: joints depend on betas (through the precomputed joint-only
shape basis) and rotations alone. `skin_vertices` is for output only.
"""

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.body.rotation import axis_angle_to_matrix

NUM_JOINTS = 24
NUM_POSE_BLEND = 9 * (NUM_JOINTS - 1)  # 207

SMPL_JOINT_NAMES = (
    'pelvis', 'left_hip', 'right_hip', 'spine1', 'left_knee', 'right_knee',
    'spine2', 'left_ankle', 'right_ankle', 'spine3', 'left_foot', 'right_foot',
    'neck', 'left_collar', 'right_collar', 'head', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
    'left_hand', 'right_hand')

SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16,
                17, 18, 19, 20, 21)
NUM_BODY_JOINTS = 22   # pelvis .. right_wrist: shared by every family (jaxfit.body.family)


def fit_joint_index(parents) -> Tuple[int, ...]:
  """The 24 joints of the fitting view: the 22 body joints, then the first
  child of each wrist beyond the body (SMPL: the hands 22/23; SMPL-H/X: the
  first index-finger joints). Their positions depend on the first 22
  rotations and the shape only, so the view is exact for them."""
  parents = tuple(int(p) for p in parents)
  if parents[:NUM_BODY_JOINTS] != SMPL_PARENTS[:NUM_BODY_JOINTS]:
    raise ValueError(f'the first {NUM_BODY_JOINTS} joints are not SMPL\'s body tree: '
                     f'parents {list(parents[:NUM_BODY_JOINTS])}')
  hands = []
  for wrist in (20, 21):
    children = [j for j in range(NUM_BODY_JOINTS, len(parents)) if parents[j] == wrist]
    if not children:
      raise ValueError(f'joint {wrist} (a wrist) has no child beyond the body joints')
    hands.append(children[0])
  return tuple(range(NUM_BODY_JOINTS)) + tuple(hands)


def depth_levels(parents):
  """Groups joint indices by tree depth: tuple of tuples, root level first."""
  depth = []
  for j, p in enumerate(parents):
    if p >= j:
      raise ValueError(f'parents must precede children; joint {j} has parent {p}')
    depth.append(0 if p < 0 else depth[p] + 1)
  return tuple(
      tuple(j for j, d in enumerate(depth) if d == level)
      for level in range(max(depth) + 1))


@dataclasses.dataclass(frozen=True)
class BodyModel:
  """An SMPL-family body model. Arrays are JAX leaves; the rest is static.

  Shapes (V vertices, J joints, B shape components, F faces):
    v_template [V,3] m; shapedirs [V,3,B] m; posedirs [V,3,9*(J-1)] m;
    J_regressor [J,V]; weights [V,J]; faces [F,3] int32;
    J_template [J,3] m (= J_regressor @ v_template);
    J_shapedirs [J,3,B] m (= J_regressor applied to shapedirs);
    rest_pose [J,3] rad or None (SMPL): the neutral pose of the joints that
      are not fitted (hands: the file's hand mean, else flat; jaw, eyes: 0);
    expr_dirs [V,3,E] m or None: SMPL-X expression blend shapes, kept apart
      from the shape (not fitted).
  family: 'smpl' | 'smplh' | 'smplx'.
  """
  v_template: jax.Array
  shapedirs: jax.Array
  posedirs: jax.Array
  J_regressor: jax.Array
  weights: jax.Array
  faces: jax.Array
  J_template: jax.Array
  J_shapedirs: jax.Array
  parents: Tuple[int, ...] = SMPL_PARENTS
  joint_names: Tuple[str, ...] = SMPL_JOINT_NAMES
  gender: str = 'neutral'
  name: str = ''
  rest_pose: Optional[jax.Array] = None
  expr_dirs: Optional[jax.Array] = None
  family: str = 'smpl'

  @property
  def num_betas(self) -> int:
    return self.J_shapedirs.shape[-1]

  @property
  def num_vertices(self) -> int:
    return self.v_template.shape[0]

  @property
  def num_joints(self) -> int:
    return len(self.parents)


jax.tree_util.register_dataclass(
    BodyModel,
    data_fields=['v_template', 'shapedirs', 'posedirs', 'J_regressor',
                 'weights', 'faces', 'J_template', 'J_shapedirs', 'rest_pose', 'expr_dirs'],
    meta_fields=['parents', 'joint_names', 'gender', 'name', 'family'])


@dataclasses.dataclass(frozen=True)
class JointModel:
  """The joint-only part of a body model: all that fitting needs.

  J_template [24,3] m; J_shapedirs [24,3,B] m; parents static. Compiled fitting
  code depends on B only, never on the mesh size.
  """
  J_template: jax.Array
  J_shapedirs: jax.Array
  parents: Tuple[int, ...] = SMPL_PARENTS

  @property
  def num_betas(self) -> int:
    return self.J_shapedirs.shape[-1]


jax.tree_util.register_dataclass(
    JointModel, data_fields=['J_template', 'J_shapedirs'], meta_fields=['parents'])


def joint_model(model) -> JointModel:
  """The 24-joint fitting view of a BodyModel of any family (or a JointModel).

  SMPL: its own joints. SMPL-H / SMPL-X: the 22 body joints plus the first
  index-finger joint of each hand as joints 22/23 (parents 20/21), exact for
  every joint it holds (fit_joint_index).
  """
  if len(model.parents) == NUM_JOINTS:
    return JointModel(model.J_template, model.J_shapedirs, tuple(model.parents))
  index = np.asarray(fit_joint_index(model.parents))
  return JointModel(model.J_template[index], model.J_shapedirs[index], SMPL_PARENTS)


def make_body_model(v_template, shapedirs, posedirs, J_regressor, weights,
                    faces, parents=SMPL_PARENTS, joint_names=SMPL_JOINT_NAMES,
                    gender='neutral', name='', dtype=np.float32, family='smpl',
                    rest_pose=None, expr_dirs=None) -> BodyModel:
  """Builds a BodyModel from NumPy arrays, precomputing the joint-only terms.

  The joint terms are computed in float64 before casting to `dtype`.
  family, rest_pose, expr_dirs: see BodyModel (SMPL: 'smpl', None, None).
  """
  v_template = np.asarray(v_template, np.float64)
  shapedirs = np.asarray(shapedirs, np.float64)
  J_regressor = np.asarray(J_regressor, np.float64)
  j_template = J_regressor @ v_template
  j_shapedirs = np.einsum('jv,vcb->jcb', J_regressor, shapedirs)
  depth_levels(parents)  # validates the tree
  # Converted on the host, then placed on the device (no conversion program to compile).
  as_float = lambda a: jax.device_put(np.asarray(np.asarray(a, np.float64), dtype=np.dtype(dtype)))
  return BodyModel(
      v_template=as_float(v_template), shapedirs=as_float(shapedirs),
      posedirs=as_float(posedirs), J_regressor=as_float(J_regressor),
      weights=as_float(weights), faces=jax.device_put(np.asarray(faces, np.int32)),
      J_template=as_float(j_template), J_shapedirs=as_float(j_shapedirs),
      parents=tuple(int(p) for p in parents),
      joint_names=tuple(joint_names), gender=gender, name=name,
      rest_pose=None if rest_pose is None else as_float(rest_pose),
      expr_dirs=None if expr_dirs is None else as_float(expr_dirs), family=family)


def shaped_joints(model, betas):
  """Rest-pose joints for a shape. betas [B] -> [J,3] metres."""
  return model.J_template + jnp.einsum('jcb,b->jc', model.J_shapedirs, betas)


def forward_kinematics_from_rest(parents, rest_joints, poses, trans):
  """FK on given rest joints, processed one tree depth level at a time.

  rest_joints [J,3] m; poses [J,3] axis-angle rad; trans [3] m.
  Returns (joints [J,3] m, global_rotations [J,3,3]).
  """
  local = axis_angle_to_matrix(poses)
  parents_np = np.asarray(parents)
  offsets = rest_joints - jnp.where(
      (parents_np >= 0)[:, None], rest_joints[np.maximum(parents_np, 0)], 0.0)
  rotations = jnp.zeros_like(local).at[0].set(local[0])
  positions = jnp.zeros_like(rest_joints).at[0].set(rest_joints[0] + trans)
  for level in depth_levels(parents)[1:]:
    idx = np.asarray(level)
    par = parents_np[idx]
    parent_rot = rotations[par]
    # 3x3 products as multiply-and-sum: as fast on CPU for tiny matrices, and it
    # avoids an XLA CPU bug (jax 0.7.1) with dot_general under nested jit(vmap).
    rotations = rotations.at[idx].set(
        jnp.sum(parent_rot[..., :, :, None] * local[idx][..., None, :, :], axis=-2))
    positions = positions.at[idx].set(
        positions[par] + jnp.sum(parent_rot * offsets[idx][..., None, :], axis=-1))
  return positions, rotations


def forward_kinematics(model, betas, poses, trans):
  """Posed joints of one frame (model: a BodyModel or JointModel).

  betas [B]; poses [J,3] axis-angle, radians; trans [3] metres.
  Returns (joints [J,3] metres, global_rotations [J,3,3]).
  vmap over frames (and subjects) outside.
  """
  return forward_kinematics_from_rest(
      model.parents, shaped_joints(model, betas), poses, trans)


def skin_vertices(model: BodyModel, betas, poses, trans):
  """Posed mesh of one frame by linear blend skinning with pose correctives.

  betas [B]; poses [J,3] rad (the full pose of the model's family);
  trans [3] m -> vertices [V,3] m. Output only.
  """
  v_shaped = model.v_template + jnp.einsum('vcb,b->vc', model.shapedirs, betas)
  rest = shaped_joints(model, betas)
  joints, rotations = forward_kinematics_from_rest(model.parents, rest, poses, trans)
  pose_feature = (axis_angle_to_matrix(poses[1:]) -
                  jnp.eye(3, dtype=poses.dtype)).reshape(-1)  # [9*(J-1)]
  v_posed = v_shaped + jnp.einsum('vcp,p->vc', model.posedirs, pose_feature)
  # World transform of each joint: x -> R x + (joint - R rest_joint).
  translations = joints - jnp.einsum('jab,jb->ja', rotations, rest)
  blended_rot = jnp.einsum('vj,jab->vab', model.weights, rotations)
  blended_trans = model.weights @ translations
  return jnp.einsum('vab,vb->va', blended_rot, v_posed) + blended_trans


@jax.jit
def skin_frames(model: BodyModel, betas, poses, trans):
  """Posed meshes of F frames: poses [F,J,3] rad, trans [F,3] m -> vertices [F,V,3] m."""
  return jax.vmap(lambda p, t: skin_vertices(model, betas, p, t))(poses, trans)
