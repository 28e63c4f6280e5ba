"""Designs built of several layers: a K×K convolution with and without a 1×1 bottleneck in front of it,
and GoogLeNet's Inception module (four branches, concatenated along the channels)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError
from .conventions import ToolCounts, total_counts
from .layers import ChainCost, chain_cost, max_pool_cost
from .volume import Volume, parse_spec  # noqa: F401  (parse_spec: doctests)


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
        raise ArgumentError(f"an Inception module has {len(INCEPTION_COLUMNS)} columns, got {len(columns)}")
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
