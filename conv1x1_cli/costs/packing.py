"""How the kernel cuts a filter bank into panels: the one rule that the kernel packs by and that the
Dask planner counts memory by. Plain integer arithmetic.

The kernel accumulates a tile of ``rows`` pixels x one panel of ``width`` filters in SIMD registers;
a bank's F filters are padded with zero columns to whole panels, and its bias likewise, so a packed
bank holds (C + 1) rows of ``padded_filters`` elements.

>>> tile_shape(filters=8, itemsize=4), packed_bank_bytes(channels=192, filters=8, itemsize=4)
((8, 8), 6176)
>>> tile_shape(filters=40, itemsize=4), packed_bank_bytes(channels=192, filters=40, itemsize=4)
((6, 64), 49408)
"""

from __future__ import annotations

# Bytes of one SIMD register the tiles are built for (AVX-512); panel widths are multiples of half of it.
VECTOR_BYTES = 64


def tile_shape(filters: int, itemsize: int) -> tuple[int, int]:
    """(pixel rows, panel width) of the accumulator tile for a bank of this many filters.

    Six rows of up to four vectors: 24 accumulators cover the FMA latency and leave registers for the
    panel loads and broadcasts. Narrower panels for narrow banks waste less padding; taller tiles
    (12 rows) measured slower, as each row is another pointer and another stream from memory.
    """
    lanes = VECTOR_BYTES // itemsize  # 16 float32 or 8 float64 per zmm register
    if filters <= lanes // 2:
        return 8, lanes // 2  # half a vector (e.g. F = 1..8 float32)
    if filters <= lanes:
        return 6, lanes
    if filters <= 2 * lanes:
        return 6, 2 * lanes
    return 6, 4 * lanes


def panel_count(filters: int, itemsize: int) -> int:
    """How many panels of the tile's width cover ``filters`` filters."""
    width = tile_shape(filters, itemsize)[1]
    return -(-filters // width)


def padded_filters(filters: int, itemsize: int) -> int:
    """``filters`` rounded up to whole panels: the width of the packed bank."""
    return panel_count(filters, itemsize) * tile_shape(filters, itemsize)[1]


def packed_bank_bytes(channels: int, filters: int, itemsize: int) -> int:
    """Bytes of a packed bank and bias: (C + 1) rows of the padded width."""
    return (channels + 1) * padded_filters(filters, itemsize) * itemsize
