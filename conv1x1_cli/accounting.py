"""Shape, parameter and cost accounting for pointwise (1x1) layers.

Pure integer arithmetic on Python ints, so counts stay exact for any size and this module starts
instantly (it imports neither NumPy nor Numba).

Conventions (the same as the README's):
- ``macs`` = N*H*W*C*F multiply-accumulates (what fvcore calls "flops" and ptflops calls MACs);
- ``flops`` = 2*macs, plus N*H*W*F bias additions when the layer has a bias;
- ``params`` = weights (C*F) + bias (F, or 0);
- byte sizes use the itemsize of ``dtype`` for input, output and parameters alike.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

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


@dataclass(frozen=True)
class LayerCost:
    """Exact counts for one pointwise layer; ``as_dict`` is what JSON and CSV show."""

    input: tuple[int, ...]
    output: tuple[int, ...]
    channels: int
    filters: int
    weights: int
    bias: int
    params: int
    macs: int
    flops: int
    input_bytes: int
    output_bytes: int
    weight_bytes: int

    def as_dict(self) -> dict:
        row = asdict(self)
        row["input"], row["output"] = list(self.input), list(self.output)
        return row


@dataclass(frozen=True)
class ChainCost:
    """A stack of pointwise layers (a single layer is a chain of one); totals are sums over layers."""

    layers: tuple[LayerCost, ...]

    @property
    def input(self) -> tuple[int, ...]:
        return self.layers[0].input

    @property
    def output(self) -> tuple[int, ...]:
        return self.layers[-1].output

    def total(self, field: str) -> int:
        return sum(getattr(layer, field) for layer in self.layers)

    def as_dict(self) -> dict:
        totals = {
            "input": list(self.input),
            "output": list(self.output),
            "input_bytes": self.layers[0].input_bytes,
            "output_bytes": self.layers[-1].output_bytes,
        }
        for field in ("weights", "bias", "params", "macs", "flops", "weight_bytes"):
            totals[field] = self.total(field)
        totals["layers"] = [layer.as_dict() for layer in self.layers]
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


def layer_cost(volume: Volume, filters: int, *, bias: bool = True, dtype: str = "float32") -> LayerCost:
    """Counts for one 1x1 convolution from ``volume`` to ``filters`` channels.

    >>> cost = layer_cost(parse_spec("28x28x192"), 32)
    >>> cost.output, cost.params, cost.macs
    ((28, 28, 32), 6176, 4816896)
    """
    size = itemsize(dtype)
    if filters < 1:
        raise SpecError(f"filters must be at least 1, got {filters}")
    output = volume.with_channels(filters)
    weights = volume.channels * filters
    bias_count = filters if bias else 0
    macs = volume.pixels * volume.channels * filters
    bias_adds = volume.pixels * filters if bias else 0
    return LayerCost(
        input=volume.shape(),
        output=output.shape(),
        channels=volume.channels,
        filters=filters,
        weights=weights,
        bias=bias_count,
        params=weights + bias_count,
        macs=macs,
        flops=2 * macs + bias_adds,
        input_bytes=volume.elements * size,
        output_bytes=output.elements * size,
        weight_bytes=(weights + bias_count) * size,
    )


def chain_cost(
    volume: Volume, filters: list[int], *, bias: bool | list[bool] = True, dtype: str = "float32"
) -> ChainCost:
    """Counts for 1x1 layers applied in order (Network in Network's mlpconv); ``bias`` is one flag for
    all layers or one per layer.

    >>> chain = chain_cost(parse_spec("32x32x192"), [96, 48, 10])
    >>> chain.output, chain.total("params")
    ((32, 32, 10), 23674)
    """
    if not filters:
        raise SpecError("at least one filter count is needed")
    with_bias = [bias] * len(filters) if isinstance(bias, bool) else list(bias)
    if len(with_bias) != len(filters):
        raise SpecError(f"{len(with_bias)} bias flags given for {len(filters)} layers")
    layers = []
    for count, has_bias in zip(filters, with_bias, strict=True):
        layers.append(layer_cost(volume, count, bias=has_bias, dtype=dtype))
        volume = volume.with_channels(count)
    return ChainCost(tuple(layers))
