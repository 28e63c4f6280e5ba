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


def rounding_tolerance(pixels, bank, bias=None, dtype=np.float32):
    """How far a result computed in ``dtype`` may stray from the float64 reference: a few ulps (the eps
    of ``dtype``) of the sum of |terms|, (C + 2)·eps·Σ|x_c·w_c| (+ |b|).

    Each output is a C-term dot product (+ a bias); rounding it in any order errs by at most about
    C·eps/2 of the sum of |terms|, on our side and on the reference's (which rounds in float64), so the
    bound grows with C and with the magnitude of the terms, not with the result (which can cancel to 0).
    """
    magnitude = np.einsum("...c,cf->...f", np.abs(np.asarray(pixels, np.float64)), np.abs(np.asarray(bank, np.float64)))
    if bias is not None:
        magnitude = magnitude + np.abs(np.asarray(bias, np.float64))
    channels = np.asarray(bank).shape[0]
    info = np.finfo(dtype)
    return (channels + 2) * float(info.eps) * magnitude + float(info.tiny)


def float32_tolerance(pixels, bank, bias=None):
    """How far a float32 result may stray from the float64 one: a few ulps of the sum of |terms|."""
    return rounding_tolerance(pixels, bank, bias, np.float32)


def float64_tolerance(pixels, bank, bias=None):
    """How far a float64 result may stray from the float64 reference: a few float64 ulps of the sum of |terms|."""
    return rounding_tolerance(pixels, bank, bias, np.float64)


def chain_tolerance(pixels, banks, biases=(), relu_last=True, dtype=np.float32):
    """How far a chain computed in ``dtype`` may stray from ``chain(...)``, built layer by layer: each
    layer's own rounding (rounding_tolerance of the values it was given, which may be off by the error
    so far) plus the error it inherits from the layer before, carried through |bank|. ReLU never
    widens an error. ``pixels`` are the values the first layer was given (already in ``dtype``)."""
    values = np.asarray(pixels, np.float64)
    error = np.zeros_like(values)
    for index, bank in enumerate(banks):
        bias = biases[index] if index < len(biases) else None
        inherited = np.einsum("...c,cf->...f", error, np.abs(np.asarray(bank, np.float64)))
        error = rounding_tolerance(np.abs(values) + error, bank, bias, dtype) + inherited
        values = pointwise(values, bank, bias, relu=relu_last or index < len(banks) - 1)
    return error


def assert_within(result, expected, tolerance):
    """|result - expected| <= tolerance everywhere; values equal to the reference (infinities included)
    and NaN where the reference is NaN pass as they are."""
    assert result.shape == expected.shape, f"shape {result.shape}, expected {expected.shape}"
    error = np.abs(result.astype(np.float64) - expected)
    same = (result == expected) | (np.isnan(result) & np.isnan(expected))
    too_far = np.argwhere(~(same | (error <= tolerance)))
    if len(too_far):
        first = tuple(too_far[0])
        raise AssertionError(
            f"{len(too_far)} of {result.size} values off, first at {first}: {result[first]!r}, "
            f"expected {expected[first]!r} within {np.broadcast_to(tolerance, expected.shape)[first]!r}"
        )


def assert_close_to_reference(result, pixels, bank, bias=None, relu=True):
    """result equals pointwise(...) within rounding_tolerance for its dtype: float64 results to float64
    precision, float32 ones to float32's."""
    assert result.dtype in (np.float64, np.float32), f"dtype {result.dtype}"
    expected = pointwise(pixels, bank, bias, relu)
    assert result.shape == expected.shape, f"shape {result.shape}, expected {expected.shape}"
    assert_within(result, expected, rounding_tolerance(pixels, bank, bias, result.dtype))


def assert_chain_close_to_reference(result, pixels, banks, biases=(), relu_last=True):
    """result equals chain(...) within chain_tolerance for its dtype (float64 or float32)."""
    assert result.dtype in (np.float64, np.float32), f"dtype {result.dtype}"
    expected = chain(pixels, banks, biases, relu_last)
    assert result.shape == expected.shape, f"shape {result.shape}, expected {expected.shape}"
    assert_within(result, expected, chain_tolerance(pixels, banks, biases, relu_last, result.dtype))
