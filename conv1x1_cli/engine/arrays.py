"""In-memory arrays as sources and sinks of pixels, and the general path of ``conv1x1`` over them.

A volume is viewed, without copying, as (images, pixels per image, channels) for channels-last data
or (images, channels, pixels) for channels-first data; the kernel sees C-contiguous (pixels, C) chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ArgumentError, tuple_text
from .layers import banks_and_biases, build_layers, channel_axis, checked_input_dtype, compute_dtype
from .stack import Stack, run


def convolve_array(
    x: np.ndarray,
    w: np.ndarray | Sequence[np.ndarray],
    bias: np.ndarray | Sequence[np.ndarray | None] | None,
    activation: str,
    layout: str,
    weights_layout: str,
    threads: int | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``conv1x1`` for any NumPy array and any banks: every check, every layout, dtype and chain; into
    ``out`` when given (see ``checked_out``)."""
    x = np.asarray(x)
    checked_input_dtype(x.dtype)
    banks, biases = banks_and_biases(w, bias, weights_layout)
    source = ArraySource(x, layout)
    stack = Stack(build_layers(banks, biases, activation, source.channels, source.dtype), threads)
    shape = source.output_shape(stack.filters)
    out = checked_out(out, shape, source.dtype)
    # An out that shares memory with what the chunks read (the input, a bank or a bias) is written
    # once they have all been read: the kernel's own check covers one chunk at a time.
    shared = out is not None and any(_may_share(out, array) for array in (x, *banks, *biases))
    result = np.empty(shape, dtype=source.dtype) if out is None or shared else out
    run(source, stack, ArraySink(result, layout, source))
    if out is not None and result is not out:
        out[...] = result
    return result if out is None else out


def _may_share(out: np.ndarray, array: object) -> bool:
    return isinstance(array, np.ndarray) and np.may_share_memory(out, array)


def checked_out(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """``out`` if it can take the result: an ndarray of exactly that shape and dtype, C-contiguous and
    writeable (the kernel writes rows of it in place; NumPy's ufuncs would cast, which hides a copy)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise ArgumentError(f"out must be a NumPy array, not {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ArgumentError(f"out has shape {tuple_text(out.shape)} and dtype {out.dtype}; the result is "
                            f"{tuple_text(tuple(shape))} {np.dtype(dtype)}")  # fmt: skip
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ArgumentError("out must be C-contiguous and writeable")
    return out


class ArraySource:
    """Pixels of an in-memory array, viewed without copying as (images, pixels, C) or (images, C, pixels)."""

    def __init__(self, array: np.ndarray, layout: str = "nhwc"):
        self._axis = axis = channel_axis(array.shape, layout)
        self.array, self.layout, self.shape = array, layout, array.shape
        self.dtype = compute_dtype(array.dtype)
        self.channels = array.shape[axis]
        self.images = math.prod(array.shape[:axis]) if layout == "nchw" else 1
        self.pixels_per_image = math.prod(array.shape[axis + 1 :] if layout == "nchw" else array.shape[:axis])
        if layout == "nhwc":
            self._view = array.reshape(1, self.pixels_per_image, self.channels)
        else:
            self._view = array.reshape(self.images, self.channels, self.pixels_per_image)

    def output_shape(self, filters: int) -> tuple[int, ...]:
        return (*self.shape[: self._axis], filters, *self.shape[self._axis + 1 :])

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
        filters = out.shape[channel_axis(out.shape, layout)]
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
