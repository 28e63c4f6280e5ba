"""The micro-kernel: one tile of pixels x one panel of filters, accumulated in registers.

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
* Remainders.  Pixels are covered by tiles of ``rows`` and then of ``rows - 1``
  pixels (``_tile_counts``): 49 = 4x6 + 5x5, so no row is computed twice.  A
  tile one row shorter runs at almost the same speed per row, while
  recomputing rows cost 9 % on 7x7 layers (49 pixels in nine 6-row tiles:
  203 GFLOP/s against 224 for 48 pixels).  Pixel counts that no such sum
  reaches (under 20 for 6 rows) shift the last full tile back to end at P
  instead: it recomputes a few rows with identical results.  When P < rows a
  one-row tile is used.  A partial last panel is computed at full width (zero
  padding) and stored element by element.
* Jobs and chunks.  A call is described as a *job* in an int64 array (array
  addresses and shapes, ``_describe_job``), so that any thread can run a chunk
  of it (``_chunk_slp``): a contiguous run of its (pixel tile, panel) pairs.
* Floating point.  Only the ``contract`` fast-math flag is used (fused
  multiply-add); each output is its own accumulation chain in channel order, so
  no reassociation is needed and the thread count never changes a bit of the
  result.  ReLU is ``0 if v < 0 else v``, which keeps NaN (like
  ``np.maximum(v, 0)`` and PyTorch), and Inf/NaN propagate through FMA.

Functions whose names end in ``_slp`` must be compiled through
``kernel._compile`` only (see "Vectoriser settings" in ``kernel/__init__.py``).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Fused multiply-add only: no flag that assumes away NaN/Inf or reorders sums.
_FASTMATH = {"contract"}

# A width marker has one element per _WIDTH_STEP filters of the panel width (all widths are
# multiples of 4): numba types and unboxes every element of a tuple argument at every call, and a
# 64-element marker cost 1 us a call more than an 8-element one.
_WIDTH_STEP = 4

# How far beyond the next pixel tile the pixel rows are prefetched (see _pairs_slp). Distances
# from one tile to 32 KiB ahead measured alike.
_PREFETCH_AHEAD_BYTES = 8192


@intrinsic
def _stack_tile(typingctx, row_marker, width_marker, like):
    """Pointer to an uninitialised rows x width tile of like's dtype, on the stack.

    The size comes from the lengths of the two marker tuple *types* (the width
    marker has one element per _WIDTH_STEP filters), so it is a compile-time
    constant and LLVM can promote the tile to registers.
    """
    dtype = like.dtype
    count = len(row_marker) * len(width_marker) * _WIDTH_STEP

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype), size=count)

    return types.CPointer(dtype)(row_marker, width_marker, like), codegen


@njit(inline="always", fastmath=_FASTMATH)
def _accumulate_tile(pixels, first_pixel, panels, k, panel_bias, acc):
    """acc[r, :] = panel_bias + pixels[first_pixel + r, :] @ panels[:, k, :], all channels."""
    rows, width = acc.shape
    # Filters go in chunks of at most 32 so that LLVM fully unrolls the row and
    # filter loops (a 64-trip loop is not), which the SLP vectoriser needs.
    chunk = min(width, 32)
    for r in range(rows):
        for j0 in range(0, width, chunk):
            for j in range(j0, j0 + chunk):
                acc[r, j] = panel_bias[j]
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
    # In chunks of 32 as in _accumulate_tile. Whole 64-trip loops here (and in the bias loop) were
    # not unrolled, so the tile went through memory between the loops: a few hundred cycles a tile,
    # half the speed on few channels (224x224x3->64 on two cores: 27 against 58 GFLOP/s).
    chunk = min(width, 32)
    for r in range(rows):
        # A slice (not out[p, f0 + j]) so the vector stores need no index checks.
        dst = out[first_pixel + r, first_filter : first_filter + n_valid]
        if n_valid == width:
            for j0 in range(0, width, chunk):
                for j in range(j0, j0 + chunk):
                    dst[j] = _activate(acc[r, j], relu)
        else:  # partial last panel, through a scratch row: indexing acc by a
            # run-time j would keep the whole tile out of registers.
            for j0 in range(0, width, chunk):
                for j in range(j0, j0 + chunk):
                    scratch[j] = _activate(acc[r, j], relu)
            for j in range(n_valid):
                dst[j] = scratch[j]


@njit(inline="always", fastmath=_FASTMATH)
def _tile(pixels, first_pixel, panels, panel_bias, k, out, relu, row_marker, width_marker):
    """One tile: len(row_marker) pixels from first_pixel x panel k (filters k*width onwards)."""
    rows, width = len(row_marker), len(width_marker) * _WIDTH_STEP
    acc = numba.carray(_stack_tile(row_marker, width_marker, pixels), (rows, width))
    _accumulate_tile(pixels, first_pixel, panels, k, panel_bias[k], acc)
    first_filter = k * width
    n_valid = min(width, out.shape[1] - first_filter)
    scratch = numba.carray(_stack_tile((0,), width_marker, pixels), width)
    _store_tile(acc, scratch, out, first_pixel, first_filter, n_valid, relu)


@intrinsic
def _prefetch(typingctx, address):
    """Ask for the cache line at address to be brought into L2 (prefetcht1): a hint, never a fault."""

    def codegen(context, builder, signature, args):
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        signature_type = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        prefetch = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer], signature_type)
        # (address, 0 = read, 2 = moderate locality: L2, 1 = data cache)
        builder.call(prefetch, [builder.inttoptr(args[0], byte_pointer), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return types.void(types.intp), codegen


@njit(inline="always")
def _prefetch_ahead(pixels, first_pixel, rows):
    """Prefetch a tile's worth of pixel rows, _PREFETCH_AHEAD_BYTES beyond the tile after this one."""
    row_bytes = pixels.shape[1] * pixels.itemsize
    start = (first_pixel + rows) * row_bytes + _PREFETCH_AHEAD_BYTES
    stop = min(start + rows * row_bytes, pixels.shape[0] * row_bytes)
    base = pixels.ctypes.data
    for offset in range(start, stop, 64):  # one per 64-byte cache line
        _prefetch(base + offset)


@intrinsic
def _pointer(typingctx, address, like):
    """The int64 address as a pointer to like's dtype (for numba.carray)."""
    pointer_type = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))

    return pointer_type(address, like), codegen


# A job is published to the workers as int64 fields: array addresses and shapes.
_JOB_PIXELS, _JOB_PANELS, _JOB_BIAS, _JOB_OUT = 0, 1, 2, 3
_JOB_PIXEL_COUNT, _JOB_CHANNELS, _JOB_PANEL_COUNT, _JOB_FILTERS = 4, 5, 6, 7
_JOB_RELU, _JOB_PANEL_MAJOR, _JOB_CHUNKS = 8, 9, 10
_JOB_FIELDS = 16


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _chunk_slp(job, chunk, n_chunks, row_marker, width_marker, like):
    """Run chunk ``chunk`` of ``n_chunks`` equal runs of the (pixel tile, panel) pairs of the job in ``job``."""
    width = len(width_marker) * _WIDTH_STEP
    n_pixels, n_channels = job[_JOB_PIXEL_COUNT], job[_JOB_CHANNELS]
    n_panels = job[_JOB_PANEL_COUNT]
    pixels = numba.carray(_pointer(job[_JOB_PIXELS], like), (n_pixels, n_channels))
    panels = numba.carray(_pointer(job[_JOB_PANELS], like), (n_channels, n_panels, width))
    panel_bias = numba.carray(_pointer(job[_JOB_BIAS], like), (n_panels, width))
    out = numba.carray(_pointer(job[_JOB_OUT], like), (n_pixels, job[_JOB_FILTERS]))
    n_long, n_short = _tile_counts_inline(n_pixels, len(row_marker))
    n_pairs = (n_long + n_short) * n_panels
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


def _tile_counts(n_pixels, rows):
    """(tiles of ``rows`` pixels, tiles of ``rows - 1`` pixels after them) that cover n_pixels.

    The second count is the fewest short tiles that leave a whole number of long ones. When they
    would need more pixels than there are, there are none, and the last long tile is shifted back.
    """
    short = (rows - n_pixels % rows) % rows if rows > 1 else 0
    if short * (rows - 1) > n_pixels:
        short = 0
    return (n_pixels - short * (rows - 1) + rows - 1) // rows, short


_tile_counts_inline = njit(inline="always")(_tile_counts)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _pairs_slp(pixels, panels, panel_bias, out, relu, panel_major, start, stop, row_marker, width_marker):
    """(pixel tile, panel) pairs start..stop-1, in pixel-major or panel-major order.

    Pixel-major order walks one pixel tile (in L1) past every panel; panel-major order walks one
    panel (in L2) past every pixel tile.
    """
    n_pixels = pixels.shape[0]
    rows = len(row_marker)
    short_marker = row_marker[1:]  # the tile one row shorter: its own unrolled code
    n_long, n_short = _tile_counts_inline(n_pixels, rows)
    n_inner = n_long + n_short if panel_major else panels.shape[1]
    # Walk the pairs with counters: a division per pair costs as much as a
    # whole tile when there are few channels (RGB stem).
    outer, inner = start // n_inner, start % n_inner
    for _ in range(stop - start):
        if panel_major:
            k, t = outer, inner
        else:
            t, k = outer, inner
        if k == 0 and not panel_major:
            # Entering a pixel tile: ask for the pixels a few tiles on. The hardware prefetchers
            # stop at every 4 KiB page, and pixels streamed from memory without this ran 8-14 %
            # slower (25088x256->64 on two cores: 178 against 193 GFLOP/s, side by side). Few
            # pixels (panel-major order) are in cache already.
            _prefetch_ahead(pixels, t * rows, rows)
        if t < n_long:
            # (shifted back to end at n_pixels when there are no short tiles:
            # it recomputes a few rows, same values, instead of a scalar remainder loop)
            first_pixel = min(t * rows, n_pixels - rows)
            _tile(pixels, first_pixel, panels, panel_bias, k, out, relu, row_marker, width_marker)
        else:
            first_pixel = n_long * rows + (t - n_long) * (rows - 1)
            _tile(pixels, first_pixel, panels, panel_bias, k, out, relu, short_marker, width_marker)
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
def _run_alone_slp(pixels, panels, panel_bias, out, relu, panel_major, row_marker, width_marker, like):
    """A whole job on the calling thread.  (It calls no Linux-only function, unlike the pool's code.)"""
    job = np.empty(_JOB_FIELDS, np.int64)
    _describe_job(job, pixels, panels, panel_bias, out, relu, panel_major, 1)
    _chunk_slp(job, 0, 1, row_marker, width_marker, like)
