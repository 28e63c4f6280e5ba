"""The Dask path against its floor: `apply` store -> store beside a hand-written Dask pipeline and a
plain copy of the same store, on the same data, in the same process, medians of alternating runs.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/dask_bench.py [--reps 3] [--quick] [--dir DIR]

Each case's input is a zarr v3 store with zarr's default codec (zstd), chunked in bands of whole rows
(the issue's cases: 4096x4096x64 -> 32 in 256 chunks of 16 MiB, 1000x1000x200 -> 8 in 16 chunks).
Per repetition, in turn:

- ours: ``conv1x1_cli.apply`` with its defaults, cold: it starts (and stops) its own cluster, threads in
  this process or worker processes, as it chooses, and writes with its default codec;
- hand-written: ``da.store(da.maximum(da.from_zarr(in) @ w, 0), out)`` on a warm LocalCluster of
  one single-threaded worker process per core, once with zarr's defaults (``to_zarr``'s codec, and
  every chunk compared with zeros before it is written) and once with our codec and settings;
- copy: ``da.store(da.from_zarr(in), copy)`` on the same warm cluster with our codec and settings:
  reading, decompressing, compressing and writing the input, no arithmetic;
- by hand and copy again on Dask's threaded scheduler in this process (its default for arrays).

Store reads come from the page cache: this measures the engine and the codecs, not a disk or a network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from conv1x1_cli import ApplyOptions, apply
from conv1x1_cli.cluster.client import local_cluster
from conv1x1_cli.cluster.codecs import compressors

CASES = {  # name: (height, width, channels, filters, rows per chunk)
    "4096x4096x64->32": (4096, 4096, 64, 32, 16),
    "1000x1000x200->8": (1000, 1000, 200, 8, 63),
}


def write_input(directory: str, case: tuple[int, ...], rng) -> tuple[str, str]:
    import zarr

    height, width, channels, filters, rows = case
    source, weights = os.path.join(directory, "in.zarr"), os.path.join(directory, "w.npy")
    shutil.rmtree(source, ignore_errors=True)
    array = zarr.create_array(store=source, shape=(height, width, channels), chunks=(rows, width, channels), dtype="f4")
    band = max(rows, rows * (2**28 // (rows * width * channels * 4)))
    for start in range(0, height, band):
        stop = min(height, start + band)
        array[start:stop] = rng.standard_normal((stop - start, width, channels), dtype=np.float32)
    np.save(weights, rng.standard_normal((channels, filters), dtype=np.float32))
    return source, weights


def store_on(client, result, path: str, ours: bool = True) -> None:
    """``da.store`` into a new store at ``path``: on ``client``, or None for Dask's threaded scheduler in
    this process (its default for arrays). ``ours``: with our codec and our write settings (every chunk
    written, none first compared with zeros), as ``apply`` writes; else with zarr's defaults, as a
    hand-written pipeline does."""
    import dask.array as da
    import zarr

    settings = {"compressors": compressors(None), "config": {"write_empty_chunks": True}} if ours else {}
    target = zarr.create_array(store=path, shape=result.shape, chunks=result.chunksize, dtype=result.dtype, **settings)
    graph = da.store(result, target, lock=False, compute=False)
    if client is None:
        graph.compute(scheduler="threads")
    else:
        client.compute(graph).result()


def timed(run, output: str) -> float:
    shutil.rmtree(output, ignore_errors=True)
    os.sync()
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    shutil.rmtree(output, ignore_errors=True)
    return seconds


def measure(client, directory: str, case: tuple[int, ...], reps: int) -> dict[str, list[float]]:
    """Seconds of each run of one case, ``reps`` times in turn after one warm-up of each."""
    import dask.array as da

    source, weights = write_input(directory, case, np.random.default_rng(0))
    output = os.path.join(directory, "out.zarr")
    bank, x = np.load(weights), da.from_zarr(source)
    runs = {
        "ours": lambda: apply(source, [weights], output, ApplyOptions()),
        "by hand": lambda: store_on(client, da.maximum(x @ bank, 0), output),
        "by hand, zarr defaults": lambda: store_on(client, da.maximum(x @ bank, 0), output, ours=False),
        "copy": lambda: store_on(client, x, output),
        "by hand, threads": lambda: store_on(None, da.maximum(x @ bank, 0), output),
        "copy, threads": lambda: store_on(None, x, output),
    }
    for run in runs.values():  # warm up: imports, the kernel, the page cache
        timed(run, output)
    seconds: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(reps):
        for key, run in runs.items():
            seconds[key].append(timed(run, output))
    return seconds


def main() -> None:
    from distributed import Client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the small case only")
    parser.add_argument("--dir", default=None, help="where the stores go [default: a temporary directory]")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="conv1x1-dask-bench-", dir=args.dir)
    try:
        with local_cluster() as cluster, Client(cluster) as client:
            print(f"warm LocalCluster: {len(cluster.workers)} worker processes x 1 thread; ours: {compressors(None)}")
            for name, case in CASES.items():
                if args.quick and case[0] > 1000:
                    continue
                seconds = measure(client, directory, case, args.reps)
                median = {key: statistics.median(values) for key, values in seconds.items()}
                by_hand = median["ours"] / min(median["by hand"], median["by hand, threads"])
                copy = median["ours"] / min(median["copy"], median["copy, threads"])
                print(f"{name}: medians of {args.reps}; ours / the faster by hand {by_hand:.2f}, / copy {copy:.2f}")
                for key, values in seconds.items():
                    print(f"    {key:20} {median[key]:6.2f} s   ({', '.join(f'{value:.2f}' for value in values)})")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
