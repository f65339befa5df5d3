"""File formats: SMPL model files, .b3d subjects, joints .npz, fit outputs."""
