"""Where arrays come from and where they go: ``.npy`` files and standard streams (``npy``), read with
NumPy's own header parser and never unpickled, and the one atomic writer (``atomic``).

Nothing is imported here, so that ``sources.atomic`` stays free of NumPy.
"""
