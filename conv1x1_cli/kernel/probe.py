"""The float32 FMA peak of this machine, measured with a Numba loop: the roofline's compute limit.

Like the rest of the kernel package it imports numba; it is imported lazily (by ``bench.machine``),
never by the CLI at start-up.

Each thread runs ``_CHAINS`` independent accumulator vectors of ``_LANES`` float32 lanes (one
register of the SIMD unit compiled for: ``target.simd_unit``) through ``acc = acc * mul + add`` for
many rounds. With 16 chains (12 with 16 registers) the FMA latency (4-5 cycles) is covered even on a
core with two FMA pipes, and all chains stay in registers:
the accumulators live in a fixed-size stack allocation that LLVM promotes to registers once the
lane loops are fully unrolled, and the SLP vectoriser (switched on only while this function
compiles; the kernel no longer needs it, its tile being written as vector IR) fuses each chain's
lanes into one ``vfmadd...ps`` (zmm, ymm) or ``fmla``. ``mul`` < 1 keeps values bounded and away from denormals.

>>> fma_peak_gflops(threads=1, seconds=0.01) > 0
True
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .pool import default_threads
from .target import simd_unit

_LANES = simd_unit().vector_bytes // 4  # float32 lanes of one register (16 in a 512-bit one)
_CHAINS = 16 if simd_unit().registers >= 32 else 12  # independent vector accumulators per thread
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


@njit(nogil=True, cache=True, fastmath={"contract"})
def _fma_chains_slp(rounds, mul, add):
    """The sum of one thread's accumulators after ``rounds`` rounds of FMA on every lane.

    One flat run of lanes (a 2-D (chains, lanes) view compiles to gathers and scatters instead)."""
    acc = numba.carray(_stack_floats(_ACCUMULATORS), (_ACCUMULATORS,))
    for lane in range(_ACCUMULATORS):
        acc[lane] = np.float32(lane) * np.float32(1e-3)
    for _ in range(rounds):
        for lane in range(_ACCUMULATORS):
            acc[lane] = acc[lane] * mul + add
    total = np.float32(0)
    for lane in range(_ACCUMULATORS):
        total += acc[lane]
    return total


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


def _args(rounds: int) -> tuple:
    return (rounds, np.float32(0.999999), np.float32(1e-6))


def _kernel():
    """The probe compiled (or loaded from numba's cache) with SLP; only this function compiles it, and its
    name is its own, so the on-disk cache (whose key ignores the SLP setting) only ever holds SLP builds."""
    global _compiled
    with _compile_lock:
        if not _compiled:
            with _slp_vectorizer():
                _fma_chains_slp.compile(tuple(numba.typeof(arg) for arg in _args(1)))
            _compiled = True
    return _fma_chains_slp


def available_threads() -> int:
    """How many threads the convolutions run on when not told otherwise (see pool.default_threads)."""
    return default_threads()


def fma_peak_gflops(threads: int | None = None, seconds: float = 0.3) -> float:
    """Best-of-N float32 FMA rate in GFLOP/s (2 flops per lane per FMA) on ``threads`` threads at once
    (default: as many as the convolutions use), measured for about ``seconds``."""
    kernel = _kernel()
    available = available_threads()
    workers = available if threads is None else max(1, min(int(threads), available))
    # The calling thread is one of the workers; the others are plain threads running the nogil loop,
    # as the kernel's own workers do.
    with ThreadPoolExecutor(max_workers=workers - 1) if workers > 1 else nullcontext() as pool:

        def run_everywhere(rounds: int) -> None:
            others = [pool.submit(kernel, *_args(rounds)) for _ in range(workers - 1)] if pool else []
            kernel(*_args(rounds))
            for other in others:
                other.result()

        return workers * _best_rate(run_everywhere, seconds)


def _best_rate(run_everywhere, seconds: float) -> float:
    """The best FMA rate of one thread, in GFLOP/s, while ``run_everywhere`` runs every thread."""
    rounds = 1000
    run_everywhere(rounds)  # start the threads
    # Grow one call to ~20 ms (well above thread start-up noise), then repeat it for the time budget.
    while True:
        started = time.perf_counter()
        run_everywhere(rounds)
        elapsed = time.perf_counter() - started
        if elapsed >= 0.02 or rounds >= 2**30:
            break
        rounds *= 2 if elapsed < 0.002 else max(2, math.ceil(0.02 / max(elapsed, 1e-9)))
    best = elapsed
    deadline = time.perf_counter() + seconds
    for _ in range(3 + int(seconds / max(elapsed, 1e-9))):
        started = time.perf_counter()
        run_everywhere(rounds)
        best = min(best, time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    return rounds * _FLOPS_PER_ROUND / best / 1e9
