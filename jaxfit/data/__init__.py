"""Motion data: trial records and the joint mapping, preparation into fit targets, fit metrics (NumPy)."""
