"""The speed suite's arithmetic and data shapes (no timing assertions: speeds vary by machine)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from conv1x1_cli import kernel
from conv1x1_cli.bench import machine, suite
from conv1x1_cli.bench.isa import PinningError, isa_environment, pin, runs_here
from conv1x1_cli.bench.machine import load_limits
from conv1x1_cli.bench.suite import BenchLayer, LayerResult, Timing, summarize, verify
from conv1x1_cli.costs.roofline import MachineLimits, MemoryLevel
from conv1x1_cli.kernel import probe
from conv1x1_cli.kernel.target import simd_unit

HAND_LIMITS = MachineLimits(peak_gflops=200.0, sgemm_gflops=150.0, bandwidth_gbs=20.0, threads=2, source="hand")
# 2 images of 3x4 pixels, 5 channels -> 6 filters: 24 pixels.
HAND_LAYER = BenchLayer("hand", 2, 3, 4, 5, 6)


def test_hand_worked_layer_flops_bytes_and_intensity():
    assert HAND_LAYER.flops == 2 * 24 * 5 * 6 == 1440
    # input 24x5, output 24x6, weights 5x6 float32 values
    assert HAND_LAYER.bytes_moved == (120 + 144 + 30) * 4 == 1176
    assert HAND_LAYER.intensity == pytest.approx(1440 / 1176)
    assert HAND_LAYER.spec == "2x3x4x5→6"


def test_suite_layers_count_the_known_googlenet_and_resnet_costs():
    layers = {layer.name: layer for layer in suite.SUITE if layer.dtype == "float32"}
    assert layers["GoogLeNet 3a 1x1"].flops == 2 * 28 * 28 * 192 * 64 == 19_267_584
    resnet5 = layers["ResNet-50 conv5 reduce"]
    assert resnet5.bytes_moved == (7 * 7 * 2048 + 7 * 7 * 512 + 2048 * 512) * 4
    assert layers["ResNet-50 conv5 reduce N=32"].flops == 32 * resnet5.flops
    assert set(suite.QUICK_NAMES) <= set(layers)
    assert [layer.name for layer in suite.quick_layers()] == list(suite.QUICK_NAMES)  # float32 only


def test_roofline_memory_bound_layer_on_hand_numbers():
    # 1440 flops / 1176 bytes = 1.2245 flop/byte x 20 GB/s = 24.49 GFLOP/s < 200 peak
    line = HAND_LAYER.roofline(HAND_LIMITS)
    assert line.bound == "memory"
    assert line.attainable_gflops == pytest.approx(1440 / 1176 * 20)


def test_roofline_compute_bound_layer_is_capped_at_the_peak():
    big = BenchLayer("big", 1, 7, 7, 2048, 512)  # ~21.9 flop/byte x 20 GB/s = 438 > 200
    line = big.roofline(HAND_LIMITS)
    assert line.bound == "compute"
    assert line.attainable_gflops == 200.0


def hand_result(
    ours: float, numpy: float, torch: float | None, layer: BenchLayer = HAND_LAYER, portable: float | None = None
) -> LayerResult:
    return LayerResult(
        layer=layer,
        repeats=5,
        ours_seconds=ours,
        numpy_seconds=numpy,
        torch_seconds=torch,
        portable_seconds=portable,
        verified=True,
        max_error_ratio=0.0,
        roofline=layer.roofline(HAND_LIMITS),
        peak_gflops=HAND_LIMITS.peak_gflops,
    )


def test_layer_result_rates_ratios_and_percentages():
    row = hand_result(ours=1440e-9 / 12.0, numpy=1440e-9 / 6.0, torch=1440e-9 / 24.0)  # 12, 6, 24 GFLOP/s
    assert row.ours_gflops == pytest.approx(12.0)
    assert row.numpy_gflops == pytest.approx(6.0)
    assert row.torch_gflops == pytest.approx(24.0)
    assert row.vs_numpy == pytest.approx(2.0)
    assert row.vs_torch == pytest.approx(0.5)
    assert row.vs_best == pytest.approx(0.5)
    assert row.percent_of_attainable == pytest.approx(100 * 12.0 / (1440 / 1176 * 20))
    assert row.percent_of_peak == pytest.approx(6.0)
    as_dict = row.as_dict()
    assert as_dict["flops"] == 1440 and as_dict["bound"] == "memory" and as_dict["channels"] == 5


def test_layer_result_without_torch_compares_with_numpy_only():
    row = hand_result(ours=2.0, numpy=3.0, torch=None)
    assert row.vs_torch is None and row.torch_gflops is None
    assert row.vs_best == pytest.approx(1.5)
    assert row.portable_gflops is None and row.portable_vs_ours is None


def test_the_portable_threads_rate_is_set_beside_the_pools():
    row = hand_result(ours=1440e-9 / 12.0, numpy=1.0, torch=None, portable=1440e-9 / 9.0)  # 12 and 9 GFLOP/s
    assert row.portable_gflops == pytest.approx(9.0)
    assert row.portable_vs_ours == pytest.approx(0.75)
    assert row.vs_best == pytest.approx(1 / (1440e-9 / 12.0))  # (not a contender against us)
    assert summarize([row, hand_result(1.0, 1.0, None, portable=2.0)]).median_portable_vs_ours == pytest.approx(0.625)


def test_summary_medians_minimum_and_worst_layer():
    compute = BenchLayer("compute", 1, 7, 7, 2048, 512)
    rows = [
        hand_result(1.0, 2.0, 1.0),  # 2x NumPy, 1x torch
        hand_result(1.0, 4.0, 0.5),  # 4x NumPy, 0.5x torch: the worst
        hand_result(1.0, 1.0, 3.0, layer=compute),
    ]
    summary = summarize(rows)
    assert summary.median_vs_numpy == 2.0
    assert summary.min_vs_numpy == 1.0
    assert summary.median_vs_torch == 1.0
    assert summary.min_vs_torch == 0.5
    assert summary.worst_layer == "hand" and summary.worst_vs_best == 0.5
    assert summary.median_percent_of_peak_compute_bound == pytest.approx(100 * compute.flops / 1e9 / 200.0)
    assert summary.mismatches == []
    assert summary.median_portable_vs_ours is None


def test_timing_repeats_aim_at_the_target_within_the_budget():
    timing = Timing(target_seconds=0.3, layer_budget_seconds=1.5, min_repeats=5)
    assert timing.repeats([0.001, 0.002]) == 300  # fastest contender runs ~0.3 s
    assert timing.repeats([0.01, 0.5]) == 5  # too slow for the budget: the minimum
    assert timing.repeats([0.001, 0.01]) == 137  # budget 1.5 s / 0.011 s per round


def test_verify_accepts_float32_rounding_and_flags_a_wrong_value(rng):
    pixels = rng.standard_normal((50, 64)).astype(np.float32)
    bank = rng.standard_normal((64, 8)).astype(np.float32)
    exact = np.maximum(pixels.astype(np.float64) @ bank.astype(np.float64), 0)
    rounded = np.maximum(pixels @ bank, 0)
    ok, ratio = verify(rounded, exact.astype(np.float32), pixels, bank)
    assert ok and ratio <= 1.0
    wrong = rounded.copy()
    wrong[7, 3] += 0.01 * np.abs(bank[:, 3]).max()  # one term's worth of error
    assert not verify(wrong, rounded, pixels, bank)[0]


def test_verify_flags_nan_where_the_reference_has_none(rng):
    pixels = rng.standard_normal((4, 3)).astype(np.float32)
    bank = rng.standard_normal((3, 2)).astype(np.float32)
    reference = pixels @ bank
    broken = reference.copy()
    broken[0, 0] = np.nan
    assert verify(broken, reference, pixels, bank) == (False, math.inf)


def test_openblas_override_is_named_in_a_warning(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    info = machine.describe_machine(torch=False)
    assert info.openblas_overrides == {"OPENBLAS_CORETYPE": "Haswell"}
    assert any("OPENBLAS_CORETYPE=Haswell" in warning for warning in info.warnings)


def test_quick_run_on_a_tiny_suite_returns_verified_rows_and_saves_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(suite, "limits_disturbed", lambda *measured: None)  # (a busy CI host is not the point here)
    tiny = [BenchLayer("tiny", 1, 8, 8, 16, 8), BenchLayer("tiny batch", 3, 5, 5, 40, 24)]
    steps = []
    report = suite.run_bench(quick=True, torch=False, layers=tiny, progress=lambda *step: steps.append(step))
    assert [row.layer for row in report.rows] == tiny
    for row in report.rows:
        assert row.verified and row.repeats >= 5
        assert row.torch_seconds is None
        assert row.ours_seconds > 0 and row.numpy_seconds > 0
    assert steps == [
        (0, 4, "machine limits"),
        (1, 4, "tiny"),
        (1, 4, "tiny batch"),
        (1, 4, "machine limits again"),
        (1, 4, "done"),
    ]
    assert report.limits_saved and replace(load_limits(), source=report.limits.source) == report.limits
    assert report.limits.source.startswith("measured ")
    assert report.summary.mismatches == []
    data = report.as_dict()
    assert [layer["name"] for layer in data["layers"]] == ["tiny", "tiny batch"]
    assert data["machine"]["torch"] is None
    assert data["machine"]["simd"].startswith(simd_unit().name + ":") and data["machine"]["pinned"] == {}
    if kernel.worker_pool().mode == "pool":  # the portable path timed beside the pool, and right too
        assert all(row.portable_seconds > 0 for row in report.rows)
        assert "portable: numba's" in data["machine"]["threading"]


def test_limits_from_a_disturbed_measurement_are_not_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))
    measured = iter(
        [(MachineLimits(234.0, 190.0, 31.0, 2, "before"), 2.0), (MachineLimits(116.0, 188.0, 30.0, 2, "after"), 3.0)]
    )
    monkeypatch.setattr(suite, "_limits_and_load", lambda threads, quick: next(measured))
    report = suite.run_bench(quick=True, torch=False, layers=[BenchLayer("tiny", 1, 8, 8, 16, 8)])
    assert not report.limits_saved and not (tmp_path / "machine.json").exists()
    assert report.limits.peak_gflops == 234.0  # the better of the two, for this run's own percentages
    assert any("were not saved: the FMA peak measured before and after the layers differs by 50%" in warning
               for warning in report.machine.warnings)  # fmt: skip


PINNED_RUN = """
import json, sys
from conv1x1_cli.bench.isa import pin
pinned = pin("avx2")
from conv1x1_cli.bench import suite
report = suite.run_bench(quick=True, torch=False, layers=[suite.BenchLayer("tiny", 1, 8, 8, 16, 8)], pinned=pinned)
print(json.dumps({"simd": report.machine.simd, "pinned": report.machine.pinned, "saved": report.limits_saved,
                  "verified": report.rows[0].verified, "warnings": report.machine.warnings}))
"""


@pytest.mark.skipif(not runs_here("avx2"), reason="this CPU cannot run AVX2 code")
def test_a_run_pinned_to_avx2_compiles_for_it_says_so_and_saves_no_limits(tmp_path):
    env = {**os.environ, "CONV1X1_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PINNED_RUN], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["simd"].startswith("avx2: 16 x 256-bit registers, FMA (numba target haswell)")
    assert result["pinned"]["OPENBLAS_CORETYPE"] == "Haswell" and result["pinned"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "-avx512f" in result["pinned"]["NUMBA_CPU_FEATURES"].split(",")
    assert result["saved"] is False and not list(tmp_path.iterdir())
    assert result["verified"] is True
    assert not any("OPENBLAS_CORETYPE" in warning for warning in result["warnings"])  # pinned on purpose


def test_pinning_is_refused_once_numpy_is_loaded():
    with pytest.raises(PinningError, match="--isa must be chosen before numpy"):
        pin("avx2")
    assert pin("native") == {}  # (nothing to pin: always fine)


def test_an_unknown_instruction_set_is_refused():
    with pytest.raises(PinningError, match="unknown instruction set 'sse9'"):
        isa_environment("sse9")


def test_a_full_run_takes_the_best_limits_probed_before_and_after_and_between_its_layers(tmp_path, monkeypatch):
    """Outside --quick the peak is probed before each layer too, and the level a memory-bound layer
    streams from is measured again before it; the best of every probe is the run's limit, for its
    layers' percentages and the saved limits."""
    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))

    def limits(peak, sgemm, read, write, source):
        return MachineLimits(peak, sgemm, read, 2, source, (MemoryLevel("DRAM", None, read, write),))

    measured = iter([(limits(80.0, 70.0, 25.0, 12.0, "before"), 0.0), (limits(79.0, 71.0, 26.0, 13.0, "after"), 0.0)])
    monkeypatch.setattr(suite, "_limits_and_load", lambda threads, quick: next(measured))
    between = iter([85.0, 94.0, 88.0])
    probed, levels_probed = [], []
    monkeypatch.setattr(suite, "peak_between_layers", lambda threads: probed.append(threads) or next(between))

    def measure_levels(threads, only=None):
        levels_probed.append(only)
        return (MemoryLevel("DRAM", None, 24.0, 15.0),)

    monkeypatch.setattr(suite, "measure_levels", measure_levels)
    monkeypatch.setattr(suite, "FULL_TIMING", suite.QUICK_TIMING)  # (the timing of each layer is not the point)
    thin = BenchLayer("thin", 1, 8, 8, 2, 8)  # 2 channels: bound by writing its output
    layers = [BenchLayer("tiny", 1, 8, 8, 16, 8), thin, BenchLayer("tiny", 1, 8, 8, 32, 8)]
    assert thin.roofline(limits(80.0, 70.0, 25.0, 12.0, "hand")).bound == "memory"
    assert [layer.roofline(limits(80.0, 70.0, 25.0, 12.0, "hand")).bound for layer in layers[::2]] == ["compute"] * 2
    report = suite.run_bench(quick=False, torch=False, layers=layers)
    assert probed == [None, None, None] and levels_probed == ["DRAM"]  # (the memory-bound layer's level only)
    assert report.limits.peak_gflops == 94.0 and report.limits.sgemm_gflops == 71.0
    assert report.limits.levels == (MemoryLevel("DRAM", None, 26.0, 15.0),)
    assert all(row.peak_gflops == 94.0 for row in report.rows)
    assert report.rows[1].roofline == thin.roofline(report.limits)
    assert report.limits_saved and load_limits().peak_gflops == 94.0


def test_fma_peak_is_a_positive_finite_rate():
    rate = probe.fma_peak_gflops(threads=1, seconds=0.02)
    assert math.isfinite(rate) and rate > 0


def test_background_load_is_a_percentage_or_unknown():
    share = machine.BackgroundLoad().percent()
    assert share is None or share >= 0


def test_float64_layers_run_in_float64_against_half_the_peak_and_apart_in_the_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))
    layers = [BenchLayer("tiny", 1, 8, 8, 16, 8), BenchLayer("tiny", 1, 8, 8, 16, 8, "float64")]
    report = suite.run_bench(quick=True, torch=False, layers=layers, save=False)
    single, double = report.rows
    assert double.layer.spec == "8x8x16→8 float64" and double.verified
    assert suite.layer_data(double.layer)[0].dtype == np.float64
    assert double.layer.bytes_moved == 2 * single.layer.bytes_moved
    assert double.peak_gflops == report.limits.peak_gflops / 2 and single.peak_gflops == report.limits.peak_gflops
    assert report.summary.median_vs_numpy == single.vs_numpy  # the headline is the float32 layers'
    assert report.summary.float64_median_vs_numpy == double.vs_numpy


def test_every_float64_layer_of_the_suite_has_a_float32_twin():
    doubles = [layer for layer in suite.SUITE if layer.dtype == "float64"]
    assert len(doubles) == 5
    singles = {(layer.name, layer.spec) for layer in suite.SUITE if layer.dtype == "float32"}
    assert all((layer.name, layer.spec.removesuffix(" float64")) in singles for layer in doubles)
