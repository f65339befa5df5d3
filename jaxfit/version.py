"""jaxfit's version (recorded in every fit's provenance)."""

__version__ = '0.1.0'
