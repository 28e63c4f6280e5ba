"""Shapes, parameters and costs of 1×1 layers, chains of them, bottlenecks and Inception modules.

Pure integer arithmetic on Python ints, so counts stay exact for any size and this module starts
instantly (it imports neither NumPy nor Numba).

Conventions (the same as the README's):
- ``macs`` = N·H·W·K²·C·F multiply-accumulates of the weights (K = 1 for a 1×1 layer); bias
  additions, ReLUs and max-pools are not MACs;
- ``flops`` = 2·macs, plus N·H·W·F bias additions when the layer has a bias;
- ``params`` = weights (K²·C·F) + bias (F, or 0);
- byte sizes use the itemsize of ``dtype`` for input, output and parameters alike;
- ``conventions``: what torchinfo, fvcore, ptflops and thop report instead (see ``conventions.py``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Protocol

from .conventions import ToolCounts, layer_counts, max_pool_counts, total_counts

DTYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8}
LAYOUTS = ("nhwc", "nchw")

_SPEC_SEPARATORS = re.compile(r"\s*[x×X*,]\s*")


class SpecError(ValueError):
    """A shape spec or filter list that cannot describe a pointwise layer."""


@dataclass(frozen=True)
class Volume:
    """A batch of feature maps: N images of H x W pixels with C channels, in a given layout."""

    batch: int
    height: int
    width: int
    channels: int
    layout: str = "nhwc"
    batched: bool = False  # whether the user wrote N, so the output shape is written the same way

    @property
    def pixels(self) -> int:
        return self.batch * self.height * self.width

    def shape(self) -> tuple[int, ...]:
        """The shape as the user writes it, in this volume's layout."""
        if self.layout == "nchw":
            spatial = (self.channels, self.height, self.width)
        else:
            spatial = (self.height, self.width, self.channels)
        return (self.batch, *spatial) if self.batched else spatial

    def with_channels(self, channels: int) -> Volume:
        return Volume(self.batch, self.height, self.width, channels, self.layout, self.batched)

    @property
    def elements(self) -> int:
        return self.pixels * self.channels


class Limits(Protocol):
    """What the roofline needs of a machine (``machine.MachineLimits`` has it)."""

    ridge_intensity: float

    def as_dict(self) -> dict: ...


@dataclass(frozen=True)
class LayerCost:
    """Exact counts for one layer: a K×K 'same' convolution (stride 1) with its activation, or a
    3×3 / stride 1 max-pool. ``as_dict`` is what JSON and CSV show."""

    op: str  # "conv" or "max-pool"
    input: tuple[int, ...]
    output: tuple[int, ...]
    channels: int
    filters: int
    kernel: int
    activation: str  # "relu" or "none"
    weights: int
    bias: int
    params: int
    macs: int
    flops: int
    input_bytes: int
    output_bytes: int
    weight_bytes: int
    conventions: ToolCounts  # what torchinfo, fvcore, ptflops and thop report for this layer

    @property
    def bytes_moved(self) -> int:
        return self.input_bytes + self.output_bytes + self.weight_bytes

    def as_dict(self, limits: Limits | None = None) -> dict:
        row = asdict(self)
        row["input"], row["output"] = list(self.input), list(self.output)
        if limits is not None:
            row.update(roofline_point(self.flops, self.bytes_moved, limits))
        return row


def roofline_point(flops: int, bytes_moved: int, limits: Limits) -> dict:
    """Arithmetic intensity (FLOPs per byte moved) and which roof bounds it: compute at or above the
    ridge point (peak FLOP/s over bandwidth), memory below it."""
    intensity = flops / bytes_moved
    return {"intensity": intensity, "bound": "compute" if intensity >= limits.ridge_intensity else "memory"}


@dataclass(frozen=True)
class ChainCost:
    """Layers applied in order (a single layer is a chain of one); totals are sums over layers."""

    layers: tuple[LayerCost, ...]

    @property
    def input(self) -> tuple[int, ...]:
        return self.layers[0].input

    @property
    def output(self) -> tuple[int, ...]:
        return self.layers[-1].output

    @property
    def conventions(self) -> ToolCounts:
        return total_counts(layer.conventions for layer in self.layers)

    def total(self, field: str) -> int:
        return sum(getattr(layer, field) for layer in self.layers)

    def as_dict(self, limits: Limits | None = None) -> dict:
        """Totals over the chain with ``layers`` listing each layer's own; given machine ``limits``,
        each entry also gets its roofline ``intensity`` and ``bound``. The chain's bytes are its input,
        output and parameters only: ``apply`` keeps the intermediate results in memory, chunk by chunk."""
        totals = {
            "input": list(self.input),
            "output": list(self.output),
            "input_bytes": self.layers[0].input_bytes,
            "output_bytes": self.layers[-1].output_bytes,
        }
        for field in ("weights", "bias", "params", "macs", "flops", "weight_bytes"):
            totals[field] = self.total(field)
        totals["conventions"] = self.conventions.as_dict()
        if limits is not None:
            moved = totals["input_bytes"] + totals["output_bytes"] + totals["weight_bytes"]
            totals.update(roofline_point(totals["flops"], moved, limits))
            totals["roofline"] = {**limits.as_dict(), "ridge_intensity": limits.ridge_intensity}
        totals["layers"] = [layer.as_dict(limits) for layer in self.layers]
        return totals


def parse_positive(text: str, what: str) -> int:
    """An integer >= 1 written in decimal (underscores allowed, as in Python)."""
    cleaned = text.strip().replace("_", "")
    if not cleaned.isdigit() or not cleaned.isascii():
        raise SpecError(f"{what} must be a whole number, got {text!r}")
    value = int(cleaned)
    if value < 1:
        raise SpecError(f"{what} must be at least 1, got {value}")
    return value


def parse_spec(spec: str, layout: str = "nhwc") -> Volume:
    """Parse ``HxWxC`` / ``NxHxWxC`` (or ``CxHxW`` / ``NxCxHxW`` for layout ``nchw``).

    >>> parse_spec("28x28x192").shape()
    (28, 28, 192)
    >>> parse_spec("8x3x224x224", layout="nchw").channels
    3
    """
    if layout not in LAYOUTS:
        raise SpecError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    parts = _SPEC_SEPARATORS.split(spec.strip())
    expected = "CxHxW or NxCxHxW" if layout == "nchw" else "HxWxC or NxHxWxC"
    if len(parts) not in (3, 4) or not all(parts):
        raise SpecError(f"shape {spec!r} must be {expected}")
    sizes = [parse_positive(part, f"every size in {spec!r}") for part in parts]
    batched = len(sizes) == 4
    batch = sizes.pop(0) if batched else 1
    if layout == "nchw":
        channels, height, width = sizes
    else:
        height, width, channels = sizes
    return Volume(batch, height, width, channels, layout, batched)


def parse_filters(text: str) -> list[int]:
    """``"32"`` or a chain ``"96,48,10"``."""
    parts = [part for part in re.split(r"\s*,\s*", text.strip())]
    if not text.strip() or not all(parts):
        raise SpecError(f"filters must be a number or a comma-separated list, got {text!r}")
    return [parse_positive(part, "every filter count") for part in parts]


def itemsize(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise SpecError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}") from None


ACTIVATIONS = ("relu", "none")


def layer_cost(
    volume: Volume,
    filters: int,
    *,
    kernel: int = 1,
    bias: bool = True,
    activation: str = "relu",
    dtype: str = "float32",
) -> LayerCost:
    """Counts for one convolution from ``volume`` to ``filters`` channels: 1×1 by default, or K×K
    with 'same' padding and stride 1 (so every output pixel costs K·K·C MACs per filter, padding
    included, as every counter counts it). ``activation`` changes no count of ours, only ptflops'.

    >>> cost = layer_cost(parse_spec("28x28x192"), 32)
    >>> cost.output, cost.params, cost.macs
    ((28, 28, 32), 6176, 4816896)
    >>> layer_cost(parse_spec("28x28x192"), 32, kernel=5).macs
    120422400
    """
    size = itemsize(dtype)
    if filters < 1 or kernel < 1:
        raise SpecError(f"filters and kernel must be at least 1, got {filters} and {kernel}")
    if activation not in ACTIVATIONS:
        raise SpecError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    output = volume.with_channels(filters)
    weights = kernel * kernel * volume.channels * filters
    bias_count = filters if bias else 0
    macs = volume.pixels * weights
    bias_adds = volume.pixels * filters if bias else 0
    return LayerCost(
        op="conv",
        input=volume.shape(),
        output=output.shape(),
        channels=volume.channels,
        filters=filters,
        kernel=kernel,
        activation=activation,
        weights=weights,
        bias=bias_count,
        params=weights + bias_count,
        macs=macs,
        flops=2 * macs + bias_adds,
        input_bytes=volume.elements * size,
        output_bytes=output.elements * size,
        weight_bytes=(weights + bias_count) * size,
        conventions=layer_counts(
            images=volume.batch,
            pixels=volume.height * volume.width,
            channels=volume.channels,
            filters=filters,
            kernel=kernel,
            bias=bias,
            relu=activation == "relu",
        ),
    )


def max_pool_cost(volume: Volume, *, dtype: str = "float32") -> LayerCost:
    """A 3×3 max-pool, stride 1, 'same' padding (Inception's pool branch): the shape is kept, and
    it has no parameters, no MACs and no FLOPs in our convention (taking a maximum is comparisons,
    not multiplies or additions).

    >>> max_pool_cost(parse_spec("28x28x192")).macs
    0
    """
    size = itemsize(dtype)
    return LayerCost(
        op="max-pool",
        input=volume.shape(),
        output=volume.shape(),
        channels=volume.channels,
        filters=volume.channels,
        kernel=3,
        activation="none",
        weights=0,
        bias=0,
        params=0,
        macs=0,
        flops=0,
        input_bytes=volume.elements * size,
        output_bytes=volume.elements * size,
        weight_bytes=0,
        conventions=max_pool_counts(images=volume.batch, pixels=volume.height * volume.width, channels=volume.channels),
    )


def chain_cost(
    volume: Volume,
    filters: list[int],
    *,
    kernels: list[int] | None = None,
    bias: bool | list[bool] = True,
    activation: str = "relu",
    dtype: str = "float32",
) -> ChainCost:
    """Counts for layers applied in order (Network in Network's mlpconv), with a ReLU after each;
    ``activation="none"`` makes only the last layer linear, as in ``apply``. ``kernels`` are 1 unless
    given; ``bias`` is one flag for all layers or one per layer.

    >>> chain = chain_cost(parse_spec("32x32x192"), [96, 48, 10])
    >>> chain.output, chain.total("params")
    ((32, 32, 10), 23674)
    """
    if not filters:
        raise SpecError("at least one filter count is needed")
    kernels = [1] * len(filters) if kernels is None else list(kernels)
    with_bias = [bias] * len(filters) if isinstance(bias, bool) else list(bias)
    if not len(with_bias) == len(kernels) == len(filters):
        raise SpecError(f"{len(with_bias)} bias flags and {len(kernels)} kernels given for {len(filters)} layers")
    layers = []
    for index, (count, kernel, has_bias) in enumerate(zip(filters, kernels, with_bias, strict=True)):
        last = index == len(filters) - 1
        layer = layer_cost(
            volume, count, kernel=kernel, bias=has_bias, activation=activation if last else "relu", dtype=dtype
        )
        layers.append(layer)
        volume = volume.with_channels(count)
    return ChainCost(tuple(layers))


@dataclass(frozen=True)
class BottleneckCost:
    """A direct K×K convolution (C → F) against a 1×1 reduce (C → R) followed by the K×K (R → F)."""

    direct: ChainCost
    bottleneck: ChainCost

    def saving(self, field: str) -> float:
        """How many times more ``field`` (``macs``, ``params``, …) the direct convolution costs."""
        return self.direct.total(field) / self.bottleneck.total(field)

    def as_dict(self) -> dict:
        return {
            "direct": self.direct.as_dict(),
            "bottleneck": self.bottleneck.as_dict(),
            "saving": {field: self.saving(field) for field in ("weights", "params", "macs", "flops")},
        }


def bottleneck_cost(
    volume: Volume, *, reduce: int, kernel: int, filters: int, bias: bool = True, dtype: str = "float32"
) -> BottleneckCost:
    """Inception's bottleneck: the lecture's 28×28×192 → 5×5 → 32 costs 120,422,400 MACs directly and
    12,443,648 through a 16-channel 1×1 reduce, 9.7 times fewer.

    >>> cost = bottleneck_cost(parse_spec("28x28x192"), reduce=16, kernel=5, filters=32)
    >>> cost.direct.total("macs"), cost.bottleneck.total("macs"), round(cost.saving("macs"), 2)
    (120422400, 12443648, 9.68)
    """
    return BottleneckCost(
        direct=chain_cost(volume, [filters], kernels=[kernel], bias=bias, dtype=dtype),
        bottleneck=chain_cost(volume, [reduce, filters], kernels=[1, kernel], bias=bias, dtype=dtype),
    )


INCEPTION_COLUMNS = ("#1×1", "#3×3 reduce", "#3×3", "#5×5 reduce", "#5×5", "pool proj")


@dataclass(frozen=True)
class BranchCost:
    """One of an Inception module's four parallel branches."""

    name: str
    layers: ChainCost

    def as_dict(self) -> dict:
        totals = self.layers.as_dict()
        return {"name": self.name, "output_channels": self.layers.layers[-1].filters, **totals}


@dataclass(frozen=True)
class InceptionCost:
    """A GoogLeNet Inception module: four branches whose outputs are concatenated along the channels."""

    input: tuple[int, ...]
    output: tuple[int, ...]
    branches: tuple[BranchCost, ...]

    @property
    def conventions(self) -> ToolCounts:
        return total_counts(branch.layers.conventions for branch in self.branches)

    def total(self, field: str) -> int:
        return sum(branch.layers.total(field) for branch in self.branches)

    def as_dict(self) -> dict:
        totals: dict = {"input": list(self.input), "output": list(self.output)}
        totals["output_channels"] = sum(branch.layers.layers[-1].filters for branch in self.branches)
        for field in ("weights", "bias", "params", "macs", "flops"):
            totals[field] = self.total(field)
        totals["conventions"] = self.conventions.as_dict()
        totals["branches"] = [branch.as_dict() for branch in self.branches]
        return totals


def inception_cost(volume: Volume, columns: list[int], *, bias: bool = True, dtype: str = "float32") -> InceptionCost:
    """An Inception module from the six columns of the GoogLeNet paper's Table 1, in its order
    (``INCEPTION_COLUMNS``): a 1×1 branch; 1×1 reduce then 3×3; 1×1 reduce then 5×5; 3×3 max-pool
    then a 1×1 "pool projection". Every convolution is followed by a ReLU, as in GoogLeNet.

    >>> module = inception_cost(parse_spec("28x28x192"), [64, 96, 128, 16, 32, 32])  # inception (3a)
    >>> module.output, module.total("weights"), module.total("params"), module.total("macs")
    ((28, 28, 256), 163328, 163696, 128049152)
    """
    if len(columns) != len(INCEPTION_COLUMNS):
        raise SpecError(f"an Inception module has {len(INCEPTION_COLUMNS)} columns, got {len(columns)}")
    ones, reduce3, threes, reduce5, fives, pool_proj = columns
    pooled = max_pool_cost(volume, dtype=dtype)
    projection = chain_cost(volume, [pool_proj], bias=bias, dtype=dtype)
    branches = (
        BranchCost("1×1", chain_cost(volume, [ones], bias=bias, dtype=dtype)),
        BranchCost("3×3", chain_cost(volume, [reduce3, threes], kernels=[1, 3], bias=bias, dtype=dtype)),
        BranchCost("5×5", chain_cost(volume, [reduce5, fives], kernels=[1, 5], bias=bias, dtype=dtype)),
        BranchCost("pool proj", ChainCost((pooled, *projection.layers))),
    )
    output = volume.with_channels(ones + threes + fives + pool_proj)
    return InceptionCost(input=volume.shape(), output=output.shape(), branches=branches)
