""".npy files through the kernel chunk by chunk: a file of any size in flat memory, written atomically."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..costs.volume import Volume, volume_of
from ..errors import ArgumentError
from ..sources.atomic import signals_held
from ..sources.npy import STDIO, NpyInput, NpyOutput
from .arrays import ArraySource
from .banks import BankFiles
from .layers import compute_dtype
from .report import ApplyReport
from .stack import Progress, Stack, run, run_threads


def check_stdin_read_once(paths: Sequence[str]) -> None:
    """Standard input (``-``) may be named once among a command's inputs: it can be read only once."""
    if paths.count(STDIO) > 1:
        raise ArgumentError(f"'-' (standard input) is named {paths.count(STDIO)} times; it can be read only once")


class FileSource:
    """Pixels read from a C-ordered .npy file chunk by chunk with plain reads: resident memory stays
    at one chunk however large the file is (a memory map would grow the resident set instead)."""

    def __init__(self, npy: NpyInput, volume: Volume):
        self.npy, self.layout = npy, volume.layout
        self.images, self.channels = volume.batch, volume.channels
        self.pixels_per_image = volume.height * volume.width
        self.dtype = compute_dtype(npy.header.dtype)

    def whole(self) -> None:
        """Never in memory at once (see ``stack.run``)."""
        return None

    def read(self, image: int, start: int, stop: int) -> np.ndarray:
        count = stop - start
        stored = np.empty(
            (count, self.channels) if self.layout == "nhwc" else (self.channels, count), dtype=self.npy.header.dtype
        )
        if self.layout == "nhwc":
            self.npy.read_at(stored, (image * self.pixels_per_image + start) * self.channels)
        else:
            image_start = image * self.channels * self.pixels_per_image
            for channel in range(self.channels):
                self.npy.read_at(stored[channel], image_start + channel * self.pixels_per_image + start)
            stored = stored.T
        return np.ascontiguousarray(stored, dtype=self.dtype)


class StreamSink:
    """Writes result chunks, in order, to a .npy output (file or stdout) in the input's layout.

    Channels-first output buffers one image's (F, pixels) plane, since its chunks interleave there."""

    def __init__(self, output: NpyOutput, volume: Volume, filters: int, dtype: np.dtype):
        self.output, self.layout = output, volume.layout
        self.pixels_per_image = volume.height * volume.width
        self._plane = np.empty((filters, self.pixels_per_image), dtype) if self.layout == "nchw" else None

    def target(self, image: int, start: int, stop: int) -> None:
        return None

    def write(self, image: int, start: int, values: np.ndarray) -> None:
        if self._plane is None:
            self.output.write(values)
            return
        self._plane[:, start : start + len(values)] = values.T
        if start + len(values) == self.pixels_per_image:
            self.output.write(self._plane)


def apply_npy(
    input_path: str,
    weight_paths: Sequence[str],
    output_path: str,
    *,
    bias_paths: Sequence[str] = (),
    layout: str = "nhwc",
    weights_layout: str = "cf",
    activation: str = "relu",
    threads: int | None = None,
    progress: Progress | None = None,
) -> ApplyReport:
    """Read .npy input and banks, convolve, and write the .npy output atomically (``-`` = stdin/stdout)."""
    started = time.perf_counter()
    with NpyInput(input_path) as npy:
        volume = volume_of(npy.header.shape, layout, npy.name)
        dtype = compute_dtype(npy.header.dtype)
        layers = BankFiles.load(weight_paths, bias_paths, weights_layout).layers(
            activation, volume.channels, dtype, npy.name
        )
        source = _source_for(npy, volume)
        setup_started = time.perf_counter()
        pixels = source.images * source.pixels_per_image
        stack = Stack(layers, run_threads(threads, layers, pixels))
        # Numba's compiler calls back into Python; a signal's exception raised in a callback is dropped
        # (the signal lost) or leaves LLVM half-done (a crash). Held, it acts when the compile is over.
        with signals_held():
            stack.warm_up(pixels)  # (no call gets more: on a small input, only the one-thread code)
        setup_seconds = time.perf_counter() - setup_started
        output_volume = volume.with_channels(stack.filters)
        with NpyOutput(output_path, output_volume.shape(), dtype) as output:
            run(source, stack, StreamSink(output, volume, stack.filters, dtype), progress)
    seconds = time.perf_counter() - started
    return ApplyReport.of(
        npy.header.shape, volume, layers, seconds, stack.kernel_seconds, setup_seconds, stack.compiled
    )


def _source_for(npy: NpyInput, volume: Volume):
    """Stream from seekable C-ordered files; read stdin and Fortran-ordered files whole."""
    if npy.seekable and not npy.header.fortran_order:
        return FileSource(npy, volume)
    return ArraySource(npy.read_all().reshape(volume.shape()), volume.layout)
