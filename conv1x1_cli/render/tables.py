"""What every rendering shares: numbers and shapes as text, tables in one style, notes under them,
and ``print_report``, which renders one report as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def shape_text(shape) -> str:
    return "×".join(str(size) for size in shape)


def count_text(value: int) -> str:
    return f"{value:,}"


def ratio_text(value: float) -> str:
    return f"{value:,.2f}×"


def bytes_text(value: int) -> str:
    if value < 1024:
        return f"{value:,} B"
    size = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            return f"{size:,.1f} {unit}"
    raise AssertionError("unreachable")


def every_nth(step: int, what: str) -> str:
    """``every row``, ``every 2nd row``, ``every 21st column``, ``every 12th row``."""
    if step == 1:
        return f"every {what}"
    suffix = "th" if step % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(step % 10, "th")
    return f"every {step}{suffix} {what}"


def levels_note(levels: list[dict]) -> str:
    """The bandwidths of each memory level, and how a layer's level is judged."""
    parts = [
        f"{level['name']}{'' if level['capacity_bytes'] is None else ' ' + bytes_text(level['capacity_bytes'])} "
        f"read {level['read_gbs']:,.0f} / write {level['write_gbs']:,.0f} GB/s"
        for level in levels
    ]
    return "roof: data in the smallest level that holds input, output and weights in half of it; " + "; ".join(parts)


def layer_text(layer: dict) -> str:
    """``3×3 96→128`` for a convolution, ``3×3 max-pool`` for a pool."""
    kernel = f"{layer['kernel']}×{layer['kernel']}"
    if layer["op"] == "max-pool":
        return f"{kernel} max-pool"
    return f"{kernel} {layer['channels']}→{layer['filters']}"


# Narrower than this (COLUMNS=0, a broken terminal size) no table is readable: lay out for 80 instead.
_NARROWEST = 20


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A reader gone (``| head``) is the caller's to report (exit 141); rich would exit with 1."""
        raise BrokenPipeError


def make_console(file=None, stderr: bool = False) -> Console:
    """A rich console for stdout (or ``file``, or stderr) that never lays out to a width of nothing."""
    console = _Console(file=file, stderr=stderr, highlight=False)
    if console.width < _NARROWEST:
        console.width = 80
    return console


def print_report(data: dict, fmt: str, console: Console, *, table, csv_rows) -> None:
    """One report, three renderings: ``data`` as JSON, ``csv_rows(data)`` as CSV, ``table(data)`` for people."""
    if fmt == "json":
        console.file.write(json.dumps(data, indent=2) + "\n")
    elif fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(csv_rows(data))
        console.file.write(buffer.getvalue())
    else:
        renderable = table(data)
        # Never squeeze a table of counts below its natural width, where rich would cut digits off:
        # piped output is 80 columns to rich, and a narrow terminal had better wrap lines than lose them.
        natural = Measurement.get(console, console.options.update(width=10_000), renderable).maximum
        console.width = max(console.width, natural)
        console.print(renderable)


def printable(name: str) -> str:
    """A name read from a file, its control characters (terminal escape sequences, newlines) written as
    escapes: a stranger's file may not restyle or rewrite the terminal, nor fake a row."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in name)


def file_text(name: str) -> Text:
    """A table cell of a name read from a file: ``printable``, and never read as rich markup."""
    return Text(printable(name))


def new_table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)


def notes(*lines: str) -> Text:
    """Notes under a table, as plain lines rather than a caption, so they need not fit its width."""
    return Text("\n".join(lines) + "\n", style="dim")


def add_columns(table: Table, headers, left: int) -> None:
    """The first ``left`` columns are labels (left-aligned), the rest numbers."""
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index < left else "right", no_wrap=True)


def csv_cell(key: str, value):
    return "x".join(map(str, value)) if key in ("input", "output") else value
