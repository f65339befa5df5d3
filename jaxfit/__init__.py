"""jaxfit: fast SMPL fitting to AddBiomechanics joint trajectories, in JAX.

The public API (see README, "From Python"):

  model, info = jaxfit.load_model('SMPL_NEUTRAL.npz')   # '' = the built-in open body (not SMPL)
  trial = jaxfit.read_trials('subject.b3d')[0]           # or a joints .npz
  prep = jaxfit.prepare_trial(trial, jaxfit.PrepareOptions(), model.parents)
  result = jaxfit.fit_trial(model, prep, jaxfit.FitOptions())
  result.betas [B], result.poses [T,24,3] rad, result.trans [T,3] m (SMPL frame)

The options' defaults are the recommended settings. Importing jaxfit sets
OMP_NUM_THREADS=1 unless it is set (before numpy loads BLAS, where jaxfit is
imported first): one thread is faster for jaxfit's small solves and gives the
same results on every engine.
"""

import os

# One thread was faster (0.65 vs 0.80 s for a 300-frame trial on 2 cores), and Ray
# gives its 1-CPU tasks OMP_NUM_THREADS=1 anyway. A value set by the user is kept.
os.environ.setdefault('OMP_NUM_THREADS', '1')

# pylint: disable=wrong-import-position
from jaxfit.data.metrics import fit_metrics  # noqa: E402
from jaxfit.data.prepare import PreparedTrial, PrepareOptions, prepare_trial  # noqa: E402
from jaxfit.data.trial import Trial  # noqa: E402
from jaxfit.errors import ConfigError, JaxfitInputError, ModelFileError, MotionFileError  # noqa: E402
from jaxfit.fit.options import (FitOptions, InitOptions, PoseOptions, SequenceOptions,  # noqa: E402
                                ShapeOptions)
from jaxfit.fit.pipeline import FitResult, fit_trial  # noqa: E402
from jaxfit.fit.types import LossWeights, TrialArrays  # noqa: E402
from jaxfit.io.motion import read_trials  # noqa: E402
from jaxfit.run.trial import load_model  # noqa: E402
from jaxfit.version import __version__  # noqa: E402

__all__ = ('load_model', 'read_trials', 'prepare_trial', 'fit_trial', 'fit_metrics',
           'FitOptions', 'InitOptions', 'ShapeOptions', 'PoseOptions', 'SequenceOptions',
           'LossWeights', 'PrepareOptions', 'PreparedTrial', 'TrialArrays', 'FitResult', 'Trial',
           'JaxfitInputError', 'ConfigError', 'ModelFileError', 'MotionFileError', '__version__')
