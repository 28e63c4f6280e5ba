"""Run the conv1x1 speed suite and print its table (or JSON with --json).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_suite.py [--quick] [--isa avx2] [--json F]

The measurement itself is conv1x1_cli.bench.suite.run_bench; this script only prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from conv1x1_cli.bench.isa import ISAS, pin
from conv1x1_cli.bench.machine import BackgroundLoad

if TYPE_CHECKING:
    from conv1x1_cli.bench.suite import BenchReport


def print_table(report: BenchReport) -> None:
    """The same table as ``conv1x1 bench`` (one definition of a row: ``render.bench``), plus the run's length."""
    from rich.console import Console

    from conv1x1_cli.render.bench import bench_csv_rows, bench_table
    from conv1x1_cli.render.tables import print_report

    print_report(report.as_dict(), "table", Console(highlight=False), table=bench_table, csv_rows=bench_csv_rows)
    other = "unknown" if report.other_cpu_percent is None else f"{report.other_cpu_percent:.0f}%"
    print(f"run took {report.seconds:.1f} s; other processes used {other} of the CPU")


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
    parser.add_argument("--isa", choices=ISAS, default="native", help="pin every contender to this instruction set")
    parser.add_argument("--json", metavar="PATH", help="also write the full report as JSON ('-' for stdout)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to use under 10%% of the CPU",
    )
    args = parser.parse_args(argv)
    pinned = pin(args.isa)  # before NumPy, numba and torch load
    from conv1x1_cli.bench.suite import run_bench

    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle)

    steps_done = 0

    def progress(done_now: int, total: int, what: str) -> None:
        nonlocal steps_done
        steps_done += done_now
        print(f"[{steps_done}/{total}] {what}", file=sys.stderr, flush=True)

    report = run_bench(
        quick=args.quick, threads=args.threads, torch=not args.no_torch, progress=progress, pinned=pinned
    )
    if args.json == "-":
        json.dump(report.as_dict(), sys.stdout, indent=2)
        print()
        return 0
    print_table(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report.as_dict(), stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
