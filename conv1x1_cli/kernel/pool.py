"""The worker threads that share each call's chunks with the calling thread.

Not numba's OpenMP ``prange``: its workers had to sleep between calls (spinning
OpenMP workers hold their cores against NumPy's BLAS threads), and waking one
cost 35-90 us per call on this class of virtual machine, more than the whole
product on small layers.  Our own worker threads (``WorkerPool``) run a nogil
loop (``serve``): they claim chunks with atomic compare-and-swap
(``_claim``), spin about 2 ms after their last chunk calling sched_yield at
every turn (so any other thread that needs the core gets it, as with
OpenBLAS's own workers), then sleep on a POSIX semaphore that the next call
posts.  The calling thread (``run_pooled``) publishes the job and works on it at
once; it never waits for a worker to wake, since it takes over any chunk nobody
has claimed.  Sleeping, waking, and keeping a worker off the caller's CPU
(``_avoid_cpu``) all happen in compiled code, without the GIL.  One Python
thread at a time uses the pool; calls from other threads meanwhile run alone.

Each thread owns a contiguous segment of a job's chunks: it works through its
own from the front, then helps the others from their far end.  (One shared
chunk counter would interleave the threads, so that every core streams every
panel.)

The pool's code calls Linux functions (sched_getcpu, sched_setaffinity, unnamed
POSIX semaphores).  On other systems the pool has no workers, and calls are
shared out by numba's own threading layer instead (``run_portable``: a
``prange`` over the same chunks, on OpenMP, TBB or numba's workqueue, whichever
numba finds); ``CONV1X1_THREADING=portable`` takes that path on Linux too, so
that it can be tested and measured there.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
import threading
from typing import Any

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..costs.roofline import usable_cpus
from ..errors import ArgumentError
from .tiles import (
    JOB_CHUNKS,
    JOB_FIELDS,
    JOB_NUMBER,
    cached_with_sources,
    call_chunk,
    copy_room,
    describe_job,
    helper,
    kind_numbers,
    on_stack,
    out_overlaps,
    panels_in,
    plan,
)

# --------------------------------------------------------------------------
# Atomics and C functions, callable without the GIL
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

# Control words, each on its own 64-byte cache line (8 int64) so the threads do not share lines:
# the count of finished chunks, the stop flag, the calling thread's CPU, how many workers are
# asleep, then one segment word per thread, then the CPU each worker runs on (NO_CPU when asleep).
_LINE = 8
_DONE, _STOP, _MAIN_CPU, _SLEEPING, _SEGMENTS = 0, _LINE, 2 * _LINE, 3 * _LINE, 4 * _LINE
MAX_THREADS = 64
_WORKER_CPUS = _SEGMENTS + _LINE * MAX_THREADS
_CONTROL_WORDS = _WORKER_CPUS + _LINE * MAX_THREADS
NO_CPU = -1
# A job's chunks are split into one contiguous segment per thread.  A segment word packs, from
# bit 0: the end of the segment's unclaimed chunks (12 bits), their start (12), how many threads
# take part (8) and the job's kind (8).  One word, so that one compare-and-swap checks them all.
_CHUNK_BITS = 12
_MAX_CHUNKS = (1 << _CHUNK_BITS) - 1
# Chunks per thread: enough that the last one to finish leaves little idle time (~1/32 here).
# From 2 to 16 they perform alike; 16 leaves the most room to rebalance when a core is slowed.
CHUNKS_PER_THREAD = 16
# A block of channels of a panel-major job is shared by about this many chunks (more chunks, each
# re-reading it, measured slower; see kernel._block).
CHUNKS_PER_PANEL = 2
_START_SHIFT, _THREADS_SHIFT, _KIND_SHIFT = 12, 24, 32
_NOTHING, _OTHER_KIND = -1, -2  # what _claim returns instead of a chunk
_STOPPED = -1  # what serve returns when it is not _OTHER_KIND
# glibc's sem_t is 32 bytes on 64-bit Linux; the workers share one, and 64 bytes keep it on a line of its own.
_SEMAPHORE_BYTES = 64
CPU_SET_WORDS = 16  # a cpu_set_t: 1024 CPUs, as glibc's


@helper
def _threads_of(segment_word):
    """How many threads take part in the job that a segment word belongs to."""
    return (segment_word >> _THREADS_SHIFT) & 0xFF


@helper
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
        if start >= end or me >= _threads_of(word):
            return _NOTHING
        if (word >> _KIND_SHIFT) & 0xFF != kind:
            return _OTHER_KIND
        if from_end:
            claimed, chunk = word - 1, end - 1
        else:
            claimed, chunk = word + (1 << _START_SHIFT), start
        if _compare_and_swap(control, slot, word, claimed):
            return chunk


@helper
def _next_chunk(control, kind, me, n_threads):
    """The next chunk for thread ``me``: from the front of its own segment, else from the back of
    another's (the far end from where its owner works, so each thread keeps to its own part of
    the bank or the pixels as long as it can)."""
    chunk = _claim(control, me, np.bool_(False), kind, me)
    for offset in range(1, n_threads):
        if chunk != _NOTHING:
            break
        chunk = _claim(control, (me + offset) % n_threads, np.bool_(True), kind, me)
    return chunk


@helper
def _chunk_count(pixels, n_panels, tile_group, block, n_pairs, n_threads):
    """How many chunks a job's pairs are cut into for n_threads threads."""
    n_chunks = min(n_pairs, CHUNKS_PER_THREAD * n_threads, _MAX_CHUNKS)
    if tile_group * n_panels >= n_pairs and block < pixels.shape[1]:  # (panel-major, in blocks)
        n_chunks = min(n_chunks, CHUNKS_PER_PANEL * n_panels)
    return n_chunks


@cached_with_sources
def run_pooled(
    pixels,
    panels,
    panel_bias,
    out,
    relu,
    block,
    n_threads,
    kind,
    control,
    job,
    semaphore,
    chunk_code,
    row_marker,
    width_marker,
    lanes_marker,
    like,
):
    """The calling thread's side of a job shared with the workers: describe it, publish it, work, wait.

    Each of the ``n_threads`` threads (this one is thread 0) gets a segment of the chunks; this
    thread works through its own and then helps with the others' until none is left, and waits
    for the chunks still running.  A worker that is asleep, or slow to wake, only means that this
    thread takes more of its segment.  Returns True; False, with nothing published or written, when
    out shares memory with what the tiles read (tiles.out_overlaps: the caller goes through a
    temporary).
    """
    if out_overlaps(out, pixels, panels, panel_bias):
        return False
    n_panels = panels_in(panels, width_marker, lanes_marker)  # (as run_alone does)
    copies = kind_numbers(width_marker, lanes_marker, like)[3] != 0
    tile_group, block, n_pairs = plan(pixels, panels, out, block, len(row_marker), n_panels, copies)
    n_chunks = _chunk_count(pixels, n_panels, tile_group, block, n_pairs, n_threads)
    describe_job(
        job, pixels, panels, panel_bias, out, relu, tile_group, block, n_chunks, n_panels, width_marker, lanes_marker
    )
    job[JOB_NUMBER] += 1  # (a worker's copy of a panel from an earlier job is stale now)
    room, held = copy_room(like)
    _atomic_store(control, _DONE, 0)
    main_cpu = _sched_getcpu()
    _atomic_store(control, _MAIN_CPU, main_cpu)
    header = (kind << _KIND_SHIFT) | (n_threads << _THREADS_SHIFT)
    for segment in range(MAX_THREADS):  # release stores: the job fields above are visible first
        start = min(segment, n_threads) * n_chunks // n_threads
        end = min(segment + 1, n_threads) * n_chunks // n_threads
        _atomic_store(control, _SEGMENTS + segment * _LINE, header | (start << _START_SHIFT) | end)
    # After publishing: a worker counted here either sees the job before it sleeps or is woken now
    # (see _sleep).  Both sides update _SLEEPING with a read-modify-write, which is what makes this
    # safe: whichever comes second sees the other.  Neither may become a plain load or store.
    woken = _atomic_exchange(control, _SLEEPING, 0)
    for _ in range(woken):
        _sem_post(_address_of(semaphore))
    _make_way(control, main_cpu, n_threads, woken)
    while True:
        chunk = _next_chunk(control, kind, np.int64(0), n_threads)
        if chunk < 0:
            break
        call_chunk(chunk_code[0], job, chunk, n_chunks, room, held, row_marker, width_marker, lanes_marker, like)
        _atomic_add(control, _DONE, 1)
    while _atomic_load(control, _DONE) < n_chunks:
        _sched_yield()
    return True


@helper
def _make_way(control, main_cpu, n_threads, woken):
    """Yield this thread's CPU once if a worker of this job may be waiting for it, so that the
    worker runs and moves off it (_avoid_cpu) now, instead of at the scheduler's next tick.

    On a virtual machine Linux often wakes a worker on the waker's CPU, and now and then moves the
    calling thread onto a spinning worker's. Either way the worker waited behind the caller, which
    computed every chunk alone while the other CPU idled, through 10-40 calls in a row (1-4 ms).
    A woken worker's CPU is not known yet, so waking any is reason enough.
    """
    if woken > 0:
        _sched_yield()
        return
    for me in range(1, n_threads):
        if _atomic_load(control, _WORKER_CPUS + me * _LINE) == main_cpu:
            _sched_yield()
            return


@cached_with_sources
def serve(
    control, job, kind, me, idle_turns, semaphore, cpu_sets, chunk_code, row_marker, width_marker, lanes_marker, like
):
    """Worker ``me``'s loop (me >= 1): run chunks of jobs of this kind, spinning politely in
    between, and sleeping after ``idle_turns`` idle turns (sched_yield calls).

    Returns _STOPPED when told to stop, or _OTHER_KIND when a job of another kind is published
    (the caller switches to that kind's specialisation).  Sleeping, waking and keeping off the
    calling thread's CPU all happen here, without the GIL: a worker woken into Python code
    waited for the GIL behind the calling thread for milliseconds.
    """
    idle = 0
    # (kept from job to job: held says whose copy it holds)
    room, held = copy_room(like)
    avoided = np.int64(NO_CPU)  # the caller's CPU, which this worker is kept off while it is awake
    published_cpu = NO_CPU  # what this worker's line in _WORKER_CPUS says
    my_segment, my_cpu_slot = _SEGMENTS + me * _LINE, _WORKER_CPUS + me * _LINE
    result = _STOPPED
    while _atomic_load(control, _STOP) == 0:
        main_cpu = _atomic_load(control, _MAIN_CPU)
        if main_cpu != avoided:
            avoided = _avoid_cpu(main_cpu, avoided, cpu_sets)
        cpu = _sched_getcpu()
        if cpu != published_cpu:
            _atomic_store(control, my_cpu_slot, cpu)
            published_cpu = cpu
        # How many threads share the current job, as this worker's own segment word says.
        n_threads = _threads_of(_atomic_load(control, my_segment))
        chunk = _next_chunk(control, kind, me, n_threads) if me < n_threads else _NOTHING
        if chunk == _OTHER_KIND:
            result = _OTHER_KIND
            break
        if chunk != _NOTHING:
            call_chunk(
                chunk_code[0], job, chunk, job[JOB_CHUNKS], room, held, row_marker, width_marker, lanes_marker, like
            )
            _atomic_add(control, _DONE, 1)
            idle = 0
        elif idle < idle_turns:
            _sched_yield()
            idle += 1
        else:
            # Asleep, it may be woken anywhere (and is moved off the caller's CPU once awake).
            avoided = _avoid_cpu(np.int64(NO_CPU), avoided, cpu_sets)
            _atomic_store(control, my_cpu_slot, NO_CPU)
            published_cpu = NO_CPU
            _sleep(control, me, semaphore)
            # A job this worker may not join (a call with fewer threads) wakes it too: back to sleep.
            idle = 0 if me < _threads_of(_atomic_load(control, my_segment)) else idle_turns
    _avoid_cpu(np.int64(NO_CPU), avoided, cpu_sets)  # back on all its CPUs
    return result


@helper
def _has_work(control, me):
    """Whether some segment still has unclaimed chunks that thread ``me`` may take."""
    for segment in range(MAX_THREADS):
        word = _atomic_load(control, _SEGMENTS + segment * _LINE)
        if me < _threads_of(word) and (word >> _START_SHIFT) & _MAX_CHUNKS < word & _MAX_CHUNKS:
            return True
    return False


@helper
def _sleep(control, me, semaphore):
    """Sleep on the semaphore until a job is published (or return at once if one already is).

    The worker counts itself as sleeping before it looks for work one last time; run_pooled
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


@helper
def _avoid_cpu(cpu, avoided, cpu_sets):
    """Keep this thread off ``cpu`` (the calling thread's), or let it on all its CPUs again if cpu
    is NO_CPU. ``avoided`` is the CPU it is kept off now; returns the one it is kept off from now on.

    On a virtual machine Linux often wakes the worker on the caller's CPU (an idle virtual CPU whose
    host thread is not running counts as busy) and leaves it there. Sharing that CPU, it yields to
    the caller, which computes every chunk alone while the other CPU idles (a call then takes
    twice as long). Moving the worker off once, on waking, still left it on
    the caller's CPU in a quarter of the calls of some blocks of small ones; excluding that CPU from
    its affinity for as long as it is awake keeps them apart. Its own CPU set (``cpu_sets[0]``) is
    restored before it sleeps or returns.
    """
    allowed, elsewhere = cpu_sets[0], cpu_sets[1]
    if avoided != NO_CPU:  # back on every CPU it may use first
        _sched_setaffinity(0, 8 * CPU_SET_WORDS, _address_of(allowed))
    if cpu == NO_CPU or _sched_getaffinity(0, 8 * CPU_SET_WORDS, _address_of(allowed)) != 0:
        return NO_CPU
    # Word by word: numba's slice assignment (elsewhere[:] = allowed) took 1.5 s of a cold start to compile.
    others = False
    for word in range(CPU_SET_WORDS):
        elsewhere[word] = allowed[word]
        if word == cpu // 64:
            elsewhere[word] &= ~(np.uint64(1) << np.uint64(cpu % 64))
        others = others or elsewhere[word] != 0
    if others:  # (a worker allowed only the caller's CPU stays there)
        _sched_setaffinity(0, 8 * CPU_SET_WORDS, _address_of(elsewhere))
    return cpu


@cached_with_sources(parallel=True)
def run_portable(
    pixels, panels, panel_bias, out, relu, block, n_threads, chunk_code, row_marker, width_marker, lanes_marker, like
):
    """A whole job shared out by numba's threading layer: the same chunks as run_pooled's, each of
    n_threads threads a contiguous run of them.

    It calls no Linux function: the path for every other system, and for CONV1X1_THREADING=portable.
    Its threads sleep between calls, so each call pays for waking them (tens of microseconds).  The
    prange is over the n_threads runs rather than the chunks, so that numba's own thread count (the
    caller's setting, for its own parallel code too) is never touched: a caller that lowered it
    with numba.set_num_threads gets that many threads at most.  (numba.set_num_threads called in
    here made the function uncacheable.)  Returns True, or False as run_pooled does.
    """
    if out_overlaps(out, pixels, panels, panel_bias):
        return False
    job = on_stack(JOB_FIELDS)
    n_panels = panels_in(panels, width_marker, lanes_marker)  # (as run_alone does)
    copies = kind_numbers(width_marker, lanes_marker, like)[3] != 0
    tile_group, block, n_pairs = plan(pixels, panels, out, block, len(row_marker), n_panels, copies)
    n_chunks = _chunk_count(pixels, n_panels, tile_group, block, n_pairs, n_threads)
    describe_job(
        job, pixels, panels, panel_bias, out, relu, tile_group, block, n_chunks, n_panels, width_marker, lanes_marker
    )
    job[JOB_NUMBER] = 0
    for thread in numba.prange(n_threads):
        room, held = copy_room(like)
        for chunk in range(thread * n_chunks // n_threads, (thread + 1) * n_chunks // n_threads):
            call_chunk(chunk_code[0], job, chunk, n_chunks, room, held, row_marker, width_marker, lanes_marker, like)
    return True


# How long an idle worker spins before it sleeps, in sched_yield turns: about 2 ms on an idle
# machine (half a microsecond a turn here), so back-to-back calls find it awake, while a program
# that has moved on to other work gets the core back soon.  On a busy machine each turn lets the
# others run first, so it lasts longer in wall time but costs about as little CPU.
IDLE_TURNS = 4000


class WorkerPool:
    """Worker threads that share each call's chunks with the calling thread (see the module docstring).

    Started with the first job; daemon threads, told to stop at interpreter exit.
    """

    def __init__(self, n_workers: int, mode: str = "pool"):
        # 'portable': no workers, calls are shared out by numba's threading layer; 'alone': every call
        # runs on the calling thread (a forked child that may not launch numba's threads).
        self.mode = mode
        # The most threads a call may use: the caller and the workers, or numba's threads.
        self.max_threads = {"pool": 1 + n_workers, "portable": default_threads()}.get(mode, 1)
        self.portable_launched = False  # whether a call has run on numba's threading layer
        self.control = np.zeros(_CONTROL_WORDS, np.int64)
        self.control[_WORKER_CPUS:] = NO_CPU  # no worker is on any CPU yet (_make_way reads these)
        self.job = np.zeros(JOB_FIELDS, np.int64)
        self.semaphore: Any = _new_semaphore() if n_workers else None  # (an array; None without workers)
        self.shared_arrays = (self.control, self.job, self.semaphore)  # run_pooled's arguments, in order
        # One calling thread at a time; others run alone.  (Also in portable mode: numba's workqueue
        # layer aborts the process when two threads launch parallel code at once.)
        self.busy = threading.Lock()
        self.n_workers = n_workers
        self.latest_kind: Any = None  # the _Kind of the latest job (kernel/__init__'s; set before any worker runs)
        self.threads: list[threading.Thread] = []  # the workers (read-only outside this class)
        self._running = 0  # workers started and not yet returned
        self._lifecycle = threading.Lock()

    def announce(self, kind) -> bool:
        """Before a job of this kind is published: start the workers (again, if one has died).  Returns
        whether the job may be shared: not once a worker could not be started (a limit on threads) or
        the pool was stopped; calls run alone then."""
        self.latest_kind = kind
        if self.workers_missing():
            threads = []
            for me in range(1, self.n_workers + 1):
                thread = self.threads[me - 1] if me <= len(self.threads) else None
                if thread is None or not thread.is_alive():
                    thread = self._start(me) if self.max_threads > 1 else None
                if thread is not None:
                    threads.append(thread)
            self.threads = threads
        return self.max_threads > 1

    def workers_missing(self) -> bool:
        """Whether a worker has not been started, or has returned.  (A plain read: Thread.is_alive on
        every call cost 1-3 us.)"""
        return self._running < self.n_workers

    def _start(self, me: int) -> threading.Thread | None:
        """Worker ``me``, started; None if no thread can be had, and the pool stops sharing."""
        with self._lifecycle:
            self._running += 1
        thread = threading.Thread(target=self._work, args=(me,), daemon=True, name=f"conv1x1-worker-{me}")
        try:
            thread.start()
        except RuntimeError:  # ("can't start new thread": a limit on threads or memory)
            with self._lifecycle:
                self._running -= 1
            self.max_threads = 1
            return None
        return thread

    def _work(self, me: int) -> None:
        """Thread ``me`` (the calling thread is 0) serves jobs of the latest kind until stopped."""
        cpu_sets = np.zeros((2, CPU_SET_WORDS), np.uint64)
        try:
            while True:
                kind = self.latest_kind
                result = serve(
                    self.control, self.job, kind.code, me, IDLE_TURNS, self.semaphore, cpu_sets, *kind.markers
                )
                if result == _STOPPED:
                    return
        finally:
            with self._lifecycle:
                self._running -= 1

    # What the control words say, for tests and tools: read only, racing the workers.

    def segment(self, thread: int) -> tuple[int, int]:
        """(start, end) of the unclaimed chunks of ``thread``'s segment of the latest job."""
        word = int(self.control[_SEGMENTS + thread * _LINE])
        return (word >> _START_SHIFT) & _MAX_CHUNKS, word & _MAX_CHUNKS

    def sleeping(self) -> int:
        """How many workers sleep on the semaphore."""
        return int(self.control[_SLEEPING])

    def main_cpu(self) -> int:
        """The CPU the calling thread of the latest job ran on."""
        return int(self.control[_MAIN_CPU])

    def worker_cpus(self) -> np.ndarray:
        """The CPU each worker slot (1 to MAX_THREADS - 1, slot 0 unused) published, NO_CPU when none."""
        return self.control[_WORKER_CPUS::_LINE]

    def stop(self) -> None:
        """Make the workers return (at interpreter exit).  Calls made after, by other exit handlers,
        run alone: a stopped pool's workers would return as soon as they were started."""
        self.max_threads = 1
        self.control[_STOP] = 1
        for _ in self.threads:
            _libc().sem_post(ctypes.c_void_p(self.semaphore.ctypes.data))


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _new_semaphore() -> np.ndarray:
    """An unnamed POSIX semaphore (count 0) in a NumPy buffer, so compiled code can pass its address."""
    semaphore = np.zeros(_SEMAPHORE_BYTES, np.uint8)
    if _libc().sem_init(ctypes.c_void_p(semaphore.ctypes.data), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "sem_init failed")
    return semaphore


_pool_lock = threading.Lock()
_pool: WorkerPool | None = None
# Set in a child forked from a process whose calls ran on GNU OpenMP's threads: numba ends such a child
# ("fork() called from a process already using GNU OpenMP, this is unsafe") at its first parallel call.
_threads_lost_at_fork = False
_portable_pool: WorkerPool | None = None  # the stand-in of portable_threading()
THREADING_VARIABLE = "CONV1X1_THREADING"
THREADING_MODES = ("pool", "portable")


def threading_mode() -> str:
    """How calls are shared among threads: 'pool' (our workers; Linux only) or 'portable' (numba's
    threading layer).  CONV1X1_THREADING chooses; by default, the pool on Linux."""
    mode = os.environ.get(THREADING_VARIABLE, "").strip().lower()
    if not mode:
        return "pool" if sys.platform.startswith("linux") else "portable"
    if mode not in THREADING_MODES:
        raise ArgumentError(f"{THREADING_VARIABLE} must be 'pool' or 'portable', not {mode!r}")
    if mode == "pool" and not sys.platform.startswith("linux"):
        return "portable"  # (the pool's calls exist on Linux only)
    return mode


def default_threads() -> int:
    """Numba's thread count (NUMBA_NUM_THREADS, else the CPUs), at most the CPUs this process may use."""
    return max(1, min(int(numba.config.NUMBA_NUM_THREADS), usable_cpus()))  # type: ignore[attr-defined]


def worker_pool() -> WorkerPool:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                # The pool's compiled code calls Linux functions (sched_getcpu, sched_setaffinity,
                # unnamed POSIX semaphores); elsewhere numba's threading layer shares calls out.
                mode = "alone" if _threads_lost_at_fork else threading_mode()
                workers = min(default_threads(), MAX_THREADS) - 1 if mode == "pool" else 0
                _pool = WorkerPool(workers, mode)
                atexit.register(_pool.stop)
    return _pool


@contextlib.contextmanager
def portable_threading():
    """Within this block, calls from this process share their work through numba's threading layer
    even where the pool runs (``conv1x1 bench`` times both).  Not for use from several threads."""
    global _pool, _portable_pool
    saved, pid = worker_pool(), os.getpid()
    if _portable_pool is None:
        _portable_pool = WorkerPool(0, "alone" if _threads_lost_at_fork else "portable")
    _pool = _portable_pool
    try:
        yield
    finally:
        if os.getpid() == pid:  # (a child forked within the block has no pool of the parent's to go back to)
            _pool = saved


def current_pool() -> WorkerPool | None:
    """The process's pool, or None before the first call that needed it (and in a forked child)."""
    return _pool


def _forget_pool() -> None:
    """In a forked child the workers do not exist: start a new pool there when one is needed.

    The lock is new too: another thread of the parent may have held it at the fork.  A child of a
    process that ran calls on GNU OpenMP's threads runs its calls alone (see _threads_lost_at_fork).
    """
    global _pool, _pool_lock, _threads_lost_at_fork, _portable_pool
    launched = any(pool is not None and pool.portable_launched for pool in (_pool, _portable_pool))
    if launched and _on_gnu_openmp():
        _threads_lost_at_fork = True
    _pool = _portable_pool = None
    _pool_lock = threading.Lock()


def _on_gnu_openmp() -> bool:
    """Whether numba's threading layer is GNU OpenMP's (libgomp), which does not survive a fork."""
    if numba.threading_layer() != "omp":
        return False
    from numba.np.ufunc import omppool  # type: ignore[attr-defined]  # (built only with OpenMP)

    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
