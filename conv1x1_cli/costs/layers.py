"""Exact counts of one layer and of a chain of layers: shapes, weights, params, MACs, FLOPs, bytes.

Conventions (the same as the README's):
- ``macs`` = N·H·W·K²·C·F multiply-accumulates of the weights (K = 1 for a 1×1 layer); bias
  additions, ReLUs and max-pools are not MACs;
- ``flops`` = 2·macs, plus N·H·W·F bias additions when the layer has a bias;
- ``params`` = weights (K²·C·F) + bias (F, or 0);
- byte sizes use the itemsize of ``dtype`` for input, output and parameters alike;
- ``conventions``: what torchinfo, fvcore, ptflops and thop report instead (see ``conventions.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ArgumentError
from .conventions import ToolCounts, layer_counts, max_pool_counts, total_counts
from .roofline import MachineLimits, roofline
from .volume import ACTIVATIONS, Volume, checked_choice, itemsize, parse_spec  # noqa: F401  (parse_spec: doctests)


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

    def as_dict(self, limits: MachineLimits | None = None) -> dict:
        row = asdict(self)
        row["input"], row["output"] = list(self.input), list(self.output)
        if limits is not None:
            row.update(roofline_entry(self.flops, self.bytes_moved, self.output_bytes, limits))
        return row


def roofline_entry(flops: int, bytes_moved: int, written_bytes: int, limits: MachineLimits) -> dict:
    """The roofline keys of a JSON entry: its intensity, which roof bounds it, the speed it allows, and
    where its working set was judged to live (``level``: L2, L3 or DRAM)."""
    point = roofline(flops, bytes_moved, limits, written_bytes)
    return {
        "intensity": point.intensity,
        "bound": point.bound,
        "attainable_gflops": point.attainable_gflops,
        "level": point.level,
        "working_set": point.working_set,
    }


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

    def as_dict(self, limits: MachineLimits | None = None) -> dict:
        """Totals over the chain with ``layers`` listing each layer's own; given machine ``limits``,
        each entry also gets its roofline ``intensity`` and ``bound``. The chain's bytes are its input,
        output and parameters only: ``apply`` keeps the intermediate results in memory, chunk by chunk."""
        totals: dict[str, Any] = {
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
            totals.update(roofline_entry(totals["flops"], moved, totals["output_bytes"], limits))
            totals["roofline"] = {**limits.as_dict(), "ridge_intensity": limits.ridge_intensity}
        totals["layers"] = [layer.as_dict(limits) for layer in self.layers]
        return totals


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
        raise ArgumentError(f"filters and kernel must be at least 1, got {filters} and {kernel}")
    checked_choice(activation, ACTIVATIONS, "activation")
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
        raise ArgumentError("at least one filter count is needed")
    kernels = [1] * len(filters) if kernels is None else list(kernels)
    with_bias = [bias] * len(filters) if isinstance(bias, bool) else list(bias)
    if not len(with_bias) == len(kernels) == len(filters):
        raise ArgumentError(f"{len(with_bias)} bias flags and {len(kernels)} kernels given for {len(filters)} layers")
    layers = []
    for index, (count, kernel, has_bias) in enumerate(zip(filters, kernels, with_bias, strict=True)):
        last = index == len(filters) - 1
        layer = layer_cost(
            volume, count, kernel=kernel, bias=has_bias, activation=activation if last else "relu", dtype=dtype
        )
        layers.append(layer)
        volume = volume.with_channels(count)
    return ChainCost(tuple(layers))
