"""Run the conv1x1 speed suite and print a plain-text table (or JSON with --json).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_suite.py [--quick] [--json out.json]

The measurement itself is conv1x1_cli.bench.run_bench; this script only formats it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from conv1x1_cli.bench import BackgroundLoad, BenchReport, run_bench


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(report: BenchReport) -> str:
    machine, limits, summary = report.machine, report.limits, report.summary
    blas = ", ".join(
        f"{entry['internal_api']} {entry['version']} kernel {entry['architecture']}, {entry['num_threads']} threads"
        for entry in machine.blas
    )
    lines = [
        f"CPU      {machine.cpu}, {machine.logical_cores} logical cores, load average {machine.load_average:.2f}",
        f"versions python {machine.python}, numpy {machine.numpy}, numba {machine.numba}, torch {machine.torch}",
        f"NumPy's BLAS  {blas or 'unknown (threadpoolctl not installed)'}",
        f"limits   FMA peak {limits.peak_gflops:.1f} GFLOP/s, NumPy sgemm {limits.sgemm_gflops:.1f} GFLOP/s, "
        f"bandwidth {limits.bandwidth_gbs:.1f} GB/s, {limits.threads} threads"
        + (" (saved)" if report.limits_saved else " (not saved)"),
        *(f"WARNING  {warning}" for warning in machine.warnings),
        "",
        "GFLOP/s = 2*N*H*W*C*F / median seconds (no bias); ratios are our speed over theirs;",
        "bg% = CPU other processes used while the layer ran (anything but ~0 disturbs the timings)",
        "",
    ]
    header = (
        f"{'layer':<28} {'shape':<19} {'ours':>7} {'numpy':>7} {'torch':>7} {'/numpy':>7} {'/torch':>7} "
        f"{'flop/B':>6} {'bound':<7} {'%roof':>5} {'%peak':>5} {'reps':>5} {'bg%':>4} ok"
    )
    lines += [header, "-" * len(header)]
    for row in report.rows:
        lines.append(
            f"{row.layer.name:<28} {row.layer.spec:<19} {rate(row.ours_gflops):>7} {rate(row.numpy_gflops):>7} "
            f"{rate(row.torch_gflops):>7} {ratio(row.vs_numpy):>7} {ratio(row.vs_torch):>7} "
            f"{row.roofline.intensity:>6.1f} {row.roofline.bound:<7} {row.percent_of_attainable:>5.0f} "
            f"{row.percent_of_peak:>5.0f} {row.repeats:>5} {percent(row.other_cpu_percent):>4} "
            f"{'yes' if row.verified else 'NO'}"
        )
    peak = summary.median_percent_of_peak_compute_bound
    lines += [
        "",
        f"vs NumPy  median {ratio(summary.median_vs_numpy)}, min {ratio(summary.min_vs_numpy)}",
        f"vs torch  median {ratio(summary.median_vs_torch)}, min {ratio(summary.min_vs_torch)}",
        f"worst layer (vs the faster of NumPy and torch): {summary.worst_layer} at {ratio(summary.worst_vs_best)}",
        f"median % of FMA peak on compute-bound layers: {'-' if peak is None else f'{peak:.0f}%'}",
        f"results differing from NumPy: {', '.join(summary.mismatches) or 'none'}",
        f"run took {report.seconds:.1f} s; other processes used {percent(report.other_cpu_percent)}% of the CPU",
    ]
    return "\n".join(lines)


def wait_until_idle(limit_seconds: float, threshold_percent: float = 10.0) -> None:
    deadline = time.monotonic() + limit_seconds
    while True:
        window = BackgroundLoad()
        time.sleep(1.0)
        busy = window.percent()
        if busy is None or busy < threshold_percent:
            return
        if time.monotonic() > deadline:
            print(f"still {busy:.0f}% busy after {limit_seconds:.0f} s; measuring anyway", file=sys.stderr)
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three layers, short repeats (a few seconds)")
    parser.add_argument("--threads", type=int, default=None, help="our kernel's threads (default: all)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    parser.add_argument("--json", metavar="PATH", help="also write the full report as JSON ('-' for stdout)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to use under 10%% of the CPU",
    )
    args = parser.parse_args(argv)
    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle)

    def progress(what: str, done: int, total: int) -> None:
        print(f"[{done}/{total}] {what}", file=sys.stderr, flush=True)

    report = run_bench(quick=args.quick, threads=args.threads, torch=not args.no_torch, progress=progress)
    if args.json == "-":
        json.dump(report.as_dict(), sys.stdout, indent=2)
        print()
        return 0
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report.as_dict(), stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
