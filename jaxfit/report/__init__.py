"""Reports of saved fits: plots, the skeleton animation, meshes, HTML pages (python -m jaxfit.report)."""
