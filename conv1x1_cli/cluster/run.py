"""``apply`` on Dask: a zarr store or .npy file into a zarr store or .npy file (at least one a store,
or any of them with a scheduler), on a cluster given by address or on a local one sized to this machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..costs.chunks import block_shape
from ..costs.volume import volume_of
from ..engine.banks import BankFiles
from ..engine.layers import compute_dtype
from ..engine.report import ApplyReport
from . import blocks, codecs, stores
from .client import compute, dask_client
from .paths import is_store, require_dask


def apply_on_dask(input_path: str, weight_paths: Sequence[str], output_path: str, options) -> ApplyReport:
    """``api.apply`` on Dask, with the same ``ApplyOptions`` and the same ``ApplyReport``.

    Blocks keep the input store's chunks along pixels (``options.chunks`` = (rows, cols) rechunks
    them, and cuts a .npy input; by default a .npy input is cut into bands of ~64 MiB). With a
    scheduler address (in the options or ``DASK_SCHEDULER_ADDRESS``) it runs on that cluster; without
    one it starts a cluster of threads in this process, sized to this machine, and closes it afterwards.
    """
    started = time.perf_counter()
    for path, action in ((input_path, "reading"), (output_path, "writing")):
        if is_store(path):
            require_dask(path, action)
    layout, threads = options.layout, options.threads
    storage = dict(options.storage_options)
    compressors = codecs.compressors(options.codec)
    bank_files = BankFiles.load(weight_paths, options.bias_paths, options.weights_layout)
    x = _open_input(input_path, layout, bank_files.filters, options.chunks, storage)
    volume = volume_of(x.shape, layout, input_path)
    layers = bank_files.layers(options.activation, volume.channels, compute_dtype(x.dtype), input_path)
    input_shape = x.shape
    if x.ndim == 2:  # one channel: (H, W) becomes (H, W, 1), or (1, H, W) channels-first
        x = x[..., None] if layout == "nhwc" else x[None]
    with dask_client(options.scheduler, threads) as client:  # (without a scheduler: threads of this process)
        result = blocks.convolve_layers(x, layers, layout=layout, threads=threads)
        token = blocks.stack_token(layers, threads)
        # A long-lived cluster keeps its workers' packed stacks, and their kernel time, between runs.
        kernel_before = client.run(_kernel_seconds, token)
        if is_store(output_path):
            stores.write_store(
                result,
                output_path,
                lambda graph: compute(client, graph, options.progress),
                storage_options=storage,
                overwrite=options.overwrite,
                compressors=compressors,
            )
        else:
            stores.stream_to_npy(result, output_path, client, options.progress)
        kernel_after = client.run(_kernel_seconds, token)
        threads_of = client.nthreads()
    # Each worker's kernel seconds are summed over its threads, which ran side by side.
    kernel_seconds = max(
        ((kernel_after[w] - kernel_before.get(w, 0.0)) / threads_of.get(w, 1) for w in kernel_after), default=0.0
    )
    return ApplyReport.of(input_shape, volume, layers, time.perf_counter() - started, kernel_seconds)


def _open_input(path: str, layout: str, filters: list[int], chunks: tuple[int, int] | None, storage: dict):
    if not is_store(path):
        return stores.open_npy(path, lambda shape: block_shape(shape, layout, filters, chunks))
    x = stores.open_store(path, storage)
    return x if chunks is None else x.rechunk(block_shape(x.shape, layout, filters, chunks))


def _kernel_seconds(token: str) -> float:
    """This worker's kernel seconds so far for the stack named ``token``."""
    return blocks.kernel_seconds(token)
