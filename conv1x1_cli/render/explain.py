"""``explain``: one pixel walked through the layers, rendered from the JSON-ready dict of
``PixelExplanation.as_dict()`` (the JSON is that dict as it is).

Long vectors are summarised so that a page still reads: a filter's products are all shown up to
``SHOW_ALL`` channels; beyond, the first ``ENDS``, the last ``ENDS`` and the ``LARGEST`` largest in
magnitude, with a line saying how many are left out between them; the sum is always over every
channel. Vectors (the pixel's, each layer's output) are summarised the same way.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from rich.console import Group
from rich.text import Text

from .tables import shape_text

SHOW_ALL = 12  # values of a vector, or products of a filter, shown one by one up to this many
ENDS = 3  # beyond, the first and last few ...
LARGEST = 3  # ... and the largest in magnitude

_FLOAT32_MAX = 3.4028234663852886e38


def number_text(value: float, dtype: str = "float64") -> str:
    """A whole number as one (``2``, not ``2.0``); any other with the fewest significant digits that
    still identify it in ``dtype`` (float32: at most 9, float64: at most 17).

    >>> number_text(2.0), number_text(-0.0), number_text(0.1 * 3), number_text(0.1 * 3, "float32")
    ('2', '0', '0.30000000000000004', '0.3')
    """
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e15:
        return f"{value:.0f}"
    single = dtype == "float32" and abs(value) <= _FLOAT32_MAX
    target = _float32(value) if single else value
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if (_float32(float(text)) if single else float(text)) == target:
            return text
    return repr(value)


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (to nearest, ties to even, as C's cast does)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def small_text(value: float) -> str:
    """A difference or a bound: two significant digits."""
    return "0" if value == 0 else f"{value:.2g}"


def preview_indices(values: list[float]) -> list[int]:
    """Which entries of a long vector to show: all up to ``SHOW_ALL``; beyond, the first and last
    ``ENDS`` and the ``LARGEST`` largest in magnitude (NaN first), in index order.

    >>> preview_indices([0.0] * 20 + [5.0] + [1.0] * 9)
    [0, 1, 2, 20, 21, 22, 27, 28, 29]
    """
    count = len(values)
    if count <= SHOW_ALL:
        return list(range(count))
    return sorted({*range(ENDS), *range(count - ENDS, count), *largest_indices(values)})


def largest_indices(values: list[float], how_many: int = LARGEST) -> list[int]:
    """The indices of the ``how_many`` largest |values| (NaN counted largest; ties to the lower index)."""
    return sorted(range(len(values)), key=lambda index: (-_magnitude(values[index]), index))[:how_many]


def _magnitude(value: float) -> float:
    return math.inf if math.isnan(value) else abs(value)


def _gaps(indices: list[int]):
    """(index, entries left out just before it) along ``indices``."""
    previous = -1
    for index in indices:
        yield index, index - previous - 1
        previous = index


def vector_text(values: list[float], dtype: str) -> str:
    """``[1, 2, 3]``; a long vector as ``[0: 1, 1: 2, 2: 3, … 5 more …, 8: 9.1, …]`` plus what was kept."""
    if len(values) <= SHOW_ALL:
        return "[" + ", ".join(number_text(value, dtype) for value in values) + "]"
    parts = []
    for index, skipped in _gaps(preview_indices(values)):
        if skipped:
            parts.append(f"… {skipped} more …")
        parts.append(f"{index}: {number_text(values[index], dtype)}")
    kept = f"{len(values)} values: the first {ENDS}, the last {ENDS} and the {LARGEST} largest in magnitude"
    return "[" + ", ".join(parts) + f"]  ({kept})"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def explain_table(data: dict) -> Group:
    """The walk-through for people: the pixel, every layer's walked filters and output, apply's check
    as the last line."""
    dtype = data["compute_dtype"]
    parts = [_heading(data), Text(f"x = {vector_text(data['vector'], dtype)}"), Text()]
    for layer in data["layers"]:
        parts += [_layer_heading(layer, len(data["layers"])), *_layer_lines(layer, dtype)]
        if layer["index"] < len(data["layers"]):
            parts += [Text(f"  output of layer {layer['index']}: {vector_text(layer['output'], dtype)}")]
        parts += [Text()]
    row, col = data["pixel"]
    filters = _plural(len(data["output"]), "filter")
    unit = "2⁻²⁴" if dtype == "float32" else "2⁻⁵³"
    chain = ", each layer's carried on through the next" if len(data["layers"]) > 1 else ""
    notes = (
        "products and sums in float64 from the stored values, added in channel order\n"
        f"{dtype} rounding bound: (C + 1)·u·(Σ|x·w| + |b|), u = {unit} (README, Accuracy), plus the float64 "
        f"walk-through's own{chain}"
    )
    parts += [
        Text(notes, style="dim"),
        Text(f"output at pixel ({row}, {col}), {filters}: {vector_text(data['output'], dtype)}", style="bold"),
        _check_line(data),
    ]
    return Group(*parts)


def _heading(data: dict) -> Text:
    row, col = data["pixel"]
    image = "" if data["batch"] is None else f" of image {data['batch']}"
    text = Text(f"{data['input']} · pixel ({row}, {col}){image}", style="bold")
    layout = "" if len(data["shape"]) == 2 else f" {data['layout'].upper()}"
    channels = "one channel" if len(data["shape"]) == 2 else _plural(data["channels"], "channel")
    text.append(f" · {shape_text(data['shape'])}{layout} {data['dtype']}, {channels}", style="not bold")
    text.append(f" · apply computes in {data['compute_dtype']}", style="not bold")
    return text


def _layer_heading(layer: dict, layers: int) -> Text:
    where = f"layer {layer['index']} of {layers}" if layers > 1 else "layer"
    bias = f"bias {layer['bias']}" if layer["bias"] else "no bias"
    activation = "ReLU" if layer["activation"] == "relu" else "no activation (linear)"
    sizes = f"{_plural(layer['channels'], 'channel')} → {_plural(layer['filters'], 'filter')}"
    walked = len(layer["walked"])
    shown = "" if walked == layer["filters"] else f" · walked: {_walked_text(layer)} (output below has all)"
    return Text(f"{where}: {layer['bank']} · {sizes} · {bias} · {activation}{shown}", style="bold")


def _walked_text(layer: dict) -> str:
    return "filter " + ", ".join(str(walk["filter"]) for walk in layer["walked"])


@dataclass(frozen=True)
class _Row:
    """One line of a filter's walk: ``label  x · w = value  note`` (any part may be empty)."""

    label: str
    x: str = ""
    w: str = ""
    value: str = ""
    note: str = ""
    style: str = ""
    value_style: str = ""


def _layer_lines(layer: dict, dtype: str) -> list[Text]:
    """Every walked filter as rows of ``x · w = x·w``, then sum, + bias and the activation: columns
    aligned across the layer, laid out here rather than by a rich table so no line ends in padding."""
    rows = []
    for number, walk in enumerate(layer["walked"]):
        if number:
            rows.append(_Row(""))
        rows += _filter_rows(walk, layer["input"], layer["bias"] is not None, dtype)
    numbered = [row for row in rows if row.value]
    label, x, w, value = (max(len(getattr(row, key)) for row in numbered) for key in ("label", "x", "w", "value"))
    return [_line(row, label, x, w, value) for row in rows]


def _line(row: _Row, label: int, x: int, w: int, value: int) -> Text:
    if not row.value:  # a heading, a gap or a blank line
        return Text(row.label, style=row.style)
    times = " · " if row.x else "   "
    line = Text(f"{row.label:<{label}}   {row.x:>{x}}{times}{row.w:>{w}} = ")
    line.append(f"{row.value:>{value}}", style=row.value_style)
    if row.note:
        line.append(f"  {row.note}", style="dim")
    return line


def _filter_rows(walk: dict, inputs: list[float], has_bias: bool, dtype: str) -> list[_Row]:
    text = lambda value: number_text(value, dtype)  # noqa: E731
    products = walk["products"]
    rows = [_Row(f"  filter {walk['filter']}", style="bold")]
    marked = set(largest_indices(products)) if len(products) > SHOW_ALL else set()
    for channel, skipped in _gaps(preview_indices(products)):
        if skipped:
            rows.append(_Row(f"    … {_plural(skipped, 'more channel')}", style="dim"))
        note = "among the largest |x·w|" if channel in marked else ""
        x, w = text(inputs[channel]), text(walk["weights"][channel])
        rows.append(_Row(f"    channel {channel}", x, w, text(products[channel]), note))
    every = "" if len(products) <= SHOW_ALL else f" of all {len(products):,}"
    bias = "    + bias" if has_bias else "    + bias (none)"
    activation = "ReLU" if walk["activation"] == "relu" else "no activation"
    return [
        *rows,
        _Row(f"    sum{every}, in channel order", value=text(walk["sum"])),
        _Row(bias, w=text(walk["bias"]), value=text(walk["pre_activation"])),
        _Row(f"    {activation}", value=text(walk["output"]), value_style="bold"),
    ]


def _check_line(data: dict) -> Text:
    """apply's values at the pixel, and whether they match the walk-through within rounding."""
    check, dtype = data["apply"], data["compute_dtype"]
    row, col = data["pixel"]
    values = check["output"]
    shown = vector_text(values, dtype) if len(values) <= SHOW_ALL else f"its {len(values):,} values"
    line = Text(f"apply computes {shown} at pixel ({row}, {col}): ")
    worst = _worst_filter(check)
    difference, bound = small_text(abs(check["difference"][worst])), small_text(check["bound"][worst])
    if not check["agrees"]:
        line.append("DIFFERENT", style="bold red")
        line.append(f": filter {worst} differs by {difference}, beyond {dtype} rounding (bound {bound})")
    elif check["largest_difference"] == 0:
        line.append("the same", style="bold green")
        finite = math.isfinite(check["bound"][worst])
        line.append(f", difference 0 (within {dtype} rounding: bound {bound})" if finite else " (not finite)")
    else:
        where = "difference" if len(values) == 1 else f"nearest its bound: filter {worst}, difference"
        line.append(f"the same within {dtype} rounding", style="bold green")
        line.append(f"; {where} {difference}, bound {bound}")
    return line


def _worst_filter(check: dict) -> int:
    """The filter whose difference uses up the largest share of its bound (the first failing, if any)."""

    def share(index: int) -> float:
        difference, bound = abs(check["difference"][index]), check["bound"][index]
        if difference == 0:
            return 0.0
        if not bound or math.isnan(bound) or math.isnan(difference):
            return math.inf
        return difference / bound

    return max(range(len(check["difference"])), key=lambda index: (share(index), -index))
