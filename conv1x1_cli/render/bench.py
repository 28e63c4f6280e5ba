"""``bench``: GFLOP/s per layer for us, NumPy and PyTorch, the ratios and the roofline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from .tables import add_columns, levels_note, new_table, notes, ratio_text


@dataclass(frozen=True)
class Column:
    """One column of the bench table: the key of a layer's row (``LayerResult.as_dict``), its header,
    and how its value reads in the table. CSV writes the raw value under the key."""

    key: str
    header: str
    text: Callable[[Any], RenderableType]


def _gflops_text(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _optional_ratio(value: float | None) -> str:
    return "—" if value is None else ratio_text(value)


# The bench row, defined once: the table, the CSV and benchmarks/bench_suite.py all show these.
BENCH_COLUMNS = (
    Column("name", "layer", str),
    Column("spec", "N·H·W·C→F", str),
    Column("ours_gflops", "ours", _gflops_text),
    Column("numpy_gflops", "NumPy", _gflops_text),
    Column("torch_gflops", "torch", _gflops_text),
    Column("portable_gflops", "portable", _gflops_text),
    Column("vs_numpy", "×NumPy", _optional_ratio),
    Column("vs_torch", "×torch", _optional_ratio),
    Column("intensity", "FLOP/B", lambda value: f"{value:.1f}"),
    Column("level", "data in", str),
    Column("bound", "bound", str),
    Column("ours_microseconds", "µs", lambda value: f"{value:,.1f}"),
    Column("roof_microseconds", "roof µs", lambda value: f"{value:,.1f}"),
    Column("percent_of_attainable", "%roof", lambda value: f"{value:.0f}"),
    Column("percent_of_peak", "%peak", lambda value: f"{value:.0f}"),
    Column("verified", "ok", lambda value: "yes" if value else Text("NO", style="bold red")),
)


def bench_table(report: dict) -> Group:
    """``conv1x1 bench``: GFLOP/s per layer for us, NumPy and PyTorch, ratios and the roofline."""
    table = new_table("conv1x1 bench: GFLOP/s, float32, medians of repeats")
    add_columns(table, [column.header for column in BENCH_COLUMNS], left=2)
    for row in report["layers"]:
        table.add_row(*(column.text(row[column.key]) for column in BENCH_COLUMNS))
    return Group(table, notes(*_bench_notes(report)))


def bench_csv_rows(report: dict) -> list[list]:
    keys = [column.key for column in BENCH_COLUMNS]
    return [keys, *([row[key] for key in keys] for row in report["layers"])]


def _bench_notes(report: dict) -> list[str]:
    machine, limits, summary = report["machine"], report["limits"], report["summary"]
    blas = (
        "; ".join(
            f"{entry.get('internal_api')} {entry.get('version')} ({entry.get('architecture')} kernel, "
            f"{entry.get('num_threads')} threads)"
            for entry in machine["blas"]
        )
        or "unknown"
    )
    peak = summary["median_percent_of_peak_compute_bound"]
    portable = summary["median_portable_vs_ours"]
    pinned = ", ".join(f"{name}={value}" for name, value in machine["pinned"].items() if name != "NUMBA_CPU_FEATURES")
    notes = [
        f"GFLOP/s = {report['flops']}; ratios are our speed over theirs (>1: we are faster)",
        f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores; numpy {machine['numpy']} with {blas}; "
        f"numba {machine['numba']}; torch {machine['torch'] or 'not installed'}",
        f"our kernel: {machine['simd']}; {machine['threading']}"
        + ("" if portable is None else f" (portable at a median {portable:.2f}× the pool's speed)"),
        *([f"pinned: {pinned} (and numba's features without AVX-512)"] if pinned else []),
        f"limits: FMA peak {limits['peak_gflops']:.1f} GFLOP/s, NumPy sgemm {limits['sgemm_gflops']:.1f} GFLOP/s, "
        f"bandwidth {limits['bandwidth_gbs']:.1f} GB/s"
        + (" (saved for conv1x1 shapes)" if report["limits_saved"] else ""),
        *([levels_note(limits["levels"])] if limits.get("levels") else []),
        "µs: our median call; roof µs: the layer's FLOPs at its roof, the least time the machine allows",
        "vs NumPy: "
        + _median_and_min(summary["median_vs_numpy"], summary["min_vs_numpy"])
        + "; vs torch: "
        + _median_and_min(summary["median_vs_torch"], summary["min_vs_torch"]),
        f"worst layer: {summary['worst_layer']} at {_optional_ratio(summary['worst_vs_best'])} of the faster other; "
        f"compute-bound layers at a median {'—' if peak is None else f'{peak:.0f}%'} of the FMA peak",
    ]
    if summary.get("float64_median_vs_numpy") is not None:
        notes.append(
            f"float64 layers (against NumPy's dgemm, PyTorch in float64): median "
            f"{summary['float64_median_vs_numpy']:.2f}× NumPy, {summary['float64_median_percent_of_peak']:.0f}% of "
            "the float64 FMA peak (half of float32's)"
        )
    if summary["mismatches"]:
        notes.append(f"RESULTS DIFFERING FROM NUMPY: {', '.join(summary['mismatches'])}")
    notes += [f"warning: {warning}" for warning in machine["warnings"]]
    return notes


def _median_and_min(median: float | None, minimum: float | None) -> str:
    return f"median {_optional_ratio(median)}, min {_optional_ratio(minimum)}"
