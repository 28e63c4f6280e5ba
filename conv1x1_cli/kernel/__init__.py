"""The Numba kernel: fused 1x1 convolution + bias + activation.

    out[P, F] = act(pixels[P, C] @ bank[C, F] + bias[F]),  act = ReLU or identity

This package is the only part of conv1x1 that imports numba.  It knows nothing of
files or screens: callers hand it C-contiguous arrays and a preallocated output.
``tiles.py`` holds the micro-kernel, ``target.py`` reads which SIMD unit numba
compiles for, ``pool.py`` the worker threads, ``probe.py`` the FMA-peak probe,
``streams.py`` the memory levels' bandwidth sweeps,
and this module the public functions (``pack_bank``,
``apply_packed``, ``apply_to_output``, ``apply_bank``, ``prepare``, ``compilations``) and
compilation.  The tile shape comes from ``costs.packing``, the rule the Dask
planner counts memory by.

The seam for tests and tools, beside those functions: ``pool.current_pool()``
and a ``WorkerPool``'s ``threads``, ``segment(thread)``, ``sleeping()``,
``main_cpu()`` and ``worker_cpus()`` tell what the workers are doing;
``SERIAL_WORK`` is the size under which a call runs alone; ``tiles.tile_counts``
how pixels are covered by tiles.

* Packing (``pack_bank``, once per bank).  The bank is seen as column *panels*
  of ``width`` filters (with AVX-512, 64 float32 = four 512-bit vectors when F
  is large, fewer for narrow banks; ``costs.packing.tile_shape`` for each SIMD
  unit): panel k of channel c is row c's columns k*width onwards, one
  contiguous run that the micro-kernel loads as whole vectors.  The compiled
  code takes the bank as it is, (C, F), and views it as panels itself.
  When F is not a multiple of width, the last panel's rows are copied, zero-padded
  to the panel's width, after the padded bias (``_panel_tail``); a bank of at most
  32 KiB is copied whole instead, its rows padded to whole panels (cheap, and
  read faster so).  A panel narrower than a
  vector is copied with ``group`` channels side by side in each row
  (``_grouped_panels``: a few KiB, as such banks are narrow).  The bank is not copied into
  a panel-major layout (``panels[k, c, :]``): the public API packs on every
  call, and on few-pixel, big-bank layers (7x7x2048->512) such a copy costs as
  much as the product itself.  Tiles whose panel rows are a cache line or less
  (AVX2) copy one panel at a time instead, as a group of pixel tiles needs it
  (``tiles.copies_panels``).
* Work split.  The (pixel tile, panel) pairs are ordered pixel-major (a pixel
  tile stays in L1 while it meets every panel) unless there are fewer pixels
  than filters, where they are panel-major (a panel stays in L2 while it meets
  every tile); when the bank is too large for L2, pixel-major order takes the
  tiles in groups that stay in L2, each panel meeting a whole group in turn
  (``tiles.plan``); splitting over filters as well as pixels keeps every core busy
  when there are few pixels (7x7=49).  They are cut into ~16 chunks per thread
  and shared out by the pool (on Linux) or by numba's threading layer
  (elsewhere, or with CONV1X1_THREADING=portable: ``pool.run_portable``).
  Problems under ~1M multiply-adds run on the calling thread alone.
* Blocks of channels.  When a bank has too many channels for a panel and a
  pixel tile to share the caches (C > 768), a chunk runs every pair over 512
  channels, leaving the partial sums in the output, then every pair over the
  next 512 (``_block``).  The partial sums are exact, so the bits are
  those of one pass.
* Compilation is lazy (nothing at import) and cached to disk (``cache=True``;
  numba falls back to its user-wide cache directory when the package directory
  is read-only).  ``prepare`` compiles a bank's kind of tile, under a lock, ahead
  of a timed call; a call of a kind not prepared compiles it first (``_entry_point``).
  The walk over the pairs (``tiles.compute_chunk``) is compiled once per kind, and every entry
  point calls it through its address (``_Kind.chunk_code``, ``tiles.call_chunk``), so LLVM does
  not compile it again into each of them; the small functions they share are compiled once too
  and linked (``tiles.helper``).
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

from ..costs.packing import PADDED_BANK_BYTES as _PADDED_BANK_BYTES  # (a global here: tests patch it)
from ..costs.packing import channel_group, panel_count, tile_shape
from ..costs.volume import checked_threads
from .pool import (
    CPU_SET_WORDS,
    IDLE_TURNS,
    WorkerPool,
    default_threads,
    run_pooled,
    run_portable,
    serve,
    worker_pool,
)
from .target import simd_unit
from .tiles import chunk_address, compute_chunk, lanes_marker_for, marker, run_alone, width_marker_for

__all__ = [
    "SERIAL_WORK",
    "PackedBank",
    "apply_bank",
    "apply_packed",
    "apply_to_output",
    "compilations",
    "default_threads",
    "pack_bank",
    "prepare",
]

# Below this many multiply-adds a call runs on one thread: handing chunks to a
# spinning worker costs a few microseconds, which two threads win back only from
# about 1M multiply-adds up.
SERIAL_WORK = 1 << 20


class _Kind:
    """One compiled specialisation: dtype, tile shape and vector length, and the marker arguments that
    select it."""

    def __init__(self, code: int, dtype: np.dtype, rows: int, width: int, lanes: int):
        self.code, self.rows = code, rows
        # The address of compute_chunk's code for this kind, once it is compiled (_entry_point), in an
        # array that the entry points read it from at every call (tiles.call_chunk).
        self.chunk_code = np.zeros(1, np.int64)
        # (with the marker arguments that select this kind's code and an empty array of its dtype, the
        # arguments every entry point ends with; kept as one tuple: building it at every call cost a
        # tiny call 0.06 us)
        self.markers = (
            self.chunk_code,
            marker(rows),
            width_marker_for(width),
            lanes_marker_for(lanes),
            np.empty(0, dtype),
        )
        # Compiled code of this kind by dispatcher (run_alone, run_pooled, run_portable, serve): calls go
        # straight to it (see _entry_point).
        self.entry_points: dict = {}


_setup_lock = threading.RLock()
_kinds: dict[tuple, _Kind] = {}


def _forget_setup_lock() -> None:
    """In a forked child the lock is new: another thread of the parent may have held it at the fork."""
    global _setup_lock
    _setup_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_setup_lock)


def _kind(dtype: np.dtype, rows: int, width: int) -> _Kind:
    key = (dtype.char, rows, width)  # a str hashes faster than a dtype
    kind = _kinds.get(key)
    if kind is None:
        with _setup_lock:
            kind = _kinds.get(key)
            if kind is None:
                lanes = simd_unit().lanes(dtype.itemsize)
                kind = _Kind(len(_kinds), dtype, rows, width, lanes)  # a few per dtype: far below 256
                _kinds[key] = kind
    return kind


def _entry_point(kind: _Kind, dispatcher, args: tuple):
    """The compiled code of ``dispatcher`` (run_alone, run_pooled, run_portable or serve) for this kind,
    compiled (or loaded from numba's disk cache) on first use.

    Calls go to it directly: the dispatcher would type every argument at every call, which cost a
    tiny call 0.5 us (an eighth of it) and a pooled one 0.7 us while the workers wait.  That is sound
    because a kind decides every argument's type but two: the arrays are C-contiguous and aligned
    (the callers make sure, and ``_run`` copies unaligned pixels), and whether the pixels and the
    bank are read-only, which only tells numba whether they may be written.  The kernel never writes them, so
    one specialisation, typed for writeable arrays, serves both (numba would compile the whole
    kernel again, a second each, for a read-only input).
    """
    entry = kind.entry_points.get(dispatcher)
    if entry is None:
        with _setup_lock:
            entry = kind.entry_points.get(dispatcher)
            if entry is None:
                if not kind.chunk_code[0]:  # (first the walk, which every entry point calls by address)
                    kind.chunk_code[0] = chunk_address(*kind.markers[1:])
                types = tuple(_writeable(numba.typeof(argument)) for argument in args)
                entry = kind.entry_points[dispatcher] = dispatcher.compile(types)
    return entry


def _writeable(numba_type):
    return numba_type.copy(readonly=False) if isinstance(numba_type, numba.types.Array) else numba_type


def _prepare_serving(kind: _Kind, pool: WorkerPool) -> None:
    """Compile the workers' loop for this kind before any job of the kind is published."""
    if serve not in kind.entry_points:
        cpu_sets = np.zeros((2, CPU_SET_WORDS), np.uint64)
        _entry_point(
            kind, serve, (pool.control, pool.job, kind.code, 1, IDLE_TURNS, pool.semaphore, cpu_sets, *kind.markers)
        )


# --------------------------------------------------------------------------
# Public interface
# --------------------------------------------------------------------------


class _Cut:
    """How every bank of one dtype and filter count is cut: the tile's rows, the panels (how many,
    how wide) and the compiled kind that runs them."""

    __slots__ = (
        "group",
        "kind",
        "n_filters",
        "n_panels",
        "one_row_kind",
        "partial",
        "rows",
        "scatter_indices",
        "whole_panels",
        "width",
        "zero_bias",
    )

    def __init__(self, dtype: np.dtype, n_filters: int):
        simd = simd_unit()
        self.n_filters = n_filters
        self.rows, self.width = tile_shape(n_filters, dtype.itemsize, simd)  # the rule the Dask planner counts by
        self.n_panels = panel_count(n_filters, dtype.itemsize, simd)
        self.group = channel_group(self.width, simd.lanes(dtype.itemsize), dtype.itemsize)
        # No padding and no interleaving: the bank itself is the panels.
        self.whole_panels = self.n_panels * self.width == n_filters and self.group == 1
        # No interleaving, but the last panel is only part of one: a large bank is still read in place,
        # with that panel's rows copied and zero-padded to the panel's width (_panel_tail).
        self.partial = self.n_panels * self.width != n_filters and self.group == 1
        self.kind = _kind(dtype, self.rows, self.width)
        self.one_row_kind = _kind(dtype, 1, self.width)  # for calls of fewer pixels than a tile has rows
        # The bias of a bank without one, shared by every call: the kernel only reads it. (Not marked
        # read-only: numba would compile every entry point again for a read-only argument's type.)
        self.zero_bias = np.zeros(self.n_panels * self.width, dtype=dtype)
        self.scatter_indices: dict[int, np.ndarray] = {}  # for narrow banks, by channel count (_scatter_index)


# Cuts by (dtype char, filters), kept because working one out again cost a tenth of a tiny call.
_cuts: dict[tuple[str, int], _Cut] = {}
_MAX_CUTS = 1024  # (a program that tries every filter count does not grow this without end)


def _cut(dtype: np.dtype, n_filters: int) -> _Cut:
    key = (dtype.char, n_filters)
    cut = _cuts.get(key)
    if cut is None:
        if len(_cuts) >= _MAX_CUTS:
            _cuts.clear()
        cut = _cuts[key] = _Cut(dtype, n_filters)
    return cut


class PackedBank:
    """A bank and bias cut into panels of ``width`` filters, ready for apply_packed.

    ``panels`` is the caller's bank itself, (C, F), when it is C-contiguous and aligned: panel k of
    channel c, ``panels[c, k * width:(k + 1) * width]``, is one contiguous run (copying a 2048x512
    bank into a panel-major layout cost twice the product itself on 7x7 layers).  Otherwise it is a
    copy padded with zero columns to whole panels, (C, n_panels x width).  A panel narrower than a
    vector holds ``group`` channels to a row instead: ``panels[q, k * width * group + j * group + g] =
    bank[q * group + g, k * width + j]`` (costs.packing.channel_group).  ``panel_bias`` is the bias,
    padded with zeros to whole panels, (n_panels x width,) (the caller's own when F is a multiple of
    width; for a bank without a bias, zeros shared by every bank of its dtype and filter count: read,
    never written); when the bank is read in place and F is not a multiple of width, it goes on with
    the last panel's rows, zero-padded (``tail``, see _panel_tail).  Tiles accumulate ``block``
    channels at a time (see _block).
    """

    __slots__ = ("block", "cut", "dtype", "n_channels", "n_filters", "panel_bias", "panels")

    def __init__(self, panels: np.ndarray, panel_bias: np.ndarray, n_channels: int, n_filters: int, cut: _Cut):
        self.panels, self.panel_bias = panels, panel_bias
        self.n_channels, self.n_filters = n_channels, n_filters
        self.dtype = panels.dtype
        self.cut = cut
        self.block = _block(n_channels, cut)

    @property
    def rows(self) -> int:
        return self.cut.rows

    @property
    def width(self) -> int:
        return self.cut.width

    @property
    def kind(self) -> _Kind:
        return self.cut.kind

    @property
    def n_panels(self) -> int:
        return self.cut.n_panels

    @property
    def tail(self) -> np.ndarray:
        """The copy of the last panel's rows that the tiles read, (C, width); (0, width) when they read
        that panel in the bank."""
        start = self.n_panels * self.width
        rows = len(self.panels) if len(self.panel_bias) > start else 0
        return self.panel_bias[start:].reshape(rows, self.width)

    def __repr__(self) -> str:
        return (
            f"PackedBank(channels={self.n_channels}, filters={self.n_filters}, "
            f"dtype={self.dtype}, tile={self.rows}x{self.width})"
        )


def pack_bank(bank: np.ndarray, bias: np.ndarray | None) -> PackedBank:
    """Prepare bank (C, F) and bias (F,) or None, float32 or float64, for apply_packed.

    The result may share memory with ``bank`` and ``bias``: pack again after changing either in place.
    """
    bank = np.asarray(bank)
    if bank.ndim != 2:
        raise ValueError(f"bank must be 2-D (channels, filters), got shape {bank.shape}")
    dtype = bank.dtype
    if dtype.char not in ("f", "d") or not dtype.isnative:  # native float32 or float64
        raise TypeError(f"bank must be float32 or float64, got {dtype}")
    n_channels, n_filters = bank.shape
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (n_filters,):
            raise ValueError(f"bias must have shape ({n_filters},), got {bias.shape}")
        if bias.dtype != dtype:
            raise TypeError(f"bias dtype {bias.dtype} differs from bank dtype {dtype}")

    cut = _cut(dtype, n_filters)
    panels = _panels(bank, cut)
    return PackedBank(panels, _panel_bias(bias, panels, cut), n_channels, n_filters, cut)


def _panels(bank: np.ndarray, cut: _Cut) -> np.ndarray:
    """The bank as rows of panels, (rows, F or panels x width): itself when the tiles can read it in
    place, else a copy padded to whole panels."""
    if cut.group > 1:
        return _grouped_panels(bank, cut)
    flags = bank.flags
    if flags.c_contiguous and flags.aligned and (cut.whole_panels or bank.nbytes > _PADDED_BANK_BYTES):
        return bank
    n_channels, n_filters = bank.shape
    matrix = np.zeros((n_channels, cut.n_panels * cut.width), dtype=bank.dtype)
    matrix[:, :n_filters] = bank
    return matrix


def _panel_bias(bias: np.ndarray | None, panels: np.ndarray, cut: _Cut) -> np.ndarray:
    """The bias padded to whole panels: the cut's shared zeros, the bias itself when it fills them, or a
    copy; followed by the last panel's rows when the bank is read in place and that panel is partial."""
    if cut.partial and panels.shape[1] == cut.n_filters:
        return _panel_tail(bias, panels, cut)
    if bias is None:
        return cut.zero_bias
    flags = bias.flags
    if cut.n_panels * cut.width == len(bias) and flags.c_contiguous and flags.aligned:
        return bias
    panel_bias = np.zeros(cut.n_panels * cut.width, dtype=bias.dtype)
    panel_bias[: len(bias)] = bias
    return panel_bias


def _panel_tail(bias: np.ndarray | None, bank: np.ndarray, cut: _Cut) -> np.ndarray:
    """The bias padded to whole panels, then the bank's last panel, zero-padded to the panel's width:
    (n_panels x width + C x width,).  For a bank read in place whose F is not a multiple of width,
    in place of a padded copy of the whole bank at every call: the compiled code takes that panel's
    rows from here (tiles.compute_chunk).  (On 7x7x1024->1000, AVX2's 16-filter panels: 63 panels, the
    copy of the last one 37 us, a padded bank 1.9 ms, more than the product on two threads.)  Bias
    and tail in one array, so that every entry point keeps its arguments."""
    n_channels, width = bank.shape[0], cut.width
    padded = cut.n_panels * width
    first = padded - width  # the last panel's first filter
    bias_and_tail = np.zeros(padded + n_channels * width, dtype=bank.dtype)
    if bias is not None:
        bias_and_tail[: cut.n_filters] = bias
    bias_and_tail[padded:].reshape(n_channels, width)[:, : cut.n_filters - first] = bank[:, first:]
    return bias_and_tail


def _grouped_panels(bank: np.ndarray, cut: _Cut) -> np.ndarray:
    """A narrow bank's panels, ``cut.group`` channels to a row (``costs.packing.channel_group``):
    panels[q, j * group + g] = bank[q * group + g, j], zero beyond the bank.  (A panel narrower
    than a vector holds every filter: there is one.)  Written in one scatter through an index kept
    per channel count: the strided copies it replaced took twice as long (1.0 against 0.5 us for
    8x4, a quarter of a tiny call; 21 against 11 us for 2048x8)."""
    n_rows = -(-bank.shape[0] // cut.group)
    panels = np.zeros(n_rows * cut.width * cut.group, dtype=bank.dtype)
    panels[_scatter_index(cut, bank.shape[0])] = bank.reshape(-1)
    return panels.reshape(n_rows, cut.width * cut.group)


_MAX_SCATTER_INDICES = 16  # per cut (an index holds one integer per element of the bank)


def _scatter_index(cut: _Cut, n_channels: int) -> np.ndarray:
    """Where each element of a (n_channels, F) narrow bank, in C order, goes in its grouped panels."""
    index = cut.scatter_indices.get(n_channels)
    if index is None:
        if len(cut.scatter_indices) >= _MAX_SCATTER_INDICES:
            cut.scatter_indices.clear()
        channel = np.arange(n_channels)
        row_start = channel // cut.group * (cut.width * cut.group) + channel % cut.group
        index = (row_start[:, None] + np.arange(cut.n_filters) * cut.group).reshape(-1)
        cut.scatter_indices[n_channels] = index
    return index


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
    apply_to_output(pixels, packed, out, bool(relu), threads)


def apply_to_output(
    pixels: np.ndarray, packed: PackedBank, out: np.ndarray, relu: bool, threads: int | None = None
) -> None:
    """apply_packed without its checks of the arrays' types, shapes and layout, for callers that vouch
    for them: ``out`` may still share memory with the pixels, the bank or the bias, or be unaligned.
    (Checking them again cost 0.3 us, a fifteenth of a tiny call.)"""
    _run_into(pixels, packed.panels, packed.panel_bias, packed.block, packed.cut, out, relu, threads)


def apply_bank(
    pixels: np.ndarray,
    bank: np.ndarray,
    bias: np.ndarray | None,
    relu: bool,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """act(pixels @ bank + bias) into a new array, or into ``out``: pack_bank and apply_packed for a
    bank used once, as conv1x1's plain calls use theirs.  ``pixels`` is (..., C), any number of pixel
    axes, and the result (..., F).  The caller vouches for the arrays: C-contiguous and aligned
    pixels, a native float32 or float64 (C, F) bank with C and F > 0, a (F,) bias or None, all of one
    dtype; ``out`` (conv1x1's ``out=``) of the result's shape and dtype, C-contiguous and writeable,
    which may share memory with the others or be unaligned (the result goes through a temporary then).

    The bank goes to the kernel without a PackedBank (making one cost a tenth of a tiny call), as its
    own panels when it fills them (F a multiple of the panel width, C-contiguous).  This is the path
    of every small call, so the commonest steps are written out here rather than called: with
    ``_panels``, ``_block`` and ``_run`` called instead, a tiny call took 14 % more instructions
    (32.8k against 28.7k, counted with callgrind), and through the pool 15 % more.
    """
    n_channels, n_filters = bank.shape
    dtype = bank.dtype
    cut = _cuts.get((dtype.char, n_filters)) or _cut(dtype, n_filters)
    flags = bank.flags  # (_panels' and _block's commonest answers, without their calls)
    panels = bank if cut.whole_panels and flags.c_contiguous and flags.aligned else _panels(bank, cut)
    panel_bias = cut.zero_bias if bias is None and not cut.partial else _panel_bias(bias, panels, cut)
    block = n_channels if n_channels <= _WHOLE_CHANNELS else _block(n_channels, cut)
    pixel_rows = pixels.reshape(-1, n_channels)
    if out is not None:
        _run_into(pixel_rows, panels, panel_bias, block, cut, out.reshape(-1, n_filters), relu, threads)
        return out
    result = np.empty((*pixels.shape[:-1], n_filters), dtype)
    result_rows, n_pixels = result.reshape(-1, n_filters), len(pixel_rows)
    work = n_pixels * n_channels * n_filters
    if threads is None and work:  # (the commonest calls: _run's steps, with what is known here already)
        kind = cut.kind if n_pixels >= cut.rows else cut.one_row_kind
        if work < SERIAL_WORK or not _run_shared(pixel_rows, panels, panel_bias, block, kind, result_rows, relu, None):
            args = (pixel_rows, panels, panel_bias, result_rows, relu, block, *kind.markers)
            (kind.entry_points.get(run_alone) or _entry_point(kind, run_alone, args))(*args)
    else:
        _run(pixel_rows, panels, panel_bias, block, cut, result_rows, relu, threads)
    return result


def _run_into(pixels, panels, panel_bias, block, cut: _Cut, out, relu, threads) -> None:
    """_run for callers that vouch for less: pixels that may be unaligned, and an output that may be
    unaligned or share memory with what the kernel reads (the panels and the panel bias may be views
    of the caller's bank and bias): through a copy or a temporary then.  (The compiled code checks
    for shared memory itself, and refuses such an out before it writes: tiles.out_overlaps.)"""
    if not pixels.flags.aligned:
        pixels = pixels.copy()  # the kernel reads through typed pointers
    if out.flags.aligned and _run(pixels, panels, panel_bias, block, cut, out, relu, threads):
        return
    result = np.empty_like(out)
    _run(pixels, panels, panel_bias, block, cut, result, relu, threads)
    out[...] = result


def _run(pixels, panels, panel_bias, block, cut: _Cut, out, relu, threads) -> bool:
    """One call of the compiled code: alone, or shared out over the pool (or numba's threads).
    Whether it ran: not when out shares memory with the pixels, the panels or the panel bias
    (tiles.out_overlaps), which only _run_into's callers may pass.

    Run with the caches full of the kernel's data, each step of Python here cost tenths of a
    microsecond, and the workers wait for all of it: so the order of the pairs, the blocks and the
    chunks are worked out in the compiled code (tiles.plan), and what a kind needs is looked up once.
    (``relu`` goes to the compiled code as it is, so it must be a bool: apply_packed makes it one.  The
    pixels must be aligned, as the compiled code reads them through typed pointers: _run_into makes
    sure, conv1x1's plain calls check.)
    """
    n_pixels, n_channels = pixels.shape
    n_filters = out.shape[1]
    work = n_pixels * n_channels * n_filters
    alone = work < SERIAL_WORK if threads is None else _single_threaded(threads, work)  # (checks threads)
    if n_pixels == 0 or n_filters == 0:  # (no channels is still work: out = act(bias))
        return True
    kind = cut.kind if n_pixels >= cut.rows else cut.one_row_kind
    if not alone and _run_shared(pixels, panels, panel_bias, block, kind, out, relu, threads):
        return True
    # alone: one thread asked for, little work, one CPU, or another thread is using the pool (or
    # the pool's code refused out, which run_alone then refuses too)
    args = (pixels, panels, panel_bias, out, relu, block, *kind.markers)
    return (kind.entry_points.get(run_alone) or _entry_point(kind, run_alone, args))(*args)


def _run_shared(pixels, panels, panel_bias, block, kind: _Kind, out, relu, threads) -> bool:
    """_run shared out over the pool's threads (or numba's), if there are several and no other thread
    is using them; whether it ran (not either when the compiled code refused out: see _run)."""
    pool = worker_pool()
    if pool.max_threads < 2 or not pool.busy.acquire(blocking=False):
        return False
    try:
        n_threads = pool.max_threads if threads is None else min(int(threads), pool.max_threads)
        arrays = (pixels, panels, panel_bias, out, relu, block, n_threads)
        if not pool.n_workers:  # portable mode: numba's threading layer
            return _run_portable(pool, arrays, kind)
        if pool.latest_kind is not kind or pool.workers_missing():
            _prepare_serving(kind, pool)  # (a kind is announced only once its workers' code is ready)
            if not pool.announce(kind):
                return False
        args = (*arrays, kind.code, *pool.shared_arrays, *kind.markers)
        return (kind.entry_points.get(run_pooled) or _entry_point(kind, run_pooled, args))(*args)
    finally:
        pool.busy.release()


def _run_portable(pool: WorkerPool, arrays: tuple, kind: _Kind) -> bool:
    """run_portable on arrays' thread count (at most: numba's own thread count is left as it is);
    whether it ran (see _run)."""
    pool.portable_launched = True
    args = (*arrays, *kind.markers)
    return _entry_point(kind, run_portable, args)(*args)


def prepare(packed: PackedBank, threads: int | None = None, pixels: int | None = None) -> bool:
    """Make ready now what calls with this bank will run, so that a timed call does not pay for it:
    compile (or load from numba's cache) the one-thread code if calls run alone (threads is 1, or no
    call will have more than ``pixels`` pixels and the work is small), else the pool's (and start
    its workers) or the portable one's; with ``pixels`` None (calls of any size), both.  Returns
    whether anything had to be compiled.

    Compiling what is not needed is most of a cold start: the pool's code takes 1.4 of 2.4 s
    here, so a first run on a small input (``conv1x1 apply`` on the samples) does not wait for it,
    and the one-thread code 0.5 s, which a first run of a large input does not wait for either.  (A
    call of that bank that does run alone, a stream's short last chunk or a call made while another
    thread has the pool, compiles it then.)"""
    before = compilations()
    kind = packed.kind if pixels is None or pixels >= packed.rows else packed.cut.one_row_kind
    arrays = (
        np.zeros((kind.rows, packed.n_channels), packed.dtype),
        packed.panels,
        packed.panel_bias,
        np.empty((kind.rows, packed.n_filters), packed.dtype),
        True,
        packed.block,
    )
    work = SERIAL_WORK if pixels is None else pixels * packed.n_channels * packed.n_filters
    pool = worker_pool()
    shared = not _single_threaded(threads, work) and pool.max_threads > 1
    if pixels is None or not shared:
        _entry_point(kind, run_alone, (*arrays, *kind.markers))
    if not shared:
        return compilations() > before
    if not pool.n_workers:
        _entry_point(kind, run_portable, (*arrays, 2, *kind.markers))
        # Starting numba's threads cost the first call 4 ms (28x28x192->32, which then takes 0.1 ms).
        if pool.busy.acquire(blocking=False):
            try:
                _run_portable(pool, (*arrays, pool.max_threads), kind)
            finally:
                pool.busy.release()
    else:
        _prepare_serving(kind, pool)
        _entry_point(kind, run_pooled, (*arrays, 2, kind.code, *pool.shared_arrays, *kind.markers))
        # Workers started by the first call cost it 0.6 ms (28x28x192->32, which then takes 0.1 ms).
        if pool.busy.acquire(blocking=False):  # (announce runs under the pool's lock, as in calls)
            try:
                pool.announce(kind)
            finally:
                pool.busy.release()
    return compilations() > before


def compilations() -> int:
    """How many specialisations of the kernel this process has compiled so far, for want of them in
    numba's disk cache (a call whose tiles or argument types prepare() did not foresee compiles too)."""
    entries = (run_alone, run_pooled, serve, run_portable, compute_chunk)
    return sum(sum(entry.stats.cache_misses.values()) for entry in entries)


# Banks of up to _WHOLE_CHANNELS channels are accumulated in one pass; above, in blocks of
# _BLOCK_CHANNELS (see _block).  Measured on a Zen 5 host with blocks of 256 to 1024, for both
# AVX-512 (panel rows of 256 bytes) and AVX2 (64 bytes) tiles: with C = 1024 one pass ran 7 % (AVX-512)
# and 12 % (AVX2) slower than blocks of 512; with C = 832 they ran alike; 7x7x2048->512 in one pass
# ran at 0.65x of blocks of 512 with AVX2 tiles.
_WHOLE_CHANNELS = 768
_BLOCK_CHANNELS = 512


def _block(n_channels: int, cut: _Cut) -> int:
    """How many channels each tile of a bank accumulates at a time: all of them, or a block.

    A tile reads its panel row by row (one row per channel), C rows a bank row apart.  With many
    channels the panel and the pixel rows no longer share the caches: the panel leaves L2 (with
    C = 2048 and bank rows a power of two of bytes apart, in 2 MiB pages, they fall into a fraction
    of L2's sets) and the pixel rows of a tile leave L1 before the tile is done with them.  Blocks of
    channels, each run over every pair of a chunk before the next, keep the part in use small
    enough to stay (README, "Where we fall short": 7x7x2048->512).  The rule is in channels, not
    bytes: AVX2's narrow panels (64-byte rows) gained from blocks as much as AVX-512's.

    Only tiles that cover the pixels exactly use the blocks (tiles.plan): an overlapping last tile
    recomputes rows of the one before, which only a single pass may do.  A panel that takes several
    channels a step (narrower than a vector, or AVX2's paired one) never does: its lanes hold sums
    of every group-th channel, which a block's partial sums (one per filter) cannot carry on; and
    such a panel is small enough not to need blocks.
    """
    if n_channels <= _WHOLE_CHANNELS or cut.group > 1:
        return max(n_channels, 1)
    return _BLOCK_CHANNELS


def _single_threaded(threads: int | None, work: int) -> bool:
    if threads is not None:
        checked_threads(threads)  # (the API's rule: a whole number from 1 up, not a bool)
    return threads == 1 or work < SERIAL_WORK
