"""1x1 convolutions of ``dask.array`` arrays: the fused kernel run per block through ``map_blocks``.

A 1x1 convolution needs nothing but each pixel's own channels, so a Dask array chunked along pixels,
with its channel axis whole, is convolved block by block with no communication between blocks. The
result is lazy; whatever scheduler computes it (threads, processes, a ``dask.distributed`` cluster)
runs our kernel on each block. Dask is imported only by the functions that build graphs, so this
module can be imported (and its block function unpickled on a worker) cheaply.

Threads: Dask's convention is one task per worker thread (its nanny sets ``OMP_NUM_THREADS=1``), so
each block runs the kernel on one thread unless ``threads`` asks for more; sizing the cluster so that
worker threads x kernel threads <= cores is the caller's job (``client.local_cluster`` does it).
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..engine.layers import (
    Layer,
    banks_and_biases,
    build_layers,
    channel_axis,
    checked_input_dtype,
    compute_dtype,
)
from ..engine.stack import Stack

# Packed stacks kept per worker process; a run uses one, a chain of runs a few.
_CACHED_STACKS = 8


@dataclass(frozen=True)
class StackSpec:
    """Layers plus a token naming them, so a worker packs each bank once however many blocks it runs."""

    token: str
    layers: tuple[Layer, ...]
    threads: int


def conv1x1_dask(
    x,
    w: np.ndarray | Sequence[np.ndarray],
    bias: np.ndarray | Sequence[np.ndarray | None] | None = None,
    activation: str = "relu",
    *,
    layout: str = "nhwc",
    weights_layout: str = "cf",
    threads: int | None = None,
):
    """``conv1x1`` for a ``dask.array.Array``: a lazy array of the same layout, with F channels.

    Same arguments and rules as ``conv1x1_cli.conv1x1`` (layouts, banks, chains, bias, float64 stays float64,
    else float32). A channel axis split across chunks is rechunked whole first, with a warning.

    >>> import pytest
    >>> da = pytest.importorskip("dask.array")  # i.e. ``import dask.array as da``; skipped without the extra
    >>> x = da.ones((4, 6, 3), chunks=(2, 3, 3), dtype=np.float32)
    >>> y = conv1x1_dask(x, np.ones((3, 2), np.float32))
    >>> y.shape, y.chunks[0], float(y.sum().compute())
    ((4, 6, 2), (2, 2), 144.0)
    """
    checked_input_dtype(x.dtype)
    banks, biases = banks_and_biases(w, bias, weights_layout)
    axis = channel_axis(x.shape, layout)
    layers = build_layers(banks, biases, activation, x.shape[axis], compute_dtype(x.dtype))
    return convolve_layers(x, layers, layout=layout, threads=threads)


def convolve_layers(x, layers: Sequence[Layer], *, layout: str = "nhwc", threads: int | None = None):
    """The lazy block-wise graph for layers already checked by ``engine.layers.build_layers``."""
    axis = channel_axis(x.shape, layout)
    if len(x.chunks[axis]) > 1:
        warnings.warn(
            f"the channel axis (axis {axis}, {x.shape[axis]} channels) is split into {len(x.chunks[axis])} chunks; "
            "rechunking so that every block holds all channels (store the data with whole channels to avoid this)",
            UserWarning,
            stacklevel=3,
        )
        x = x.rechunk({axis: -1})
    dtype = compute_dtype(x.dtype)
    filters = layers[-1].filters
    spec = StackSpec(stack_token(layers, threads), tuple(layers), threads or 1)
    chunks = (*x.chunks[:axis], (filters,), *x.chunks[axis + 1 :])
    return x.map_blocks(
        convolve_block,
        spec,
        axis,
        dtype=dtype,
        chunks=chunks,
        meta=np.empty((0,) * x.ndim, dtype),
        token="conv1x1",
    )


def stack_token(layers: Sequence[Layer], threads: int | None = None) -> str:
    """A name for these layers run with this many kernel threads (the key of the per-worker cache)."""
    import dask.base

    return dask.base.tokenize([(layer.bank, layer.bias, layer.relu) for layer in layers], threads or 1)


def convolve_block(block: np.ndarray, spec: StackSpec, axis: int) -> np.ndarray:
    """Run the stack over one block; the channel axis stays where it was."""
    stack = stack_for(spec)
    channels_last = np.moveaxis(block, axis, -1)
    pixels = np.ascontiguousarray(channels_last.reshape(-1, channels_last.shape[-1]), dtype=stack.layers[0].bank.dtype)
    out = stack.run(pixels)
    return np.moveaxis(out.reshape(*channels_last.shape[:-1], stack.filters), -1, axis)


_stacks: OrderedDict[str, Stack] = OrderedDict()
_stacks_lock = threading.Lock()


def stack_for(spec: StackSpec) -> Stack:
    """This process's packed Stack for ``spec``: packed (and the kernel loaded) on first use only."""
    with _stacks_lock:
        stack = _stacks.get(spec.token)
        if stack is None:
            stack = _stacks[spec.token] = Stack(list(spec.layers), spec.threads)
            stack.warm_up()  # (loading the kernel is not kernel time)
            while len(_stacks) > _CACHED_STACKS:
                _stacks.popitem(last=False)
        _stacks.move_to_end(spec.token)
        return stack


def kernel_seconds(token: str) -> float:
    """Seconds this process has spent in the kernel for the stack named ``token`` (0 if none)."""
    stack = _stacks.get(token)
    return stack.kernel_seconds if stack is not None else 0.0
