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
* Threading.  All (pixel tile, panel) pairs are split into one equal contiguous
  run per thread (numba's OpenMP ``prange`` is statically scheduled, so fewer,
  larger work items left one core idle).  Pairs are ordered pixel-major (a pixel
  tile stays in L1 while it meets every panel) unless there are fewer pixels than
  filters, where they are panel-major (a panel stays in L2 while it meets every
  tile); splitting over filters as well as pixels keeps both cores busy when
  there are few pixels (7x7=49).  Problems under ~1M multiply-adds run on one
  thread.  Numba's ``omp`` threading layer is preferred because it is safe when
  several Python threads call the kernel at once (``workqueue`` aborts), falling
  back to tbb/workqueue if it cannot be loaded, and only if the user has not
  chosen a layer and numba's threads have not started yet.  GNU OpenMP is
  loaded with a passive wait policy so that its workers sleep, rather than
  spin on the cores NumPy's BLAS threads need, once a call returns (the
  environment variable is set only while the library loads).
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

import os
import threading
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# Fused multiply-add only: no flag that assumes away NaN/Inf or reorders sums.
_FASTMATH = {"contract"}

# Bytes of one SIMD register (AVX-512); panel widths are multiples of half of it.
_VECTOR_BYTES = 64
# Below this many multiply-adds a call runs on one thread: waking a sleeping
# OpenMP worker costs 35-40 us here, which one thread's ~110 GFLOP/s covers up
# to about 4M multiply-adds (measured: 784x192->16 ran 92 GFLOP/s on one
# thread, 69 on two).
_SERIAL_WORK = 1 << 22


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
        dst = out[first_pixel + r, first_filter:first_filter + n_valid]
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


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _pointwise_tiles_slp(pixels, panels, panel_bias, out, relu, n_chunks, panel_major,
                         row_marker, width_marker):
    """All (pixel tile, panel) pairs, in n_chunks equal contiguous runs, one per thread.

    Pixel-major order walks one pixel tile (in L1) past every panel; panel-major
    order walks one panel (in L2) past every pixel tile.
    """
    n_pixels = pixels.shape[0]
    rows = len(row_marker)
    n_panels = panels.shape[1]
    n_tiles = (n_pixels + rows - 1) // rows
    n_pairs = n_tiles * n_panels
    n_inner = n_tiles if panel_major else n_panels
    for chunk in prange(n_chunks):
        start = chunk * n_pairs // n_chunks
        stop = (chunk + 1) * n_pairs // n_chunks
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
            _tile(pixels, first_pixel, panels, panel_bias, k, out, relu,
                  row_marker, width_marker)
            inner += 1
            if inner == n_inner:
                inner = 0
                outer += 1


# --------------------------------------------------------------------------
# Compilation and threading set-up (lazy: nothing happens at import)
# --------------------------------------------------------------------------

_setup_lock = threading.RLock()
_compiled_keys: set = set()
_threading_configured = False


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


def _configure_threading() -> None:
    """Prefer the omp layer with passive waiting, if numba's threads have not started."""
    global _threading_configured
    if _threading_configured:
        return
    with _setup_lock:
        if not _threading_configured:
            _launch_numba_threads()
            _threading_configured = True


def _launch_numba_threads() -> None:
    from numba.np.ufunc import parallel as numba_parallel

    if getattr(numba_parallel, "_is_initialized", True):
        return  # numba's threads already run: their layer cannot change any more
    env = os.environ
    if "NUMBA_THREADING_LAYER" not in env and "NUMBA_THREADING_LAYER_PRIORITY" not in env \
            and str(numba.config.THREADING_LAYER).lower() == "default":
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    # GNU OpenMP reads its wait policy once, when it is loaded (which happens
    # just below, when numba starts its threads).  Passive workers sleep as soon
    # as a parallel region ends instead of spinning on the cores that NumPy's
    # BLAS threads are about to use.  The user's own setting wins.
    set_policy = "OMP_WAIT_POLICY" not in env
    if set_policy:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        numba_parallel._launch_threads()
    finally:
        if set_policy:
            del env["OMP_WAIT_POLICY"]


def _compile(args: tuple) -> None:
    """Compile (or load from numba's disk cache) the kernel for these argument types.

    Once a signature exists, implicit compilation by the dispatcher is disabled
    outside this function, so a call with unforeseen argument types raises
    (and comes back here) instead of silently compiling without the vectoriser
    settings.
    """
    signature = tuple(numba.typeof(a) for a in args)
    with _setup_lock:
        _pointwise_tiles_slp.disable_compile(False)
        try:
            with _vectorizer_settings():
                _pointwise_tiles_slp.compile(signature)
        finally:
            _pointwise_tiles_slp.disable_compile(True)


def _run_kernel(args: tuple) -> None:
    """Call the kernel, compiling it first for argument types not seen before."""
    pixels, out = args[0], args[3]
    # numba.typeof is slow (tens of microseconds); this key decides the same types.
    panels = args[1]
    key = (pixels.dtype, pixels.flags.writeable, pixels.flags.aligned, out.flags.aligned,
           panels.flags.writeable, panels.flags.aligned, len(args[-2]), len(args[-1]))
    if key not in _compiled_keys:
        _compile(args)
        _compiled_keys.add(key)
    try:
        _pointwise_tiles_slp(*args)
    except TypeError as error:  # types the key did not foresee
        if "compilation disabled" not in str(error) and "No matching" not in str(error):
            raise
        _compile(args)
        _pointwise_tiles_slp(*args)


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

    __slots__ = ("dtype", "n_channels", "n_filters", "panel_bias", "panels", "row_marker", "rows", "width",
                 "width_marker")

    def __init__(self, matrix, bias, n_channels, n_filters, rows, width):
        n_panels = matrix.shape[1] // width
        self.panels = matrix.reshape(n_channels, n_panels, width)
        self.panel_bias = bias.reshape(n_panels, width)
        self.n_channels = n_channels
        self.n_filters = n_filters
        self.dtype = matrix.dtype
        self.rows = rows
        self.width = width
        # Tuples whose lengths tell the compiler the tile shape (see _stack_tile).
        self.row_marker = tuple(range(rows))
        self.width_marker = tuple(range(width))

    def __repr__(self) -> str:
        return (f"PackedBank(channels={self.n_channels}, filters={self.n_filters}, "
                f"dtype={self.dtype}, tile={self.rows}x{self.width})")


def pack_bank(bank: np.ndarray, bias: np.ndarray | None) -> PackedBank:
    """Prepare bank (C, F) and bias (F,) or None, float32 or float64, for apply_packed.

    The result may share memory with ``bank``: pack again after changing the bank in place.
    """
    bank = np.asarray(bank)
    if bank.ndim != 2:
        raise ValueError(f"bank must be 2-D (channels, filters), got shape {bank.shape}")
    if bank.dtype not in (np.float32, np.float64):
        raise TypeError(f"bank must be float32 or float64, got {bank.dtype}")
    n_channels, n_filters = bank.shape
    if bias is None:
        bias = np.zeros(n_filters, dtype=bank.dtype)
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
    padded_bias[:n_filters] = bias
    return PackedBank(matrix, padded_bias, n_channels, n_filters, rows, width)


def apply_packed(pixels: np.ndarray, packed: PackedBank, out: np.ndarray, relu: bool,
                 threads: int | None = None) -> None:
    """out[P, F] = act(pixels[P, C] @ bank + bias), written in place.

    pixels (P, C) and out (P, F) are C-contiguous arrays of the bank's dtype.
    threads=None uses all of numba's threads; an int limits this call to that many.
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
    if n_pixels == 0 or packed.n_filters == 0:
        return

    rows = packed.rows if n_pixels >= packed.rows else 1
    _configure_threading()  # before anything starts numba's threads
    available = numba.get_num_threads()  # all of numba's threads unless the user lowered it
    if threads is None:
        n_threads = available
    elif int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    else:
        n_threads = min(int(threads), numba.config.NUMBA_NUM_THREADS)
    if n_pixels * packed.n_channels * packed.n_filters < _SERIAL_WORK:
        n_threads = 1
    # Panel-major when the bank outweighs the pixels: each panel then stays in
    # cache while it meets every pixel tile.
    panel_major = n_pixels < packed.n_filters
    args = (pixels, packed.panels, packed.panel_bias, out, bool(relu), n_threads, panel_major,
            packed.row_marker if rows == packed.rows else (0,), packed.width_marker)
    if n_threads == available:
        _run_kernel(args)
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        _run_kernel(args)
    finally:
        numba.set_num_threads(previous)


def pointwise(pixels: np.ndarray, bank: np.ndarray, bias: np.ndarray | None, relu: bool,
              out: np.ndarray, threads: int | None = None) -> None:
    """out[P, F] = act(pixels[P, C] @ bank[C, F] + bias[F]), all one dtype, C-contiguous."""
    apply_packed(pixels, pack_bank(bank, bias), out, relu, threads)
