"""Layers packed for the kernel once and run over pixel chunks: the loop every in-process run goes
through, whatever its source and sink.

A *source* hands out C-contiguous (pixels, C) chunks in the compute dtype (``images``,
``pixels_per_image``, ``channels``, ``dtype``, ``read(image, start, stop)``, and ``whole()`` when all
its pixels are one such array already); a *sink* takes the results (``target`` offers a slot the last
layer can write straight into, ``write`` copies a chunk in). Numba is imported only when a stack is made.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import ArgumentError
from ..sources.atomic import signals_held
from .layers import Layer

# Converted or intermediate chunks stay around this size, so memory does not grow with the input.
CHUNK_BYTES = 32 * 2**20


def kernel_module():
    """The kernel package, imported on first use: the first convolution pays for importing Numba."""
    kernel = sys.modules.get("conv1x1_cli.kernel")
    if kernel is None:
        _check_thread_setting()
        _cache_somewhere()
        with signals_held():  # (importing Numba runs code that swallows exceptions: a signal's would be lost)
            from .. import kernel
    return kernel


def _cache_somewhere() -> None:
    """Numba caches the compiled kernel beside its sources, else in the user's cache directory; when
    neither can be written (a read-only install and a read-only HOME) it refuses to compile at all.
    Then compile into a temporary directory, for this process only, and say so once."""
    if os.environ.get("NUMBA_CACHE_DIR") or "numba" in sys.modules:  # (Numba reads it when imported)
        return
    beside_sources = Path(__file__).resolve().parent.parent / "kernel" / "__pycache__"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if _can_create(beside_sources) or _can_create(Path(base) / "numba"):
        return
    temporary = tempfile.mkdtemp(prefix="conv1x1-numba-")
    atexit.register(shutil.rmtree, temporary, ignore_errors=True)
    os.environ["NUMBA_CACHE_DIR"] = temporary
    warnings.warn(
        "Numba's cache cannot be written (the package and the user cache directory are read-only): "
        "the kernel is compiled for this run only; set NUMBA_CACHE_DIR to keep it",
        RuntimeWarning,
        stacklevel=2,
    )


def _can_create(path: Path) -> bool:
    """Whether ``path`` is, or could be made, a directory this process may write in."""
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _check_thread_setting() -> None:
    """NUMBA_NUM_THREADS must be a whole number >= 1 (or unset): Numba raises at import on 0 and
    prints a warning of several lines on anything else it cannot read."""
    value = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if value and not (value.isdigit() and int(value) >= 1):
        raise ArgumentError(f"NUMBA_NUM_THREADS={value!r}: must be a whole number of threads, at least 1 (or unset)")


# A whole run (a file, not an API call) with fewer multiply-adds than this runs on one thread. Sharing
# it could save at most 1 ms (2^28 multiply-adds take 2 ms on one Zen 5 core), while the pool's code
# takes 10 ms to load from numba's disk cache, and 1.4 s to compile into a cold one.
SMALL_RUN_WORK = 1 << 28


def run_threads(threads: int | None, layers: Sequence[Layer], pixels: int) -> int | None:
    """The threads a whole run of ``layers`` over ``pixels`` pixels is given: 1 for a small one, unless
    the caller chose; else the caller's choice (None: all cores)."""
    work = pixels * sum(layer.channels * layer.filters for layer in layers)
    return 1 if threads is None and work < SMALL_RUN_WORK else threads


class Stack:
    """Layers packed for the kernel once, then run over any number of pixel chunks."""

    def __init__(self, layers: list[Layer], threads: int | None = None):
        kernel = kernel_module()
        self._kernel = kernel
        self.layers = layers
        self.threads = threads
        self._packed = [kernel.pack_bank(layer.bank, layer.bias) for layer in layers]
        self.kernel_seconds = 0.0
        self._compilations_before_warm_up: int | None = None

    def warm_up(self, pixels: int | None = None) -> None:
        """Load (or compile) the kernel code every layer may run on calls of up to ``pixels`` pixels
        (None: any number) and start the pool's workers, so that neither is timed as work.  Only worth
        it where the kernel time is reported."""
        # (counted here, not when the stack is made: counting costs 4 us, and most stacks are the API's)
        self._compilations_before_warm_up = self._kernel.compilations()
        for packed in self._packed:
            self._kernel.prepare(packed, self.threads, pixels)

    @property
    def compiled(self) -> bool:
        """Whether any kernel code had to be compiled since warm_up began (numba's cache lacked it): in
        warm_up, or in a call that needed a kind warm_up could not foresee (one-row tiles for a chunk
        of fewer pixels than a tile has rows).  False for a stack that was never warmed up."""
        before = self._compilations_before_warm_up
        return before is not None and self._kernel.compilations() > before

    @property
    def filters(self) -> int:
        return self.layers[-1].filters

    def run(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Apply every layer to a C-contiguous (pixels, channels) chunk; returns (pixels, filters)."""
        started = time.perf_counter()
        for index, (layer, packed) in enumerate(zip(self.layers, self._packed, strict=True)):
            last = index == len(self.layers) - 1
            target = out if last and out is not None else np.empty((len(pixels), layer.filters), pixels.dtype)
            self._kernel.apply_packed(pixels, packed, target, layer.relu, threads=self.threads)
            pixels = target
        self.kernel_seconds += time.perf_counter() - started
        return pixels


def one_layer_function():
    """The function that runs one bank on the caller's own channels-last (..., C) memory, straight to
    the kernel, into a new (..., F) array or into ``out``: ``f(pixels, bank, bias, relu, threads,
    out)``, the caller vouching for the arrays (kernel.apply_bank).  The stack, sink and chunking
    that serve every other case cost 3-4 us a call, a tenth of a small layer's whole time (28x28x192
    -> 16 takes 30 us); the API keeps the function and calls it directly, as a call through a
    function of this module's cost a tiny call 3 %.  Imports Numba on first use."""
    return kernel_module().apply_bank


Progress = Callable[[int, int], None]  # (pixels done since the last call, pixels in all)


def run(source, stack: Stack, sink, progress: Progress | None = None) -> None:
    """Drive ``stack`` over every pixel of ``source`` into ``sink``, one bounded chunk at a time.

    ``progress(pixels_done_now, pixels_in_all)`` is called after every chunk."""
    total = source.images * source.pixels_per_image
    whole = source.whole()
    if whole is not None and len(stack.layers) == 1:
        # One layer over memory that is already (pixels, C) needs no chunks: one kernel call does it all.
        _run_chunk(stack, sink, whole, 0, 0)
        if progress:
            progress(len(whole), total)
        return
    widest = max(source.channels, *(layer.filters for layer in stack.layers))
    step = chunk_pixels(widest, widest, source.dtype.itemsize)
    for image in range(source.images):
        for start, stop in chunk_ranges(source.pixels_per_image, step):
            _run_chunk(stack, sink, source.read(image, start, stop), image, start)
            if progress:
                progress(stop - start, total)


def _run_chunk(stack: Stack, sink, pixels: np.ndarray, image: int, start: int) -> None:
    """The last layer writes straight into the sink's memory when it offers a slot; else it is copied in."""
    target = sink.target(image, start, start + len(pixels))
    result = stack.run(pixels, out=target)
    if result is not target:
        sink.write(image, start, result)


def chunk_pixels(channels: int, filters: int, itemsize: int) -> int:
    """Pixels per chunk: about ``CHUNK_BYTES`` of the wider of input and output, at least 1024."""
    return max(1024, CHUNK_BYTES // (itemsize * max(channels, filters)))


def chunk_ranges(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive runs of ``chunk`` items covering ``total``."""
    for start in range(0, total, chunk):
        yield start, min(total, start + chunk)
