"""Volumes (N images of H×W pixels with C channels) and the specs users write for them.

Pure Python: exact integers, no NumPy, so ``conv1x1 shapes`` starts instantly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ArgumentError, InputError, tuple_text

DTYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8}
LAYOUTS = ("nhwc", "nchw")  # channels last or first
WEIGHT_LAYOUTS = ("cf", "fc")  # a 2-D bank as (C, F) or (F, C)
ACTIVATIONS = ("relu", "none")

_SPEC_SEPARATORS = re.compile(r"\s*[x×X*,]\s*")


@dataclass(frozen=True)
class Volume:
    """A batch of feature maps: N images of H x W pixels with C channels, in a given layout."""

    batch: int
    height: int
    width: int
    channels: int
    layout: str = "nhwc"
    batched: bool = False  # whether the user wrote N, so the output shape is written the same way

    @property
    def pixels(self) -> int:
        return self.batch * self.height * self.width

    def shape(self) -> tuple[int, ...]:
        """The shape as the user writes it, in this volume's layout."""
        if self.layout == "nchw":
            spatial = (self.channels, self.height, self.width)
        else:
            spatial = (self.height, self.width, self.channels)
        return (self.batch, *spatial) if self.batched else spatial

    def with_channels(self, channels: int) -> Volume:
        return Volume(self.batch, self.height, self.width, channels, self.layout, self.batched)

    @property
    def elements(self) -> int:
        return self.pixels * self.channels


def checked_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``, else an ArgumentError naming them."""
    if value not in choices:
        raise ArgumentError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def checked_threads(threads: object) -> int | None:
    """``threads`` as an int if it is a whole number >= 1, or None; else an ArgumentError.  A bool is
    refused: ``threads=True`` reads as "use threads" but, being 1, would run on one thread."""
    if threads is None:
        return None
    as_index = getattr(type(threads), "__index__", None)  # (ints and NumPy's integers have one)
    if as_index is None or isinstance(threads, bool):
        raise ArgumentError(f"threads must be a whole number of threads (or None), got {threads!r}")
    count = int(as_index(threads))
    if count < 1:
        raise ArgumentError(f"threads must be >= 1, got {count}")
    return count


def parse_positive(text: str, what: str) -> int:
    """An integer >= 1 written in decimal (underscores allowed, as in Python)."""
    cleaned = text.strip().replace("_", "")
    if not cleaned.isdigit() or not cleaned.isascii():
        raise ArgumentError(f"{what} must be a whole number, got {text!r}")
    value = int(cleaned)
    if value < 1:
        raise ArgumentError(f"{what} must be at least 1, got {value}")
    return value


def parse_spec(spec: str, layout: str = "nhwc") -> Volume:
    """Parse ``HxWxC`` / ``NxHxWxC`` (or ``CxHxW`` / ``NxCxHxW`` for layout ``nchw``).

    >>> parse_spec("28x28x192").shape()
    (28, 28, 192)
    >>> parse_spec("8x3x224x224", layout="nchw").channels
    3
    """
    checked_choice(layout, LAYOUTS, "layout")
    parts = _SPEC_SEPARATORS.split(spec.strip())
    expected = "CxHxW or NxCxHxW" if layout == "nchw" else "HxWxC or NxHxWxC"
    if len(parts) not in (3, 4) or not all(parts):
        raise ArgumentError(f"shape {spec!r} must be {expected}")
    sizes = [parse_positive(part, f"every size in {spec!r}") for part in parts]
    batched = len(sizes) == 4
    batch = sizes.pop(0) if batched else 1
    if layout == "nchw":
        channels, height, width = sizes
    else:
        height, width, channels = sizes
    return Volume(batch, height, width, channels, layout, batched)


def parse_filters(text: str) -> list[int]:
    """``"32"`` or a chain ``"96,48,10"``.

    >>> parse_filters("96, 48,10")
    [96, 48, 10]
    """
    parts = re.split(r"\s*,\s*", text.strip())
    if not text.strip() or not all(parts):
        raise ArgumentError(f"filters must be a number or a comma-separated list, got {text!r}")
    return [parse_positive(part, "every filter count") for part in parts]


def itemsize(dtype: str) -> int:
    """Bytes per element of a dtype named as in ``DTYPE_BYTES``."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ArgumentError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}") from None


def volume_of(shape: tuple[int, ...], layout: str, name: str) -> Volume:
    """The (N, H, W, C) geometry of an array's shape: a 2-D one-channel image, a 3-D volume or a 4-D batch.

    >>> volume_of((2, 32, 6, 6), "nchw", "x.npy").shape()
    (2, 32, 6, 6)
    """
    if len(shape) not in (2, 3, 4):
        raise InputError(f"{name}: input must be 2-D (H, W), 3-D or 4-D, got {len(shape)}-D shape {tuple_text(shape)}")
    if len(shape) == 2:
        return Volume(1, shape[0], shape[1], 1, layout, batched=False)
    batched = len(shape) == 4
    batch, rest = (shape[0], shape[1:]) if batched else (1, shape)
    height, width, channels = (rest[1], rest[2], rest[0]) if layout == "nchw" else rest
    return Volume(batch, height, width, channels, layout, batched)
