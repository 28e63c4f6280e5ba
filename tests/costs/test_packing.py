"""The packing rule that the kernel packs by and the Dask planner counts by: one rule, hand-checked."""

from __future__ import annotations

import pytest

from conv1x1_cli.costs import parse_spec
from conv1x1_cli.costs.chunks import chunk_plan
from conv1x1_cli.costs.packing import packed_bank_bytes, padded_filters, tile_shape


@pytest.mark.parametrize(
    ("filters", "itemsize", "shape", "padded"),
    [
        (1, 4, (8, 8), 8),  # half a zmm register of float32
        (8, 4, (8, 8), 8),
        (9, 4, (6, 16), 16),
        (32, 4, (6, 32), 32),
        (40, 4, (6, 64), 64),  # one panel of four registers
        (130, 4, (6, 64), 192),  # three panels
        (3, 8, (8, 4), 4),  # float64: 8 lanes, half a register is 4
        (5, 8, (6, 8), 8),
    ],
)
def test_tile_shape_and_padding(filters, itemsize, shape, padded):
    assert tile_shape(filters, itemsize) == shape
    assert padded_filters(filters, itemsize) == padded


def test_the_planner_counts_the_banks_as_the_kernel_packs_them():
    # C = 192: F = 8 packs into 8-wide panels, (192 + 1 bias row) x 8 x 4 bytes; F = 40 into one 64-wide panel.
    assert packed_bank_bytes(192, 8, 4) == 193 * 8 * 4 == 6_176
    assert packed_bank_bytes(192, 40, 4) == 193 * 64 * 4 == 49_408
    plan = chunk_plan(parse_spec("100x100x192"), [8], (10, 10))
    assert plan.bank_bytes == 6_176
    chain = chunk_plan(parse_spec("100x100x192"), [40, 8], (10, 10))
    assert chain.bank_bytes == 49_408 + packed_bank_bytes(40, 8, 4)
