"""What layers cost, without touching data: pure integer arithmetic on Python ints (exact at any size).

Nothing here imports NumPy or Numba, so ``conv1x1 shapes`` starts in a blink.

- ``volume``: volumes and the specs users write for them (``28x28x192``);
- ``layers``: one layer and chains of them (shapes, params, MACs, FLOPs, bytes);
- ``modules``: the 1×1 bottleneck and GoogLeNet's Inception module;
- ``conventions``: what torchinfo, fvcore, ptflops and thop report for the same layers;
- ``roofline``: a machine's limits and the roofline over them;
- ``packing``: how the kernel cuts a bank into panels (shared with the Dask planner);
- ``chunks``: how a volume is cut into Dask blocks, and what a block costs.
"""

from __future__ import annotations

from .layers import ChainCost, LayerCost, chain_cost, layer_cost, max_pool_cost
from .modules import INCEPTION_COLUMNS, BottleneckCost, InceptionCost, bottleneck_cost, inception_cost
from .volume import ACTIVATIONS, DTYPE_BYTES, LAYOUTS, Volume, parse_filters, parse_spec, volume_of

__all__ = [
    "ACTIVATIONS",
    "DTYPE_BYTES",
    "INCEPTION_COLUMNS",
    "LAYOUTS",
    "BottleneckCost",
    "ChainCost",
    "InceptionCost",
    "LayerCost",
    "Volume",
    "bottleneck_cost",
    "chain_cost",
    "inception_cost",
    "layer_cost",
    "max_pool_cost",
    "parse_filters",
    "parse_spec",
    "volume_of",
]
