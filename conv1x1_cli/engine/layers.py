"""Filter banks, biases and chains of layers, checked and put in the dtype the kernel computes in.

A bank arrives as (C, F), as (F, C) with weights layout "fc", as PyTorch's (F, C, 1, 1) or as Keras's
(1, 1, C, F); a chain is a list of banks, each feeding the next, with a ReLU after every layer but
(with activation "none") the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..costs.volume import ACTIVATIONS, LAYOUTS, WEIGHT_LAYOUTS, checked_choice
from ..errors import ArgumentError, InputError, tuple_text

# Element kinds we compute with: booleans, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"

_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64 (in this machine's byte order: a big-endian one too); every other numeric
    type is computed (and written) as float32."""
    return _FLOAT64 if dtype.kind == "f" and dtype.itemsize == 8 else _FLOAT32


def checked_input_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` if the kernel can compute with it (converted by ``compute_dtype``), else an InputError."""
    if dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"input has dtype {dtype}; a real numeric array is needed")
    return dtype


def channel_axis(shape: tuple[int, ...], layout: str) -> int:
    """Where the channels are in an array of this shape: last for "nhwc" (..., C); the C of
    (N, C, H, W) or (C, H, W) for "nchw" (and the first axis of a 2-D channels-first array).

    >>> channel_axis((8, 64, 7, 7), "nchw"), channel_axis((7, 7, 64), "nhwc")
    (1, 2)
    """
    checked_choice(layout, LAYOUTS, "layout")
    ndim = len(shape)
    if ndim < 1 or (layout == "nchw" and ndim < 2):
        raise InputError(f"input of shape {tuple_text(shape)} has no channel axis")
    if layout == "nhwc":
        return ndim - 1
    return ndim - 3 if ndim >= 3 else 0


def as_bank(weights: np.ndarray, layout: str = "cf", name: str = "weights") -> np.ndarray:
    """A (C, F) view of a filter bank given as (C, F), (F, C) with layout "fc",
    PyTorch (F, C, 1, 1) or Keras (1, 1, C, F).

    >>> as_bank(np.zeros((32, 192, 1, 1))).shape
    (192, 32)
    """
    weights = np.asarray(weights)
    if weights.dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{name}: bank has dtype {weights.dtype}; a real numeric array is needed")
    if weights.size == 0:
        raise InputError(f"{name}: bank of shape {tuple_text(weights.shape)} is empty")
    checked_choice(layout, WEIGHT_LAYOUTS, f"{name}: weights layout")
    if weights.ndim == 2:
        return weights.T if layout == "fc" else weights
    if weights.ndim == 4:
        return _bank_from_4d(weights, name)
    raise InputError(
        f"{name}: a filter bank must be 2-D (C, F) or 4-D (F, C, 1, 1) / (1, 1, C, F), "
        f"got {weights.ndim}-D shape {tuple_text(weights.shape)}"
    )


def _bank_from_4d(weights: np.ndarray, name: str) -> np.ndarray:
    if weights.shape[2:] == (1, 1):  # PyTorch (F, C, 1, 1)
        return weights[:, :, 0, 0].T
    if weights.shape[:2] == (1, 1):  # Keras (1, 1, C, F)
        return weights[0, 0]
    pytorch_style = weights.shape[2] == weights.shape[3] or weights.shape[0] != weights.shape[1]
    kernel = weights.shape[2:] if pytorch_style else weights.shape[:2]
    raise InputError(
        f"{name}: bank of shape {tuple_text(weights.shape)} has a {kernel[0]}x{kernel[1]} spatial kernel; "
        "a 1x1 convolution needs (F, C, 1, 1) or (1, 1, C, F)"
    )


def as_bias(bias: np.ndarray, filters: int, name: str = "bias") -> np.ndarray:
    """``bias`` if it is real numbers, one per filter, else an InputError."""
    bias = np.asarray(bias)
    if bias.dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{name}: bias has dtype {bias.dtype}; real numbers are needed")
    if bias.ndim != 1 or bias.shape[0] != filters:
        raise InputError(
            f"{name}: bias must have shape ({filters},) to match {filters} filters, got {tuple_text(bias.shape)}"
        )
    return bias


def banks_and_biases(w, bias, weights_layout: str = "cf") -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The API's ``w`` and ``bias`` as two lists, banks as (C, F) (2-D ones read in ``weights_layout``).

    ``w`` is one bank (an array, or anything NumPy makes a 2-D or 4-D array of, such as nested lists)
    or a list of banks, a chain. ``bias`` is None, one bias (an array or a list of numbers) or a list
    with one bias (or None) per bank, in order.

    >>> banks, biases = banks_and_biases([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5])
    >>> [bank.shape for bank in banks], [bias.tolist() for bias in biases]
    ([(2, 2)], [[0.5, -0.5]])
    """
    banks = [as_bank(bank, weights_layout) for bank in bank_list(w)]
    biases = [] if bias is None else _items_or_one(bias, minimum_ndim=1)
    return banks, biases


def bank_list(w) -> list[np.ndarray]:
    """The API's ``w`` as a list of arrays: one bank (anything NumPy makes an array of) or a chain."""
    if w is None:
        raise InputError("weights: a filter bank is needed (an array of shape (C, F)), got None")
    if isinstance(w, list | tuple) and w and not all(isinstance(bank, np.ndarray) for bank in w):
        try:
            ndim = np.ndim(w)
        except ValueError:  # ragged: banks of different shapes, a chain
            ndim = None
        if ndim in (2, 4):  # nested lists NumPy makes one bank of, (C, F) or PyTorch's / Keras's 4-D
            return [np.asarray(w)]
    return _items_or_one(w, minimum_ndim=2)


def _items_or_one(value, minimum_ndim: int) -> list:
    """A list or tuple of arrays of at least ``minimum_ndim`` dimensions (or None) stands for one per
    layer; anything else is one array."""
    per_layer = isinstance(value, list | tuple) and value
    if per_layer and all(item is None or np.ndim(item) >= minimum_ndim for item in value):
        return [item if item is None else np.asarray(item) for item in value]
    return [np.asarray(value)]


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
    checked_choice(activation, ACTIVATIONS, "activation")
    if not banks:
        raise ArgumentError("at least one filter bank is needed")
    if len(biases) > len(banks):
        raise ArgumentError(f"{len(biases)} biases given for {len(banks)} filter banks")
    layers = []
    for index, bank in enumerate(banks):
        name = names[index] if index < len(names) else ("weights" if len(banks) == 1 else f"weights[{index}]")
        if bank.shape[0] != channels:
            feeder = input_name if index == 0 else f"the output of layer {index}"
            raise InputError(f"{name}: bank expects {bank.shape[0]} input channels but {feeder} has {channels}")
        bias = biases[index] if index < len(biases) else None
        if bias is not None:
            bias_name = bias_names[index] if index < len(bias_names) else "bias"
            bias = as_bias(bias, bank.shape[1], bias_name).astype(dtype, copy=False)
        relu = activation == "relu" or index < len(banks) - 1
        layers.append(Layer(np.ascontiguousarray(bank, dtype=dtype), bias, relu))
        channels = bank.shape[1]
    return layers
