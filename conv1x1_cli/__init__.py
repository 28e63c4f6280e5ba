"""conv1x1: apply, check and cost 1x1 (pointwise) convolutions.

>>> import numpy as np
>>> from conv1x1_cli import conv1x1, layer_cost, parse_spec
>>> conv1x1(np.ones((2, 2, 3), np.float32), np.ones((3, 1), np.float32))[..., 0]
array([[3., 3.],
       [3., 3.]], dtype=float32)
>>> layer_cost(parse_spec("28x28x192"), 32).macs
4816896
>>> bottleneck_cost(parse_spec("28x28x192"), reduce=16, kernel=5, filters=32).bottleneck.total("macs")
12443648

Nothing heavy is imported here: NumPy's API module loads on first use of ``conv1x1`` and Numba on
the first convolution.
"""

from __future__ import annotations

from .accounting import (
    BottleneckCost,
    ChainCost,
    InceptionCost,
    LayerCost,
    Volume,
    bottleneck_cost,
    chain_cost,
    inception_cost,
    layer_cost,
    parse_spec,
)

__all__ = [
    "BottleneckCost",
    "ChainCost",
    "InceptionCost",
    "LayerCost",
    "Volume",
    "bottleneck_cost",
    "chain_cost",
    "conv1x1",
    "inception_cost",
    "layer_cost",
    "parse_spec",
]


def __getattr__(name: str):
    if name == "conv1x1":
        from .api import conv1x1

        return conv1x1
    raise AttributeError(f"module 'conv1x1_cli' has no attribute {name!r}")
