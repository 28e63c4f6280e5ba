"""The Dask path's overhead: GFLOP/s of ``apply`` store -> store on a local cluster, against the
in-memory kernel on the same data, across block sizes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/dask_bench.py [--quick] [--dir DIR]

Each case writes its input as an uncompressed zarr store chunked in bands of whole rows (the block
size), then times ``conv1x1_cli.apply`` into a new store (zarr's default zstd codec) on a
``LocalCluster`` sized to the machine, started beforehand; the in-memory figure is ``conv1x1`` on the
NumPy array, best of three. Store reads come from the page cache: this measures the engine and the
codecs, not a disk or a network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from conv1x1_cli import ApplyOptions, apply, conv1x1
from conv1x1_cli.cluster.client import local_cluster

CASES = {  # name: (height, width, channels, filters)
    "feature maps 4096x4096x64->32": (4096, 4096, 64, 32),
    "hyperspectral 1000x1000x200->8": (1000, 1000, 200, 8),
}
BLOCK_PIXELS = (2**16, 2**18, 2**20, 2**22)


def in_memory_gflops(x: np.ndarray, bank: np.ndarray, flops: int) -> float:
    conv1x1(x[:8], bank)  # load the kernel
    best = min(_timed(lambda: conv1x1(x, bank)) for _ in range(3))
    return flops / best / 1e9


def dask_gflops(x: np.ndarray, directory: str, block_pixels: int, flops: int, scheduler: str) -> tuple[float, int]:
    import zarr

    rows = max(1, min(x.shape[0], block_pixels // x.shape[1]))
    source, target = os.path.join(directory, "in.zarr"), os.path.join(directory, "out.zarr")
    shutil.rmtree(source, ignore_errors=True)
    store = zarr.create_array(store=source, shape=x.shape, chunks=(rows, *x.shape[1:]), dtype=x.dtype, compressors=None)
    store[...] = x
    weights = os.path.join(directory, "w.npy")
    best = float("inf")
    for _ in range(2):
        shutil.rmtree(target, ignore_errors=True)
        best = min(best, _timed(lambda: apply(source, [weights], target, ApplyOptions(scheduler=scheduler))))
    return flops / best / 1e9, rows * x.shape[1]


def _timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quarter-size feature maps, two block sizes")
    parser.add_argument("--dir", default=None, help="where the stores go [default: a temporary directory]")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="conv1x1-dask-bench-", dir=args.dir)
    rng = np.random.default_rng(0)
    try:
        with local_cluster() as cluster:
            workers = len(cluster.workers)
            print(f"LocalCluster: {workers} worker processes x 1 thread, kernel 1 thread per task")
            print(f"{'case':34} {'block pixels':>12} {'block MiB':>9} {'in-memory':>10} {'dask':>8} {'dask/mem':>8}")
            for name, (height, width, channels, filters) in CASES.items():
                if args.quick and height == 4096:
                    height = width = 2048
                x = rng.standard_normal((height, width, channels), dtype=np.float32)
                bank = rng.standard_normal((channels, filters), dtype=np.float32)
                np.save(os.path.join(directory, "w.npy"), bank)
                flops = 2 * height * width * channels * filters
                memory = in_memory_gflops(x, bank, flops)
                for block_pixels in BLOCK_PIXELS[1:3] if args.quick else BLOCK_PIXELS:
                    rate, pixels = dask_gflops(x, directory, block_pixels, flops, cluster.scheduler_address)
                    block_mib = pixels * (channels + filters) * 4 / 2**20
                    print(
                        f"{name:34} {pixels:>12,} {block_mib:>9.0f} {memory:>10.1f} {rate:>8.1f} {rate / memory:>8.0%}",
                        flush=True,
                    )
                del x
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
