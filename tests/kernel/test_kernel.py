"""The kernel and its worker pool against the float64 references in naive.py: any shape through the pool,
the same bits whatever the thread count, kinds switching, several callers, forked children, exit, refusals.

The pool is built so that the calling thread takes every chunk nobody else has claimed: broken workers
would still give right answers, only slowly. So besides results, these tests check that the workers
exist, stay alive, and take part (the chunks they claim).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import naive
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import assert_close_to_reference

from conv1x1_cli import conv1x1, kernel
from conv1x1_cli.errors import ArgumentError
from conv1x1_cli.kernel import tiles


def problem(rng, pixels, channels, filters, dtype, with_bias=True):
    x = rng.standard_normal((pixels, channels)).astype(dtype)
    w = rng.standard_normal((channels, filters)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype) if with_bias else None
    return x, w, b


def convolve(pixels, bank, bias=None, relu=True, threads=None):
    """The kernel into an output filled with NaN, so that an output nobody wrote fails any comparison."""
    out = np.full((pixels.shape[0], bank.shape[1]), np.nan, pixels.dtype)
    kernel.apply_packed(pixels, kernel.pack_bank(bank, bias), out, relu, threads)
    return out


@contextmanager
def through_the_pool():
    """Every call, however small, is shared with the workers (unless it asks for one thread)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernel, "SERIAL_WORK", 0)
        yield


def assert_pool_healthy(pool):
    """Every worker started and still running (a worker that raised would be gone), and nobody holds the pool."""
    assert len(pool.threads) == pool.n_workers
    assert all(thread.is_alive() for thread in pool.threads), [t.name for t in pool.threads if not t.is_alive()]
    assert not pool.busy.locked()


def run_python(code, *args, env=None, timeout=300):
    """Run code in a fresh interpreter; a hang fails the test (TimeoutExpired) instead of blocking it."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def cpus_available():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Tests of the pool's own workings; with CONV1X1_THREADING=portable (CI runs this file so once) there is none.
pool_only = pytest.mark.skipif(
    kernel.pool.threading_mode() != "pool", reason="calls are shared out by numba's threading layer, not the pool"
)


# --- the pool --------------------------------------------------------------------------------------------


@pool_only
def test_pool_has_a_worker_for_every_other_cpu():
    expected = min(cpus_available(), numba.config.NUMBA_NUM_THREADS, kernel.pool.MAX_THREADS) - 1
    assert kernel.worker_pool().n_workers == expected


@settings(max_examples=300, deadline=None)
@given(
    pixels=st.integers(1, 300),
    channels=st.integers(1, 70),
    filters=st.integers(1, 140),
    dtype=st.sampled_from(["float32", "float64"]),
    with_bias=st.booleans(),
    relu=st.booleans(),
    threads=st.sampled_from([None, 2, 64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_shape_through_the_pool_matches_float64_reference(
    pixels, channels, filters, dtype, with_bias, relu, threads, seed
):
    x, w, b = problem(np.random.default_rng(seed), pixels, channels, filters, dtype, with_bias)
    with through_the_pool():
        result = convolve(x, w, b, relu, threads)
    assert_close_to_reference(result, x, w, b, relu)


@pytest.mark.parametrize("rows", [1, 6, 8])
def test_tiles_cover_the_pixels_without_overlap_whenever_two_heights_can(rows):
    """Tiles of rows and rows - 1 pixels: an exact cover whenever one exists (found here by brute force),
    otherwise whole tiles of rows whose last one is shifted back, overlapping the one before."""
    from conv1x1_cli.kernel.tiles import tile_counts

    for n_pixels in range(1, 400):
        long, short = tile_counts(n_pixels, rows)
        exact = any((n_pixels - b * (rows - 1)) % rows == 0 for b in range(n_pixels // max(rows - 1, 1) + 1))
        if exact:
            assert long * rows + short * (rows - 1) == n_pixels, (n_pixels, long, short)
            assert short < rows
        else:
            assert short == 0 and (long - 1) * rows < n_pixels < long * rows, (n_pixels, long)
    assert tile_counts(49, 6) == (4, 5)  # 7x7: 24 + 25
    assert tile_counts(13, 6) == (3, 0)  # 13 is no sum of 6s and 5s


# Real layers above the real threshold (no patching): few pixels, where pairs go panel-major (P < F), and
# many pixels, pixel-major; partial last panels and pixel counts that are not whole tiles.
LAYERS = {
    "7x7x832->384": (49, 832, 384, "float32"),
    "7x7x2048->512": (49, 2048, 512, "float32"),
    "7x7x832->384 float64": (49, 832, 384, "float64"),
    "5 pixels x1024->300 (one-row tiles)": (5, 1024, 300, "float32"),
    "14x14x128->64": (196, 128, 64, "float32"),
    "56x56x64->256": (3136, 64, 256, "float32"),
    "1000x3->400 (RGB stem)": (1000, 3, 400, "float32"),
    "3001x37->77 float64": (3001, 37, 77, "float64"),
}


@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
def test_thread_count_does_not_change_a_single_bit(layer, rng):
    """Each output is one accumulation chain in channel order, whichever thread computes its tile."""
    pixels, channels, filters, dtype = layer
    assert pixels * channels * filters >= kernel.SERIAL_WORK, "this layer would not reach the pool"
    x, w, b = problem(rng, pixels, channels, filters, dtype)
    alone = convolve(x, w, b, threads=1)
    assert_close_to_reference(alone, x, w, b)
    for threads in (None, 2, None, 2):
        np.testing.assert_array_equal(convolve(x, w, b, threads=threads), alone)
    if kernel.worker_pool().n_workers:
        assert_pool_healthy(kernel.worker_pool())


@contextmanager
def channel_blocks(block_channels):
    """Every bank, however few its channels, is accumulated in blocks of block_channels channels."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernel, "_WHOLE_CHANNELS", -1)
        patch.setattr(kernel, "_BLOCK_CHANNELS", block_channels)
        yield


# Pixel counts whose tiles of 6 (or 8) rows overlap: no sum of 6s and 5s (8s and 7s) reaches them.
OVERLAPPING_TILES = [7, 8, 9, 13, 14, 19, 10, 11, 12, 17, 18, 20, 25, 26, 27, 33, 34, 41]


@settings(max_examples=150, deadline=None)
@given(
    pixels=st.one_of(st.sampled_from(OVERLAPPING_TILES), st.integers(1, 200)),
    channels=st.integers(1, 70),
    filters=st.integers(1, 140),
    dtype=st.sampled_from(["float32", "float64"]),
    with_bias=st.booleans(),
    relu=st.booleans(),
    block_channels=st.integers(1, 80),
    threads=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_channel_blocks_of_any_size_give_the_bits_of_one_pass(
    pixels, channels, filters, dtype, with_bias, relu, block_channels, threads, seed
):
    """A tile over a later block of channels starts from the partial sums the block before left in
    the output, so blocks change no bit; that includes pixel counts whose tiles overlap, which must
    then be computed in one pass (blocks would add the overlap twice)."""
    x, w, b = problem(np.random.default_rng(seed), pixels, channels, filters, dtype, with_bias)
    with through_the_pool():
        one_pass = convolve(x, w, b, relu, threads)
        with channel_blocks(block_channels):
            blocked = convolve(x, w, b, relu, threads)
    assert_close_to_reference(one_pass, x, w, b, relu)
    np.testing.assert_array_equal(blocked, one_pass)


def test_real_blocks_of_channels_are_used_for_a_big_panel_and_change_no_bit(rng):
    """7x7x2048->512 is accumulated 512 channels at a time, as one pass would."""
    x, w, b = problem(rng, 49, 2048, 512, "float32")
    assert kernel.pack_bank(w, b).block == 512
    blocked = convolve(x, w, b)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernel, "_WHOLE_CHANNELS", 2**40)
        assert kernel.pack_bank(w, b).block == 2048
        np.testing.assert_array_equal(convolve(x, w, b), blocked)
    assert_close_to_reference(blocked, x, w, b)


@settings(max_examples=120, deadline=None)
@given(
    pixels=st.one_of(st.sampled_from(OVERLAPPING_TILES), st.integers(8, 160)),
    channels=st.integers(1, 40),
    filters=st.sampled_from([3, 20, 70, 130]),
    tile_group=st.integers(1, 40),
    block_channels=st.integers(1, 40),
    n_chunks=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    in_place=st.booleans(),
)
def test_pairs_taken_in_groups_of_tiles_are_each_computed_once(
    pixels, channels, filters, tile_group, block_channels, n_chunks, seed, in_place
):
    """Whatever the group of pixel tiles that meets each panel in turn (one tile: pixel-major; all of
    them: panel-major), and however the pairs are cut into chunks, every (tile, panel) pair is
    computed once per block of channels: the bits of one pass, and the reference.  (Where tiles read
    copies of their panels, a chunk that goes on with the panel and block that the chunk before
    copied reads that copy.)  With ``in_place``, a bank whose last panel is partial is read in place
    and that panel from its padded copy, however small the bank."""
    from conv1x1_cli.kernel.tiles import COPY_ROOM_BYTES, tile_counts

    x, w, b = problem(np.random.default_rng(seed), pixels, channels, filters, "float32")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernel, "_PADDED_BANK_BYTES", 0 if in_place else 2**40)
        packed = kernel.pack_bank(w, b)
    rows = packed.rows
    n_long, n_short = tile_counts(pixels, rows)
    exact = n_long * rows + n_short * (rows - 1) == pixels  # (only tiles that do not overlap use blocks)
    block = min(block_channels, channels) if exact and packed.cut.group == 1 else channels
    out = np.full((pixels, filters), np.nan, np.float32)
    # (one thread's room for panel copies, kept from chunk to chunk, as the threads keep theirs)
    room, held = np.empty(COPY_ROOM_BYTES // 4, np.float32), np.full(3, -1, np.int64)
    _every_chunk(
        x, packed.panels, packed.panel_bias, out, tile_group, block, n_chunks, room, held, *packed.kind.markers[1:]
    )
    np.testing.assert_array_equal(out, convolve(x, w, b, threads=1))
    assert_close_to_reference(out, x, w, b)


@numba.njit
def _every_chunk(pixels, panels, panel_bias, out, tile_group, block, n_chunks, room, held, *markers):
    """A job with this group of pixel tiles and block of channels, cut into n_chunks chunks that one
    thread runs in turn with its room for panel copies (as run_alone runs one chunk of one)."""
    job = np.empty(tiles.JOB_FIELDS, np.int64)
    n_panels = tiles.panels_in(panels, markers[1], markers[2])
    tiles.describe_job(
        job, pixels, panels, panel_bias, out, True, tile_group, block, n_chunks, n_panels, markers[1], markers[2]
    )
    job[tiles.JOB_NUMBER] = 0
    for chunk in range(n_chunks):
        tiles.compute_chunk(job, chunk, n_chunks, room, held, *markers)


@numba.njit
def _plan(*arguments):
    """tiles.plan, a helper of the compiled code that Python cannot call itself."""
    return tiles.plan(*arguments)


def copies_panels_of(packed) -> bool:
    """Whether the tiles of this packed bank's kind read copies of their panels."""
    from conv1x1_cli.kernel.target import simd_unit
    from conv1x1_cli.kernel.tiles import copies_panels

    itemsize = packed.dtype.itemsize
    return copies_panels(packed.width, simd_unit().lanes(itemsize), itemsize)


@pytest.mark.parametrize(
    ("pixels", "channels", "filters", "order", "order_with_copies"),
    [
        # 28x28x128->512 at N=8: a 256 KiB bank stays in L2, but outgrows L1
        (6272, 128, 512, "pixel-major", "groups"),
        (6272, 3, 512, "pixel-major", "pixel-major"),  # a 6 KiB bank (RGB stem) stays in L1
        (196, 256, 1024, "panel-major", "panel-major"),  # fewer pixels than filters
        (1568, 2048, 512, "groups", "groups"),  # 7x7x2048->512 at N=32: 512 channels x 512 filters, 1 MiB a block
        (3136, 256, 1024, "groups", "groups"),  # 56x56x256->1024: a 1 MiB bank in one block
    ],
)
def test_the_pairs_order_follows_what_fits_in_the_caches(pixels, channels, filters, order, order_with_copies):
    """Pixel-major (one tile to a group) while the bank's block fits in L2 (in L1, where tiles read
    copies of their panels), panel-major (every tile in one group) when there are fewer pixels than
    filters, groups of tiles in between."""
    x = np.zeros((pixels, channels), np.float32)
    packed = kernel.pack_bank(np.zeros((channels, filters), np.float32), None)
    out = np.empty((pixels, filters), np.float32)
    copies = copies_panels_of(packed)
    tile_group, _, n_pairs = _plan(x, packed.panels, out, packed.block, packed.rows, packed.n_panels, copies)
    n_tiles = n_pairs // packed.n_panels
    if copies:
        order = order_with_copies
    if order == "pixel-major":
        assert tile_group == 1
    elif order == "panel-major":
        assert tile_group == n_tiles
    else:
        assert 1 < tile_group < n_tiles, (tile_group, n_tiles)


def test_a_bank_too_big_for_l2_meets_the_pixel_tiles_in_groups_and_changes_no_bit(rng):
    """359 pixels (59 tiles of 6 rows and one of 5, or their like for other units) x 800 channels
    (blocks of 512) -> 300 filters: the bank's block is over 512 KiB, so pixel-major order takes the
    tiles in groups; results alone and through the pool as the reference."""
    x, w, b = problem(rng, 359, 800, 300, "float32")
    packed = kernel.pack_bank(w, b)
    out = np.empty((359, 300), np.float32)
    copies = copies_panels_of(packed)
    tile_group, block, n_pairs = _plan(x, packed.panels, out, packed.block, packed.rows, packed.n_panels, copies)
    n_tiles = n_pairs // packed.n_panels
    assert block == 512 and 1 < tile_group < n_tiles, (tile_group, n_tiles)
    alone = convolve(x, w, b, threads=1)
    assert_close_to_reference(alone, x, w, b)
    with through_the_pool():
        for threads in (None, 2):
            np.testing.assert_array_equal(convolve(x, w, b, threads=threads), alone)


def test_a_bank_changed_in_place_is_copied_again_by_every_thread(rng):
    """Threads keep the last panel they copied from call to call (the pool's workers) and reuse it
    while the next chunk goes on with that panel; a new call must copy the bank again even when it is
    the same array at the same address, changed in place (the kernel reads the caller's bank as it
    is).  784 pixels x 192 channels -> 64 filters: a 48 KiB bank, whose panels are copied where
    tiles read copies (AVX2); the results alone, through the pool and on two threads as the
    reference, call after call."""
    x, w, b = problem(rng, 784, 192, 64, "float32")
    with through_the_pool():
        for _ in range(3):
            for threads in (None, 2, 1):
                assert_close_to_reference(convolve(x, w, b, threads=threads), x, w, b)
            w[...] = rng.standard_normal(w.shape).astype(w.dtype)  # same array, new values


def test_a_narrow_bank_is_packed_a_group_of_channels_to_a_row(rng):
    """A bank narrower than a vector holds channel_group adjacent channels side by side in each panel
    row (zeros past the bank), and never runs in blocks of channels: its lanes hold the sums of every
    group-th channel, which a block's partial sums could not carry on."""
    from conv1x1_cli.costs.packing import channel_group
    from conv1x1_cli.kernel.target import simd_unit

    # (channel counts in turn, so that each cut's scatter indices are made and found again)
    for dtype, filters, channels, order in (
        ("float32", 3, 7, "C"),
        ("float32", 3, 5, "F"),
        ("float32", 3, 7, "F"),
        ("float32", 5, 7, "C"),
        ("float32", 8, 9, "C"),  # (AVX2: one vector, paired across two)
        ("float32", 6, 9, "F"),
        ("float64", 3, 7, "C"),
        ("float64", 3, 12, "C"),
        ("float64", 4, 5, "C"),
    ):
        bank = np.asarray(rng.standard_normal((channels, filters)).astype(dtype), order=order)
        with channel_blocks(2):
            packed = kernel.pack_bank(bank, None)
        group = channel_group(packed.width, simd_unit().vector_bytes // bank.itemsize, bank.itemsize)
        n_rows = -(-channels // group)
        assert packed.panels.shape == (n_rows, packed.width * group)
        padded = np.zeros((n_rows * group, packed.width), dtype)
        padded[:channels, :filters] = bank
        for q in range(n_rows):
            for g in range(group):
                np.testing.assert_array_equal(packed.panels[q, g::group], padded[q * group + g])
        assert packed.block == (channels if group > 1 else 2)


@pytest.mark.parametrize("filters", [3, 8, 13, 64, 130])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no bias", "bias"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_a_bank_used_once_gives_the_bits_of_a_packed_one(rng, filters, dtype, with_bias, order):
    """apply_bank (conv1x1's plain calls) packs as pack_bank does, whatever the bank's width (narrow
    and grouped, padded, or its own panels) and layout, alone and through the pool, and gives the
    pixels' shape with F channels."""
    x, w, b = problem(rng, 45, 37, filters, dtype, with_bias)
    w = np.asarray(w, order=order)
    for threads in (1, None):
        with through_the_pool():
            out = kernel.apply_bank(x.reshape(5, 9, 37), w, b, True, threads)
        assert out.shape == (5, 9, filters)
        np.testing.assert_array_equal(out.reshape(45, filters), convolve(x, w, b, threads=threads))
        assert_close_to_reference(out.reshape(45, filters), x, w, b)


@pytest.mark.parametrize(("filters", "dtype"), [(1024, "float32"), (512, "float64"), (2048, "float32")])
def test_banks_whose_rows_are_4_kib_apart_are_read_in_place_with_the_same_results(rng, filters, dtype):
    """A bank whose rows are a whole number of 4 KiB apart (where AVX2's 64-byte panels put all of a
    panel's rows in one cache set; its tiles read copies of the panels) is its own panels, not a padded
    copy made at every call.  Results as any bank's, alone and through the pool, bias or not, in one
    pass or in blocks of channels."""
    for channels in (5, 800):  # (800: blocks of channels leave partial sums in the output)
        x, w, b = problem(rng, 25, channels, filters, dtype)
        packed = kernel.pack_bank(w, b)
        assert packed.panels is w and packed.n_panels * packed.width == filters
        for threads in (1, None):
            with through_the_pool():
                out = convolve(x, w, b, threads=threads)
                np.testing.assert_array_equal(out, conv1x1(x, w, b, threads=threads))
            assert_close_to_reference(out, x, w, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no bias", "bias"])
@pytest.mark.parametrize(
    ("pixels", "channels", "filters"),
    [
        (49, 1024, 1000),  # 7x7x1024->1000 (a classifier as a 1x1 convolution): blocks of channels
        (25, 700, 300),  # one pass, fewer pixels than filters (panel-major)
        (1, 2048, 1000),  # one pixel: a tile of one row
        (400, 300, 120),  # pixel-major, tiles in groups where they read copies of their panels
    ],
)
def test_a_large_bank_ending_in_part_of_a_panel_is_read_in_place(rng, pixels, channels, filters, dtype, with_bias):
    """A bank whose F is not a whole number of panels, too large to copy at every call, is read in
    place, and only its last panel is copied, zero-padded to the panel's width; the bits are those of
    the whole padded copy (a Fortran-ordered bank is copied so), alone and through the pool."""
    x, w, b = problem(rng, pixels, channels, filters, dtype, with_bias)
    packed = kernel.pack_bank(w, b)
    if packed.cut.group > 1 or filters % packed.width == 0:
        pytest.skip(f"{filters} filters are whole panels of {packed.width} here")
    width, first = packed.width, (packed.n_panels - 1) * packed.width
    assert packed.panels is w
    expected_tail = np.zeros((channels, width), dtype)
    expected_tail[:, : filters - first] = w[:, first:]
    np.testing.assert_array_equal(packed.tail, expected_tail)
    padded = kernel.pack_bank(np.asfortranarray(w), b)
    assert padded.panels.shape == (channels, packed.n_panels * width) and padded.tail.shape == (0, width)
    for threads in (1, None):
        with through_the_pool():
            out = convolve(x, w, b, threads=threads)
            from_padded = np.full_like(out, np.nan)
            kernel.apply_packed(x, padded, from_padded, True, threads)
            np.testing.assert_array_equal(out, from_padded)
            np.testing.assert_array_equal(kernel.apply_bank(x, w, b, True, threads), out)
        assert_close_to_reference(out, x, w, b)


def test_a_small_bank_ending_in_part_of_a_panel_is_copied_whole(rng):
    """A bank of at most 32 KiB whose F is not whole panels is copied with its rows padded, as its
    tiles read it faster so (rows 96 bytes apart in place here); no separate last panel then."""
    x, w, b = problem(rng, 50, 96, 24, "float32")
    packed = kernel.pack_bank(w, b)
    if packed.cut.group > 1 or 24 % packed.width == 0:
        pytest.skip(f"24 filters are whole panels of {packed.width} here")
    assert packed.panels.shape == (96, packed.n_panels * packed.width) and len(packed.tail) == 0
    np.testing.assert_array_equal(packed.panels[:, :24], w)
    assert not packed.panels[:, 24:].any()
    assert_close_to_reference(convolve(x, w, b), x, w, b)


_PAGE_EDGE_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from naive import assert_close_to_reference
from conv1x1_cli import kernel

libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE, regions = mmap.PAGESIZE, []

def between_guard_pages(values, at_end):
    # A copy of values between two pages that may not be touched (PROT_NONE): ending right before
    # the second, or starting right after the first.  Any read or write outside it is a SIGSEGV.
    pages = -(-values.nbytes // PAGE)
    region = mmap.mmap(-1, (pages + 2) * PAGE)
    regions.append(region)
    start = PAGE + (pages * PAGE - values.nbytes if at_end else 0)
    array = np.frombuffer(region, values.dtype, values.size, start).reshape(values.shape)
    array[...] = values
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    for page in (0, pages + 1):
        assert libc.mprotect(base + page * PAGE, PAGE, 0) == 0, ctypes.get_errno()
    return array

kernel.SERIAL_WORK = 0  # (every call through the pool unless it asks for one thread)
rng = np.random.default_rng(7)
cases = [(196, 192, 16, "f"), (784, 192, 64, "f"), (49, 1024, 1000, "f"), (7, 300, 120, "f"),
         (1, 64, 24, "f"), (50, 96, 24, "f"), (37, 8, 8, "f"), (37, 7, 8, "f"), (29, 5, 3, "d"),
         (100, 3, 64, "f"), (49, 64, 130, "d")]
for pixels, channels, filters, dtype in cases:
    x = rng.standard_normal((pixels, channels)).astype(dtype)
    w = rng.standard_normal((channels, filters)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype)
    for at_end in (True, False):
        for threads in (1, None):
            expected = kernel.apply_bank(x, w, b, True, threads)
            gx, gw, gb = (between_guard_pages(a, at_end) for a in (x, w, b))
            out = between_guard_pages(np.full_like(expected, np.nan), at_end)
            kernel.apply_packed(gx, kernel.pack_bank(gw, gb), out, True, threads)
            np.testing.assert_array_equal(out, expected)
            out[...] = np.nan
            kernel.apply_bank(gx, gw, gb, True, threads, out=out)
            np.testing.assert_array_equal(out, expected)
    assert_close_to_reference(expected, x, w, b)
print("ok", len(cases))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="mprotect")
def test_arrays_between_pages_that_may_not_be_touched_are_read_and_written_within_bounds():
    """Pixels, bank, bias and output each ending right before (or starting right after) a page that
    may not be touched: no access outside them (it would be a SIGSEGV), and the bits of ordinary
    arrays, alone and through the pool.  Shapes with short tiles, one pixel, blocks of channels, a
    bank read in place with a copied last panel, a padded one, narrow and paired ones (odd channel
    counts: the last group's pixels read with a masked load), three channels, float64."""
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = run_python(_PAGE_EDGE_SCRIPT, tests_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok", "11"]


def test_a_bias_that_fills_whole_panels_is_read_in_place_and_an_output_over_it_is_safe(rng):
    """The packed bias is a view of the caller's when F fills whole panels: an out= that shares its
    memory goes through a temporary, as one over the pixels or the bank does."""
    x, w, b = problem(rng, 9, 900, 64, "float32")  # (C > 768: blocks leave partial sums in out)
    assert np.shares_memory(kernel.pack_bank(w, b).panel_bias, b)
    out = np.empty((len(x), 64), np.float32)
    out[3] = b  # the bias is row 3 of the output
    kernel.apply_to_output(x, kernel.pack_bank(w, out[3]), out, True)
    assert_close_to_reference(out, x, w, b)
    out[3] = b  # and through the API's plain call
    assert conv1x1(x, w, out[3], out=out) is out
    assert_close_to_reference(out, x, w, b)


@pytest.mark.parametrize("channels", [41, 42], ids=["odd channels", "even channels"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("filters", [3, 5])
def test_a_narrow_bank_keeps_nan_and_inf_from_every_channel_of_a_group(channels, dtype, filters, rng):
    """Channels of one group are summed in separate lanes, added at the end: an infinity or NaN in
    either lane, or in the last channel alone in its group, comes out as in NumPy.  (With AVX2, 5
    float32 filters or 3 float64 ones fill one vector, paired across two; 3 float32 half of one.)"""
    x, w, b = problem(rng, 50, channels, filters, dtype)
    last = channels - 1
    w[[0, 1, 2, last]] = np.abs(w[[0, 1, 2, last]]) + 0.5
    x[3, last] = np.inf  # row 3: +inf everywhere, from the last channel
    x[7, last] = np.nan  # row 7: NaN
    x[9, 0] = -np.inf  # row 9: -inf, from a group's first lane
    x[11, 1], x[11, 2] = np.inf, -np.inf  # row 11: inf from one lane, -inf from the other: NaN
    result = convolve(x, w, b, relu=False)
    with np.errstate(invalid="ignore"):
        expected = naive.pointwise(x, w, b, relu=False)
    assert (result[3] == np.inf).all() and (result[9] == -np.inf).all()
    assert np.isnan(result[7]).all() and np.isnan(result[11]).all()
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(result), finite)
    assert_close_to_reference(result[finite[:, 0]], x[finite[:, 0]], w, b, relu=False)
    np.testing.assert_array_equal(result, convolve(x, w, b, relu=False, threads=1))


def chunks_taken_by_the_worker(pool):
    """How many chunks of the last two-thread job the worker computed, read from the segment words.

    The job's chunks are split into segment 0 (the calling thread's) and segment 1 (the worker's); each
    thread takes its own from the front and the other's from the back, so a segment's unclaimed range
    shrinks to the point where the two met. The worker took the chunks between the two meeting points."""
    meeting_points = []
    for segment in (0, 1):
        start, end = pool.segment(segment)
        assert start == end, "chunks left unclaimed"
        meeting_points.append(start)
    return meeting_points[1] - meeting_points[0]


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["worker spinning", "worker asleep"])
def test_workers_take_part_in_a_large_call(rng, pause):
    """A worker, spinning since the last call or asleep on its semaphore, takes a real share of a call.

    The calling thread takes any chunk nobody else has, so broken workers would only show as slowness.
    Best of three calls, so that a burst of load elsewhere on the machine cannot fail the test."""
    pool = kernel.worker_pool()
    if pool.n_workers == 0:
        pytest.skip("one CPU: the pool has no workers")
    x, w, _ = problem(rng, 8192, 512, 512, "float32", with_bias=False)  # 2.1G multiply-adds
    packed = kernel.pack_bank(w, None)
    out = np.empty((len(x), w.shape[1]), np.float32)
    kernel.apply_packed(x[:4096], packed, out[:4096], True, threads=2)  # loads the kernel, starts the workers
    n_chunks = min(-(-len(x) // packed.rows) * packed.n_panels, 2 * kernel.pool.CHUNKS_PER_THREAD)
    taken = []
    for _ in range(3):
        time.sleep(pause)
        kernel.apply_packed(x, packed, out, True, threads=2)
        taken.append(chunks_taken_by_the_worker(pool))
        assert 0 <= taken[-1] <= n_chunks
        if taken[-1] >= n_chunks // 4:
            break
    assert max(taken) >= n_chunks // 4, f"the worker took {taken} of {n_chunks} chunks"
    expected = np.empty_like(out)
    kernel.apply_packed(x, packed, expected, True, threads=1)
    np.testing.assert_array_equal(out, expected)
    assert_pool_healthy(pool)


# (dtype, pixels, channels, filters): with AVX-512, float32 tiles 8x8, 6x16, 6x32, 6x64 and float64 tiles 8x4,
# 6x8, 6x16, 6x32, each also with fewer pixels than tile rows (one-row tiles), partial panels (F = 3, 200), P < F.
KINDS = [
    ("float32", 300, 24, 8),
    ("float32", 3, 24, 8),
    ("float32", 97, 24, 16),
    ("float32", 5, 24, 16),
    ("float32", 64, 24, 32),
    ("float32", 2000, 24, 64),
    ("float32", 2, 24, 64),
    ("float32", 200, 24, 200),
    ("float32", 4, 24, 200),
    ("float64", 50, 24, 3),
    ("float64", 7, 24, 3),
    ("float64", 99, 24, 8),
    ("float64", 600, 24, 16),
    ("float64", 1, 24, 16),
    ("float64", 250, 24, 64),
    ("float64", 5, 24, 200),
]


def test_kinds_switching_back_to_back_stay_correct(rng, monkeypatch):
    """Every call publishes a job of another kind (dtype and tile shape): the workers leave the loop
    compiled for one kind and enter the other's, many times over, without a wrong or missing output."""
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    cases = []
    for dtype, pixels, channels, filters in KINDS:
        x, w, b = problem(rng, pixels, channels, filters, dtype)
        expected = {relu: convolve(x, w, b, relu, threads=1) for relu in (True, False)}
        for relu in (True, False):
            assert_close_to_reference(expected[relu], x, w, b, relu)
        cases.append((x, w, b, expected))
    order = np.random.default_rng(7)
    for round_ in range(25):
        for index in order.permutation(len(cases)):
            x, w, b, expected = cases[index]
            relu = bool((round_ + index) % 2)
            result = convolve(x, w, b, relu, threads=None if round_ % 3 else 2)
            np.testing.assert_array_equal(result, expected[relu], err_msg=f"{KINDS[index]}, round {round_}")
    if kernel.worker_pool().n_workers:
        assert_pool_healthy(kernel.worker_pool())


def test_python_threads_calling_at_once_all_get_correct_results(rng):
    """Four Python threads, 20 calls each, all above the threshold: one at a time has the pool, the others
    run alone meanwhile; every result is bit for bit the single-threaded one."""
    shapes = [
        (256, 128, 64, "float32"),
        (49, 832, 384, "float64"),
        (5, 1024, 300, "float32"),
        (700, 64, 200, "float32"),
    ]
    cases = []
    for pixels, channels, filters, dtype in shapes:
        x, w, b = problem(rng, pixels, channels, filters, dtype)
        expected = conv1x1(x, w, b, threads=1)
        assert_close_to_reference(expected, x, w, b)
        cases.append((x, w, b, expected))
    start = threading.Barrier(len(cases))

    def calls(case):
        x, w, b, expected = case
        start.wait(timeout=60)
        return [np.array_equal(conv1x1(x, w, b), expected) for _ in range(20)]

    with ThreadPoolExecutor(len(cases)) as executor:
        outcomes = list(executor.map(calls, cases, timeout=120))
    assert outcomes == [[True] * 20] * len(cases)
    if kernel.worker_pool().n_workers:
        assert_pool_healthy(kernel.worker_pool())


@pytest.fixture
def pool_of_three_workers(monkeypatch):
    """A pool of three workers, whatever the CPUs (more threads than CPUs here), in place of the real one."""
    pool = kernel.pool.WorkerPool(3)
    monkeypatch.setattr(kernel.pool, "_pool", pool)
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    yield pool
    pool.stop()
    for thread in pool.threads:
        thread.join(timeout=10)


@pytest.mark.parametrize("changed", ["kernel/tiles.py", "kernel/pool.py", "costs/packing.py"])
def test_a_change_to_any_file_compiled_into_the_entry_points_gives_them_new_cache_entries(tmp_path, changed):
    """numba's disk cache checks only the file of the cached function, but the entry points contain
    code from tiles.py, pool.py and the packing rule: without a new name, a changed tiles.py left
    pooled calls running the old tiles (writing 8 of 32 filters), and a changed channel_group would
    have had the old walk read banks packed the new way. Asked of a copy of the package, before and
    after changing one of the files."""
    import shutil

    import conv1x1_cli

    package = tmp_path / "conv1x1_cli"
    shutil.copytree(os.path.dirname(conv1x1_cli.__file__), package, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from conv1x1_cli.kernel import pool, tiles; "
        "entries = (pool.run_pooled, pool.serve, pool.run_portable, tiles.compute_chunk, tiles.run_alone); "
        "print(*(f._cache._cache_file._index_name for f in entries))"
    )
    before = run_python(code, tmp_path)
    with open(package / changed, "a") as source:
        source.write("\n_A_CHANGE = 1\n")
    after = run_python(code, tmp_path)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    names_before, names_after = before.stdout.split(), after.stdout.split()
    assert len(names_before) == len(names_after) == 5
    assert not set(names_before) & set(names_after), (names_before, names_after)


def one_worker_pool(monkeypatch, idle_turns):
    """A pool of one worker that spins idle_turns turns before it sleeps, in place of the real one."""
    if cpus_available() < 2 or not sys.platform.startswith("linux"):
        pytest.skip("needs two CPUs on Linux")
    pool = kernel.pool.WorkerPool(1)
    monkeypatch.setattr(kernel.pool, "_pool", pool)
    monkeypatch.setattr(kernel.pool, "IDLE_TURNS", idle_turns)
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    return pool


def call_until_the_worker_takes_part(pool, rng):
    x, w, _ = problem(rng, 3000, 256, 64, "float32", with_bias=False)
    packed = kernel.pack_bank(w, None)
    out = np.empty((len(x), w.shape[1]), np.float32)
    for _ in range(50):
        kernel.apply_packed(x, packed, out, True)
        if chunks_taken_by_the_worker(pool) > 0:
            return
    pytest.fail("the worker took no chunk in 50 calls")


def test_an_awake_worker_keeps_off_the_callers_cpu_and_gets_its_cpus_back_to_sleep(monkeypatch, rng):
    """Linux on a VM put workers on the caller's CPU, where each waited for the other: awake, the worker
    excludes the CPU the caller ran on at the last call from its affinity; asleep it has them all."""
    pool = one_worker_pool(monkeypatch, idle_turns=10**9)  # awake for good
    try:
        call_until_the_worker_takes_part(pool, rng)
        worker = pool.threads[0].native_id
        main_cpu = pool.main_cpu()
        assert os.sched_getaffinity(worker) == os.sched_getaffinity(0) - {main_cpu}
    finally:
        pool.stop()
        pool.threads[0].join(timeout=10)

    pool = one_worker_pool(monkeypatch, idle_turns=0)  # asleep as soon as it has nothing to do
    try:
        call_until_the_worker_takes_part(pool, rng)
        deadline = time.monotonic() + 10
        while pool.sleeping() == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert pool.sleeping() == 1
        assert os.sched_getaffinity(pool.threads[0].native_id) == os.sched_getaffinity(0)
        assert pool.worker_cpus()[1] == kernel.pool.NO_CPU
    finally:
        pool.stop()
        pool.threads[0].join(timeout=10)


def test_a_new_pool_shows_no_worker_on_any_cpu():
    """The caller yields its CPU to a worker it sees on it (_make_way): before any worker has run, none is."""
    pool = kernel.pool.WorkerPool(1)
    published_cpus = pool.worker_cpus()
    assert len(published_cpus) == kernel.pool.MAX_THREADS
    assert (published_cpus == kernel.pool.NO_CPU).all()


def few_and_many_pixel_cases(rng):
    cases = []
    for pixels, channels, filters, dtype in [
        (49, 96, 200, "float32"),
        (500, 40, 72, "float64"),
        (3, 50, 64, "float32"),
    ]:
        x, w, b = problem(rng, pixels, channels, filters, dtype)
        expected = convolve(x, w, b, threads=1)
        assert_close_to_reference(expected, x, w, b)
        cases.append((x, w, b, expected))
    return cases


def test_workers_beyond_the_thread_limit_stay_out_and_bits_stay_the_same(pool_of_three_workers, rng):
    """threads=2 or 3 leaves workers 2 and 3 (or 3) out of the job; None shares it four ways."""
    cases = few_and_many_pixel_cases(rng)
    for threads in (2, 3, None, 2, None, 3):
        for x, w, b, expected in cases:
            np.testing.assert_array_equal(convolve(x, w, b, threads=threads), expected)
    assert_pool_healthy(pool_of_three_workers)


def test_stopped_workers_return_and_calls_stay_correct_without_them(pool_of_three_workers, rng):
    pool = pool_of_three_workers
    cases = few_and_many_pixel_cases(rng)
    for x, w, b, expected in cases:
        np.testing.assert_array_equal(convolve(x, w, b), expected)
    time.sleep(0.05)  # some workers asleep on the semaphore, which stop() must post
    pool.stop()
    for thread in pool.threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in pool.threads)
    for x, w, b, expected in cases:  # (an atexit handler may still convolve): the calling thread does it all
        np.testing.assert_array_equal(convolve(x, w, b), expected)


@pytest.mark.parametrize("threads", [1, None])
def test_read_only_arrays_run_the_code_compiled_for_writeable_ones(rng, monkeypatch, threads):
    """Numba types a read-only array apart and would compile the whole kernel again for it (a second
    or more); the kernel never writes the pixels or the bank, so the same code runs them."""
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    x, w, b = problem(rng, 77, 24, 64, "float32")  # F = 64: the packed bank is a view of w itself
    writeable = convolve(x, w, b, threads=threads)
    compiled = kernel.compilations()
    for array in (x, w):
        array.setflags(write=False)
    np.testing.assert_array_equal(convolve(x, w, b, threads=threads), writeable)
    assert kernel.compilations() == compiled
    assert_close_to_reference(writeable, x, w, b)


def test_read_only_and_misaligned_arrays_through_the_pool(rng, monkeypatch):
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    x, w, b = problem(rng, 301, 20, 64, "float32")
    expected = convolve(x, w, b, threads=1)
    frozen_x, frozen_w = x.copy(), w.copy()
    frozen_x.setflags(write=False)
    frozen_w.setflags(write=False)  # F = 64 fills whole panels: the kernel reads this very bank
    np.testing.assert_array_equal(convolve(frozen_x, frozen_w, b), expected)

    def misaligned(array):
        buffer = np.zeros(array.nbytes + 1, np.uint8)
        view = np.frombuffer(buffer.data, array.dtype, array.size, offset=1).reshape(array.shape)
        view[...] = array
        assert not view.flags.aligned
        return view

    odd_x = misaligned(x)
    odd_out = misaligned(np.full(expected.shape, np.nan, np.float32))
    kernel.apply_packed(odd_x, kernel.pack_bank(w, b), odd_out, True)
    np.testing.assert_array_equal(odd_out, expected)


@pytest.mark.parametrize("shift", [0, 1], ids=["out is pixels", "out one row further on"])
@pytest.mark.parametrize("threads", [None, 1])
def test_output_sharing_memory_with_the_pixels_is_computed_as_if_apart(shift, threads, rng, monkeypatch):
    """The kernel writes out while it still reads pixels (and recomputes the rows of the shifted last tile):
    in-place calls must read the pixels as they were."""
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    buffer = rng.standard_normal((301 + shift, 48)).astype(np.float32)
    x, w, b = buffer[:301].copy(), rng.standard_normal((48, 48)).astype(np.float32), np.ones(48, np.float32)
    expected = convolve(x, w, b, threads=1)
    kernel.apply_packed(buffer[:301], kernel.pack_bank(w, b), buffer[shift:], True, threads)
    np.testing.assert_array_equal(buffer[shift:], expected)


@pytest.mark.parametrize("threads", [None, 1], ids=["shared out", "alone"])
@pytest.mark.parametrize("target", ["pixels", "bank", "bias"])
def test_the_compiled_code_refuses_an_output_over_what_it_reads_and_writes_nothing(target, threads, rng, monkeypatch):
    """The entry points compare out's addresses with the pixels', the bank's and the bias's before
    they write anything (tiles.out_overlaps) and refuse an out that shares a byte with one of them;
    conv1x1 then computes through a temporary.  Every array here is a view of one foreign buffer
    (np.frombuffer of a bytearray), as memory from another library would be, with a gap after each:
    out over the target's last element is refused, out right after it is not."""
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)  # (through the pool, or numba's threads, when shared out)
    n_pixels, n_channels, n_filters = 60, 64, 64  # (whole panels: the bank and the bias are read in place)
    sizes = {"pixels": n_pixels * n_channels, "bank": n_channels * n_filters, "bias": n_filters}
    gap = n_pixels * n_filters + 16
    memory = np.frombuffer(bytearray(4 * (sum(sizes.values()) + 3 * gap)), np.float32)
    starts = dict(zip(sizes, np.cumsum([0] + [size + gap for size in sizes.values()])[:3], strict=True))
    views = {name: memory[starts[name] : starts[name] + size] for name, size in sizes.items()}
    views["pixels"][...] = rng.standard_normal(sizes["pixels"])
    views["bank"][...] = rng.standard_normal(sizes["bank"])
    views["bias"][...] = rng.standard_normal(sizes["bias"])
    pixels, bank = views["pixels"].reshape(n_pixels, n_channels), views["bank"].reshape(n_channels, n_filters)
    bias = views["bias"]
    cut = kernel._cut(np.dtype(np.float32), n_filters)
    panel_bias = kernel._panel_bias(bias, bank, cut)
    assert cut.whole_panels and np.shares_memory(panel_bias, bias)
    expected = convolve(pixels.copy(), bank.copy(), bias.copy(), threads=1)
    target_end = starts[target] + sizes[target]

    def out_at(start):
        return memory[start : start + n_pixels * n_filters].reshape(n_pixels, n_filters)

    before = memory.copy()
    assert not kernel._run(pixels, bank, panel_bias, n_channels, cut, out_at(target_end - 1), True, threads)
    np.testing.assert_array_equal(memory, before)  # (not a bit written)
    assert conv1x1(pixels, bank, bias, out=out_at(target_end - 1)) is not None
    np.testing.assert_array_equal(out_at(target_end - 1), expected)

    memory[...] = before
    assert kernel._run(pixels, bank, panel_bias, n_channels, cut, out_at(target_end), True, threads)
    np.testing.assert_array_equal(out_at(target_end), expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "identity"])
def test_nan_and_inf_propagate_through_the_pool_as_in_numpy(dtype, relu, rng, monkeypatch):
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    x, w, b = problem(rng, 300, 40, 70, dtype)
    x[5, 11] = np.nan  # NaN in: the whole row is NaN, through ReLU too
    x[17, 3], x[40, 7] = np.inf, -np.inf  # rows 17 and 40 all +inf and -inf (ReLU: 0), but...
    w[3], w[7] = np.abs(w[3]) + 0.5, np.abs(w[7]) + 0.5
    w[3, 4] = w[7, 2] = 0.0  # ... inf * 0 = NaN
    b[9] = np.nan  # a whole column NaN
    b[11], b[12] = -np.inf, np.inf  # and inf + -inf = NaN where a row has the other infinity
    result = convolve(x, w, b, relu)
    with np.errstate(invalid="ignore"):
        expected = naive.pointwise(x, w, b, relu)

    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(result), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(result), np.isneginf(expected))
    assert np.isnan(result[5]).all() and np.isnan(result[:, 9]).all()
    assert np.isnan(result[[17, 40, 17, 40], [4, 2, 11, 12]]).all()
    assert (result[17, [0, 1, 2, 12]] == np.inf).all()
    assert (result[40, [0, 1, 3, 11]] == (0 if relu else -np.inf)).all()
    assert (result[[0, 1, 2], 11] == (0 if relu else -np.inf)).all()
    finite = np.isfinite(expected)
    error = np.abs(result[finite].astype(np.float64) - expected[finite])
    if dtype == "float32":
        tolerance = naive.float32_tolerance(x, w, b)[finite]
    else:
        tolerance = 1e-12 + 1e-12 * np.abs(expected[finite])
    assert (error <= tolerance).all()
    np.testing.assert_array_equal(result, convolve(x, w, b, relu, threads=1))


@pytest.mark.parametrize("blocked", [False, True], ids=["one pass", "channel blocks"])
def test_no_channels_gives_the_bias_and_no_pixels_gives_nothing(monkeypatch, blocked):
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    if blocked:
        monkeypatch.setattr(kernel, "_WHOLE_CHANNELS", -1)
    bias = np.arange(-2, 3, dtype=np.float32)
    for pixels in (1, 7, 300):
        np.testing.assert_array_equal(
            convolve(np.zeros((pixels, 0), np.float32), np.zeros((0, 5), np.float32), bias, relu=True),
            np.tile([0, 0, 0, 1, 2], (pixels, 1)),
        )
    assert convolve(np.zeros((0, 4), np.float32), np.ones((4, 5), np.float32)).shape == (0, 5)


# --- refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [0, -1])
@pytest.mark.parametrize("pixels", [1, 3000], ids=["small", "above threshold"])
def test_invalid_thread_counts_are_refused(threads, pixels):
    x = np.ones((pixels, 4), np.float32)
    out = np.full((pixels, 500), 7.0, np.float32)
    with pytest.raises(ValueError, match=f"threads must be >= 1, got {threads}"):
        kernel.apply_packed(x, kernel.pack_bank(np.ones((4, 500), np.float32), None), out, True, threads)
    assert (out == 7.0).all()


@pytest.mark.parametrize(("pixels", "filters"), [(0, 5), (3, 0)])
def test_invalid_thread_count_is_refused_even_with_nothing_to_compute(pixels, filters):
    out = np.zeros((pixels, filters), np.float32)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        kernel.apply_packed(
            np.ones((pixels, 4), np.float32),
            kernel.pack_bank(np.ones((4, filters), np.float32), None),
            out,
            True,
            threads=0,
        )


def test_a_bool_is_not_a_thread_count():
    """threads=True is 1 to Python: it would have run on one thread, not on every core."""
    packed = kernel.pack_bank(np.ones((4, 8), np.float32), None)
    out = np.zeros((3000, 8), np.float32)
    with pytest.raises(ArgumentError, match="threads must be a whole number of threads"):
        kernel.apply_packed(np.ones((3000, 4), np.float32), packed, out, True, threads=True)


def read_only(array):
    array.setflags(write=False)
    return array


F32 = np.float32
# name: (pixels, out, exception, message); the bank is (4, 2) float32.
BAD_ARGUMENTS = {
    "float64 pixels": (
        lambda: np.ones((5, 4)),
        lambda: np.zeros((5, 2), F32),
        TypeError,
        "pixels dtype float64 differs from the bank's float32",
    ),
    "float64 out": (
        lambda: np.ones((5, 4), F32),
        lambda: np.zeros((5, 2)),
        TypeError,
        "out dtype float64 differs from the bank's float32",
    ),
    "1-D pixels": (
        lambda: np.ones(4, F32),
        lambda: np.zeros((1, 2), F32),
        ValueError,
        "pixels must be a 2-D NumPy array",
    ),
    "list pixels": (
        lambda: [[1.0] * 4] * 5,
        lambda: np.zeros((5, 2), F32),
        ValueError,
        "pixels must be a 2-D NumPy array",
    ),
    "3-D out": (
        lambda: np.ones((5, 4), F32),
        lambda: np.zeros((1, 5, 2), F32),
        ValueError,
        "out must be a 2-D NumPy array",
    ),
    "transposed pixels": (
        lambda: np.ones((4, 5), F32).T,
        lambda: np.zeros((5, 2), F32),
        ValueError,
        "pixels must be C-contiguous",
    ),
    "transposed out": (
        lambda: np.ones((5, 4), F32),
        lambda: np.zeros((2, 5), F32).T,
        ValueError,
        "out must be C-contiguous",
    ),
    "wrong channels": (
        lambda: np.ones((5, 3), F32),
        lambda: np.zeros((5, 2), F32),
        ValueError,
        "pixels have 3 channels, bank has 4",
    ),
    "wrong filters": (
        lambda: np.ones((5, 4), F32),
        lambda: np.zeros((5, 3), F32),
        ValueError,
        r"out must have shape \(5, 2\), got \(5, 3\)",
    ),
    "wrong pixels": (
        lambda: np.ones((5, 4), F32),
        lambda: np.zeros((6, 2), F32),
        ValueError,
        r"out must have shape \(5, 2\), got \(6, 2\)",
    ),
    "read-only out": (
        lambda: np.ones((5, 4), F32),
        lambda: read_only(np.zeros((5, 2), F32)),
        ValueError,
        "out must be writeable",
    ),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_apply_packed_refuses_wrong_arrays_and_leaves_the_pool_free(case, monkeypatch):
    make_pixels, make_out, exception, message = case
    monkeypatch.setattr(kernel, "SERIAL_WORK", 0)
    pixels, out = make_pixels(), make_out()
    with pytest.raises(exception, match=message):
        kernel.apply_packed(pixels, kernel.pack_bank(np.ones((4, 2), F32), None), out, True)
    assert not np.asarray(out).any(), "a refused call wrote to out"
    assert not kernel.worker_pool().busy.locked()
    right = np.zeros((5, 2), F32)
    kernel.apply_packed(np.ones((5, 4), F32), kernel.pack_bank(np.ones((4, 2), F32), None), right, True)
    np.testing.assert_array_equal(right, np.full((5, 2), 4.0))


def test_apply_packed_wants_a_packed_bank():
    with pytest.raises(TypeError, match="packed must come from pack_bank"):
        kernel.apply_packed(np.ones((5, 4), F32), np.ones((4, 2), F32), np.zeros((5, 2), F32), True)


@pytest.mark.parametrize(
    ("bank", "bias", "exception", "message"),
    [
        (np.ones(4, F32), None, ValueError, r"bank must be 2-D \(channels, filters\), got shape \(4,\)"),
        (np.ones((4, 2), np.int64), None, TypeError, "bank must be float32 or float64, got int64"),
        (np.ones((4, 2), np.float16), None, TypeError, "bank must be float32 or float64, got float16"),
        (np.ones((4, 2), ">f4"), None, TypeError, "bank must be float32 or float64, got >f4"),
        (np.ones((4, 2), F32), np.ones(3, F32), ValueError, r"bias must have shape \(2,\), got \(3,\)"),
        (np.ones((4, 2), F32), np.ones(2), TypeError, "bias dtype float64 differs from bank dtype float32"),
    ],
    ids=["1-D bank", "int bank", "float16 bank", "big-endian bank", "short bias", "float64 bias"],
)
def test_pack_bank_refuses_what_the_kernel_cannot_take(bank, bias, exception, message):
    with pytest.raises(exception, match=message):
        kernel.pack_bank(bank, bias)


@pytest.mark.parametrize("width", [4, 8, 16, 32, 64])
def test_width_markers_stand_for_their_panel_width(width):
    assert kernel.tiles.marker_width(kernel.tiles.width_marker_for(width)) == width


def test_the_cuts_kept_per_filter_count_stay_bounded_and_right(monkeypatch):
    monkeypatch.setattr(kernel, "_cuts", {})
    monkeypatch.setattr(kernel, "_MAX_CUTS", 8)
    x = np.arange(6 * 3, dtype=F32).reshape(6, 3) / 7
    for filters in range(1, 30):
        w = np.linspace(-1, 1, 3 * filters, dtype=F32).reshape(3, filters)
        out = np.empty((6, filters), F32)
        kernel.apply_packed(x, kernel.pack_bank(w, None), out, True, threads=1)
        assert_close_to_reference(out, x, w)
        assert len(kernel._cuts) <= 8


# --- processes -------------------------------------------------------------------------------------------

# The fork scripts end by waiting for their child, at most `seconds` (a hang fails instead of blocking);
# a child checks what it must and leaves through exit_child_after.
WAIT_FOR_CHILD = """
def wait_for_child(pid, seconds):
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.exit(f"the forked child did not finish within {seconds} s")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0, f"the forked child failed: {status}"


def exit_child_after(check):
    # In a forked child: run check, then leave at once (no exit handlers), with 0 if it passed.
    status = 1
    try:
        check()
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(status)
"""


FORKED_CHILD = (
    WAIT_FOR_CHILD
    + """
import os, signal, sys, threading, time, traceback
import numpy as np
from conv1x1_cli import kernel

inputs, child_results, parent_results, busy_thread = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
with np.load(inputs) as arrays:
    x32, w32, b32 = arrays["x"], arrays["w"], arrays["b"]
x64, w64, b64 = (a.astype(np.float64) for a in (x32, w32, b32))

def convolve(x, w, b):
    out = np.full((len(x), w.shape[1]), np.nan, x.dtype)
    kernel.apply_packed(x, kernel.pack_bank(w, b), out, True)
    return out

parent = convolve(x32, w32, b32), convolve(x64, w64, b64)
parent_pool = kernel.pool.current_pool()
assert parent_pool is not None and len(parent_pool.threads) == parent_pool.n_workers, "no pool in the parent"
stop = threading.Event()
if busy_thread:  # fork while another thread is (most likely) inside a pooled call
    def keep_convolving():
        while not stop.is_set():
            convolve(x32, w32, b32)
    threading.Thread(target=keep_convolving, daemon=True).start()
    time.sleep(0.2)

def check_child():
    assert kernel.pool.current_pool() is None, "the child kept the parent's pool, whose workers it does not have"
    for _ in range(20):
        child = convolve(x32, w32, b32), convolve(x64, w64, b64)
    pool = kernel.pool.current_pool()
    assert pool is not None and pool is not parent_pool
    assert len(pool.threads) == pool.n_workers and all(t.is_alive() for t in pool.threads)
    np.savez(child_results, x32=child[0], x64=child[1])

pid = os.fork()
if pid == 0:
    exit_child_after(check_child)

stop.set()
wait_for_child(pid, 60)
assert np.array_equal(convolve(x32, w32, b32), parent[0]), "the parent's pool broke after the fork"
np.savez(parent_results, x32=parent[0], x64=parent[1])
"""
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("busy_thread", [False, True], ids=["idle parent", "parent thread convolving"])
def test_forked_child_convolves_with_a_pool_of_its_own(tmp_path, rng, busy_thread):
    x, w, b = problem(rng, 500, 64, 96, "float32")  # 3M multiply-adds: pooled without patching
    np.savez(tmp_path / "inputs.npz", x=x, w=w, b=b)
    child, parent = tmp_path / "child.npz", tmp_path / "parent.npz"
    done = run_python(FORKED_CHILD, tmp_path / "inputs.npz", child, parent, int(busy_thread))
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(child) as in_child, np.load(parent) as in_parent:
        for name, dtype in (("x32", np.float32), ("x64", np.float64)):
            assert_close_to_reference(in_child[name], x.astype(dtype), w.astype(dtype), b.astype(dtype))
            np.testing.assert_array_equal(in_child[name], in_parent[name])


FORKED_IN_PORTABLE_BLOCK = (
    WAIT_FOR_CHILD
    + """
import os, signal, sys, time, traceback
import numpy as np
from conv1x1_cli import kernel

x, w = np.ones((500, 64), np.float32), np.ones((64, 96), np.float32)  # 3M multiply-adds: pooled
packed, out = kernel.pack_bank(w, None), np.empty((500, 96), np.float32)
kernel.apply_packed(x, packed, out, True)
parent_pool = kernel.pool.current_pool()
def check_child():
    assert kernel.pool.current_pool() is not parent_pool, "the child went back to the parent's pool"
    for _ in range(10):
        out[...] = np.nan
        kernel.apply_packed(x, packed, out, True)
        assert (out == 64).all()
    pool = kernel.pool.current_pool()
    assert pool is not None and pool is not parent_pool
    assert len(pool.threads) == pool.n_workers and all(t.is_alive() for t in pool.threads)

with kernel.pool.portable_threading():
    pid = os.fork()
if pid == 0:
    exit_child_after(check_child)
wait_for_child(pid, 60)
assert kernel.pool.current_pool() is parent_pool, "the parent did not go back to its pool"
"""
)


@pool_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_in_a_portable_block_gets_a_pool_of_its_own():
    """The block's end puts the parent's pool back; in the child it has none (its workers are the
    parent's), and the child's calls start a pool of its own."""
    done = run_python(FORKED_IN_PORTABLE_BLOCK)
    assert done.returncode == 0, done.stderr[-3000:]


POOL_WITHOUT_THREADS = """
import sys, threading
import numpy as np
from conv1x1_cli import kernel

x, w = np.ones((500, 64), np.float32), np.ones((64, 96), np.float32)  # 3M multiply-adds: pooled
packed, out = kernel.pack_bank(w, None), np.empty((500, 96), np.float32)
started = []
start = threading.Thread.start

def counted_start(thread):
    started.append(thread.name)
    start(thread)

def refused_start(thread):
    started.append(thread.name)
    raise RuntimeError("can't start new thread")

if sys.argv[1] == "no threads to be had":
    threading.Thread.start = refused_start
else:
    kernel.apply_packed(x, packed, out, True)  # the workers start
    pool = kernel.pool.current_pool()
    pool.stop()  # (what the pool's exit handler does, before later exit handlers make calls)
    for thread in pool.threads:
        thread.join(30)
    threading.Thread.start = counted_start
for _ in range(20):
    out[...] = np.nan
    kernel.apply_packed(x, packed, out, True)
    assert (out == 64).all()
pool = kernel.pool.current_pool()
assert pool.max_threads == 1, pool.max_threads
assert len(started) == (1 if sys.argv[1] == "no threads to be had" else 0), started
"""


@pool_only
@pytest.mark.parametrize("case", ["no threads to be had", "stopped"])
def test_a_pool_without_workers_runs_calls_alone(case):
    """A pool whose workers cannot be started (a limit on threads), or that has been stopped (at exit),
    stops sharing: calls run alone and right, without an exception and without starting threads
    again at every call (a stopped pool's workers would return at once)."""
    done = run_python(POOL_WITHOUT_THREADS, case)
    assert done.returncode == 0, done.stderr[-3000:]


FORK_DURING_SETUP = (
    WAIT_FOR_CHILD
    + """
import os, signal, sys, threading, time
import numpy as np
from conv1x1_cli import kernel

x, w = np.ones((500, 64), np.float32), np.ones((64, 96), np.float32)
out = np.empty((500, 96), np.float32)
kernel.apply_packed(x, kernel.pack_bank(w, None), out, True)  # pooled: the parent's pool is running
held, release = threading.Event(), threading.Event()

def compiling():  # what another thread's first call of a new kind does, for a second or more
    with kernel._setup_lock:
        held.set()
        release.wait()

threading.Thread(target=compiling).start()
held.wait()
pid = os.fork()
if pid == 0:
    kernel.apply_packed(x, kernel.pack_bank(w, None), out, True)  # needs a pool of its own, made under _setup_lock
    os._exit(0 if (out == 64).all() else 1)
release.set()
wait_for_child(pid, float(sys.argv[1]))
"""
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_another_thread_sets_up_the_kernel_leaves_the_child_working():
    done = run_python(FORK_DURING_SETUP, 4, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


EXITS_AFTER_POOL = """
import sys, threading, time
import numpy as np
from conv1x1_cli import conv1x1, kernel
from conv1x1_cli.errors import ArgumentError

x, w = np.ones((64, 64, 64), np.float32), np.ones((64, 64), np.float32)  # 16.8M multiply-adds: pooled
assert (conv1x1(x, w) == 64).all()
pool = kernel.pool.current_pool()
assert pool is not None and len(pool.threads) == pool.n_workers, "the pool did not start"
if sys.argv[1] == "convolving":  # a daemon thread still inside pooled calls while the interpreter exits
    threading.Thread(target=lambda: [conv1x1(x, w) for _ in iter(int, 1)], daemon=True).start()
    time.sleep(0.1)
elif sys.argv[1] == "asleep":
    time.sleep(0.1)
print(time.monotonic(), flush=True)
"""


@pytest.mark.parametrize("state", ["spinning", "asleep", "convolving"])
def test_process_exits_promptly_after_using_the_pool(state):
    """Workers spinning, asleep on the semaphore, or serving another thread's call: exit takes no time."""
    done = run_python(EXITS_AFTER_POOL, state, timeout=120)
    exited = time.monotonic()  # CLOCK_MONOTONIC: the same clock in both processes
    assert done.returncode == 0, done.stderr[-3000:]
    assert exited - float(done.stdout) < 3.0


SIGNALS_WHILE_ASLEEP = """
import ctypes, signal, sys, time
import numpy as np
from conv1x1_cli import kernel

signal.signal(signal.SIGUSR1, lambda *args: None)  # delivered to a worker, it interrupts sem_wait (EINTR)
kernel.SERIAL_WORK = 0
x, w = np.ones((64, 8), np.float32), np.ones((8, 16), np.float32)

def convolve():
    out = np.full((64, 16), np.nan, np.float32)
    kernel.apply_packed(x, kernel.pack_bank(w, None), out, True)
    assert (out == 8).all(), out

def settled():
    # Every worker asleep: each counted once in _SLEEPING, and no post left over on the semaphore. (The
    # ~2 ms of spinning are 4000 sched_yield turns: with other processes on every CPU, seconds of wall time.)
    deadline = time.monotonic() + 60
    while pool.sleeping() < pool.n_workers and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    value = ctypes.c_int()
    ctypes.CDLL(None).sem_getvalue(ctypes.c_void_p(pool.semaphore.ctypes.data), ctypes.byref(value))
    return [pool.sleeping(), value.value]

convolve()
pool = kernel.pool.current_pool()
before = settled()
for _ in range(20):
    for thread in pool.threads:
        signal.pthread_kill(thread.ident, signal.SIGUSR1)
    time.sleep(0.01)
for _ in range(5):
    convolve()
print(pool.n_workers, *before, *settled())
"""


@pool_only
def test_signals_interrupting_sleeping_workers_leave_the_count_straight():
    """A signal that interrupts a worker's sem_wait must not count it asleep twice: each surplus count makes
    every later call post once more than anyone waits for, and the worker spin again for nothing."""
    done = run_python(SIGNALS_WHILE_ASLEEP, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    workers, *counts = map(int, done.stdout.split())
    if workers == 0:
        pytest.skip("one CPU: the pool has no workers")
    assert counts == [workers, 0, workers, 0], "(sleeping workers, posts left) before and after the signals"


NO_WORKERS = """
import sys, threading
import numpy as np
from conv1x1_cli import kernel

if sys.argv[3] != "-":
    sys.platform = sys.argv[3]  # as the kernel would see it there; its serial code is the same
pool = kernel.worker_pool()
results = {}
with np.load(sys.argv[1]) as inputs:
    for name in ("few", "many", "tiny"):
        x, w, b = inputs[name + "_x"], inputs[name + "_w"], inputs[name + "_b"]
        for threads in (None, 2):
            out = np.full((len(x), w.shape[1]), np.nan, x.dtype)
            kernel.apply_packed(x, kernel.pack_bank(w, b), out, True, threads)
            results[f"{name}_{threads}"] = out
np.savez(sys.argv[2], **results)
print(pool.n_workers, len(pool.threads), threading.active_count(), pool.mode, pool.portable_launched)
"""


@pytest.mark.parametrize(
    ("platform", "environment"),
    [("-", {"NUMBA_NUM_THREADS": "1"}), ("darwin", {})],
    ids=["NUMBA_NUM_THREADS=1", "not Linux"],
)
def test_no_workers_when_one_thread_is_asked_for_or_off_linux_and_right_results(tmp_path, rng, platform, environment):
    problems = {"few": (49, 832, 384), "many": (3136, 64, 96), "tiny": (3, 5, 7)}
    arrays = {}
    for name, (pixels, channels, filters) in problems.items():
        x, w, b = problem(rng, pixels, channels, filters, "float32")
        arrays |= {f"{name}_x": x, f"{name}_w": w, f"{name}_b": b}
    np.savez(tmp_path / "inputs.npz", **arrays)
    done = run_python(
        NO_WORKERS, tmp_path / "inputs.npz", tmp_path / "out.npz", platform, env={**os.environ, **environment}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # No workers, none started, no Python thread but the main one; off Linux (or when asked for), numba's
    # threads instead, when there is more than one.
    portable = platform == "darwin" or os.environ.get("CONV1X1_THREADING") == "portable"
    launched = portable and "NUMBA_NUM_THREADS" not in environment and cpus_available() > 1
    assert done.stdout.split() == ["0", "0", "1", "portable" if portable else "pool", str(launched)]
    with np.load(tmp_path / "out.npz") as results:
        for name in problems:
            for threads in (None, 2):
                x, w, b = arrays[f"{name}_x"], arrays[f"{name}_w"], arrays[f"{name}_b"]
                assert_close_to_reference(results[f"{name}_{threads}"], x, w, b)


def test_prepare_compiles_what_a_pooled_call_runs(rng):
    """After prepare(), a call through the pool compiles nothing more (apply's timed work starts warm)."""
    x, w, b = problem(rng, 3000, 40, 72, "float64")  # 8.6M multiply-adds: pooled without patching
    packed = kernel.pack_bank(w, b)
    kernel.prepare(packed)
    compiled = {name: len(getattr(kernel, name).overloads) for name in ("run_alone", "run_pooled", "serve")}
    out = np.full((len(x), w.shape[1]), np.nan)
    kernel.apply_packed(x, packed, out, True)
    assert {name: len(getattr(kernel, name).overloads) for name in compiled} == compiled
    assert_close_to_reference(out, x, w, b)
    if kernel.worker_pool().n_workers:
        assert kernel.serve in packed.kind.entry_points and kernel.run_pooled in packed.kind.entry_points


@pytest.mark.skipif(cpus_available() < 2, reason="with one CPU every call runs alone: there is one path")
def test_the_one_thread_and_the_shared_code_compile_the_chunks_code_once(tmp_path):
    """run_alone and the pool's (or the portable) code call the same compute_chunk: with one cold
    cache, preparing both compiles it once (run_alone's literal chunk numbers compiled it a second
    time, 1.3 s of the 7.9 s it took on a Zen 1 host)."""
    code = (
        "import numpy as np; from conv1x1_cli import kernel; from conv1x1_cli.kernel import tiles; "
        "kernel.prepare(kernel.pack_bank(np.ones((32, 32), np.float32), None)); "
        "print(len(kernel.run_alone.signatures), len(tiles.compute_chunk.signatures))"
    )
    result = run_python(code, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cold-cache")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"], result.stdout


def test_the_entry_points_call_the_chunks_code_and_allocate_nothing(tmp_path):
    """compute_chunk's code is compiled once, and the entry points call it by its address: none of them
    holds a copy of it (LLVM compiled one into each, 0.2-0.25 s of a first run apiece on a Zen 1
    host), and none allocates (np.empty's code and its typing cost the sample's first run 0.6 s
    there): their arrays are on the stack."""
    code = (
        "import numpy as np; from conv1x1_cli import kernel; from conv1x1_cli.kernel import pool, tiles; "
        "kernel.prepare(kernel.pack_bank(np.ones((32, 32), np.float32), None)); "
        "entries = (tiles.run_alone, pool.run_pooled, pool.serve, pool.run_portable); "
        "print(*(entry.inspect_llvm(signature) for entry in entries for signature in entry.signatures), sep='\\n')"
    )
    result = run_python(code, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cold-cache")})
    assert result.returncode == 0, result.stderr
    definitions = [line for line in result.stdout.splitlines() if line.startswith("define")]
    assert any("run_alone" in line for line in definitions), definitions
    assert not [line for line in definitions if "compute_chunk" in line]
    assert "NRT_MemInfo_alloc" not in result.stdout


@pytest.mark.parametrize(
    ("channels", "filters", "dtype"),
    [
        (192, 8, F32),
        (192, 40, F32),
        (64, 130, np.float64),  # 66,560 bytes: read in place, the last panel copied
        (341, 24, F32),  # 32,736 bytes: copied with padded rows
        (342, 24, F32),  # 32,832 bytes: read in place
        (40, 1024, F32),
        (40, 512, np.float64),
    ],
)
def test_packed_banks_are_the_size_the_dask_planner_counts(channels, filters, dtype):
    """Exactly the packing rule's size for the unit compiled for, and never more than the planner's
    bound (the largest any unit packs)."""
    from conv1x1_cli.costs.packing import packed_bank_bytes, planned_bank_bytes
    from conv1x1_cli.kernel.target import simd_unit

    packed = kernel.pack_bank(np.ones((channels, filters), dtype), np.ones(filters, dtype))
    itemsize = np.dtype(dtype).itemsize
    packed_bytes = packed.panels.nbytes + packed.panel_bias.nbytes
    assert packed_bytes == packed_bank_bytes(channels, filters, itemsize, simd_unit())
    assert packed_bytes <= planned_bank_bytes(channels, filters, itemsize)
