"""The float32 FMA peak of this machine, measured with a Numba loop: the roofline's compute limit.

Part of the kernel layer: with ``kernel.py`` it is the only code in the package that imports numba,
and it is imported lazily (by ``bench.py``), never by the CLI at start-up.

Each thread runs ``_CHAINS`` independent accumulator vectors of ``_LANES`` float32 lanes
(zmm-wide) through ``acc = acc * mul + add`` for many rounds. With 16 chains the FMA latency
(4 cycles) is covered even on a core with two 512-bit FMA pipes, and all chains stay in registers:
the accumulators live in a fixed-size stack allocation that LLVM promotes to registers once the
lane loops are fully unrolled, and the SLP vectoriser (switched on only while this function
compiles, as ``kernel.py`` does for its own kernels) fuses each chain's lanes into one
``vfmadd...ps zmm``. ``mul`` < 1 keeps values bounded and away from denormals.

>>> fma_peak_gflops(threads=1, seconds=0.01) > 0
True
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_LANES = 16  # float32 lanes of one 512-bit register
_CHAINS = 16  # independent vector accumulators per thread
_ACCUMULATORS = _LANES * _CHAINS  # a global constant, so numba types it as a literal
_FLOPS_PER_ROUND = 2 * _ACCUMULATORS  # one FMA = 2 flops per lane


@intrinsic
def _stack_floats(typingctx, count):
    """Pointer to ``count`` (a compile-time literal) uninitialised float32 values on the stack."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    size = count.literal_value

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=size)

    return types.CPointer(types.float32)(count), codegen


@njit(parallel=True, cache=True, fastmath={"contract"})
def _fma_chains_slp(rounds, workers, mul, add, out):
    """out[w] = sum of worker w's accumulators after ``rounds`` rounds of FMA on every lane.

    One flat run of lanes (a 2-D (chains, lanes) view compiles to gathers and scatters instead)."""
    for worker in prange(workers):
        acc = numba.carray(_stack_floats(_ACCUMULATORS), (_ACCUMULATORS,))
        for lane in range(_ACCUMULATORS):
            acc[lane] = np.float32(worker + lane) * np.float32(1e-3)
        for _ in range(rounds):
            for lane in range(_ACCUMULATORS):
                acc[lane] = acc[lane] * mul + add
        total = np.float32(0)
        for lane in range(_ACCUMULATORS):
            total += acc[lane]
        out[worker] = total


_compile_lock = threading.Lock()
_compiled = False


@contextmanager
def _slp_vectorizer():
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous


def _args(rounds: int, workers: int) -> tuple:
    return (rounds, workers, np.float32(0.999999), np.float32(1e-6), np.empty(workers, np.float32))


def _kernel():
    """The probe compiled (or loaded from numba's cache) with SLP; only this function compiles it, and its
    name is its own, so the on-disk cache (whose key ignores the SLP setting) only ever holds SLP builds."""
    global _compiled
    with _compile_lock:
        if not _compiled:
            _share_kernel_threading()
            with _slp_vectorizer():
                _fma_chains_slp.compile(tuple(numba.typeof(arg) for arg in _args(1, 1)))
            _compiled = True
    return _fma_chains_slp


def _share_kernel_threading() -> None:
    """Let kernel.py choose numba's threading layer before the probe starts numba's threads, so the probe
    runs on the same thread pool as the convolutions (the layer is fixed once the threads exist)."""
    from . import kernel

    configure = getattr(kernel, "_configure_threading", None)
    if configure is not None:
        configure()


def available_threads() -> int:
    """How many threads numba runs parallel loops on when not told otherwise."""
    return numba.config.NUMBA_NUM_THREADS


def numba_threads_started() -> bool:
    """Whether numba's thread pool exists (after which its threading layer can no longer change)."""
    from numba.np.ufunc import parallel as numba_parallel

    return bool(getattr(numba_parallel, "_is_initialized", False))


def fma_peak_gflops(threads: int | None = None, seconds: float = 0.3) -> float:
    """Best-of-N float32 FMA rate in GFLOP/s (2 flops per lane per FMA) on ``threads`` threads
    (default: all of numba's), measured for about ``seconds``."""
    kernel = _kernel()
    available = available_threads()
    workers = available if threads is None else max(1, min(int(threads), available))
    previous = numba.get_num_threads()
    numba.set_num_threads(workers)
    try:
        return _best_rate(kernel, workers, seconds)
    finally:
        numba.set_num_threads(previous)


def _best_rate(kernel, workers: int, seconds: float) -> float:
    rounds = 1000
    kernel(*_args(rounds, workers))  # start the threads
    # Grow one call to ~20 ms (well above thread start-up noise), then repeat it for the time budget.
    while True:
        started = time.perf_counter()
        kernel(*_args(rounds, workers))
        elapsed = time.perf_counter() - started
        if elapsed >= 0.02 or rounds >= 2**30:
            break
        rounds *= 2 if elapsed < 0.002 else max(2, math.ceil(0.02 / max(elapsed, 1e-9)))
    best = elapsed
    deadline = time.perf_counter() + seconds
    for _ in range(3 + int(seconds / max(elapsed, 1e-9))):
        started = time.perf_counter()
        kernel(*_args(rounds, workers))
        best = min(best, time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    return workers * rounds * _FLOPS_PER_ROUND / best / 1e9
