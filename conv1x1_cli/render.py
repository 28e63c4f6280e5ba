"""Tables, JSON and CSV for people and scripts. Renders data it is given; computes nothing of its own."""

from __future__ import annotations

import csv
import io
import json
import math

from rich import box
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from .accounting import ChainCost

FORMATS = ("table", "json", "csv")
COST_COLUMNS = (
    "input",
    "output",
    "weights",
    "bias",
    "params",
    "macs",
    "flops",
    "input_bytes",
    "output_bytes",
    "weight_bytes",
)
CONVENTIONS_CAPTION = (
    "MACs = N·H·W·C·F multiply-accumulates\nFLOPs = 2·MACs + N·H·W·F bias additions (when biased)\n"
    "params = weights C·F + bias F"
)


def shape_text(shape) -> str:
    return "×".join(str(size) for size in shape)


def count_text(value: int) -> str:
    return f"{value:,}"


def bytes_text(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:,} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cost_json(chain: ChainCost) -> str:
    return json.dumps(chain.as_dict(), indent=2)


def cost_csv(chain: ChainCost) -> str:
    """One row per layer, then a total row when there is more than one layer."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["layer", *COST_COLUMNS])
    rows = [(str(index + 1), layer.as_dict()) for index, layer in enumerate(chain.layers)]
    if len(chain.layers) > 1:
        rows.append(("total", chain.as_dict()))
    for label, row in rows:
        writer.writerow(
            [label, *("x".join(map(str, row[key])) if key in ("input", "output") else row[key] for key in COST_COLUMNS)]
        )
    return buffer.getvalue()


def cost_table(chain: ChainCost, dtype: str) -> Table:
    """One row per layer (and a total for chains); memory in the caption, to stay within 80 columns."""
    totals = chain.as_dict()
    memory = (
        f"{dtype} memory: input {bytes_text(totals['input_bytes'])}, output {bytes_text(totals['output_bytes'])}, "
        f"params {bytes_text(totals['weight_bytes'])}"
    )
    table = Table(
        title="1×1 convolution cost",
        caption=f"{memory}\n{CONVENTIONS_CAPTION}",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    for header in ("#", "input", "output", "weights", "bias", "params", "MACs", "FLOPs"):
        table.add_column(header, justify="left" if header in ("#", "input", "output") else "right", no_wrap=True)
    for index, layer in enumerate(chain.layers, start=1):
        table.add_row(
            str(index), shape_text(layer.input), shape_text(layer.output), *_count_cells(totals=None, row=layer)
        )
    if len(chain.layers) > 1:
        table.add_section()
        table.add_row("Σ", shape_text(chain.input), shape_text(chain.output), *_count_cells(totals, None), style="bold")
    return table


def _count_cells(totals: dict | None, row) -> list[str]:
    keys = ("weights", "bias", "params", "macs", "flops")
    return [count_text(totals[key] if totals is not None else getattr(row, key)) for key in keys]


def print_cost(chain: ChainCost, fmt: str, dtype: str, console: Console) -> None:
    if fmt == "json":
        console.file.write(cost_json(chain) + "\n")
    elif fmt == "csv":
        console.file.write(cost_csv(chain))
    else:
        console.print(cost_table(chain, dtype))


def apply_summary(report) -> Table:
    """The compact after-run summary of ``apply`` (an ``ApplyReport``)."""
    flops = report.cost.total("flops")
    table = Table(box=box.SIMPLE, show_header=False, title="conv1x1 apply", title_justify="left", padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("input", shape_text(report.input_shape))
    for index, bank in enumerate(report.bank_shapes):
        label = "weights" if len(report.bank_shapes) == 1 else f"weights {index + 1}"
        table.add_row(label, shape_text(bank))
    table.add_row("output", shape_text(report.output_shape))
    table.add_row("params", count_text(report.cost.total("params")))
    table.add_row("MACs", count_text(report.cost.total("macs")))
    table.add_row("time", f"{report.seconds * 1e3:,.1f} ms (kernel {report.kernel_seconds * 1e3:,.1f} ms)")
    table.add_row(
        "speed",
        f"{_rate(flops, report.kernel_seconds)} GFLOP/s in the kernel, "
        f"{_rate(flops, report.seconds)} GFLOP/s end to end",
    )
    return table


def _rate(flops: int, seconds: float) -> str:
    return f"{flops / seconds / 1e9:,.1f}" if seconds > 0 else "—"


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
        caption += f"\npreview: every {stride}th row and column (stride {stride}); indices are the originals"
    table = Table(title=title, caption=caption, box=box.SIMPLE, show_lines=False, pad_edge=False)
    table.add_column("", justify="right", style="dim")
    for column in columns:
        table.add_column(str(column), justify="right")
    for index, row in zip(rows, view, strict=True):
        cells = [Text(f" {fmt.format(float(value))} ", style=heat_style(float(value), low, high)) for value in row]
        table.add_row(str(index), *cells)
    return table
