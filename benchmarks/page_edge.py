"""What pixels that end a mapping cost: the same layer with its pixels followed by a page that may not
be touched, against the same pixels followed by ordinary memory.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/page_edge.py [--threads N] [--rounds R]

Pixels at the top of a fresh heap or of their own mmap are common (NumPy's large arrays get one each).
A software prefetch of an address with no page behind it is dropped, but only after a page walk, and
the TLB keeps no record of the failure, so each such request walks again.  The kernel's tiles ask for
the pixel rows a few tiles on as they go; this measures whether that reaches past the pixels.  Both
placements are timed in alternating blocks in one process; the ratio (guarded / followed by memory,
median of the rounds) is 1.00 when nothing is asked for beyond the array.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import sys
import time

import numpy as np

from conv1x1_cli import kernel

LAYERS = {  # name: (pixels, channels, filters)
    "GoogLeNet 3a 5x5 reduce": (784, 192, 16),
    "GoogLeNet 3a 1x1": (784, 192, 64),
    "7x7 of GoogLeNet 3a 5x5 reduce": (196, 192, 16),
    "ResNet-50 conv2 expand": (3136, 64, 256),
    "GoogLeNet 5b 1x1": (49, 832, 384),
}


def followed_by_guard(values: np.ndarray, regions: list) -> np.ndarray:
    """A copy of values ending right before a page that may not be touched (PROT_NONE)."""
    page = mmap.PAGESIZE
    pages = -(-values.nbytes // page)
    region = mmap.mmap(-1, (pages + 1) * page)
    regions.append(region)
    start = pages * page - values.nbytes
    array = np.frombuffer(region, values.dtype, values.size, start).reshape(values.shape)
    array[...] = values
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    if libc.mprotect(base + pages * page, page, 0) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    return array


def followed_by_memory(values: np.ndarray) -> np.ndarray:
    """A copy of values inside a larger array whose pages are all touched, so that the bytes after it
    are mapped and present (pages never written are no better than none: the walk finds no page)."""
    spare = np.zeros(values.size + (1 << 20), values.dtype)
    spare[values.size :] = 1.0
    array = spare[: values.size].reshape(values.shape)
    array[...] = values
    return array


def block_seconds(pixels, packed, out, threads, calls) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        kernel.apply_packed(pixels, packed, out, True, threads)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    regions: list = []
    print(f"threads {args.threads}; medians of {args.rounds} alternating blocks of about 20 ms")
    for name, (n_pixels, channels, filters) in LAYERS.items():
        values = rng.standard_normal((n_pixels, channels)).astype(np.float32)
        packed = kernel.pack_bank(rng.standard_normal((channels, filters)).astype(np.float32), None)
        out = np.empty((n_pixels, filters), np.float32)
        guarded, mapped = followed_by_guard(values, regions), followed_by_memory(values)
        kernel.prepare(packed, args.threads)
        calls = max(3, round(0.02 / block_seconds(mapped, packed, out, args.threads, 3)))
        times: dict[str, list[float]] = {"guarded": [], "mapped": []}
        for _ in range(args.rounds):
            times["guarded"].append(block_seconds(guarded, packed, out, args.threads, calls))
            times["mapped"].append(block_seconds(mapped, packed, out, args.threads, calls))
        guarded_us, mapped_us = (np.median(times[key]) * 1e6 for key in ("guarded", "mapped"))
        print(
            f"{name:32} {n_pixels}x{channels}->{filters}: {guarded_us:8.1f} us guarded, "
            f"{mapped_us:8.1f} us followed by memory, ratio {guarded_us / mapped_us:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    if sys.platform == "win32":
        sys.exit("page_edge.py needs mprotect (Linux or macOS)")
    main()
