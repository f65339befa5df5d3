"""SMPL body model: pytree, forward kinematics, skinning, rotations."""

from jaxfit.body.model import (BodyModel, JointModel, joint_model, NUM_JOINTS, SMPL_JOINT_NAMES,
                               SMPL_PARENTS, depth_levels, forward_kinematics,
                               forward_kinematics_from_rest, make_body_model,
                               shaped_joints, skin_vertices)
from jaxfit.body.rotation import (axis_angle_to_matrix, matrix_to_axis_angle,
                                  matrix_to_quaternion, quaternion_to_axis_angle)
