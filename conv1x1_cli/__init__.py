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

The public API: ``conv1x1`` on arrays and ``apply`` on files and stores (with ``ApplyOptions``, giving
an ``ApplyReport``); ``model_cost`` and ``extract_tensor`` on ONNX and safetensors model files; the
costs of layers, chains, bottlenecks and Inception modules; and the errors, all derived from
``Conv1x1Error``. Nothing heavy is imported here: NumPy loads on first use of ``conv1x1`` or
``apply``, Numba on the first convolution.
"""

from __future__ import annotations

from .costs import (
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
from .errors import ArgumentError, ClusterError, Conv1x1Error, InputError

__all__ = [
    "ApplyOptions",
    "ApplyReport",
    "ArgumentError",
    "BottleneckCost",
    "ChainCost",
    "ClusterError",
    "Conv1x1Error",
    "InceptionCost",
    "InputError",
    "LayerCost",
    "Volume",
    "apply",
    "bottleneck_cost",
    "chain_cost",
    "conv1x1",
    "extract_tensor",
    "inception_cost",
    "layer_cost",
    "model_cost",
    "parse_spec",
]

# Imported on first use, so that importing the package (or running `conv1x1 shapes`) loads no NumPy.
_FROM_API = ("conv1x1", "apply", "ApplyOptions", "ApplyReport", "model_cost", "extract_tensor")


def __getattr__(name: str) -> object:
    if name in _FROM_API:
        from . import api

        # Bound here once found: Python asks this function only for names the module lacks, and
        # the import statement above cost every `conv1x1_cli.conv1x1(...)` call 4 us (of 12.8).
        value = globals()[name] = getattr(api, name)
        return value
    raise AttributeError(f"module 'conv1x1_cli' has no attribute {name!r}")
