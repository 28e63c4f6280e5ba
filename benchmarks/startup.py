"""How long the CLI takes to start, against Numba's own floor.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/startup.py [--runs 15]

Warm runs (each command once before timing, so Numba's on-disk caches are filled), interleaved,
medians of wall-clock subprocess times:

- ``python -m conv1x1_cli apply samples/lecture_6x6.npy samples/times2.npy -o OUT -q``;
- the floor: a bare script that imports numpy and numba, ``np.load``s the same two files, runs a
  cached (``cache=True``) numba ``prange`` kernel on them and ``np.save``s the result. The target is
  apply ≤ 1.25 × floor;
- ``conv1x1 shapes 28x28x192 --filters 32`` and ``conv1x1 --help``, which must not import numba
  (checked with ``python -X importtime``).

Then cold starts, each run with an empty ``NUMBA_CACHE_DIR`` (a fresh install's first run): ``apply``
on the 6x6 sample (one thread: only that code is compiled; target <= 2.5 s) and on 512x512x32 -> 32,
the smallest run that is shared out (the worker pool's code is compiled too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TARGET_RATIO = 1.25
COLD_TARGET_SECONDS = 2.5

FLOOR_SCRIPT = """
import sys
import numpy as np
import numba


@numba.njit(parallel=True, cache=True)
def pointwise_relu(pixels, bank, out):
    for p in numba.prange(pixels.shape[0]):
        for f in range(bank.shape[1]):
            total = np.float32(0)
            for c in range(pixels.shape[1]):
                total += pixels[p, c] * bank[c, f]
            out[p, f] = max(total, np.float32(0))


image = np.load(sys.argv[1])
bank = np.load(sys.argv[2])
pixels = np.ascontiguousarray(image.reshape(-1, bank.shape[0]))
out = np.empty((pixels.shape[0], bank.shape[1]), np.float32)
pointwise_relu(pixels, bank, out)
np.save(sys.argv[3], out.reshape(*image.shape, bank.shape[1]))
"""


def seconds(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    return time.perf_counter() - started


def cold_seconds(command: list[str], scratch: Path) -> float:
    """``command``'s time with a new, empty numba cache: everything it runs is compiled."""
    cache = Path(tempfile.mkdtemp(prefix="numba-cache-", dir=scratch))
    return seconds(command, env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})


def imports_numba(arguments: list[str]) -> bool:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "conv1x1_cli", *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    # -X importtime lines end in "| <indent>module.name"
    modules = (line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines())
    return any(module == "numba" or module.startswith("numba.") for module in modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default 15)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold runs of each cold command (default 3)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="conv1x1-startup-") as scratch:
        floor_script = Path(scratch) / "numba_floor.py"
        floor_script.write_text(FLOOR_SCRIPT)
        inputs = [str(SAMPLES / "lecture_6x6.npy"), str(SAMPLES / "times2.npy")]
        out = str(Path(scratch) / "x.npy")
        cli = [sys.executable, "-m", "conv1x1_cli"]
        commands = {
            "conv1x1 apply (warm)": [*cli, "apply", *inputs, "-o", out, "-q"],
            "numba floor (warm)": [sys.executable, str(floor_script), *inputs, out],
            "conv1x1 shapes": [*cli, "shapes", "28x28x192", "--filters", "32"],
            "conv1x1 --help": [*cli, "--help"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        for command in commands.values():  # fill Numba's caches; the first run of each is not timed
            seconds(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(seconds(command))
        pooled_input = Path(scratch) / "512x512x32.npy"
        np.save(pooled_input, np.random.default_rng(0).standard_normal((512, 512, 32), dtype=np.float32))
        np.save(Path(scratch) / "w32.npy", np.random.default_rng(1).standard_normal((32, 32), dtype=np.float32))
        cold = {
            "apply (cold, sample)": [*cli, "apply", *inputs, "-o", out, "-q"],
            "apply (cold, pooled)": [*cli, "apply", str(pooled_input), str(Path(scratch) / "w32.npy"), "-o", out, "-q"],
        }
        cold_times: dict[str, list[float]] = {name: [] for name in cold}
        for _ in range(args.cold_runs):
            for name, command in cold.items():
                cold_times[name].append(cold_seconds(command, Path(scratch)))

    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        spread = f"min {min(times[name]) * 1e3:.0f}, max {max(times[name]) * 1e3:.0f}"
        print(f"{name:<22} median {median * 1e3:7.1f} ms   ({spread} ms, {args.runs} runs)")
    ratio = medians["conv1x1 apply (warm)"] / medians["numba floor (warm)"]
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"apply / numba floor    {ratio:.2f}x  ({verdict} the {TARGET_RATIO}x target)")
    for name, values in cold_times.items():
        print(f"{name:<22} median {statistics.median(values):7.2f} s    ({', '.join(f'{v:.2f}' for v in values)} s)")
    sample = statistics.median(cold_times["apply (cold, sample)"])
    verdict = "meets" if sample <= COLD_TARGET_SECONDS else "MISSES"
    print(f"cold start, sample     {sample:.2f} s  ({verdict} the {COLD_TARGET_SECONDS} s target)")
    for name, arguments in {
        "conv1x1 shapes": ["shapes", "28x28x192", "--filters", "32"],
        "conv1x1 --help": ["--help"],
    }.items():
        print(f"{name:<22} imports numba: {'YES (it must not)' if imports_numba(arguments) else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
