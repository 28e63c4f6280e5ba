"""How the kernel cuts a filter bank into panels: the one rule that the kernel packs by and that the
Dask planner counts memory by. Plain integer arithmetic.

The kernel accumulates a tile of ``rows`` pixels x one panel of ``width`` filters in SIMD registers;
a bank's F filters are padded with zero columns to whole panels, and its bias likewise, so a packed
bank holds C rows (rounded up to whole ``channel_group``s for a panel narrower than a vector) and a
bias row, of ``padded_filters`` elements; except a bank of more than ``PADDED_BANK_BYTES`` that is
read in place, whose last panel alone is copied and padded (``packed_bank_bytes``).  The tile's
shape follows the SIMD unit the kernel is compiled for (``SimdUnit``: ``kernel.target`` tells
which one that is).

>>> tile_shape(filters=8, itemsize=4), packed_bank_bytes(channels=192, filters=8, itemsize=4)
((8, 8), 6176)
>>> tile_shape(filters=40, itemsize=4), packed_bank_bytes(channels=192, filters=40, itemsize=4)
((6, 64), 49408)
>>> tile_shape(filters=40, itemsize=4, simd=AVX2)
(6, 16)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimdUnit:
    """What the tile is shaped by: the vector registers of the instruction set compiled for.

    ``fused``: whether it has fused multiply-add instructions (without them each product is rounded
    before it is added, and an FMA would be a call into the C library per lane).
    """

    name: str
    vector_bytes: int
    registers: int
    fused: bool

    def lanes(self, itemsize: int) -> int:
        """Elements of ``itemsize`` bytes in one vector register (16 float32 or 8 float64 in a zmm one)."""
        return max(1, self.vector_bytes // itemsize)

    def describe(self) -> str:
        """'avx2: 16 x 256-bit registers, FMA', for reports."""
        fma = "FMA" if self.fused else "no FMA"
        return f"{self.name}: {self.registers} x {8 * self.vector_bytes}-bit registers, {fma}"


AVX512 = SimdUnit("avx512", vector_bytes=64, registers=32, fused=True)
AVX2 = SimdUnit("avx2", vector_bytes=32, registers=16, fused=True)
NEON = SimdUnit("neon", vector_bytes=16, registers=32, fused=True)
# Anything else: x86-64's baseline SSE2 (16 registers, no FMA), or an architecture we have no rule for.
GENERIC = SimdUnit("generic", vector_bytes=16, registers=16, fused=False)

# The narrowest panel (a power of two, as the kernel's width markers need). A panel narrower than a
# vector takes several channels per step (channel_group), so its vectors are full either way.
_MIN_WIDTH = 4
# Accumulator rows: six rows of up to four vectors (AVX-512, NEON: 24 of 32 registers) or two
# (AVX2, SSE: 12 of 16) cover the FMA latency and leave registers for the panel row's vectors and one
# broadcast pixel value.  Taller tiles (12 rows) measured slower, as each row is another pointer
# and another stream from memory.  A tile of one vector a row has 8 rows: with 6 it has only 6
# accumulators, fewer than the FMAs a Zen 5 core keeps in flight (two units, four cycles each), and
# 8 rows ran 7-15 % faster on 16 filters with AVX-512 and 8 with AVX2 (float64 too), on 28x28x192,
# 56x56x64 and 7x7x832 inputs.  With two vectors or more, 8 rows measured the same as 6.
_ROWS, _NARROW_ROWS = 6, 8
# A panel of one vector or less, of this many bytes a vector (AVX2's), takes twice the channels a step
# in two vectors (channel_group), in a tile of six rows: one broadcast per two multiply-adds, not one.
# Broadcasts are what the one-vector tile waits on: on a Zen 1 core, a loop of one load, 8 broadcasts
# and 8 FMAs a step (the 8x8 tile of 8 float32 filters) ran at 32 GFLOP/s in L1, one of 2 loads, 6
# broadcasts of channel pairs and 12 FMAs at 38 (the core's FMA peak is 40-43; C intrinsics, gcc -O3).
# AVX-512's and NEON's one-vector panels are cut as before: this host cannot run or time them.
_PAIRED_VECTOR_BYTES = 32


def tile_shape(filters: int, itemsize: int, simd: SimdUnit = AVX512) -> tuple[int, int]:
    """(pixel rows, panel width) of the accumulator tile for a bank of this many filters.

    The panel is the narrowest power of two (from 4) that holds the filters, up to four
    vectors with 32 registers or two with 16: narrower panels for narrow banks waste less padding.
    (The Dask planner counts a bank by the unit that packs it largest: ``planned_bank_bytes``.)
    """
    lanes = simd.lanes(itemsize)
    widest = lanes * (4 if simd.registers >= 32 else 2)
    width = _MIN_WIDTH
    while width < filters and width < widest:
        width *= 2
    vectors = width * channel_group(width, lanes, itemsize) // lanes
    return (_NARROW_ROWS if vectors == 1 else _ROWS), width


def channel_group(width: int, lanes: int, itemsize: int) -> int:
    """How many channels a tile of panel ``width`` takes per step, with vectors of ``lanes`` elements
    of ``itemsize`` bytes.

    A panel narrower than a vector (8 float32 filters in a 16-lane zmm register) would use half of
    each multiply-add and need one broadcast load per input element. Such a panel is packed with
    ``lanes // width`` consecutive channels side by side (``w[c, f], w[c + 1, f]`` at lanes 2f, 2f + 1),
    and the tile broadcasts that many adjacent input values at once: whole-vector multiply-adds and
    half the loads, its lanes added together at the end.

    With AVX2, a panel of one vector or less takes twice as many channels a step, packed the same way
    across two vectors (8 float32 filters: 2 channels; 4: 4; 4 float64: 2), so that each broadcast of
    input values feeds two multiply-adds instead of one (``_PAIRED_VECTOR_BYTES``).
    """
    group = lanes // width if width < lanes else 1
    if width <= lanes and lanes * itemsize == _PAIRED_VECTOR_BYTES:
        group *= 2
    return group


def panel_count(filters: int, itemsize: int, simd: SimdUnit = AVX512) -> int:
    """How many panels of the tile's width the packed bank's rows hold: enough to cover ``filters``.

    (Banks whose rows are a whole number of 4 KiB apart, 1024 float32 or 512 float64 filters in
    AVX2's 64-byte panels, used to get a spare panel of zeros, so that a panel's rows did not all
    fall into one set of L1.  Tiles with panels that narrow now read a panel from a contiguous copy
    whenever several pixel tiles use it (kernel.tiles.copies_panels), and the spare panel only cost
    a copy of the whole bank on every call: 7x7x1024->1024 ran 1.8x faster without it on a Zen 1 host.)"""
    width = tile_shape(filters, itemsize, simd)[1]
    return -(-filters // width)


def padded_filters(filters: int, itemsize: int, simd: SimdUnit = AVX512) -> int:
    """``filters`` rounded up to whole panels: the width of the packed bank."""
    return panel_count(filters, itemsize, simd) * tile_shape(filters, itemsize, simd)[1]


UNITS = (AVX512, AVX2, NEON, GENERIC)

# A bank whose F is not a whole number of panels (and whose panels are a vector or wider) is read in
# place when it is larger than this, with only its last panel copied, zero-padded to the panel's
# width; up to it, the whole bank is copied with its rows padded to whole panels.  A small bank's
# copy costs a few microseconds, and its tiles read the padded rows faster (784x96->24 on a Zen 1
# host, AVX2: 4 % slower in place, with rows 96 bytes apart); a large bank's copy costs more than
# the product on few pixels (7x7x1024->1000: 1.9 ms, the product 1.1 ms on two threads).
PADDED_BANK_BYTES = 32 * 1024


def planned_bank_bytes(channels: int, filters: int, itemsize: int) -> int:
    """What the Dask planner counts for a packed bank, whatever unit its workers compile for: the
    most that any of them packs."""
    return max(packed_bank_bytes(channels, filters, itemsize, unit) for unit in UNITS)


def packed_bank_bytes(channels: int, filters: int, itemsize: int, simd: SimdUnit = AVX512) -> int:
    """Bytes of a packed bank and bias as the kernel reads them: C rows (rounded up to whole channel
    groups) and a bias row, of the padded width; or, for a bank read in place whose last panel is
    partial, the bank's own C x F, the padded bias and the last panel's C rows.

    >>> packed_bank_bytes(channels=1024, filters=1000, itemsize=4, simd=AVX2)  # (1024*1000 + 63*16 + 1024*16) * 4
    4165568
    """
    width = tile_shape(filters, itemsize, simd)[1]
    group = channel_group(width, simd.lanes(itemsize), itemsize)
    padded = padded_filters(filters, itemsize, simd)
    if group == 1 and padded != filters and channels * filters * itemsize > PADDED_BANK_BYTES:
        return (channels * filters + padded + channels * width) * itemsize
    grouped_channels = -(-channels // group) * group
    return (grouped_channels + 1) * padded * itemsize
