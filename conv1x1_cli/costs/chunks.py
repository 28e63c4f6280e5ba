"""How a volume is cut into Dask blocks, and what one block costs: pure integer arithmetic.

A block holds a rectangle of ``rows x cols`` pixels of one image with every channel (a 1x1
convolution never needs a neighbour pixel, and it needs all of a pixel's channels at once), so the
number of tasks and the memory of each task follow from the volume, the chain and the block shape
alone. Like the rest of ``costs``, this imports neither NumPy nor Dask, so ``conv1x1 shapes --chunks``
starts instantly.

>>> from conv1x1_cli.costs import parse_spec
>>> plan = chunk_plan(parse_spec("1000x1000x200"), [8], parse_chunks("256x256"))
>>> plan.tasks, plan.block_pixels, plan.per_task_bytes
(16, 65536, 54532384)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..errors import ArgumentError
from .packing import planned_bank_bytes
from .volume import DTYPE_BYTES, Volume, volume_of

# Blocks near this size (input + output of one block) keep the engine's per-task overhead small
# next to the kernel's work and several blocks fit in a worker's memory (see benchmarks/dask_bench.py).
TARGET_BLOCK_BYTES = 64 * 2**20

_CHUNKS = re.compile(r"^\s*(\d+)\s*[x×X*,]\s*(\d+)\s*$")


def parse_chunks(spec: str) -> tuple[int, int]:
    """``ROWSxCOLS``: pixels per block along H and W (one image per block, all channels).

    >>> parse_chunks("256x512")
    (256, 512)
    """
    match = _CHUNKS.match(spec)
    if not match:
        raise ArgumentError(f"chunks must be ROWSxCOLS (pixels per block along H and W, e.g. 256x256), got {spec!r}")
    rows, cols = int(match.group(1)), int(match.group(2))
    if rows < 1 or cols < 1:
        raise ArgumentError(f"chunks must be positive, got {spec!r}")
    return rows, cols


def default_chunks(volume: Volume, filters: list[int], itemsize: int = 4) -> tuple[int, int]:
    """Row bands of whole image rows, about ``TARGET_BLOCK_BYTES`` of input and output each.

    Whole rows make a block one contiguous run of a channels-last .npy file, and of its output.

    >>> from conv1x1_cli.costs import parse_spec
    >>> default_chunks(parse_spec("4096x4096x64"), [32])
    (42, 4096)
    """
    per_pixel = (volume.channels + filters[-1]) * itemsize
    pixels = max(1, TARGET_BLOCK_BYTES // per_pixel)
    if pixels >= volume.width:
        return min(volume.height, pixels // volume.width), volume.width
    return 1, pixels


def block_shape(
    shape: tuple[int, ...], layout: str, filters: list[int], chunks: tuple[int, int] | None
) -> tuple[int, ...]:
    """The Dask block shape of an array of ``shape``: one image, ``rows x cols`` pixels (``chunks``, or
    ``default_chunks``) and every channel per block, in the array's own axis order.

    >>> block_shape((2, 64, 100, 100), "nchw", [8], (50, 30))
    (1, 64, 50, 30)
    """
    volume = volume_of(shape, layout, "input")
    rows, cols = chunks or default_chunks(volume, filters)
    rows, cols = min(rows, volume.height), min(cols, volume.width)
    if len(shape) == 2:
        return (rows, cols)
    spatial = (volume.channels, rows, cols) if layout == "nchw" else (rows, cols, volume.channels)
    return (1, *spatial) if len(shape) == 4 else spatial


@dataclass(frozen=True)
class ChunkPlan:
    """Tasks and per-task memory of a chain run block by block; every count an exact int.

    ``per_task_bytes`` = input block + the two largest consecutive live layer outputs (for one layer,
    just the output block) + the packed banks (``packing.planned_bank_bytes``: the kernel's own rule,
    for the unit that packs largest), all in the compute dtype. A channels-first layout or a dtype
    conversion adds one more input-sized copy; the store's codecs add their own buffers.
    """

    chunks: tuple[int, int]
    tasks: int
    block_pixels: int
    input_block_bytes: int
    output_block_bytes: int
    intermediate_bytes: int
    bank_bytes: int
    per_task_bytes: int

    def as_dict(self) -> dict:
        row = asdict(self)
        row["chunks"] = list(self.chunks)
        return row


def chunk_plan(volume: Volume, filters: list[int], chunks: tuple[int, int], dtype: str = "float32") -> ChunkPlan:
    """Number of blocks and memory per task for ``volume`` through a chain of ``filters``.

    >>> from conv1x1_cli.costs import parse_spec
    >>> plan = chunk_plan(parse_spec("2x100x100x64"), [32, 16], (50, 100))
    >>> plan.tasks, plan.input_block_bytes, plan.intermediate_bytes
    (4, 1280000, 640000)
    """
    itemsize = DTYPE_BYTES[dtype]
    rows, cols = min(chunks[0], volume.height), min(chunks[1], volume.width)
    tasks = volume.batch * -(-volume.height // rows) * -(-volume.width // cols)
    pixels = rows * cols
    outputs = [pixels * count * itemsize for count in filters]
    # Layer k reads layer k-1's output while writing its own; the input block stays alive throughout.
    live = max(before + after for before, after in zip([0, *outputs[:-1]], outputs, strict=True))
    channels_in = [volume.channels, *filters[:-1]]
    layers = zip(channels_in, filters, strict=True)
    banks = sum(planned_bank_bytes(channels, count, itemsize) for channels, count in layers)
    input_bytes = pixels * volume.channels * itemsize
    return ChunkPlan(
        chunks=(rows, cols),
        tasks=tasks,
        block_pixels=pixels,
        input_block_bytes=input_bytes,
        output_block_bytes=outputs[-1],
        intermediate_bytes=live - outputs[-1],
        bank_bytes=banks,
        per_task_bytes=input_bytes + live + banks,
    )
