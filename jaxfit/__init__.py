"""jaxfit: fast SMPL fitting to AddBiomechanics joint trajectories, in JAX."""

__version__ = '0.1.0'
