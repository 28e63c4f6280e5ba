"""``show``: one channel of an array as a heat-map table of its numbers."""

from __future__ import annotations

import io
import math

import numpy as np
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.style import Style
from rich.table import Table
from rich.text import Text

from ..errors import ArgumentError, InputError
from .tables import every_nth, shape_text


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


def slice_table(view, rows, columns, stats: dict, title: str) -> Table:
    """A heat-map table of a 2-D slice (``view``) whose original row and column indices are given."""
    flat = [float(value) for value in view.ravel()]
    fmt = number_format(flat)
    whole = number_format([*flat, stats["min"], stats["max"]])  # the extremes may lie between the rows shown
    finite = [value for value in flat if math.isfinite(value)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    extremes = f"min {whole.format(stats['min'])} · max {whole.format(stats['max'])}"
    caption = f"{stats['what']} · {extremes} · mean {stats['mean']:.4g}"
    row_step, column_step = rows.step, columns.step
    if row_step > 1 or column_step > 1:
        caption += (
            f"\npreview: {every_nth(row_step, 'row')} and {every_nth(column_step, 'column')}; indices are the originals"
        )
    table = Table(title=title, caption=caption, box=box.SIMPLE, show_lines=False, pad_edge=False)
    table.add_column("", justify="right", style="dim", no_wrap=True)
    for column in columns:
        table.add_column(str(column), justify="right", no_wrap=True)
    for index, row in zip(rows, view, strict=True):
        cells = [Text(f" {fmt.format(float(value))} ", style=heat_style(float(value), low, high)) for value in row]
        table.add_row(str(index), *cells)
    return table


def what_is_shown(plane: tuple[int, ...], whole: tuple[int, ...]) -> str:
    """``shape 6×6`` for a 2-D array, ``6×6 of 6×6×32`` for one channel of a bigger one."""
    if plane == whole:
        return f"shape {shape_text(plane)}"
    return f"{shape_text(plane)} of {shape_text(whole)}"


def channel_table(array: np.ndarray, channel: int, batch: int, layout: str, name: str, width: int, max_rows: int):
    """The table ``conv1x1 show`` prints: one channel of ``array`` (of one image of a batch), previewed
    with a stride along the rows when it is taller than ``max_rows``, and along the columns when the
    table, measured as rich lays it out, would be wider than ``width``."""
    plane = channel_plane(array, channel, batch, layout, name)
    row_step = max(1, math.ceil(plane.shape[0] / max_rows))
    rows = range(0, plane.shape[0], row_step)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and -inf: the mean is nan, said as such
        stats = {
            "what": what_is_shown(plane.shape, array.shape),
            "min": float(np.min(plane)),
            "max": float(np.max(plane)),
            "mean": float(np.mean(plane, dtype=np.float64)),
        }
    title = f"{name} · channel {channel}" + (f" · image {batch}" if array.ndim == 4 else "")
    column_step = max(1, math.ceil(plane.shape[1] / max(2, width // 5)))  # no column is under 5 characters
    while True:
        columns = range(0, plane.shape[1], column_step)
        table = slice_table(plane[::row_step, ::column_step], rows, columns, stats, title)
        natural = _natural_width(table)
        if natural <= width or len(columns) <= 2:
            return table
        column_step = max(column_step + 1, math.ceil(column_step * natural / width))


def _natural_width(table: Table) -> int:
    """How wide rich lays the table out when nothing squeezes it."""
    console = Console(file=io.StringIO(), width=10_000, color_system=None)
    return Measurement.get(console, console.options, table).maximum


def image_of(array: np.ndarray, batch: int, name: str) -> np.ndarray:
    """One image (2-D or 3-D) of an array: the array itself, or image ``batch`` of a 4-D batch."""
    if array.ndim not in (2, 3, 4) or array.size == 0:
        raise InputError(f"{name}: can show 2-D, 3-D or 4-D non-empty arrays, got shape {array.shape}")
    if array.ndim == 4:
        if batch >= array.shape[0]:
            raise ArgumentError(f"{batch} is out of range: {name} has {array.shape[0]} images", option="--batch")
        return array[batch]
    if batch:
        raise ArgumentError(f"{batch}: {name} is {array.ndim}-D, not a batch of images", option="--batch")
    return array


def channels_last(array: np.ndarray, batch: int, layout: str, name: str) -> np.ndarray:
    """One image as (H, W, C): a 2-D image is one channel."""
    image = image_of(array, batch, name)
    if image.ndim == 2:
        return image[:, :, np.newaxis]
    return np.moveaxis(image, 0, -1) if layout == "nchw" else image


def channel_plane(array: np.ndarray, channel: int, batch: int, layout: str, name: str) -> np.ndarray:
    """The (H, W) plane of one channel (and one image of a batch)."""
    array = image_of(array, batch, name)
    if array.ndim == 2:
        if channel != 0:
            raise ArgumentError(f"{channel} is out of range: {name} is 2-D, one channel", option="--channel")
        return array
    channels = array.shape[0] if layout == "nchw" else array.shape[-1]
    if channel >= channels:
        raise ArgumentError(f"{channel} is out of range: {name} has {channels} channels", option="--channel")
    return array[channel] if layout == "nchw" else array[..., channel]
