"""The Numba kernel: fused 1x1 convolution + bias + activation.

    out[P, F] = act(pixels[P, C] @ bank[C, F] + bias[F]),  act = ReLU or identity

This is the only module of the package that imports numba.  It knows nothing of
files or screens: callers hand it C-contiguous arrays and a preallocated output.

Design
------
* Packing (``pack_bank``, once per bank).  The bank is seen as column *panels*
  of ``width`` filters (64 float32 = four 512-bit vectors when F is large, fewer
  for narrow banks): ``panels[c, k, :]`` is a view of row c, columns k*width
  onwards, one contiguous run that the micro-kernel loads as whole vectors.
  Only a bank whose F is not a multiple of width is copied (zero-padded to a
  whole panel); the bias is padded the same way.  An earlier panel-major copy
  (``panels[k, c, :]``) cost twice the product on few-pixel, big-bank layers
  (7x7x2048->512: 78 GFLOP/s with packing against 152 for the view, side by
  side), because the public API packs on every call.
* Micro-kernel.  A tile of ``rows`` pixels x one panel is accumulated over all
  channels in an accumulator tile (6x64 float32 = 24 zmm registers): per
  channel, 4 vector loads of the panel row, 6 broadcasts of pixel values and 24
  FMAs.  The accumulator lives in a stack allocation (``_stack_tile``) whose size
  is a compile-time constant, so LLVM promotes it to registers; a heap
  ``np.empty`` would keep it in memory and run at a fraction of the speed.  The
  tile shape reaches the compiler through the *types* of two marker tuples
  (``len`` of a tuple type is a constant), so one source serves every shape and
  each shape is its own cached specialisation (closures over constants would
  not do: numba's cache key hashes closure cells, and a cell holding a
  dispatcher hashes differently in every process).  Bias initialises the
  accumulators; ReLU is applied on the way out.
* Remainders.  The last pixel tile is shifted back to end at P (it recomputes a
  few rows with identical results instead of needing a scalar tail).  When
  P < rows a one-row tile is used.  A partial last panel is computed at full
  width (zero padding) and stored element by element.
* Work split.  The (pixel tile, panel) pairs are ordered pixel-major (a pixel
  tile stays in L1 while it meets every panel) unless there are fewer pixels
  than filters, where they are panel-major (a panel stays in L2 while it meets
  every tile); splitting over filters as well as pixels keeps every core busy
  when there are few pixels (7x7=49).  They are cut into ~16 chunks per thread,
  and each thread owns a contiguous segment of chunks: it works through its own
  from the front, then helps the others from their far end.  (One shared chunk
  counter interleaved the threads, so both cores streamed every panel: 98
  against 159 GFLOP/s on 7x7x832->384.)  Problems under ~1M multiply-adds run
  on the calling thread alone.
* Threads.  Not numba's OpenMP ``prange``: its workers had to sleep between
  calls (spinning OpenMP workers hold their cores against NumPy's BLAS threads),
  and waking one cost 35-90 us per call on this class of virtual machine, more
  than the whole product on small layers.  Our own worker threads
  (``_WorkerPool``) run a nogil loop (``_serve_slp``): they claim chunks with
  atomic compare-and-swap (``_claim``), spin about 2 ms after their last chunk
  calling sched_yield at every turn (so any other thread that needs the core
  gets it, as with OpenBLAS's own workers), then sleep on a POSIX semaphore that
  the next call posts.  The calling thread (``_run_slp``) publishes the job and
  works on it at once; it never waits for a worker to wake, since it takes over
  any chunk nobody has claimed.  Sleeping, waking, and moving a worker off the
  caller's CPU (``_move_off_cpu``) all happen in compiled code, without the GIL.
  One Python thread at a time uses the pool; calls from other threads meanwhile
  run alone.  The pool's code calls Linux functions (sched_getcpu,
  sched_setaffinity, unnamed POSIX semaphores); on other systems there are no
  workers, and ``_run_alone_slp``, which calls none of them, does every call.
* Vectoriser settings.  Without LLVM's SLP vectoriser (off by default in numba)
  the fully unrolled tile compiles to scalar FMAs; with the loop vectoriser on,
  LLVM sometimes vectorises the wrong loop of a narrow tile (gathers and
  scatters, 50x slower).  So SLP is switched on and the loop vectoriser off only
  while *our* kernel compiles (``_compile``); implicit compilation by the
  dispatcher is disabled, so every build of it goes through that function, and
  its name is new, so numba's on-disk cache (whose key does not include these
  settings) can only hold builds made with them.  Compilation is lazy (nothing
  at import) and cached to disk (``cache=True``; numba falls back to its
  user-wide cache directory when the package directory is read-only).
* Floating point.  Only the ``contract`` fast-math flag is used (fused
  multiply-add); each output is its own accumulation chain in channel order, so
  no reassociation is needed.  ReLU is ``0 if v < 0 else v``, which keeps NaN
  (like ``np.maximum(v, 0)`` and PyTorch), and Inf/NaN propagate through FMA.
"""

from __future__ import annotations

import atexit
import ctypes
import operator
import os
import sys
import threading
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Fused multiply-add only: no flag that assumes away NaN/Inf or reorders sums.
_FASTMATH = {"contract"}

# Bytes of one SIMD register (AVX-512); panel widths are multiples of half of it.
_VECTOR_BYTES = 64
# Below this many multiply-adds a call runs on one thread: handing chunks to a
# spinning worker costs a few microseconds, which two threads win back from
# about 1M multiply-adds up (measured here: 196x128->64, 1.6M, ran in 32 us on
# one thread and 23 on two; 3136x3->64, 0.6M, in 24 and 27).
_SERIAL_WORK = 1 << 20


# --------------------------------------------------------------------------
# Compiled part
# --------------------------------------------------------------------------


@intrinsic
def _stack_tile(typingctx, row_marker, width_marker, like):
    """Pointer to an uninitialised rows x width tile of like's dtype, on the stack.

    The size comes from the lengths of the two marker tuple *types*, so it is a
    compile-time constant and LLVM can promote the tile to registers.
    """
    dtype = like.dtype
    count = len(row_marker) * len(width_marker)

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype), size=count)

    return types.CPointer(dtype)(row_marker, width_marker, like), codegen


@njit(inline="always", fastmath=_FASTMATH)
def _accumulate_tile(pixels, first_pixel, panels, k, panel_bias, acc):
    """acc[r, :] = panel_bias + pixels[first_pixel + r, :] @ panels[:, k, :], all channels."""
    rows, width = acc.shape
    for r in range(rows):
        for j in range(width):
            acc[r, j] = panel_bias[j]
    # Filters go in chunks of at most 32 so that LLVM fully unrolls the row and
    # filter loops (a 64-trip loop is not), which the SLP vectoriser needs.
    chunk = min(width, 32)
    for c in range(pixels.shape[1]):
        # One contiguous row of the panel, taken once per channel: constant indices into it vectorise.
        panel_row = panels[c, k]
        for r in range(rows):
            value = pixels[first_pixel + r, c]
            for j0 in range(0, width, chunk):
                for j in range(j0, j0 + chunk):
                    acc[r, j] += value * panel_row[j]


@njit(inline="always")
def _activate(value, relu):
    # `0 if v < 0 else v` keeps NaN (NaN < 0 is False), like np.maximum(v, 0).
    return 0 if (relu and value < 0) else value


@njit(inline="always")
def _store_tile(acc, scratch, out, first_pixel, first_filter, n_valid, relu):
    """out[first_pixel + r, first_filter + j] = act(acc[r, j]) for the valid filters."""
    rows, width = acc.shape
    for r in range(rows):
        # A slice (not out[p, f0 + j]) so the vector stores need no index checks.
        dst = out[first_pixel + r, first_filter : first_filter + n_valid]
        if n_valid == width:
            for j in range(width):
                dst[j] = _activate(acc[r, j], relu)
        else:  # partial last panel, through a scratch row: indexing acc by a
            # run-time j would keep the whole tile out of registers.
            for j in range(width):
                scratch[j] = _activate(acc[r, j], relu)
            for j in range(n_valid):
                dst[j] = scratch[j]


@njit(inline="always", fastmath=_FASTMATH)
def _tile(pixels, first_pixel, panels, panel_bias, k, out, relu, row_marker, width_marker):
    """One tile: len(row_marker) pixels from first_pixel x panel k (filters k*width onwards)."""
    rows, width = len(row_marker), len(width_marker)
    acc = numba.carray(_stack_tile(row_marker, width_marker, pixels), (rows, width))
    _accumulate_tile(pixels, first_pixel, panels, k, panel_bias[k], acc)
    first_filter = k * width
    n_valid = min(width, out.shape[1] - first_filter)
    scratch = numba.carray(_stack_tile((0,), width_marker, pixels), width)
    _store_tile(acc, scratch, out, first_pixel, first_filter, n_valid, relu)


# --------------------------------------------------------------------------
# Compiled part: atomics and raw pointers for the worker pool
# --------------------------------------------------------------------------


def _element_pointer(context, builder, array_type, array, index):
    view = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, view, [index], wraparound=False)


@intrinsic
def _atomic_load(typingctx, array, index):
    """array[index], read with acquire ordering (int64 arrays only)."""

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], *args)
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def _atomic_store(typingctx, array, index, value):
    """array[index] = value, written with release ordering: every earlier write is visible first."""

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()

    return types.none(array, index, types.int64), codegen


def _read_modify_write(operation, ordering):
    """Code for array[index] = operation(array[index], value), atomically, returning the value before."""

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw(operation, pointer, args[2], ordering)

    return codegen


@intrinsic
def _atomic_add(typingctx, array, index, value):
    """array[index] += value atomically; returns the value before."""
    return types.int64(array, index, types.int64), _read_modify_write("add", "acq_rel")


@intrinsic
def _atomic_exchange(typingctx, array, index, value):
    """array[index] = value atomically; returns the value before."""
    return types.int64(array, index, types.int64), _read_modify_write("xchg", "seq_cst")


@intrinsic
def _compare_and_swap(typingctx, array, index, expected, new):
    """array[index] = new if it still holds expected, atomically; True if it did."""

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        result = builder.cmpxchg(pointer, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(result, 1)

    return types.boolean(array, index, types.int64, types.int64), codegen


@intrinsic
def _pointer(typingctx, address, like):
    """The int64 address as a pointer to like's dtype (for numba.carray)."""
    pointer_type = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))

    return pointer_type(address, like), codegen


@intrinsic
def _address_of(typingctx, array):
    """The array's data pointer as a void pointer, for C functions."""

    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.bitcast(view.data, context.get_value_type(types.voidptr))

    return types.voidptr(array), codegen


# C functions the workers call without the GIL.  Spinning threads give their core away on every
# turn, as OpenBLAS's do: a thread of NumPy's (or of any other program) that needs it gets it.
_sched_yield = types.ExternalFunction("sched_yield", types.int32())
_sched_getcpu = types.ExternalFunction("sched_getcpu", types.int32())
_sched_getaffinity = types.ExternalFunction("sched_getaffinity", types.int32(types.int32, types.uintp, types.voidptr))
_sched_setaffinity = types.ExternalFunction("sched_setaffinity", types.int32(types.int32, types.uintp, types.voidptr))
_sem_wait = types.ExternalFunction("sem_wait", types.int32(types.voidptr))
_sem_post = types.ExternalFunction("sem_post", types.int32(types.voidptr))

# A job is published to the workers as int64 fields: array addresses and shapes.
_JOB_PIXELS, _JOB_PANELS, _JOB_BIAS, _JOB_OUT = 0, 1, 2, 3
_JOB_PIXEL_COUNT, _JOB_CHANNELS, _JOB_PANEL_COUNT, _JOB_FILTERS = 4, 5, 6, 7
_JOB_RELU, _JOB_PANEL_MAJOR, _JOB_CHUNKS = 8, 9, 10
_JOB_FIELDS = 16
# Control words, each on its own 64-byte cache line (8 int64) so the threads do not share lines:
# the count of finished chunks, the stop flag, the calling thread's CPU, how many workers are
# asleep, then one segment word per thread.
_LINE = 8
_DONE, _STOP, _MAIN_CPU, _SLEEPING, _SEGMENTS = 0, _LINE, 2 * _LINE, 3 * _LINE, 4 * _LINE
_MAX_THREADS = 64
_CONTROL_WORDS = _SEGMENTS + _LINE * _MAX_THREADS
# A job's chunks are split into one contiguous segment per thread.  A segment word packs, from
# bit 0: the end of the segment's unclaimed chunks (12 bits), their start (12), how many threads
# take part (8) and the job's kind (8).  One word, so that one compare-and-swap checks them all.
_CHUNK_BITS = 12
_MAX_CHUNKS = (1 << _CHUNK_BITS) - 1
_START_SHIFT, _THREADS_SHIFT, _KIND_SHIFT = 12, 24, 32
_NOTHING, _OTHER_KIND = -1, -2  # what _claim returns instead of a chunk
_STOPPED = -1  # what _serve_slp returns when it is not _OTHER_KIND
# glibc's sem_t is 32 bytes on 64-bit Linux; the workers share one, and 64 bytes keep it on a line of its own.
_SEMAPHORE_BYTES = 64
_CPU_SET_WORDS = 16  # a cpu_set_t: 1024 CPUs, as glibc's


@njit(inline="always")
def _claim(control, segment, from_end, kind, me):
    """Claim one unclaimed chunk of ``segment``: its first (a thread's own segment) or its last
    (when helping another thread).  Returns the chunk, _NOTHING, or _OTHER_KIND for a job of
    another kind.

    A chunk is claimed with a compare-and-swap of the segment word as it was read, which succeeds
    only while that chunk is still unclaimed; the job cannot finish before the chunk does, so
    the job fields read after a successful claim are that job's own.
    """
    slot = _SEGMENTS + segment * _LINE
    while True:
        word = _atomic_load(control, slot)
        start, end = (word >> _START_SHIFT) & _MAX_CHUNKS, word & _MAX_CHUNKS
        if start >= end or me >= (word >> _THREADS_SHIFT) & 0xFF:
            return _NOTHING
        if (word >> _KIND_SHIFT) & 0xFF != kind:
            return _OTHER_KIND
        if from_end:
            claimed, chunk = word - 1, end - 1
        else:
            claimed, chunk = word + (1 << _START_SHIFT), start
        if _compare_and_swap(control, slot, word, claimed):
            return chunk


@njit(inline="always")
def _next_chunk(control, kind, me, n_threads):
    """The next chunk for thread ``me``: from the front of its own segment, else from the back of
    another's (the far end from where its owner works, so each thread keeps to its own part of
    the bank or the pixels as long as it can)."""
    chunk = _claim(control, me, False, kind, me)
    for offset in range(1, n_threads):
        if chunk != _NOTHING:
            break
        chunk = _claim(control, (me + offset) % n_threads, True, kind, me)
    return chunk


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _chunk_slp(job, chunk, n_chunks, row_marker, width_marker, like):
    """Run chunk ``chunk`` of ``n_chunks`` equal runs of the (pixel tile, panel) pairs of the job in ``job``."""
    width = len(width_marker)
    n_pixels, n_channels = job[_JOB_PIXEL_COUNT], job[_JOB_CHANNELS]
    n_panels = job[_JOB_PANEL_COUNT]
    pixels = numba.carray(_pointer(job[_JOB_PIXELS], like), (n_pixels, n_channels))
    panels = numba.carray(_pointer(job[_JOB_PANELS], like), (n_channels, n_panels, width))
    panel_bias = numba.carray(_pointer(job[_JOB_BIAS], like), (n_panels, width))
    out = numba.carray(_pointer(job[_JOB_OUT], like), (n_pixels, job[_JOB_FILTERS]))
    n_pairs = (n_pixels + len(row_marker) - 1) // len(row_marker) * n_panels
    # The arrays go to a function of their own: with the tile loop in this function, next to the
    # pointer arithmetic, LLVM kept the accumulators in memory (scalar FMAs, 15x slower).
    _pairs_slp(
        pixels,
        panels,
        panel_bias,
        out,
        job[_JOB_RELU] != 0,
        job[_JOB_PANEL_MAJOR] != 0,
        chunk * n_pairs // n_chunks,
        (chunk + 1) * n_pairs // n_chunks,
        row_marker,
        width_marker,
    )


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _pairs_slp(pixels, panels, panel_bias, out, relu, panel_major, start, stop, row_marker, width_marker):
    """(pixel tile, panel) pairs start..stop-1, in pixel-major or panel-major order.

    Pixel-major order walks one pixel tile (in L1) past every panel; panel-major order walks one
    panel (in L2) past every pixel tile.
    """
    n_pixels = pixels.shape[0]
    rows = len(row_marker)
    n_inner = (n_pixels + rows - 1) // rows if panel_major else panels.shape[1]
    # Walk the pairs with counters: a division per pair costs as much as a
    # whole tile when there are few channels (RGB stem).
    outer, inner = start // n_inner, start % n_inner
    for _ in range(stop - start):
        if panel_major:
            k, t = outer, inner
        else:
            t, k = outer, inner
        # The last tile is shifted back to end at n_pixels: it recomputes a
        # few rows (same values) instead of needing a scalar remainder loop.
        first_pixel = min(t * rows, n_pixels - rows)
        _tile(pixels, first_pixel, panels, panel_bias, k, out, relu, row_marker, width_marker)
        inner += 1
        if inner == n_inner:
            inner = 0
            outer += 1


@njit(inline="always")
def _describe_job(job, pixels, panels, panel_bias, out, relu, panel_major, n_chunks):
    """Write the job's array addresses and shapes into ``job``, where any thread can read them."""
    job[_JOB_PIXELS] = pixels.ctypes.data
    job[_JOB_PANELS] = panels.ctypes.data
    job[_JOB_BIAS] = panel_bias.ctypes.data
    job[_JOB_OUT] = out.ctypes.data
    job[_JOB_PIXEL_COUNT], job[_JOB_CHANNELS] = pixels.shape
    job[_JOB_PANEL_COUNT], job[_JOB_FILTERS] = panels.shape[1], out.shape[1]
    job[_JOB_RELU], job[_JOB_PANEL_MAJOR] = relu, panel_major
    job[_JOB_CHUNKS] = n_chunks


@njit(cache=True, nogil=True)
def _run_alone_slp(pixels, panels, panel_bias, out, relu, panel_major, job, row_marker, width_marker, like):
    """A whole job on the calling thread.  (It calls no Linux-only function, unlike the pool's code.)"""
    _describe_job(job, pixels, panels, panel_bias, out, relu, panel_major, 1)
    _chunk_slp(job, 0, 1, row_marker, width_marker, like)


@njit(cache=True, nogil=True)
def _run_slp(
    pixels,
    panels,
    panel_bias,
    out,
    relu,
    panel_major,
    n_chunks,
    n_threads,
    kind,
    control,
    job,
    semaphore,
    row_marker,
    width_marker,
    like,
):
    """The calling thread's side of a job shared with the workers: describe it, publish it, work, wait.

    Each of the ``n_threads`` threads (this one is thread 0) gets a segment of the chunks; this
    thread works through its own and then helps with the others' until none is left, and waits
    for the chunks still running.  A worker that is asleep, or slow to wake, only means that this
    thread takes more of its segment.
    """
    _describe_job(job, pixels, panels, panel_bias, out, relu, panel_major, n_chunks)
    _atomic_store(control, _DONE, 0)
    _atomic_store(control, _MAIN_CPU, _sched_getcpu())
    header = (kind << _KIND_SHIFT) | (n_threads << _THREADS_SHIFT)
    for segment in range(_MAX_THREADS):  # release stores: the job fields above are visible first
        start = min(segment, n_threads) * n_chunks // n_threads
        end = min(segment + 1, n_threads) * n_chunks // n_threads
        _atomic_store(control, _SEGMENTS + segment * _LINE, header | (start << _START_SHIFT) | end)
    # After publishing: a worker counted here either sees the job before it sleeps or is woken now
    # (see _sleep).  Both sides update _SLEEPING with a read-modify-write, which is what makes this
    # safe: whichever comes second sees the other.  Neither may become a plain load or store.
    for _ in range(_atomic_exchange(control, _SLEEPING, 0)):
        _sem_post(_address_of(semaphore))
    while True:
        chunk = _next_chunk(control, kind, 0, n_threads)
        if chunk < 0:
            break
        _chunk_slp(job, chunk, n_chunks, row_marker, width_marker, like)
        _atomic_add(control, _DONE, 1)
    while _atomic_load(control, _DONE) < n_chunks:
        _sched_yield()


@njit(cache=True, nogil=True)
def _serve_slp(control, job, kind, me, idle_turns, semaphore, cpu_sets, row_marker, width_marker, like):
    """Worker ``me``'s loop (me >= 1): run chunks of jobs of this kind, spinning politely in
    between, and sleeping after ``idle_turns`` idle turns (sched_yield calls).

    Returns _STOPPED when told to stop, or _OTHER_KIND when a job of another kind is published
    (the caller switches to that kind's specialisation).  Sleeping, waking and moving off the
    calling thread's CPU all happen here, without the GIL: a worker woken into Python code
    waited for the GIL behind the calling thread for milliseconds.
    """
    idle = 0
    while True:
        if _atomic_load(control, _STOP) != 0:
            return _STOPPED
        if idle == 0 and _sched_getcpu() == _atomic_load(control, _MAIN_CPU):
            _move_off_cpu(_atomic_load(control, _MAIN_CPU), cpu_sets)
        # How many threads share the current job, as this worker's own segment word says.
        n_threads = (_atomic_load(control, _SEGMENTS + me * _LINE) >> _THREADS_SHIFT) & 0xFF
        chunk = _next_chunk(control, kind, me, n_threads) if me < n_threads else _NOTHING
        if chunk == _OTHER_KIND:
            return _OTHER_KIND
        if chunk != _NOTHING:
            _chunk_slp(job, chunk, job[_JOB_CHUNKS], row_marker, width_marker, like)
            _atomic_add(control, _DONE, 1)
            idle = 0
        elif idle < idle_turns:
            _sched_yield()
            idle += 1
        else:
            _sleep(control, me, semaphore)
            # A job this worker may not join (a call with fewer threads) wakes it too: back to sleep.
            joins = me < (_atomic_load(control, _SEGMENTS + me * _LINE) >> _THREADS_SHIFT) & 0xFF
            idle = 0 if joins else idle_turns


@njit(inline="always")
def _has_work(control, me):
    """Whether some segment still has unclaimed chunks that thread ``me`` may take."""
    for segment in range(_MAX_THREADS):
        word = _atomic_load(control, _SEGMENTS + segment * _LINE)
        threads = (word >> _THREADS_SHIFT) & 0xFF
        if me < threads and (word >> _START_SHIFT) & _MAX_CHUNKS < word & _MAX_CHUNKS:
            return True
    return False


@njit(inline="always")
def _sleep(control, me, semaphore):
    """Sleep on the semaphore until a job is published (or return at once if one already is).

    The worker counts itself as sleeping before it looks for work one last time; _run_slp
    publishes a job before it takes the count.  So either this worker sees the job, or the count
    it added is taken and a post wakes it.  If it sees a job, it takes back its count while that
    is still there; when it is gone, a post is on its way and sem_wait returns at once.
    """
    _atomic_add(control, _SLEEPING, 1)
    if _has_work(control, me) or _atomic_load(control, _STOP) != 0:
        while True:
            sleeping = _atomic_load(control, _SLEEPING)
            if sleeping == 0:
                break
            if _compare_and_swap(control, _SLEEPING, sleeping, sleeping - 1):
                return
    # The count is committed, so a post is owed to this wait: a signal that interrupts it (EINTR)
    # must not end it, or every later call would post once more than anyone waits for.
    while _sem_wait(_address_of(semaphore)) != 0:
        pass


@njit(inline="always")
def _move_off_cpu(cpu, cpu_sets):
    """Move this thread off ``cpu`` at once, keeping the CPUs it may run on.

    On a virtual machine Linux often wakes a thread on the waker's CPU (an idle virtual CPU whose
    host thread is not running counts as busy).  There a worker that yields at every turn barely
    ran beside the calling thread for whole seconds while the other CPU idled (190-200 us per
    call instead of 106-110 on 28x28x192->64), and the scheduler never moved it.  Excluding the
    CPU for a moment migrates the thread; the old set is restored straight after.
    """
    allowed, elsewhere = cpu_sets[0], cpu_sets[1]
    if cpu < 0 or cpu >= 64 * _CPU_SET_WORDS:
        return
    if _sched_getaffinity(0, 8 * _CPU_SET_WORDS, _address_of(allowed)) != 0:
        return
    elsewhere[:] = allowed
    elsewhere[cpu // 64] &= ~(np.uint64(1) << np.uint64(cpu % 64))
    if not elsewhere.any():
        return
    if _sched_setaffinity(0, 8 * _CPU_SET_WORDS, _address_of(elsewhere)) == 0:
        _sched_setaffinity(0, 8 * _CPU_SET_WORDS, _address_of(allowed))


# --------------------------------------------------------------------------
# Worker pool, compilation (lazy: nothing happens at import)
# --------------------------------------------------------------------------

# How long an idle worker spins before it sleeps, in sched_yield turns: about 2 ms on an idle
# machine (half a microsecond a turn here), so back-to-back calls find it awake, while a program
# that has moved on to other work gets the core back soon.  On a busy machine each turn lets the
# others run first, so it lasts longer in wall time but costs about as little CPU.
_IDLE_TURNS = 4000
# Chunks per thread: enough that the last one to finish leaves little idle time (~1/32 here).
_CHUNKS_PER_THREAD = 16


class _Kind:
    """One compiled specialisation: dtype and tile shape, and the marker arguments that select it."""

    def __init__(self, code: int, dtype: np.dtype, rows: int, width: int):
        self.code = code
        self.row_marker = tuple(range(rows))
        self.width_marker = tuple(range(width))
        self.like = np.empty(0, dtype)
        self.compiled_runs: set = set()
        self.serve_compiled = False

    @property
    def markers(self) -> tuple:
        return self.row_marker, self.width_marker, self.like


class _WorkerPool:
    """Worker threads that share each call's chunks with the calling thread (see "Threads" above).

    Started with the first job; daemon threads, told to stop at interpreter exit.
    """

    def __init__(self, n_workers: int):
        self.control = np.zeros(_CONTROL_WORDS, np.int64)
        self.job = np.zeros(_JOB_FIELDS, np.int64)
        self.semaphore = _new_semaphore() if n_workers else None
        self.busy = threading.Lock()  # one calling thread at a time; others run alone
        self.n_workers = n_workers
        self.latest_kind: _Kind | None = None
        self._threads: list[threading.Thread] = []
        self._running = 0  # workers started and not yet returned
        self._lifecycle = threading.Lock()

    def announce(self, kind: _Kind) -> None:
        """Before a job of this kind is published: start the workers (again, if one has died)."""
        self.latest_kind = kind
        if self._running < self.n_workers:  # a plain read: Thread.is_alive on every call cost 1-3 us
            self._threads = [
                self._threads[me - 1]
                if me <= len(self._threads) and self._threads[me - 1].is_alive()
                else self._start(me)
                for me in range(1, self.n_workers + 1)
            ]

    def _start(self, me: int) -> threading.Thread:
        with self._lifecycle:
            self._running += 1
        thread = threading.Thread(target=self._work, args=(me,), daemon=True, name=f"conv1x1-worker-{me}")
        thread.start()
        return thread

    def _work(self, me: int) -> None:
        """Thread ``me`` (the calling thread is 0) serves jobs of the latest kind until stopped."""
        cpu_sets = np.zeros((2, _CPU_SET_WORDS), np.uint64)
        try:
            while True:
                kind = self.latest_kind
                result = _serve_slp(
                    self.control, self.job, kind.code, me, _IDLE_TURNS, self.semaphore, cpu_sets, *kind.markers
                )
                if result == _STOPPED:
                    return
        finally:
            with self._lifecycle:
                self._running -= 1

    def stop(self) -> None:
        """Make the workers return (at interpreter exit)."""
        self.control[_STOP] = 1
        for _ in self._threads:
            _libc().sem_post(ctypes.c_void_p(self.semaphore.ctypes.data))


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _new_semaphore() -> np.ndarray:
    """An unnamed POSIX semaphore (count 0) in a NumPy buffer, so compiled code can pass its address."""
    semaphore = np.zeros(_SEMAPHORE_BYTES, np.uint8)
    if _libc().sem_init(ctypes.c_void_p(semaphore.ctypes.data), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "sem_init failed")
    return semaphore


_setup_lock = threading.RLock()
_kinds: dict[tuple, _Kind] = {}
_pool: _WorkerPool | None = None


def _kind(dtype: np.dtype, rows: int, width: int) -> _Kind:
    key = (dtype.char, rows, width)  # a str hashes faster than a dtype
    kind = _kinds.get(key)
    if kind is None:
        with _setup_lock:
            kind = _kinds.get(key)
            if kind is None:
                kind = _Kind(len(_kinds), dtype, rows, width)  # a few per dtype: far below 256
                _kinds[key] = kind
    return kind


def default_threads() -> int:
    """Numba's thread count (NUMBA_NUM_THREADS, else the CPUs), at most the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(numba.config.NUMBA_NUM_THREADS, cpus))


def _worker_pool() -> _WorkerPool:
    global _pool
    if _pool is None:
        with _setup_lock:
            if _pool is None:
                # The pool's compiled code calls Linux functions (sched_getcpu, sched_setaffinity,
                # unnamed POSIX semaphores); elsewhere every call runs on the calling thread alone.
                workers = min(default_threads(), _MAX_THREADS) - 1 if sys.platform.startswith("linux") else 0
                _pool = _WorkerPool(workers)
                atexit.register(_pool.stop)
    return _pool


def _forget_pool() -> None:
    """In a forked child the workers do not exist: start a new pool there when one is needed.

    The set-up lock is new too: another thread of the parent may have held it at the fork.
    """
    global _pool, _setup_lock
    _pool = None
    _setup_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


@contextmanager
def _vectorizer_settings():
    """SLP vectoriser on, loop vectoriser off, for compilations inside this block only.

    The tile loops are unrolled and then packed into vectors by SLP.  Left on,
    the loop vectoriser sometimes picks the wrong loop of a narrow tile (the
    row or channel loop, with gathers and scatters) and runs 50x slower.
    """
    previous = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = 1, 0
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = previous


def _compile(dispatcher, args: tuple) -> None:
    """Compile (or load from numba's disk cache) ``dispatcher`` for these arguments' types.

    Implicit compilation by the two entry points is disabled outside this function, so a call
    with unforeseen argument types raises (and comes back here) instead of silently compiling
    without the vectoriser settings.
    """
    signature = tuple(numba.typeof(a) for a in args)
    with _setup_lock:
        dispatcher.disable_compile(False)
        try:
            with _vectorizer_settings():
                dispatcher.compile(signature)
        finally:
            dispatcher.disable_compile(True)


def _run(kind: _Kind, dispatcher, args: tuple) -> None:
    """dispatcher(*args) (_run_slp or _run_alone_slp), compiling it first for argument types not seen before."""
    pixels, panels = args[0], args[1]
    # numba.typeof is slow (tens of microseconds); this key decides the same types.
    key = (dispatcher is _run_slp, pixels.flags.writeable, panels.flags.writeable)
    if key not in kind.compiled_runs:
        _compile(dispatcher, args)
        kind.compiled_runs.add(key)
    try:
        dispatcher(*args)
    except TypeError as error:  # types the key did not foresee
        if "compilation disabled" not in str(error) and "No matching" not in str(error):
            raise
        _compile(dispatcher, args)
        dispatcher(*args)


def _prepare_serving(kind: _Kind, pool: _WorkerPool) -> None:
    """Compile the workers' loop for this kind before any job of the kind is published."""
    if not kind.serve_compiled:
        cpu_sets = np.zeros((2, _CPU_SET_WORDS), np.uint64)
        _compile(
            _serve_slp, (pool.control, pool.job, kind.code, 1, _IDLE_TURNS, pool.semaphore, cpu_sets, *kind.markers)
        )
        kind.serve_compiled = True


# --------------------------------------------------------------------------
# Public interface
# --------------------------------------------------------------------------


def _tile_shape(n_filters: int, itemsize: int) -> tuple[int, int]:
    """(pixel rows, panel width) of the accumulator tile for this many filters.

    Six rows of up to four vectors: 24 accumulators cover the FMA latency and
    leave registers for the panel loads and broadcasts.  Narrower panels for
    narrow banks waste less padding; taller tiles (12 rows) measured slower, as
    each row is another pointer and another stream from memory.
    """
    lanes = _VECTOR_BYTES // itemsize  # 16 float32 or 8 float64 per zmm register
    if n_filters <= lanes // 2:
        return 8, lanes // 2  # half a vector (e.g. F = 1..8 float32)
    if n_filters <= lanes:
        return 6, lanes
    if n_filters <= 2 * lanes:
        return 6, 2 * lanes
    return 6, 4 * lanes


class PackedBank:
    """A bank and bias padded to whole panels of ``width`` filters, ready for apply_packed.

    The bank, padded with zero columns to a multiple of width, is viewed (never copied) as
    ``panels[c, k, j] = bank[c, k * width + j]``: panel k of channel c is one contiguous run. When F
    is already a multiple of width the view is of the caller's bank itself: copying a 2048x512 bank
    into a panel-major layout cost twice the product itself on 7x7 layers.
    ``panel_bias[k, j]`` is the bias, padded the same way.
    """

    __slots__ = ("dtype", "kind", "n_channels", "n_filters", "one_row_kind", "panel_bias", "panels", "rows", "width")

    def __init__(self, matrix, bias, n_channels, n_filters, rows, width):
        n_panels = matrix.shape[1] // width
        self.panels = matrix.reshape(n_channels, n_panels, width)
        self.panel_bias = bias.reshape(n_panels, width)
        self.n_channels = n_channels
        self.n_filters = n_filters
        self.dtype = matrix.dtype
        self.rows = rows
        self.width = width
        self.kind = _kind(self.dtype, rows, width)
        self.one_row_kind = _kind(self.dtype, 1, width)  # for fewer pixels than rows

    def __repr__(self) -> str:
        return (
            f"PackedBank(channels={self.n_channels}, filters={self.n_filters}, "
            f"dtype={self.dtype}, tile={self.rows}x{self.width})"
        )


def pack_bank(bank: np.ndarray, bias: np.ndarray | None) -> PackedBank:
    """Prepare bank (C, F) and bias (F,) or None, float32 or float64, for apply_packed.

    The result may share memory with ``bank``: pack again after changing the bank in place.
    """
    bank = np.asarray(bank)
    if bank.ndim != 2:
        raise ValueError(f"bank must be 2-D (channels, filters), got shape {bank.shape}")
    if bank.dtype.char not in ("f", "d") or not bank.dtype.isnative:  # native float32 or float64
        raise TypeError(f"bank must be float32 or float64, got {bank.dtype}")
    n_channels, n_filters = bank.shape
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (n_filters,):
            raise ValueError(f"bias must have shape ({n_filters},), got {bias.shape}")
        if bias.dtype != bank.dtype:
            raise TypeError(f"bias dtype {bias.dtype} differs from bank dtype {bank.dtype}")

    rows, width = _tile_shape(n_filters, bank.dtype.itemsize)
    padded = -(-n_filters // width) * width
    if padded == n_filters and bank.flags.c_contiguous and bank.flags.aligned:
        matrix = bank
    else:
        matrix = np.zeros((n_channels, padded), dtype=bank.dtype)
        matrix[:, :n_filters] = bank
    padded_bias = np.zeros(padded, dtype=bank.dtype)
    if bias is not None:
        padded_bias[:n_filters] = bias
    return PackedBank(matrix, padded_bias, n_channels, n_filters, rows, width)


def apply_packed(
    pixels: np.ndarray, packed: PackedBank, out: np.ndarray, relu: bool, threads: int | None = None
) -> None:
    """out[P, F] = act(pixels[P, C] @ bank + bias), written in place.

    pixels (P, C) and out (P, F) are C-contiguous arrays of the bank's dtype.
    threads=None uses every CPU this process may run on (or NUMBA_NUM_THREADS, if lower); an int
    limits this call to that many threads.
    """
    if not isinstance(packed, PackedBank):
        raise TypeError("packed must come from pack_bank")
    dtype = packed.dtype
    for name, array in (("pixels", pixels), ("out", out)):
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise ValueError(f"{name} must be a 2-D NumPy array")
        if array.dtype != dtype:
            raise TypeError(f"{name} dtype {array.dtype} differs from the bank's {dtype}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
    n_pixels = pixels.shape[0]
    if pixels.shape[1] != packed.n_channels:
        raise ValueError(f"pixels have {pixels.shape[1]} channels, bank has {packed.n_channels}")
    if out.shape != (n_pixels, packed.n_filters):
        raise ValueError(f"out must have shape {(n_pixels, packed.n_filters)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    alone = _single_threaded(threads, n_pixels * packed.n_channels * packed.n_filters)  # checks threads
    if n_pixels == 0 or packed.n_filters == 0:
        return

    if not pixels.flags.aligned:
        pixels = pixels.copy()  # the kernel reads through typed pointers
    if not out.flags.aligned or _overlaps(out, pixels, packed):
        # The kernel writes out while it still reads pixels and the bank: go through a temporary.
        result = np.empty_like(out)
        apply_packed(pixels, packed, result, relu, threads)
        out[...] = result
        return

    rows, kind = (packed.rows, packed.kind) if n_pixels >= packed.rows else (1, packed.one_row_kind)
    n_pairs = -(-n_pixels // rows) * packed.panels.shape[1]
    # Panel-major when the bank outweighs the pixels: each panel then stays in
    # cache while it meets every pixel tile.
    arrays = (pixels, packed.panels, packed.panel_bias, out, bool(relu), n_pixels < packed.n_filters)
    pool = None if alone else _worker_pool()
    if pool is not None and pool.n_workers and pool.busy.acquire(blocking=False):
        try:
            n_threads = 1 + (pool.n_workers if threads is None else min(int(threads) - 1, pool.n_workers))
            n_chunks = min(n_pairs, _CHUNKS_PER_THREAD * n_threads, _MAX_CHUNKS)
            _prepare_serving(kind, pool)
            pool.announce(kind)
            _run(
                kind,
                _run_slp,
                (*arrays, n_chunks, n_threads, kind.code, pool.control, pool.job, pool.semaphore, *kind.markers),
            )
        finally:
            pool.busy.release()
    else:  # alone: one thread asked for, little work, or another thread is using the pool
        _run(kind, _run_alone_slp, (*arrays, np.empty(_JOB_FIELDS, np.int64), *kind.markers))


def prepare(packed: PackedBank, threads: int | None = None) -> None:
    """Compile (or load from numba's cache) all that calls with this bank may run, now: the one-thread
    code and, unless threads is 1, the pool's, so that a timed call does not pay for it."""
    kind = packed.kind
    pixels = np.zeros((packed.rows, packed.n_channels), packed.dtype)
    out = np.empty((packed.rows, packed.n_filters), packed.dtype)
    arrays = (pixels, packed.panels, packed.panel_bias, out, True, False)
    _run(kind, _run_alone_slp, (*arrays, np.empty(_JOB_FIELDS, np.int64), *kind.markers))
    pool = _worker_pool()
    if _single_threaded(threads, work=_SERIAL_WORK) or not pool.n_workers:
        return
    _prepare_serving(kind, pool)
    key = (True, pixels.flags.writeable, packed.panels.flags.writeable)  # as _run keys _run_slp
    if key not in kind.compiled_runs:
        _compile(_run_slp, (*arrays, 1, 2, kind.code, pool.control, pool.job, pool.semaphore, *kind.markers))
        kind.compiled_runs.add(key)


def _overlaps(out: np.ndarray, pixels: np.ndarray, packed: PackedBank) -> bool:
    # (panel_bias is always pack_bank's own allocation)
    return np.may_share_memory(out, pixels) or np.may_share_memory(out, packed.panels)


def _single_threaded(threads: int | None, work: int) -> bool:
    if threads is not None and operator.index(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads == 1 or work < _SERIAL_WORK


def pointwise(
    pixels: np.ndarray,
    bank: np.ndarray,
    bias: np.ndarray | None,
    relu: bool,
    out: np.ndarray,
    threads: int | None = None,
) -> None:
    """out[P, F] = act(pixels[P, C] @ bank[C, F] + bias[F]), all one dtype, C-contiguous."""
    apply_packed(pixels, pack_bank(bank, bias), out, relu, threads)
