"""``show``: one channel of an array as a heat-map table of its numbers."""

from __future__ import annotations

import math

import numpy as np
from rich import box
from rich.style import Style
from rich.table import Table
from rich.text import Text

from ..errors import InputError
from .tables import shape_text


def number_format(values) -> str:
    """Integers print as integers; anything else with four significant digits."""
    finite = [value for value in values if math.isfinite(value)]
    if finite and all(float(value).is_integer() for value in finite) and max(map(abs, finite)) < 1e15:
        return "{:.0f}"
    return "{:.4g}"


def heat_style(value: float, low: float, high: float) -> Style:
    """Blue for the smallest value through to red for the largest, text in a readable contrast."""
    if not math.isfinite(value):
        return Style(bgcolor="magenta", color="white", bold=True)
    share = 0.5 if high == low else (value - low) / (high - low)
    red, blue = int(40 + 200 * share), int(240 - 200 * share)
    green = int(70 + 90 * (1 - abs(2 * share - 1)))
    text = "black" if 0.3 < share < 0.8 else "white"
    return Style(bgcolor=f"rgb({red},{green},{blue})", color=text)


def slice_table(view, rows, columns, stats: dict, title: str, stride: int) -> Table:
    """A heat-map table of a 2-D slice (``view``) whose original row and column indices are given."""
    flat = [float(value) for value in view.ravel()]
    fmt = number_format(flat)
    finite = [value for value in flat if math.isfinite(value)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    caption = (
        f"shape {shape_text(stats['shape'])} · min {fmt.format(stats['min'])} · "
        f"max {fmt.format(stats['max'])} · mean {stats['mean']:.4g}"
    )
    if stride > 1:
        caption += f"\npreview: one row and column in {stride} (stride {stride}); indices are the originals"
    table = Table(title=title, caption=caption, box=box.SIMPLE, show_lines=False, pad_edge=False)
    table.add_column("", justify="right", style="dim")
    for column in columns:
        table.add_column(str(column), justify="right")
    for index, row in zip(rows, view, strict=True):
        cells = [Text(f" {fmt.format(float(value))} ", style=heat_style(float(value), low, high)) for value in row]
        table.add_row(str(index), *cells)
    return table


def channel_table(array: np.ndarray, channel: int, batch: int, layout: str, name: str, width: int, max_rows: int):
    """The table ``conv1x1 show`` prints: one channel of ``array`` (of one image of a batch), previewed
    with a stride when it is taller than ``max_rows`` or wider than ``width`` columns allow."""
    plane = channel_plane(array, channel, batch, layout, name)
    cell_width = max(len(f"{value:.4g}") for value in (plane.min(), plane.max(), 123.4)) + 3 if plane.size else 6
    max_columns = max(2, (width - 6) // cell_width)
    stride = max(1, math.ceil(plane.shape[0] / max_rows), math.ceil(plane.shape[1] / max_columns))
    rows, columns = range(0, plane.shape[0], stride), range(0, plane.shape[1], stride)
    stats = {
        "shape": plane.shape,
        "min": float(np.min(plane)),
        "max": float(np.max(plane)),
        "mean": float(np.mean(plane, dtype=np.float64)),
    }
    title = f"{name} · channel {channel}" + (f" · image {batch}" if array.ndim == 4 else "")
    return slice_table(plane[::stride, ::stride], rows, columns, stats, title, stride)


def channel_plane(array: np.ndarray, channel: int, batch: int, layout: str, name: str) -> np.ndarray:
    """The (H, W) plane of one channel (and one image of a batch)."""
    if array.ndim not in (2, 3, 4) or array.size == 0:
        raise InputError(f"{name}: can show 2-D, 3-D or 4-D non-empty arrays, got shape {array.shape}")
    if array.ndim == 4:
        if batch >= array.shape[0]:
            raise InputError(f"{name}: --batch {batch} is out of range: the batch has {array.shape[0]} images")
        array = array[batch]
    if array.ndim == 2:
        if channel != 0:
            raise InputError(f"{name}: --channel {channel} is out of range: a 2-D array has one channel")
        return array
    channels = array.shape[0] if layout == "nchw" else array.shape[-1]
    if channel >= channels:
        raise InputError(f"{name}: --channel {channel} is out of range: the array has {channels} channels")
    return array[channel] if layout == "nchw" else array[..., channel]
