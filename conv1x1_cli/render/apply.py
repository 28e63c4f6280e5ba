"""``apply``'s summary: shapes, counts and where the time went, from an ``ApplyReport``."""

from __future__ import annotations

from rich import box
from rich.table import Table

from .tables import count_text, shape_text


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
    table.add_row("time", _time_text(report))
    table.add_row(
        "speed",
        f"{_rate(flops, report.kernel_seconds)} GFLOP/s in the kernel, "
        f"{_rate(flops, report.seconds)} GFLOP/s end to end",
    )
    return table


def _time_text(report) -> str:
    """The run's time, with the kernel's share and, when it was measured, the kernel's set-up."""
    text = f"{report.seconds * 1e3:,.1f} ms (kernel {report.kernel_seconds * 1e3:,.1f} ms"
    if report.compiled:
        text += f"; compiling it {report.setup_seconds * 1e3:,.1f} ms, once: cached for later runs"
    elif report.setup_seconds:
        text += f"; loading it {report.setup_seconds * 1e3:,.1f} ms"
    return text + ")"


def _rate(flops: int, seconds: float) -> str:
    return f"{flops / seconds / 1e9:,.3g}" if seconds > 0 else "—"  # 3 digits: tiny runs are not "0.0"
