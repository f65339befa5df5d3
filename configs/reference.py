"""The reference PyTorch pipeline's tuned settings (../shared/reference/seed-pipeline.md).

Adam everywhere with constant learning rates: stage 1 per-frame IK 15 iterations
(lr 1e-2), stage 2 shape 100 iterations on 80 frames (lr 5e-3), stage 3
per-frame refinement 40 iterations warm-started from the previous frame
(sequential), stage 4 sequence refinement 30 iterations, max_passes 1; loss
weights position 1, bone direction 0.5, pose reg 1e-3, trans reg 1e-3,
temporal 0.1, bone length 100; per-joint rates feet 0.5x, knees 1x, hips 1.5x;
foot position weight 2x in contact.

Assumptions where the reference description is silent (stated, not guessed
silently): its 'bone length' weight 100 is the across-frames consistency term;
stage 2 matches target bone lengths with weight 1; velocity smoothness in
stage 4 has weight 0.1 like the temporal term. jaxfit's closed-form root
orientation is kept (init.root='pelvis' gives the reference's zero-rotation
start, which cannot turn a body facing away from +Z in 15 steps).
"""

from jaxfit.run.config import base_config


def get_config():
  c = base_config()
  c.variant = 'sequential'
  c.whiten_betas = False
  c.loss.position = 1.0
  c.loss.bone_direction = 0.5
  c.loss.bone_length = 1.0
  c.loss.bone_length_consistency = 100.0
  c.loss.pose_reg = 1e-3
  c.loss.trans_reg = 1e-3
  c.loss.shape_prior = 1e-3
  c.loss.temporal = 0.1
  c.loss.velocity = 0.1
  c.loss.acceleration = 0.0
  c.loss.foot_skate = 0.0
  c.loss.contact_weight = 2.0
  c.joint_lr.hips = 1.5
  c.joint_lr.knees = 1.0
  c.joint_lr.feet = 0.5
  c.init.solver = 'adam'
  c.init.iters, c.init.lr, c.init.lr_final_ratio = 15, 1e-2, 1.0
  c.shape.method = 'adam'
  c.shape.iters, c.shape.lr, c.shape.lr_final_ratio = 100, 5e-3, 1.0
  c.shape.pose_lr = 1e-2
  c.shape.terms = 'position,bone_length,pose_reg,shape_prior'
  c.pose.iters, c.pose.lr, c.pose.lr_final_ratio = 40, 1e-2, 1.0
  c.pose.warm_start = 1.0
  c.sequence.iters, c.sequence.lr, c.sequence.lr_final_ratio = 30, 1e-2, 1.0
  c.sequence.betas_lr = 0.0
  c.sequence.terms = ('position,bone_direction,bone_length_consistency,pose_reg,'
                      'trans_reg,temporal,velocity')
  c.max_passes = 1
  c.offsets.joints = ''   # the reference pins each AddB joint to its SMPL joint
  c.loss.orientation = 0.0   # the reference fits joint centres only
  c.noncomparable_weight = 1.0   # ... all of them alike
  return c
