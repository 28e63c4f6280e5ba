"""The speed suite behind ``conv1x1 bench`` (``suite``) and the machine it measures (``machine``): its
limits, measured, cached for ``conv1x1 shapes`` and read back.

Nothing is imported here: ``shapes`` reads the cached limits without importing NumPy or Numba.
"""
