"""Zarr stores and .npy files as Dask arrays, and Dask arrays written back to them safely.

- A zarr (format 3) store, a local path or an fsspec URL (``s3://bucket/x.zarr``), opens as a Dask
  array with the store's own chunks. A .npy file opens as one too, cut into blocks of whole pixels
  that the workers read themselves (so a local .npy file needs a file system the workers share).
- A local store is written beside its destination and renamed into place only when every block is in
  it (``sources.atomic``: the temporary of a killed run is removed by the next one); on object
  storage, where nothing renames atomically, ``remote`` writes the array's metadata last. A failed
  run removes what it wrote; a store already there is replaced only when asked to.
- A .npy output is streamed in C order through ``sources.npy.NpyOutput`` (atomic too): the blocks of one band
  of rows are computed, written and dropped before the band after next is asked for.

Dask and zarr are imported by the functions that need them: ``paths.require_dask`` turns their
absence into one line naming the extra to install.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from math import prod
from typing import Any

import numpy as np

from ..engine.layers import NUMERIC_KINDS
from ..errors import ArgumentError, InputError, first_line
from ..sources.atomic import Replacement, final_target
from ..sources.npy import HEADER_PARSING, STDIO, NpyInput, NpyOutput
from . import remote
from .client import result as result_of
from .paths import is_url

# Slabs of output asked for ahead of the one being written: enough to keep the workers busy.
SLABS_AHEAD_PER_THREAD = 2


# ---------------------------------------------------------------------------------------------------
# Reading


def open_store(path: str, storage_options: dict[str, Any] | None = None):
    """The zarr array at ``path`` as a Dask array with the store's chunks (nothing read yet).
    ``storage_options`` go to the fsspec file system of a URL; the workers get them with the array."""
    import dask.array as da
    import zarr

    if is_url(path):
        remote.filesystem(path, storage_options or {})  # a missing package or a bad option: one line
    elif storage_options:
        raise _options_for_a_local_path(path)
    elif os.path.isfile(path):
        raise InputError(f"{path}: is a file; a zarr store is a directory (or a prefix on object storage)")
    try:
        array = zarr.open_array(store=path, mode="r", storage_options=storage_options or None)
    except FileNotFoundError:
        raise InputError(f"{path}: no such zarr store") from None
    except (OSError, TypeError) as error:  # denied, unreachable; an option the file system refuses
        raise InputError(remote.storage_message(path, error)) from None
    except Exception as error:  # zarr raises many types for a group, v2 metadata or garbage
        raise InputError(f"{path}: not a zarr array ({first_line(error)})") from None
    if array.dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{path}: has dtype {array.dtype}; a real numeric array is needed")
    return da.from_zarr(array)


def open_npy(path: str, block_shape: Callable[[tuple[int, ...]], tuple[int, ...]]):
    """A .npy file as a Dask array whose blocks the workers read with plain reads.

    ``block_shape(shape)`` gives the block shape; standard input is read whole first (it cannot be
    re-read by workers), and a Fortran-ordered file is read through a memory map.
    """
    import dask.array as da

    with NpyInput(path) as npy:
        header = npy.header
        chunks = da.core.normalize_chunks(block_shape(header.shape), header.shape)
        if path == STDIO:
            return da.from_array(npy.read_all(), chunks=chunks)
    return da.map_blocks(
        read_npy_block,
        os.path.abspath(path),
        header.shape,
        header.fortran_order,
        dtype=header.dtype,
        chunks=chunks,
        meta=np.empty((0,) * len(header.shape), header.dtype),
        token="read-npy",
    )


def read_npy_block(path: str, shape: tuple[int, ...], fortran_order: bool, block_info=None) -> np.ndarray:
    """One block of a .npy file, read with one plain read per contiguous run of its elements."""
    location = block_info[None]["array-location"]
    box = tuple(slice(start, stop) for start, stop in location)
    if fortran_order:
        with HEADER_PARSING:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        return np.array(mapped[box])
    with NpyInput(path) as npy:
        if npy.header.shape != shape:
            raise InputError(f"{path}: changed while being read (shape {npy.header.shape}, was {shape})")
        block = np.empty([stop - start for start, stop in location], npy.header.dtype)
        # Axes from ``inner`` on are whole in the block except ``inner`` itself: one run per outer index.
        inner = max([0] + [axis for axis in range(len(shape)) if location[axis] != (0, shape[axis])])
        strides = [prod(shape[axis + 1 :]) for axis in range(len(shape))]
        for outer in np.ndindex(*block.shape[:inner]):
            offset = sum((location[axis][0] + index) * strides[axis] for axis, index in enumerate(outer))
            npy.read_at(block[outer].reshape(-1), offset + location[inner][0] * strides[inner])
    return block


# ---------------------------------------------------------------------------------------------------
# Writing a store


def write_store(
    result,
    path: str,
    compute: Callable[[object], None],
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    compressors: Any = "auto",
) -> None:
    """Write Dask array ``result`` to a zarr v3 store at ``path``, all or nothing.

    ``compute(delayed)`` runs the write graph (on a cluster, with progress); whatever it raises, and
    Ctrl-C, leaves neither a half-written store nor a temporary one behind. A store already at ``path``
    is replaced only with ``overwrite``; ``compressors`` are zarr's (``"auto"``: its default).
    ``storage_options`` go to the fsspec file system of a URL (``remote``).
    """

    def create(store):
        return zarr_array(store, result, compressors, storage_options or None)

    if is_url(path):
        fs, root = remote.filesystem(path, storage_options or {})
        remote.write_remote_store(
            result, path, lambda array: compute(_store_graph(result, array)), lambda: create(path), fs, root, overwrite
        )
        return
    if storage_options:
        raise _options_for_a_local_path(path)
    target = final_target(path.rstrip("/"))  # a symbolic link stays one; its target is replaced
    _check_replaceable(target, os.path.dirname(os.path.abspath(target)), overwrite)
    try:
        with Replacement(target, directory=True) as store:
            compute(_store_graph(result, create(store.temp)))
    except OSError as error:
        raise InputError(f"{path}: cannot write the store ({error.strerror or error})") from None


def _options_for_a_local_path(path: str) -> ArgumentError:
    """The usage error for storage options given with a local path (reading or writing)."""
    return ArgumentError(f"{path}: storage options are only for URLs such as s3://bucket/x.zarr", "--storage-option")


def zarr_array(store, result, compressors: Any = "auto", storage_options: dict[str, Any] | None = None):
    """A new zarr v3 array at ``store`` with ``result``'s shape, dtype and chunks (its ``zarr.json`` written)."""
    import zarr
    from zarr.core.array_spec import ArrayConfig

    # zarr's default skips chunks that are all fill value, at the price of comparing every chunk
    # with it before writing: 10.7 ms per 8 MiB chunk of ReLU output, which capped writes at about
    # 750 MB/s whatever the codec. An all-zero chunk costs a few bytes once compressed.
    write_every_chunk = ArrayConfig(order="C", write_empty_chunks=True)
    return zarr.create_array(
        store=store,
        shape=result.shape,
        chunks=result.chunksize,
        dtype=result.dtype,
        compressors=compressors,
        zarr_format=3,
        overwrite=False,  # (True would clear the whole prefix, ``remote``'s marker included)
        storage_options=storage_options,
        config=write_every_chunk,
    )


def _store_graph(result, target):
    """One write per block into the zarr chunk of the same shape. (``to_zarr`` on an existing array
    would first rechunk to Dask's 128 MiB "auto" chunks, merging blocks and the memory they need.)"""
    import dask.array as da

    regular = all(len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0] for sizes in result.chunks)
    if not regular:
        result = result.rechunk(result.chunksize)
    return da.store(result, target, lock=False, compute=False)


def _check_replaceable(path: str, directory: str, overwrite: bool) -> None:
    if not os.path.isdir(directory):
        raise InputError(f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"{path}: cannot write in {directory}")
    if not os.path.lexists(path) or overwrite:
        return
    if os.path.isfile(os.path.join(path, "zarr.json")):
        raise InputError(f"{path}: a zarr store is already there; pass --overwrite to replace it")
    raise InputError(f"{path}: exists and is not a zarr store; pass --overwrite to replace it")


# ---------------------------------------------------------------------------------------------------
# Streaming to .npy


def stream_to_npy(result, path: str, client, progress: Callable[[int, int], None] | None = None) -> None:
    """Write ``result`` to a .npy file (or ``-``) in C order, a slab of blocks at a time.

    The cluster works ``SLABS_AHEAD_PER_THREAD`` slabs per worker thread ahead of the writer, so at
    most that many computed slabs wait in memory. ``progress(blocks written now, blocks in all)`` is
    called after each slab.
    """
    slabs = list(_contiguous_slabs(result.shape, result.chunks))
    threads = max(1, sum(client.nthreads().values()))
    ahead = SLABS_AHEAD_PER_THREAD * threads
    pending: list = []  # (futures of the slabs ahead, in order)
    with NpyOutput(path, result.shape, result.dtype) as output:
        try:
            for index in range(len(slabs)):
                while len(pending) < ahead and index + len(pending) < len(slabs):
                    pending.append(client.compute(result[slabs[index + len(pending)]]))
                output.write(result_of(client, pending.pop(0)))
                if progress:
                    progress(_blocks_in(result, slabs[index]), result.npartitions)
        finally:
            for future in pending:
                future.cancel()


def _contiguous_slabs(shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> Iterator[tuple]:
    """Boxes that follow each other in C order: single indices along the leading axes whose chunks
    are all 1 (images of a batch), one chunk's range along the next axis, the trailing axes whole."""
    split = next((axis for axis, sizes in enumerate(chunks) if any(size != 1 for size in sizes)), len(shape) - 1)
    for outer in np.ndindex(*shape[:split]):
        start = 0
        for size in chunks[split]:
            yield (*outer, slice(start, start + size))
            start += size


def _blocks_in(result, slab: tuple) -> int:
    return prod(len(sizes) for sizes in result[slab].chunks)
