"""The Python API: layouts, dtypes, banks and chains, in memory or streamed chunk by chunk.

Everything here works on pixels: a volume is viewed as (images, pixels per image, channels) for
channels-last data or (images, channels, pixels) for channels-first data, and the kernel sees
C-contiguous (pixels, channels) chunks. Numba is imported only when a convolution actually runs.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .accounting import ChainCost, Volume, chain_cost
from .io import NpyInput, NpyOutput, chunk_ranges, load_array

ACTIVATIONS = ("relu", "none")
LAYOUTS = ("nhwc", "nchw")
WEIGHT_LAYOUTS = ("cf", "fc")
# Converted or intermediate chunks stay around this size, so memory does not grow with the input.
CHUNK_BYTES = 32 * 2**20


class ShapeError(ValueError):
    """Arrays whose shapes or values cannot form the requested convolution."""


_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64; every other numeric type is computed (and written) as float32."""
    return _FLOAT64 if dtype == _FLOAT64 else _FLOAT32


def as_bank(weights: np.ndarray, layout: str = "cf", name: str = "weights") -> np.ndarray:
    """A (C, F) view of a filter bank given as (C, F), (F, C) with layout "fc",
    PyTorch (F, C, 1, 1) or Keras (1, 1, C, F).

    >>> as_bank(np.zeros((32, 192, 1, 1))).shape
    (192, 32)
    """
    weights = np.asarray(weights)
    if weights.dtype.kind not in "biuf":
        raise ShapeError(f"{name}: bank has dtype {weights.dtype}; a real numeric array is needed")
    if weights.size == 0:
        raise ShapeError(f"{name}: bank of shape {_shape_text(weights.shape)} is empty")
    if layout not in WEIGHT_LAYOUTS:
        raise ShapeError(f"{name}: weights layout must be one of {', '.join(WEIGHT_LAYOUTS)}, got {layout!r}")
    if weights.ndim == 2:
        return weights.T if layout == "fc" else weights
    if weights.ndim == 4:
        return _bank_from_4d(weights, name)
    raise ShapeError(
        f"{name}: a filter bank must be 2-D (C, F) or 4-D (F, C, 1, 1) / (1, 1, C, F), "
        f"got {weights.ndim}-D shape {_shape_text(weights.shape)}"
    )


def _bank_from_4d(weights: np.ndarray, name: str) -> np.ndarray:
    if weights.shape[2:] == (1, 1):  # PyTorch (F, C, 1, 1)
        return weights[:, :, 0, 0].T
    if weights.shape[:2] == (1, 1):  # Keras (1, 1, C, F)
        return weights[0, 0]
    pytorch_style = weights.shape[2] == weights.shape[3] or weights.shape[0] != weights.shape[1]
    kernel = weights.shape[2:] if pytorch_style else weights.shape[:2]
    raise ShapeError(
        f"{name}: bank of shape {_shape_text(weights.shape)} has a {kernel[0]}x{kernel[1]} spatial kernel; "
        "a 1x1 convolution needs (F, C, 1, 1) or (1, 1, C, F)"
    )


def as_bias(bias: np.ndarray, filters: int, name: str = "bias") -> np.ndarray:
    bias = np.asarray(bias)
    if bias.ndim != 1 or bias.shape[0] != filters:
        raise ShapeError(
            f"{name}: bias must have shape ({filters},) to match {filters} filters, got {_shape_text(bias.shape)}"
        )
    return bias


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


@dataclass(frozen=True)
class Layer:
    """One pointwise layer, in (C, F) form and the compute dtype."""

    bank: np.ndarray
    bias: np.ndarray | None
    relu: bool

    @property
    def channels(self) -> int:
        return self.bank.shape[0]

    @property
    def filters(self) -> int:
        return self.bank.shape[1]


def build_layers(
    banks: Sequence[np.ndarray],
    biases: Sequence[np.ndarray | None],
    activation: str,
    channels: int,
    dtype: np.dtype,
    *,
    names: Sequence[str] = (),
    input_name: str = "the input",
    bias_names: Sequence[str] = (),
) -> list[Layer]:
    """Check that the banks chain from ``channels`` and put them in the compute dtype.

    ReLU follows every layer; with activation "none" the last layer stays linear. ``biases`` may be
    shorter than ``banks``: the first ones get them, in order.
    """
    _checked_activation(activation)
    if not banks:
        raise ShapeError("at least one filter bank is needed")
    if len(biases) > len(banks):
        raise ShapeError(f"{len(biases)} biases given for {len(banks)} filter banks")
    layers = []
    for index, bank in enumerate(banks):
        name = names[index] if index < len(names) else ("weights" if len(banks) == 1 else f"weights[{index}]")
        if bank.shape[0] != channels:
            feeder = input_name if index == 0 else f"the output of layer {index}"
            raise ShapeError(f"{name}: bank expects {bank.shape[0]} input channels but {feeder} has {channels}")
        bias = biases[index] if index < len(biases) else None
        if bias is not None:
            bias_name = bias_names[index] if index < len(bias_names) else "bias"
            bias = as_bias(bias, bank.shape[1], bias_name).astype(dtype, copy=False)
        relu = activation == "relu" or index < len(banks) - 1
        layers.append(Layer(np.ascontiguousarray(bank, dtype=dtype), bias, relu))
        channels = bank.shape[1]
    return layers


def _kernel_module():
    """The kernel module, imported on first use: the first convolution pays for importing Numba."""
    kernel = sys.modules.get("conv1x1_cli.kernel")
    if kernel is None:
        from . import kernel
    return kernel


class Stack:
    """Layers packed for the kernel once, then run over any number of pixel chunks."""

    def __init__(self, layers: list[Layer], threads: int | None = None):
        kernel = _kernel_module()
        self._kernel = kernel
        self.layers = layers
        self.threads = threads
        self._packed = [kernel.pack_bank(layer.bank, layer.bias) for layer in layers]
        self.kernel_seconds = 0.0
        self._compilations_before_warm_up: int | None = None

    def warm_up(self) -> None:
        """Load (or compile) the kernel code every layer may run and start the pool's workers, so that
        neither is timed as work.  Only worth it where the kernel time is reported."""
        # (counted here, not when the stack is made: counting costs 4 us, and most stacks are the API's)
        self._compilations_before_warm_up = self._kernel.compilations()
        for packed in self._packed:
            self._kernel.prepare(packed, self.threads)

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


def chunk_pixels(channels: int, filters: int, itemsize: int) -> int:
    return max(1024, CHUNK_BYTES // (itemsize * max(channels, filters)))


def conv1x1(
    x: np.ndarray,
    w: np.ndarray | Sequence[np.ndarray],
    bias: np.ndarray | Sequence[np.ndarray | None] | None = None,
    activation: str = "relu",
    *,
    layout: str = "nhwc",
    threads: int | None = None,
) -> np.ndarray:
    """ReLU(x · w + bias) at every pixel: a 1x1 convolution.

    ``x`` is channels-last ``(..., C)`` (or ``(N, C, H, W)`` / ``(C, H, W)`` with ``layout="nchw"``),
    ``w`` a ``(C, F)`` bank (PyTorch ``(F, C, 1, 1)`` and Keras ``(1, 1, C, F)`` banks work too), or a
    list of banks applied in order with ReLU after each. float64 input gives float64, anything else float32.

    >>> x = np.array([[[1.0, -2.0]]])            # one pixel, two channels
    >>> w = np.array([[1.0, 3.0], [1.0, 1.0]])   # (C=2, F=2)
    >>> conv1x1(x, w)
    array([[[0., 1.]]])

    A ``dask.array.Array`` input (with the ``dask`` extra installed) gives a lazy Dask array: the
    kernel runs block by block through ``map_blocks``.
    """
    if _is_plain_call(x, w, bias, layout):
        relu = _checked_activation(activation) == "relu"
        return _one_layer(x.reshape(-1, w.shape[0]), w, bias, relu, (*x.shape[:-1], w.shape[1]), threads)
    if type(x).__module__.startswith("dask."):
        from .dask_backend import conv1x1_dask

        return conv1x1_dask(x, w, bias, activation, layout=layout, threads=threads)
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ShapeError(f"input has dtype {x.dtype}; a real numeric array is needed")
    banks, biases = banks_and_biases(w, bias)
    source = ArraySource(x, layout)
    layers = build_layers(banks, biases, activation, source.channels, source.dtype)
    whole = source.whole()
    if whole is not None and len(layers) == 1:
        layer = layers[0]
        return _one_layer(whole, layer.bank, layer.bias, layer.relu, source.output_shape(layer.filters), threads)
    stack = Stack(layers, threads)
    out = np.empty(source.output_shape(stack.filters), dtype=source.dtype)
    run(source, stack, ArraySink(out, layout, source))
    return out


def _is_plain_call(x, w, bias, layout: str) -> bool:
    """Whether the call is the commonest kind, which every check of the general path would pass: a
    C-contiguous channels-last float32 or float64 array, one non-empty 2-D (C, F) bank of its dtype
    and no bias or a (F,) one of that dtype too.

    A handful of attribute reads instead of the general path's checks, which cost 8 us a call on
    a 28x28x192 input (measured inside a loop of calls; a tenth of 28x28x192->64): anything this
    does not vouch for goes the general way, which also words the errors.
    """
    if type(x) is not np.ndarray or type(w) is not np.ndarray or layout != "nhwc" or w.ndim != 2 or w.size == 0:
        return False
    dtype = x.dtype
    if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or w.dtype is not dtype or not x.flags.c_contiguous:
        return False
    if x.ndim == 0 or x.shape[-1] != w.shape[0]:
        return False
    return bias is None or (
        type(bias) is np.ndarray and bias.dtype is dtype and bias.ndim == 1 and bias.shape[0] == w.shape[1]
    )


def _checked_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ShapeError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return activation


def _one_layer(
    pixels: np.ndarray,
    bank: np.ndarray,
    bias: np.ndarray | None,
    relu: bool,
    shape: tuple[int, ...],
    threads: int | None,
) -> np.ndarray:
    """One bank on the caller's own (pixels, C) memory, straight to the kernel: the stack, sink and
    chunking that serve every other case cost 3-4 us a call, a tenth of a small layer's whole time
    (28x28x192 -> 16 takes 30 us)."""
    kernel = _kernel_module()
    out = np.empty(shape, pixels.dtype)
    packed = kernel.pack_bank(bank, bias)
    # (the caller has checked the pixels, and out is new: nothing left for apply_packed to check)
    kernel.apply_to_new_output(pixels, packed, out.reshape(-1, bank.shape[1]), relu, threads)
    return out


def banks_and_biases(w, bias) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The API's ``w`` (one bank or a list) and ``bias`` (one, a list, or None) as two lists."""
    banks = [as_bank(bank) for bank in ([w] if isinstance(w, np.ndarray) else w)]
    biases = [bias] if isinstance(bias, np.ndarray) else list(bias or [])
    return banks, biases


class ArraySource:
    """Pixels of an in-memory array, viewed without copying as (images, pixels, C) or (images, C, pixels)."""

    def __init__(self, array: np.ndarray, layout: str = "nhwc"):
        if layout not in LAYOUTS:
            raise ShapeError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if array.ndim < 1 or (layout == "nchw" and array.ndim < 2):
            raise ShapeError(f"input of shape {_shape_text(array.shape)} has no channel axis")
        self.array, self.layout, self.shape = array, layout, array.shape
        self.dtype = compute_dtype(array.dtype)
        if layout == "nhwc":
            self.channels = array.shape[-1]
            self.images, self.pixels_per_image = 1, math.prod(array.shape[:-1])
            self._view = array.reshape(1, self.pixels_per_image, self.channels)
        else:
            batch_axes = array.shape[:-3] if array.ndim >= 3 else ()
            self.channels = array.shape[len(batch_axes)]
            self.images = math.prod(batch_axes)
            self.pixels_per_image = math.prod(array.shape[len(batch_axes) + 1 :])
            self._view = array.reshape(self.images, self.channels, self.pixels_per_image)

    def output_shape(self, filters: int) -> tuple[int, ...]:
        if self.layout == "nhwc":
            return (*self.shape[:-1], filters)
        batch_axes = self.shape[:-3] if len(self.shape) >= 3 else ()
        return (*batch_axes, filters, *self.shape[len(batch_axes) + 1 :])

    def whole(self) -> np.ndarray | None:
        """All pixels as one C-contiguous (pixels, C) array in the compute dtype, if that needs no copy."""
        view = self._view[0] if self.layout == "nhwc" and self.images == 1 else None
        if view is not None and view.dtype == self.dtype and view.flags.c_contiguous:
            return view
        return None

    def read(self, image: int, start: int, stop: int) -> np.ndarray:
        if self.layout == "nhwc":
            block = self._view[image, start:stop]
        else:
            block = self._view[image, :, start:stop].T
        return np.ascontiguousarray(block, dtype=self.dtype)


class ArraySink:
    """Writes result chunks into a preallocated output array of the source's layout."""

    def __init__(self, out: np.ndarray, layout: str, source: ArraySource):
        filters = out.shape[-1] if layout == "nhwc" else out.shape[out.ndim - 3 if out.ndim >= 3 else 0]
        self.layout = layout
        if layout == "nhwc":
            self._view = out.reshape(1, source.pixels_per_image * source.images, filters)
        else:
            self._view = out.reshape(source.images, filters, source.pixels_per_image)

    def target(self, image: int, start: int, stop: int) -> np.ndarray | None:
        """A C-contiguous slot the last layer can write straight into, when the layout allows one."""
        return self._view[image, start:stop] if self.layout == "nhwc" else None

    def write(self, image: int, start: int, values: np.ndarray) -> None:
        if self.layout == "nchw":
            self._view[image, :, start : start + len(values)] = values.T
        else:
            self._view[image, start : start + len(values)] = values


def run(source, stack: Stack, sink, progress: Callable[[int, int], None] | None = None) -> None:
    """Drive ``stack`` over every pixel of ``source`` into ``sink``, one bounded chunk at a time.

    ``progress(pixels_done_now, pixels_in_all)`` is called after every chunk."""
    total = source.images * source.pixels_per_image
    whole = source.whole() if isinstance(source, ArraySource) else None
    if whole is not None and len(stack.layers) == 1:
        # The common case needs no chunking: one kernel call over the caller's own memory.
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


class FileSource:
    """Pixels read from a C-ordered .npy file chunk by chunk with plain reads: resident memory stays
    at one chunk however large the file is (a memory map would grow the resident set instead)."""

    def __init__(self, npy: NpyInput, volume: Volume):
        self.npy, self.layout = npy, volume.layout
        self.images, self.channels = volume.batch, volume.channels
        self.pixels_per_image = volume.height * volume.width
        self.dtype = compute_dtype(npy.header.dtype)

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


def volume_of(shape: tuple[int, ...], layout: str, name: str) -> Volume:
    """The (N, H, W, C) geometry of a 2-D one-channel image, a 3-D volume or a 4-D batch."""
    if len(shape) not in (2, 3, 4):
        raise ShapeError(f"{name}: input must be 2-D (H, W), 3-D or 4-D, got {len(shape)}-D shape {_shape_text(shape)}")
    if len(shape) == 2:
        return Volume(1, shape[0], shape[1], 1, layout, batched=False)
    batched = len(shape) == 4
    batch, rest = (shape[0], shape[1:]) if batched else (1, shape)
    height, width, channels = (rest[1], rest[2], rest[0]) if layout == "nchw" else rest
    return Volume(batch, height, width, channels, layout, batched)


@dataclass(frozen=True)
class ApplyReport:
    """What one ``apply`` did, for the summary: shapes, exact counts and timings."""

    input_shape: tuple[int, ...]
    bank_shapes: list[tuple[int, ...]]
    output_shape: tuple[int, ...]
    cost: ChainCost
    seconds: float
    kernel_seconds: float
    setup_seconds: float = 0.0  # part of seconds: importing numba, packing the banks, loading or compiling
    compiled: bool = False  # whether kernel code had to be compiled (numba's cache lacked it)

    @classmethod
    def of(
        cls,
        input_shape,
        volume: Volume,
        layers: list[Layer],
        seconds: float,
        kernel_seconds: float,
        setup_seconds: float = 0.0,
        compiled: bool = False,
    ):
        cost = chain_cost(
            volume,
            [layer.filters for layer in layers],
            bias=[layer.bias is not None for layer in layers],
            dtype=layers[0].bank.dtype.name,
        )
        output_shape = volume.with_channels(layers[-1].filters).shape()
        bank_shapes = [layer.bank.shape for layer in layers]
        return cls(input_shape, bank_shapes, output_shape, cost, seconds, kernel_seconds, setup_seconds, compiled)


@dataclass(frozen=True)
class BankFiles:
    """Filter banks (as (C, F)) and biases read from .npy files, named by their paths in messages."""

    weight_paths: list[str]
    bias_paths: list[str]
    banks: list[np.ndarray]
    biases: list[np.ndarray]

    @classmethod
    def load(cls, weight_paths: Sequence[str], bias_paths: Sequence[str], weights_layout: str) -> BankFiles:
        banks = [as_bank(load_array(path, "weights"), weights_layout, path) for path in weight_paths]
        biases = [load_array(path, "bias") for path in bias_paths]
        return cls(list(weight_paths), list(bias_paths), banks, biases)

    @property
    def filters(self) -> list[int]:
        return [bank.shape[1] for bank in self.banks]

    def layers(self, activation: str, channels: int, dtype: np.dtype, input_name: str) -> list[Layer]:
        return build_layers(
            self.banks,
            self.biases,
            activation,
            channels,
            dtype,
            names=self.weight_paths,
            input_name=input_name,
            bias_names=self.bias_paths,
        )


def apply_files(
    input_path: str,
    weight_paths: Sequence[str],
    output_path: str,
    *,
    bias_paths: Sequence[str] = (),
    layout: str = "nhwc",
    weights_layout: str = "cf",
    activation: str = "relu",
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
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
        stack = Stack(layers, threads)
        stack.warm_up()
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
