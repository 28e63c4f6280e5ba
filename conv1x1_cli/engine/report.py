"""What one ``apply`` did, for its summary: shapes, exact counts and timings (data, no formatting)."""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.layers import ChainCost, chain_cost
from ..costs.volume import Volume
from .layers import Layer


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
        input_shape: tuple[int, ...],
        volume: Volume,
        layers: list[Layer],
        seconds: float,
        kernel_seconds: float,
        setup_seconds: float = 0.0,
        compiled: bool = False,
    ) -> ApplyReport:
        cost = chain_cost(
            volume,
            [layer.filters for layer in layers],
            bias=[layer.bias is not None for layer in layers],
            dtype=layers[0].bank.dtype.name,
        )
        output_shape = volume.with_channels(layers[-1].filters).shape()
        bank_shapes = [layer.bank.shape for layer in layers]
        return cls(input_shape, bank_shapes, output_shape, cost, seconds, kernel_seconds, setup_seconds, compiled)
