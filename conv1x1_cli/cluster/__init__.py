"""Dask and zarr: the kernel run block by block on a ``dask.array`` (``blocks``), zarr stores and .npy
files as Dask arrays and back (``stores``), the cluster itself (``client``) and ``apply`` on it
(``run``); ``paths`` tells stores from files without importing Dask.

Imports the engine, never the reverse. Dask, distributed and zarr come with the optional extra
(``pip install "conv1x1[dask]"``) and are imported only when a run needs them.
"""
