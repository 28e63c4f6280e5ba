"""The one roofline function, on hand-worked numbers: attainable = min(peak, intensity x bandwidth)."""

from __future__ import annotations

import pytest

from conv1x1_cli.costs.roofline import MachineLimits, best_limits, roofline

LIMITS = MachineLimits(peak_gflops=200.0, sgemm_gflops=150.0, bandwidth_gbs=20.0, threads=2, source="hand")


def test_ridge_point_is_peak_over_bandwidth():
    assert LIMITS.ridge_intensity == 10.0


@pytest.mark.parametrize(
    ("flops", "bytes_moved", "attainable", "bound"),
    [
        (25, 10, 50.0, "memory"),  # 2.5 FLOP/B x 20 GB/s
        (100, 10, 200.0, "compute"),  # at the ridge: both roofs meet
        (640, 10, 200.0, "compute"),  # capped at the peak
    ],
)
def test_roofline_on_hand_numbers(flops, bytes_moved, attainable, bound):
    point = roofline(flops, bytes_moved, LIMITS)
    assert point.intensity == flops / bytes_moved
    assert point.attainable_gflops == attainable
    assert point.bound == bound


def test_float64_limits_halve_the_peak_and_move_the_ridge():
    limits = LIMITS.for_dtype("float64")
    assert (limits.peak_gflops, limits.sgemm_gflops, limits.bandwidth_gbs) == (100.0, 75.0, 20.0)
    assert limits.ridge_intensity == 5.0
    assert roofline(50, 10, limits).bound == "compute" and roofline(49, 10, limits).bound == "memory"
    assert LIMITS.for_dtype("float16") is LIMITS


def test_best_limits_keeps_the_better_of_each():
    slow_peak = MachineLimits(116.0, 190.0, 28.0, 2, "first")
    slow_rest = MachineLimits(230.0, 185.0, 27.0, 2, "second")
    best = best_limits(slow_peak, slow_rest)
    assert (best.peak_gflops, best.sgemm_gflops, best.bandwidth_gbs, best.source) == (230.0, 190.0, 28.0, "first")
