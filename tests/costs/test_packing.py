"""The packing rule that the kernel packs by and the Dask planner counts by: one rule, hand-checked."""

from __future__ import annotations

import pytest

from conv1x1_cli.costs import parse_spec
from conv1x1_cli.costs.chunks import chunk_plan
from conv1x1_cli.costs.packing import (
    AVX2,
    AVX512,
    GENERIC,
    NEON,
    PADDED_BANK_BYTES,
    channel_group,
    packed_bank_bytes,
    padded_filters,
    panel_count,
    planned_bank_bytes,
    tile_shape,
)


@pytest.mark.parametrize(
    ("filters", "itemsize", "shape", "padded"),
    [
        (1, 4, (8, 4), 4),  # a quarter of a zmm register of float32: 4 channels a step
        (4, 4, (8, 4), 4),
        (5, 4, (8, 8), 8),  # half a register: 2 channels a step
        (8, 4, (8, 8), 8),
        (9, 4, (8, 16), 16),  # one register: 8 rows
        (32, 4, (6, 32), 32),
        (40, 4, (6, 64), 64),  # one panel of four registers
        (130, 4, (6, 64), 192),  # three panels
        (3, 8, (8, 4), 4),  # float64: 8 lanes, half a register is 4
        (5, 8, (8, 8), 8),
    ],
)
def test_tile_shape_and_padding(filters, itemsize, shape, padded):
    assert tile_shape(filters, itemsize) == shape
    assert padded_filters(filters, itemsize) == padded


@pytest.mark.parametrize(
    ("unit", "filters", "itemsize", "shape"),
    [
        # AVX2: 8 float32 a ymm register, 16 registers: panels of up to two vectors (12 accumulators).
        (AVX2, 1, 4, (6, 4)),  # half a register: four channels a step in two (six rows of 12 accumulators)
        (AVX2, 5, 4, (6, 8)),  # one register: two channels a step in two (six rows of 12 accumulators)
        (AVX2, 8, 4, (6, 8)),
        (AVX2, 9, 4, (6, 16)),
        (AVX2, 64, 4, (6, 16)),
        (AVX2, 3, 8, (6, 4)),  # float64: 4 a register (paired), and no panel narrower than 4
        (AVX2, 5, 8, (6, 8)),
        # NEON: 4 float32 a register, 32 registers: up to four vectors (24 accumulators).
        (NEON, 1, 4, (8, 4)),  # one register (not paired: 16-byte vectors)
        (NEON, 9, 4, (6, 16)),
        (NEON, 64, 4, (6, 16)),
        (NEON, 9, 8, (6, 8)),
        # 128-bit vectors and 16 registers (SSE2, or an architecture without a rule of its own).
        (GENERIC, 64, 4, (6, 8)),
        (GENERIC, 64, 8, (6, 4)),
    ],
)
def test_tile_shapes_follow_the_registers_of_each_unit(unit, filters, itemsize, shape):
    assert tile_shape(filters, itemsize, unit) == shape


@pytest.mark.parametrize("unit", [AVX512, AVX2, NEON, GENERIC], ids=lambda unit: unit.name)
def test_the_planners_count_is_at_least_what_any_unit_packs(unit):
    """The Dask planner counts packed banks by the unit that packs them largest, whatever the workers run."""
    for itemsize in (4, 8):
        for filters in (*range(1, 300), 512, 1000, 1024, 2048, 4096):
            for channels in (7, 1024):  # (large banks are read in place: PADDED_BANK_BYTES)
                planned = planned_bank_bytes(channels, filters, itemsize)
                assert planned >= packed_bank_bytes(channels, filters, itemsize, unit)
            assert padded_filters(filters, itemsize, unit) >= filters


@pytest.mark.parametrize(
    ("unit", "filters", "itemsize", "panels"),
    [
        (AVX2, 1024, 4, 64),  # 64 panels of 16 float32 (rows 4 KiB apart: the tiles read copies of them)
        (AVX2, 2048, 4, 128),
        (AVX2, 512, 8, 64),  # 64 panels of 8 float64
        (AVX2, 512, 4, 32),
        (AVX2, 1000, 4, 63),  # the last one partly filled
        (AVX512, 1024, 4, 16),
        (AVX512, 64, 4, 1),
        (NEON, 1024, 4, 64),
        (GENERIC, 512, 8, 128),  # 4 float64 a panel (32 bytes)
    ],
)
def test_the_panels_just_cover_the_filters(unit, filters, itemsize, panels):
    assert panel_count(filters, itemsize, unit) == panels


@pytest.mark.parametrize(
    ("width", "lanes", "group"),
    [(4, 16, 4), (8, 16, 2), (16, 16, 1), (64, 16, 1), (4, 4, 1)],
)
def test_a_panel_narrower_than_a_vector_fills_it_with_channels(width, lanes, group):
    assert channel_group(width, lanes, 4) == group  # (16- and 64-byte vectors: not AVX2's pairs)


@pytest.mark.parametrize(
    ("width", "lanes", "itemsize", "group"),
    [
        (8, 8, 4, 2),  # AVX2, 8 float32 filters: one vector, two channels a step across two
        (4, 8, 4, 4),  # AVX2, 4 float32 filters: half a vector, four channels a step across two
        (4, 4, 8, 2),  # AVX2, 4 float64
        (16, 16, 4, 1),  # AVX-512: as before
        (8, 8, 8, 1),  # AVX-512, float64
        (4, 4, 4, 1),  # NEON or SSE, 16-byte vectors
        (16, 8, 4, 1),  # two vectors of filters
    ],
)
def test_a_panel_of_one_avx2_vector_takes_two_channels_a_step(width, lanes, itemsize, group):
    assert channel_group(width, lanes, itemsize) == group


def test_packed_narrow_banks_round_their_channels_up_to_whole_groups():
    # F = 8 float32 with AVX-512: 2 channels a row, so C = 193 packs as 194 (+ the bias row) x 8 x 4 bytes;
    # F = 3: 4 channels a row of a 4-wide panel, 196 + 1 rows; AVX2 packs F = 8 two channels a row
    # too (a row of two vectors), as it does F = 3 float64 in a 4-wide panel, and F = 3 float32 four
    # channels a row of a 4-wide panel (two vectors); NEON F = 4 one a row.
    assert packed_bank_bytes(193, 8, 4) == 195 * 8 * 4
    assert packed_bank_bytes(193, 3, 4) == 197 * 4 * 4
    assert packed_bank_bytes(193, 8, 4, AVX2) == 195 * 8 * 4
    assert packed_bank_bytes(193, 3, 4, AVX2) == 197 * 4 * 4
    assert packed_bank_bytes(193, 3, 8, AVX2) == 195 * 4 * 8
    assert packed_bank_bytes(193, 4, 4, NEON) == 194 * 4 * 4


def test_a_large_bank_ending_in_part_of_a_panel_counts_itself_and_a_copy_of_its_last_panel():
    # 24 float32 filters with AVX2: a panel of 16 and one of 8 padded to 16.  341 channels are
    # 32,736 bytes, copied with padded rows: (341 + 1 bias row) x 32 x 4.  342 channels are 32,832
    # bytes, over 32 KiB: the bank as it is (342 x 24), the padded bias (32) and the last panel (342 x 16).
    assert PADDED_BANK_BYTES == 32 * 1024
    assert packed_bank_bytes(341, 24, 4, AVX2) == 342 * 32 * 4 == 43_776
    assert packed_bank_bytes(342, 24, 4, AVX2) == (342 * 24 + 32 + 342 * 16) * 4 == 54_848
    # Whole panels, and a panel narrower than a vector (grouped channels), are never split so.
    assert packed_bank_bytes(1024, 1024, 4, AVX2) == 1025 * 1024 * 4
    assert packed_bank_bytes(8192, 3, 4) == 8193 * 4 * 4


def test_the_planner_counts_the_banks_as_the_kernel_packs_them():
    # C = 192: F = 8 packs into 8-wide panels, (192 + 1 bias row) x 8 x 4 bytes; F = 40 into one 64-wide panel.
    assert packed_bank_bytes(192, 8, 4) == 193 * 8 * 4 == 6_176
    assert packed_bank_bytes(192, 40, 4) == 193 * 64 * 4 == 49_408
    plan = chunk_plan(parse_spec("100x100x192"), [8], (10, 10))
    assert plan.bank_bytes == 6_176
    chain = chunk_plan(parse_spec("100x100x192"), [40, 8], (10, 10))
    assert chain.bank_bytes == 49_408 + packed_bank_bytes(40, 8, 4)
