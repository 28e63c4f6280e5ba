"""Deliberately slow, obvious references: float64 NumPy, no tricks. The ground truth for the tests."""

from __future__ import annotations

import numpy as np


def pointwise(pixels, bank, bias=None, relu=True):
    """ReLU(x·w + b) for channels-last ``pixels`` (..., C) and a (C, F) ``bank``, in float64.

    np.maximum keeps NaN, as PyTorch's relu does; Inf passes through as in any matmul.
    """
    out = np.einsum("...c,cf->...f", np.asarray(pixels, np.float64), np.asarray(bank, np.float64))
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return np.maximum(out, 0.0) if relu else out


def chain(pixels, banks, biases=(), relu_last=True):
    for index, bank in enumerate(banks):
        bias = biases[index] if index < len(biases) else None
        pixels = pointwise(pixels, bank, bias, relu=relu_last or index < len(banks) - 1)
    return pixels


def float32_tolerance(pixels, bank, bias=None):
    """How far a float32 result may stray from the float64 one: a few ulps of the sum of |terms|."""
    magnitude = np.einsum("...c,cf->...f", np.abs(np.asarray(pixels, np.float64)), np.abs(np.asarray(bank, np.float64)))
    if bias is not None:
        magnitude = magnitude + np.abs(np.asarray(bias, np.float64))
    channels = np.asarray(bank).shape[0]
    return (channels + 2) * np.finfo(np.float32).eps * magnitude + np.finfo(np.float32).tiny


def assert_close_to_reference(result, pixels, bank, bias=None, relu=True):
    """result equals pointwise(...): to 1e-12 in float64, within float32_tolerance in float32."""
    expected = pointwise(pixels, bank, bias, relu)
    assert result.shape == expected.shape
    if result.dtype == np.float64:
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
        return
    assert result.dtype == np.float32
    error = np.abs(result.astype(np.float64) - expected)
    tolerance = float32_tolerance(pixels, bank, bias)
    too_far = np.argwhere(~(error <= tolerance))
    assert len(too_far) == 0, f"{len(too_far)} values off, first at {tuple(too_far[0])}: {result[tuple(too_far[0])]}"
