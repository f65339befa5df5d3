"""Fitting: losses, the optimisation core, initialisation, the staged pipeline."""
