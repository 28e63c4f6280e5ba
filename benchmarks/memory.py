"""Peak memory (and time) of ``conv1x1 apply`` on big files.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/memory.py [--dir /tmp] [--keep]

Cases, each run as a fresh ``python -m conv1x1_cli apply IN W -o OUT -q`` whose peak resident set
comes from ``os.wait4`` (the child's own ``ru_maxrss``):

- baseline: the 6x6 lecture sample (what importing NumPy + Numba and loading the kernel costs);
- in-memory size: 1 GiB float32 NHWC input, C=64 -> F=64; bound 1.1 x (input + output) + 250 MB,
  what a plain load-compute-save would need;
- stream: 3 GiB float32 input, C=64 -> F=64; target well under 800 MB.

Inputs are written chunk by chunk through ``np.lib.format.open_memmap`` (never whole in memory) to
``--dir`` and deleted afterwards, with the outputs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MB = 10**6
GIB = 2**30
CHUNK_BYTES = 64 * 2**20
STREAM_TARGET_BYTES = 800 * MB


def write_random_npy(path: Path, shape: tuple[int, ...], seed: int) -> None:
    """A float32 .npy of ``shape`` in [0, 1), written one chunk of rows at a time; each chunk is mapped,
    filled and unmapped, so the writer's resident memory stays at one chunk."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape).flush()
    rng = np.random.default_rng(seed)
    row_bytes = int(np.prod(shape[1:])) * 4
    rows_per_chunk = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, shape[0], rows_per_chunk):
        mapped = np.lib.format.open_memmap(path, mode="r+")
        block = mapped[start : start + rows_per_chunk]
        rng.random(block.shape, dtype=np.float32, out=block)
        mapped.flush()
        del block, mapped


def run_measured(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}): {error.strip()}")
    return seconds, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def apply_command(input_path: Path, bank_path: Path, output_path: Path) -> list[str]:
    return [sys.executable, "-m", "conv1x1_cli", "apply", str(input_path), str(bank_path), "-o", str(output_path), "-q"]


def measure_case(name: str, directory: Path, shape: tuple[int, ...], filters: int, keep: bool) -> dict:
    input_path, bank_path, output_path = (directory / f"conv1x1-mem-{name}-{part}.npy" for part in ("in", "w", "out"))
    try:
        write_random_npy(input_path, shape, seed=1)
        np.save(bank_path, np.random.default_rng(2).random((shape[-1], filters), np.float32))
        seconds, peak = run_measured(apply_command(input_path, bank_path, output_path))
        input_bytes = int(np.prod(shape)) * 4
        output_bytes = input_bytes // shape[-1] * filters
        sizes = {"input_bytes": input_bytes, "output_bytes": output_bytes}
        return {"name": name, **sizes, "seconds": seconds, "peak": peak}
    finally:
        if not keep:
            for path in (input_path, bank_path, output_path):
                path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the big inputs go (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)

    samples = ROOT / "samples"
    warm = apply_command(samples / "lecture_6x6.npy", samples / "times2.npy", args.dir / "conv1x1-mem-lecture.npy")
    run_measured(warm)  # fill Numba's cache
    base_seconds, base_peak = run_measured(warm)
    (args.dir / "conv1x1-mem-lecture.npy").unlink(missing_ok=True)
    print(f"baseline (6x6 sample)          peak RSS {base_peak / MB:7.0f} MB   {base_seconds:6.2f} s")

    # The measured cases' tile shape (64 -> 64 filters) compiled and cached first: a cold compile
    # in the first case peaked 70-120 MB higher than the same run warm (LLVM's memory, not data).
    measure_case("warm-up", args.dir, (64, 64, 64), 64, keep=False)
    pixels_1g = GIB // (64 * 4)
    in_memory = measure_case("1GiB", args.dir, (pixels_1g // 2048, 2048, 64), 64, args.keep)
    bound = 1.1 * (in_memory["input_bytes"] + in_memory["output_bytes"]) + 250 * MB
    report(in_memory, bound, "1.1 x (input + output) + 250 MB")

    stream = measure_case("3GiB", args.dir, (3 * pixels_1g // 2048, 2048, 64), 64, args.keep)
    report(stream, STREAM_TARGET_BYTES, "stream target")
    return 0


def report(case: dict, bound: float, bound_name: str) -> None:
    rate = (case["input_bytes"] + case["output_bytes"]) / case["seconds"] / 1e9
    verdict = "within" if case["peak"] <= bound else "OVER"
    print(
        f"{case['name']:<6} in {case['input_bytes'] / GIB:.1f} GiB out {case['output_bytes'] / GIB:.1f} GiB  "
        f"peak RSS {case['peak'] / MB:7.0f} MB   {case['seconds']:6.2f} s ({rate:.2f} GB/s in+out)   "
        f"{verdict} {bound_name} = {bound / MB:.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
