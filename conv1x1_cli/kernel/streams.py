"""How fast all threads read and write data held in each level of the memory hierarchy: the
cache-aware roofline's bandwidths (``costs.roofline.MemoryLevel``), measured by ``bench``.

Each thread sweeps a buffer of its own, again and again: read (a vectorised sum) or write (a fill),
with Numba loops that compile to full-width vector loads and stores. A buffer that fits a level
stays in it after the first sweep, so the best of several timed sweeps is that level's bandwidth.

>>> stream_gbs("read", 64 * 1024, threads=1, seconds=0.01) > 0
True
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from .pool import default_threads

_SWEEP_BYTES = 64 << 20  # bytes each thread moves per timed call: long enough to time, short enough to repeat


@njit(nogil=True, fastmath=True, cache=True)
def _read(values, sweeps):
    """Sum the buffer ``sweeps`` times (fastmath: reassociated, so it vectorises into wide loads)."""
    total = 0.0
    for _ in range(sweeps):
        partial = np.float32(0.0)
        for index in range(values.size):
            partial += values[index]
        total += partial
    return total


@njit(nogil=True, cache=True)
def _write(values, sweeps):
    """Fill the buffer ``sweeps`` times with a value that changes each sweep (so no sweep is skipped)."""
    for sweep in range(sweeps):
        filler = np.float32(sweep)
        for index in range(values.size):
            values[index] = filler
    return values[0]


def stream_gbs(kind: str, bytes_per_thread: int, threads: int | None = None, seconds: float = 0.1) -> float:
    """Best rate at which ``threads`` threads at once each ``kind`` ("read" or "write") a buffer of
    ``bytes_per_thread`` bytes of their own, in GB/s (1e9 bytes/s) for all of them together."""
    sweep = _read if kind == "read" else _write
    workers = threads or default_threads()
    buffers = [np.ones(max(1, bytes_per_thread // 4), np.float32) for _ in range(workers)]
    sweeps = max(1, _SWEEP_BYTES // (buffers[0].size * 4))
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def everyone() -> float:
            started = time.perf_counter()
            list(pool.map(lambda buffer: sweep(buffer, sweeps), buffers))
            return time.perf_counter() - started

        everyone()  # compile, start the threads, bring the buffers into the level
        timings = [everyone()]
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(timings) < 3:
            timings.append(everyone())
    return workers * sweeps * buffers[0].size * 4 / min(timings) / 1e9
