"""The Numba kernel: fused 1x1 convolution + bias + ReLU. The only module that imports numba."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=False)
def _pointwise(pixels, bank, bias, relu, out):
    n_pixels, n_channels = pixels.shape
    n_filters = bank.shape[1]
    for p in prange(n_pixels):
        for f in range(n_filters):
            out[p, f] = bias[f]
        for c in range(n_channels):
            value = pixels[p, c]
            for f in range(n_filters):
                out[p, f] += value * bank[c, f]
        if relu:
            for f in range(n_filters):
                if out[p, f] < 0:
                    out[p, f] = 0


def pointwise(pixels: np.ndarray, bank: np.ndarray, bias: np.ndarray | None, relu: bool, out: np.ndarray) -> None:
    """out[P, F] = act(pixels[P, C] @ bank[C, F] + bias[F]), all one dtype, C-contiguous."""
    if bias is None:
        bias = np.zeros(bank.shape[1], dtype=bank.dtype)
    _pointwise(pixels, bank, bias, relu, out)
