"""One pixel walked through a layer (or a chain of layers) as the lecture does: the pixel's C-vector,
each filter's C weights, their products, the sum, the bias, the ReLU and the output; then the same
pixel as the kernel computes it, and whether the two agree within the compute dtype's rounding.

The walk-through is plain float64 arithmetic on the stored values, independent of the kernel: every
product x_c · w_c is rounded once to float64 (exact when both come from float32 or narrower, whose
24-bit significands multiply into 48 bits), and the products are added in channel order, 0 to C - 1,
starting from 0; then the bias, then the ReLU. A chain feeds each layer's float64 output vector to
the next. Pure data: ``render.explain`` turns it into a table or JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..costs.volume import ACTIVATIONS, LAYOUTS, checked_choice, volume_of
from ..errors import ArgumentError, InputError, tuple_text
from ..sources.npy import display_name, load_array
from .arrays import convolve_array
from .banks import BankFiles
from .layers import Layer, banks_and_biases, checked_input_dtype, compute_dtype
from .streaming import check_stdin_read_once

# Every filter of a layer with at most this many is walked in full; of a wider layer, only filter 0
# (or, in the last layer, the ones asked for): its output vector still gives every filter's value.
WALK_EVERY_FILTER_UP_TO = 8

# Unit roundoff of the kernel's compute dtypes, and of this module's own float64 walk-through.
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
_WALK_ROUNDOFF = 2.0**-53


@dataclass(frozen=True)
class FilterWalk:
    """One filter at the pixel: its weights, the products x_c · w_c in channel order, their sum, the
    bias, the sum plus the bias (``pre_activation``), the activation applied and the ``output``."""

    filter: int
    weights: list[float]
    products: list[float]
    sum: float
    bias: float
    pre_activation: float
    activation: str
    output: float


@dataclass(frozen=True)
class LayerWalk:
    """One layer (``index`` from 1) at the pixel: the vector it gets, the filters walked in full and
    the vector it gives (every filter's output). ``bias`` names the bias, None when it has none."""

    index: int
    bank: str
    bias: str | None
    channels: int
    filters: int
    activation: str
    input: list[float]
    walked: list[FilterWalk]
    output: list[float]


@dataclass(frozen=True)
class KernelCheck:
    """What the kernel (as ``apply`` and ``conv1x1`` run it) gives at the pixel, against the walk-through.

    ``bound[f]`` is how far the two may differ by rounding alone: the README's bound for the kernel,
    (C + 1) · u · (Σ_c |x_c · w_c| + |b|) with u of the compute dtype, plus the same for this float64
    walk-through (u = 2⁻⁵³), plus what rounding the stored values to the compute dtype moves, plus (in a
    chain) the earlier layers' bounds carried through |w|. ``difference[f]`` is the kernel's value minus
    the walk-through's (0 where the two are equal, infinities and NaN included)."""

    dtype: str
    unit_roundoff: float
    output: list[float]
    difference: list[float]
    bound: list[float]
    largest_difference: float
    agrees: bool


@dataclass(frozen=True)
class PixelExplanation:
    """A pixel walked through every layer, and the kernel's check; ``as_dict()`` is the JSON."""

    input: str
    shape: tuple[int, ...]
    layout: str
    pixel: tuple[int, int]
    batch: int | None
    dtype: str
    layers: list[LayerWalk]
    check: KernelCheck

    @property
    def vector(self) -> list[float]:
        """The pixel's C-vector, the stored values as float64."""
        return self.layers[0].input

    @property
    def output(self) -> list[float]:
        """The last layer's output vector at the pixel, one value per filter."""
        return self.layers[-1].output

    def as_dict(self) -> dict:
        return {
            "input": self.input,
            "shape": list(self.shape),
            "layout": self.layout,
            "pixel": list(self.pixel),
            "batch": self.batch,
            "dtype": self.dtype,
            "compute_dtype": self.check.dtype,
            "channels": len(self.vector),
            "vector": self.vector,
            "layers": [asdict(layer) for layer in self.layers],
            "output": self.output,
            "apply": asdict(self.check),
        }


def explain_pixel(
    x: np.ndarray,
    w: np.ndarray | Sequence[np.ndarray],
    bias: np.ndarray | Sequence[np.ndarray | None] | None = None,
    *,
    pixel: tuple[int, int],
    batch: int = 0,
    layout: str = "nhwc",
    weights_layout: str = "cf",
    activation: str = "relu",
    filters: Sequence[int] | None = None,
) -> PixelExplanation:
    """Walk pixel ``(row, col)`` of ``x`` (of image ``batch`` of a 4-D batch) through the banks ``w``.

    ``x``, ``w``, ``bias``, ``layout``, ``weights_layout`` and ``activation`` are as for ``conv1x1``
    (a list of banks is a chain, ReLU after each layer; a 2-D ``x`` is one channel). ``filters`` picks
    the filters of the last layer to walk in full; by default every filter of a layer with at most
    8 of them, else filter 0. Every layer's whole output vector is given either way.

    >>> x = np.array([[[1.0, 2.0, 3.0]]])                 # one pixel, C = 3
    >>> w = [[0.5, 1.0], [-1.0, -2.0], [2.0, -1.0]]        # (C, F) = (3, 2)
    >>> walk = explain_pixel(x, w, [1.0, -1.0], pixel=(0, 0))
    >>> walk.layers[0].walked[1].products, walk.layers[0].walked[1].pre_activation
    ([1.0, -4.0, -3.0], -7.0)
    >>> walk.output, walk.check.output, walk.check.agrees
    ([5.5, 0.0], [5.5, 0.0], True)
    """
    x = np.asarray(x)
    checked_input_dtype(x.dtype)
    banks, biases = banks_and_biases(w, bias, weights_layout)
    single = len(banks) == 1
    names = ["weights" if single else f"weights[{index}]" for index in range(len(banks))]
    bias_names = ["bias" if single else f"bias[{index}]" for index in range(len(banks))]
    files = BankFiles(names, bias_names, banks, biases)  # (named as the API's messages name them)
    return _explain(x, "input", files, activation, pixel, batch, layout, filters)


def explain_files(
    input_path: str,
    weight_paths: Sequence[str],
    bias_paths: Sequence[str] = (),
    *,
    pixel: tuple[int, int],
    batch: int = 0,
    layout: str = "nhwc",
    weights_layout: str = "cf",
    activation: str = "relu",
    filters: Sequence[int] | None = None,
) -> PixelExplanation:
    """``explain_pixel`` on files, as ``conv1x1 explain`` runs it: a .npy input (``-``: stdin), banks
    and biases in every form ``apply`` reads (.npy, ``model.safetensors#name``, ``model.onnx#Node``),
    named by their paths in every message."""
    check_stdin_read_once([input_path, *weight_paths, *bias_paths])
    x = load_array(input_path)
    files = BankFiles.load(weight_paths, bias_paths, weights_layout)
    return _explain(x, display_name(input_path), files, activation, pixel, batch, layout, filters)


def _explain(
    x: np.ndarray,
    name: str,
    files: BankFiles,
    activation: str,
    pixel: tuple[int, int],
    batch: int,
    layout: str,
    filters: Sequence[int] | None,
) -> PixelExplanation:
    checked_choice(layout, LAYOUTS, "layout")
    checked_choice(activation, ACTIVATIONS, "activation")
    image, row, col = _image_and_pixel(x, name, layout, pixel, batch)
    dtype = compute_dtype(x.dtype)
    channels = image.shape[0] if layout == "nchw" else image.shape[-1]
    # The checks (channels chaining, bias lengths), and the values the kernel really computes with.
    layers = files.layers(activation, channels, dtype, name)
    chosen = _chosen_filters(filters, layers[-1].filters)
    banks = files.banks
    stored_biases = [_stored_bias(files.biases, index, layer) for index, layer in enumerate(layers)]
    stored = image[:, row, col] if layout == "nchw" else image[row, col, :]
    walks = _walk_layers(stored.astype(np.float64), banks, stored_biases, layers, files, chosen)
    # The kernel over the whole image, as apply runs it (the function conv1x1() hands such calls to).
    kernel_image = convolve_array(image, banks, [layer.bias for layer in layers], activation, layout, "cf", None)
    kernel = kernel_image[:, row, col] if layout == "nchw" else kernel_image[row, col, :]
    check = _check(kernel, stored, banks, stored_biases, layers, walks, dtype)
    shown_batch = batch if x.ndim == 4 else None
    return PixelExplanation(name, tuple(x.shape), layout, (row, col), shown_batch, str(x.dtype), walks, check)


def _image_and_pixel(
    x: np.ndarray, name: str, layout: str, pixel: tuple[int, int], batch: int
) -> tuple[np.ndarray, int, int]:
    """The image holding the pixel (3-D, in ``layout``; a 2-D input as one channel) and the pixel's row
    and column, each checked against the input's size."""
    volume = volume_of(x.shape, layout, name)
    if x.ndim == 4:
        if not 0 <= batch < volume.batch:
            raise ArgumentError(f"{batch} is out of range: {name} has {volume.batch} images", option="--batch")
    elif batch:
        raise ArgumentError(f"{batch}: {name} is {x.ndim}-D, not a batch of images", option="--batch")
    row, col = _pixel(pixel)
    if volume.height == 0 or volume.width == 0:
        raise InputError(f"{name}: has no pixels (shape {tuple_text(x.shape)})")
    if not (0 <= row < volume.height and 0 <= col < volume.width):
        raise ArgumentError(
            f"{row},{col} is out of range: {name} has {volume.height}×{volume.width} pixels "
            f"(rows 0 to {volume.height - 1}, columns 0 to {volume.width - 1})",
            option="--pixel",
        )
    image = x[batch] if x.ndim == 4 else x.reshape(volume.shape())
    return image, row, col


def _pixel(pixel: Any) -> tuple[int, int]:
    try:
        row, col = (int(index) for index in pixel)
    except (TypeError, ValueError):
        raise ArgumentError(f"{pixel!r}: a pixel is (row, col), two whole numbers", option="--pixel") from None
    return row, col


def _chosen_filters(filters: Sequence[int] | None, last_filters: int) -> list[int] | None:
    if not filters:
        return None
    for index in filters:
        if not 0 <= index < last_filters:
            raise ArgumentError(
                f"{index} is out of range: the last layer has {last_filters} filters (0 to {last_filters - 1})",
                option="--filter",
            )
    return sorted(set(filters))


def _stored_bias(biases: Sequence[np.ndarray | None], index: int, layer: Layer) -> np.ndarray:
    """Layer ``index``'s bias as stored, in float64 (``build_layers`` has checked its length), or zeros."""
    if index < len(biases) and biases[index] is not None:
        return np.asarray(biases[index], dtype=np.float64)
    return np.zeros(layer.filters)


def _walk_layers(
    vector: np.ndarray,
    banks: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    layers: list[Layer],
    files: BankFiles,
    chosen: Sequence[int] | None,
) -> list[LayerWalk]:
    """Each layer in float64 from the stored values, the first fed the pixel, the others the output before."""
    walks = []
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        walked = chosen if last and chosen is not None else _default_filters(layer.filters)
        bias_name = files.bias_names[index] if layer.bias is not None else None
        weights = np.asarray(banks[index], dtype=np.float64)
        bank_name = files.weight_paths[index]
        walk = _walk_layer(index + 1, bank_name, bias_name, vector, weights, biases[index], layer.relu, walked)
        walks.append(walk)
        vector = np.array(walk.output, dtype=np.float64)
    return walks


def _default_filters(count: int) -> list[int]:
    return list(range(count)) if count <= WALK_EVERY_FILTER_UP_TO else [0]


def _walk_layer(
    index: int,
    bank_name: str,
    bias_name: str | None,
    vector: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray,
    relu_after: bool,
    walked: Sequence[int],
) -> LayerWalk:
    with np.errstate(invalid="ignore", over="ignore"):  # inf − inf is NaN here as in the kernel: no warning
        sums = channel_order_sums(vector, weights)
        pre_activation = sums + bias
        products = {f: (vector * weights[:, f]).tolist() for f in walked}
    output = relu(pre_activation) if relu_after else pre_activation
    activation = "relu" if relu_after else "none"
    filter_walks = [
        FilterWalk(
            filter=f,
            weights=weights[:, f].tolist(),
            products=products[f],
            sum=float(sums[f]),
            bias=float(bias[f]),
            pre_activation=float(pre_activation[f]),
            activation=activation,
            output=float(output[f]),
        )
        for f in walked
    ]
    channels, filters = weights.shape
    inputs = vector.tolist()
    return LayerWalk(index, bank_name, bias_name, channels, filters, activation, inputs, filter_walks, output.tolist())


def channel_order_sums(vector: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Σ_c vector[c] · bank[c, f] for every filter f, in float64, added in channel order from 0: each
    product rounded once, then added to the running sum (no fused multiply-add, no blocking), exactly
    as a hand-written loop over the channels would.

    >>> channel_order_sums(np.array([1.0, 2.0, 3.0]), np.array([[0.5], [-1.0], [2.0]])).tolist()
    [4.5]
    """
    sums = np.zeros(bank.shape[1], dtype=np.float64)
    for value, weights in zip(vector, bank, strict=True):
        sums += value * weights
    return sums


def relu(values: np.ndarray) -> np.ndarray:
    """max(v, 0), keeping NaN as PyTorch and the kernel do.

    >>> relu(np.array([-1.0, 2.0, np.nan])).tolist()
    [0.0, 2.0, nan]
    """
    return np.where(np.isnan(values) | (values > 0), values, 0.0)


def _check(
    kernel: np.ndarray,
    stored: np.ndarray,
    banks: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    layers: list[Layer],
    walks: list[LayerWalk],
    dtype: np.dtype,
) -> KernelCheck:
    """The kernel's values at the pixel against the walk-through's, with the rounding bound of each."""
    unit = UNIT_ROUNDOFF[str(dtype)]
    # How far the kernel's input may be from the walk-through's: at first, only the cast to the compute dtype.
    with np.errstate(invalid="ignore", over="ignore"):  # inf or NaN values: the bound is NaN, equality decides
        rounded = stored.astype(dtype).astype(np.float64)
        error = np.where(rounded == stored, 0.0, np.abs(rounded - stored.astype(np.float64)))
        for bank, bias, layer, walk in zip(banks, biases, layers, walks, strict=True):
            error = _layer_bound(np.array(walk.input), error, bank, bias, layer, unit)
    kernel_values = kernel.astype(np.float64).tolist()
    walked = walks[-1].output
    differences = [_difference(value, reference) for value, reference in zip(kernel_values, walked, strict=True)]
    bounds = error.tolist()
    agrees = all(
        _agree(value, reference, bound) for value, reference, bound in zip(kernel_values, walked, bounds, strict=True)
    )
    largest = max((abs(value) for value in differences if not math.isnan(value)), default=0.0)
    return KernelCheck(str(dtype), unit, kernel_values, differences, bounds, largest, agrees)


def _layer_bound(
    vector: np.ndarray, error: np.ndarray, bank: np.ndarray, bias: np.ndarray, layer: Layer, unit: float
) -> np.ndarray:
    """Bound on |kernel − walk-through| after one layer, given the bound ``error`` on its input vector.

    The kernel computes with inputs within ``error`` of ``vector`` and with weights and bias rounded to
    the compute dtype (``layer``): the README's bound for its own rounding, the rounding of the values
    it was given carried through, and this walk-through's float64 rounding. ReLU never widens a gap."""
    stored_bank = np.asarray(bank, dtype=np.float64)
    kernel_bank, kernel_bias = layer.bank.astype(np.float64), _as_float64(layer.bias, layer.filters)
    terms = layer.channels + 1
    kernel_magnitude = (np.abs(vector) + error) @ np.abs(kernel_bank) + np.abs(kernel_bias)
    walk_magnitude = np.abs(vector) @ np.abs(stored_bank) + np.abs(bias)
    rounded_parameters = np.abs(vector) @ np.abs(kernel_bank - stored_bank) + np.abs(kernel_bias - bias)
    carried = error @ np.abs(kernel_bank)
    return terms * unit * kernel_magnitude + terms * _WALK_ROUNDOFF * walk_magnitude + rounded_parameters + carried


def _as_float64(bias: np.ndarray | None, filters: int) -> np.ndarray:
    return np.zeros(filters) if bias is None else bias.astype(np.float64)


def _difference(kernel: float, walked: float) -> float:
    if kernel == walked or (math.isnan(kernel) and math.isnan(walked)):
        return 0.0
    return kernel - walked


def _agree(kernel: float, walked: float, bound: float) -> bool:
    """Equal (infinities and NaN included, as ReLU keeps NaN), or apart by no more than ``bound``."""
    return _difference(kernel, walked) == 0.0 or abs(kernel - walked) <= bound
