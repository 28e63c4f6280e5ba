"""Dask block plans: tasks and memory per task, pure arithmetic checked by hand (no Dask needed)."""

from __future__ import annotations

import pytest

from conv1x1_cli.costs import parse_spec
from conv1x1_cli.costs.chunks import block_shape, chunk_plan, default_chunks, parse_chunks
from conv1x1_cli.errors import ArgumentError


def test_chunk_plan_counts_blocks_of_every_image():
    plan = chunk_plan(parse_spec("3x1000x1000x200"), [8], parse_chunks("256x512"))
    assert plan.tasks == 3 * 4 * 2
    assert plan.block_pixels == 256 * 512
    assert plan.input_block_bytes == 256 * 512 * 200 * 4
    assert plan.output_block_bytes == 256 * 512 * 8 * 4


def test_chunk_plan_memory_of_a_chain_holds_two_consecutive_layers():
    plan = chunk_plan(parse_spec("100x100x64"), [256, 32, 16], (100, 100), dtype="float64")
    pixels = 100 * 100
    assert plan.intermediate_bytes == pixels * (256 + 32) * 8 - pixels * 16 * 8
    banks = (65 * 256 + 257 * 32 + 33 * 16) * 8  # (C + 1 bias row) x F: every F fills whole float64 panels
    assert plan.per_task_bytes == pixels * 64 * 8 + pixels * (256 + 32) * 8 + banks


def test_chunks_larger_than_the_image_are_one_block_per_image():
    plan = chunk_plan(parse_spec("2x10x10x3"), [4], (4096, 4096))
    assert plan.tasks == 2 and plan.chunks == (10, 10)


def test_bad_chunk_specs_are_refused():
    for spec in ("256", "0x4", "axb", "1x2x3"):
        with pytest.raises(ArgumentError):
            parse_chunks(spec)


def test_default_chunks_are_whole_row_bands_near_the_target():
    rows, cols = default_chunks(parse_spec("1000x1000x200"), [8])
    assert cols == 1000 and 0.9 < rows * cols * 208 * 4 / (64 * 2**20) <= 1


@pytest.mark.parametrize(
    ("shape", "layout", "block"),
    [
        ((1000, 800, 200), "nhwc", (256, 128, 200)),
        ((4, 200, 1000, 800), "nchw", (1, 200, 256, 128)),
        ((100, 60), "nhwc", (100, 60)),  # one channel, smaller than a block: the whole image
    ],
)
def test_block_shape_keeps_every_channel_and_one_image(shape, layout, block):
    assert block_shape(shape, layout, [8], (256, 128)) == block
