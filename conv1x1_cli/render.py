"""Tables, JSON and CSV for people and scripts. Renders data it is given; computes nothing of its own."""

from __future__ import annotations

import csv
import io
import json
import math

from rich import box
from rich.console import Console, Group
from rich.measure import Measurement
from rich.style import Style
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "json", "csv")
TOOL_COLUMNS = ("torchinfo", "fvcore", "ptflops", "ptflops_aten", "thop")
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
    "intensity",
    "bound",
    *TOOL_COLUMNS,
)
MACS_NOTES = (
    "MACs = N·H·W·K²·C·F weight multiply-accumulates; bias, ReLU and max-pool are not MACs",
    "FLOPs = 2·MACs + N·H·W·F bias additions (when biased); params = weights K²·C·F + bias F",
)
TOOLS_NOTES = (
    'each tool called the usual way, on the layers with a ReLU after each (README: Whose "FLOPs"?)',
    "torchinfo: weights and bias, × N · fvcore, thop: weights only, × N",
    "ptflops: weights, bias, and every ReLU and max-pool twice, for 1 image",
    "ptflops aten: weights and bias, for 1 image",
)


def shape_text(shape) -> str:
    return "×".join(str(size) for size in shape)


def count_text(value: int) -> str:
    return f"{value:,}"


def ratio_text(value: float) -> str:
    return f"{value:,.2f}×"


def bytes_text(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:,} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def layer_text(layer: dict) -> str:
    """``3×3 96→128`` for a convolution, ``3×3 max-pool`` for a pool."""
    kernel = f"{layer['kernel']}×{layer['kernel']}"
    if layer["op"] == "max-pool":
        return f"{kernel} max-pool"
    return f"{kernel} {layer['channels']}→{layer['filters']}"


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


def _new_table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)


def _notes(*lines: str) -> Text:
    """Notes under a table, as plain lines rather than a caption, so they need not fit its width."""
    return Text("\n".join(lines) + "\n", style="dim")


def _add_columns(table: Table, headers, left: int) -> None:
    """The first ``left`` columns are labels (left-aligned), the rest numbers."""
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index < left else "right", no_wrap=True)


def _csv_cell(key: str, value):
    return "x".join(map(str, value)) if key in ("input", "output") else value


def _tool_cells(conventions: dict) -> list[str]:
    return [count_text(conventions[tool]) for tool in TOOL_COLUMNS]


def _tools_table(title: str, rows: list[tuple[str, dict]], totals: dict | None) -> Group:
    """Our MACs beside each tool's count, one row per entry in ``rows`` (label, entry) and a Σ row."""
    table = _new_table(title)
    _add_columns(table, ("", "our MACs", "torchinfo", "fvcore", "ptflops", "ptflops aten", "thop"), left=1)
    for label, entry in rows:
        table.add_row(label, count_text(entry["macs"]), *_tool_cells(entry["conventions"]))
    if totals is not None:
        table.add_section()
        table.add_row("Σ", count_text(totals["macs"]), *_tool_cells(totals["conventions"]), style="bold")
    return Group(table, _notes(*TOOLS_NOTES))


# ---- shapes: a chain of 1×1 layers ---------------------------------------------------------------


def shapes_csv_rows(data: dict) -> list[list]:
    """One row per layer, then a total row when there is more than one layer; with ``--chunks``, the
    Dask plan (which is for the whole chain) in two more columns of every row."""
    entries = [(str(index + 1), layer) for index, layer in enumerate(data["layers"])]
    if len(entries) > 1:
        entries.append(("total", data))
    plan = [data["chunks"]["tasks"], data["chunks"]["per_task_bytes"]] if "chunks" in data else []
    rows: list[list] = [["layer", *COST_COLUMNS, *(CHUNK_COLUMNS if plan else ())]]
    for label, entry in entries:
        flat = {**entry, **entry["conventions"]}
        rows.append([label, *(_csv_cell(key, flat.get(key, "")) for key in COST_COLUMNS), *plan])
    return rows


CHUNK_COLUMNS = ("dask_tasks", "dask_task_bytes")


def _chunks_note(plan: dict) -> str:
    rows, cols = plan["chunks"]
    return (
        f"Dask blocks of {rows}×{cols} pixels: {plan['tasks']:,} tasks, {bytes_text(plan['per_task_bytes'])} per task "
        f"(input {bytes_text(plan['input_block_bytes'])}, output {bytes_text(plan['output_block_bytes'])}, "
        f"intermediate {bytes_text(plan['intermediate_bytes'])}, banks {bytes_text(plan['bank_bytes'])})"
    )


def shapes_table(data: dict, dtype: str = "float32") -> Group:
    """One row per layer (and a total for chains) with its roofline; other tools' counts underneath.
    Memory and the roofline's limits go in notes under it, to stay within 100 columns."""
    memory = (
        f"{dtype} memory: input {bytes_text(data['input_bytes'])}, output {bytes_text(data['output_bytes'])}, "
        f"params {bytes_text(data['weight_bytes'])}"
    )
    notes = [memory, *MACS_NOTES]
    if "roofline" in data:
        notes += _roofline_notes(data["roofline"], chain=len(data["layers"]) > 1)
    if "chunks" in data:
        notes.append(_chunks_note(data["chunks"]))
    table = _new_table("1×1 convolution cost")
    headers = ["#", "input", "output", "weights", "bias", "params", "MACs", "FLOPs"]
    if "roofline" in data:
        headers += ["FLOP/B", "bound"]
    _add_columns(table, headers, left=3)
    for index, layer in enumerate(data["layers"], start=1):
        table.add_row(str(index), *_shapes_cells(layer))
    if len(data["layers"]) > 1:
        table.add_section()
        table.add_row("Σ", *_shapes_cells(data), style="bold")
    rows = [(str(index), layer) for index, layer in enumerate(data["layers"], start=1)]
    tools = _tools_table("The same layers as other tools count them", rows, data if len(rows) > 1 else None)
    return Group(table, _notes(*notes), tools)


def _shapes_cells(entry: dict) -> list[str]:
    cells = [shape_text(entry["input"]), shape_text(entry["output"])]
    cells += [count_text(entry[key]) for key in ("weights", "bias", "params", "macs", "flops")]
    if "intensity" in entry:
        cells += [f"{entry['intensity']:,.1f}", entry["bound"]]
    return cells


def _roofline_notes(limits: dict, chain: bool) -> list[str]:
    ridge, peak, bandwidth = limits["ridge_intensity"], limits["peak_gflops"], limits["bandwidth_gbs"]
    notes = [
        f"FLOP/B = FLOPs per byte of input, output and params; compute-bound at ≥ {ridge:,.1f} FLOP/B, the ridge",
        f"point: {peak:,.1f} GFLOP/s peak ÷ {bandwidth:,.1f} GB/s bandwidth; limits: {limits['source']}",
    ]
    if chain:
        notes.append("Σ: the chain fused, intermediates kept in memory (as apply does)")
    return notes


# ---- bottleneck: direct K×K against 1×1 reduce + K×K ----------------------------------------------

BOTTLENECK_QUANTITIES = ("weights", "bias", "params", "macs", "flops")
QUANTITY_LABELS = {"weights": "weights", "bias": "bias", "params": "params", "macs": "MACs", "flops": "FLOPs"}


def _design_text(design: dict) -> str:
    return " + ".join(map(layer_text, design["layers"]))


def bottleneck_csv_rows(data: dict) -> list[list]:
    """The table's rows: one per quantity, the two designs side by side, then the saving."""
    direct, reduced, saving = data["direct"], data["bottleneck"], data["saving"]
    rows: list[list] = [["quantity", "direct", "bottleneck", "saving"]]
    rows.append(["layers", _design_text(direct), _design_text(reduced), ""])
    rows.append(["output", _csv_cell("output", direct["output"]), _csv_cell("output", reduced["output"]), ""])
    rows += [[key, direct[key], reduced[key], saving.get(key, "")] for key in BOTTLENECK_QUANTITIES]
    rows += [[tool, direct["conventions"][tool], reduced["conventions"][tool], ""] for tool in TOOL_COLUMNS]
    return rows


def bottleneck_table(data: dict) -> Group:
    """The two designs side by side, one row per quantity, with the saving; other tools' counts below."""
    direct, reduced, saving = data["direct"], data["bottleneck"], data["saving"]
    reduce_layer, kernel_layer = reduced["layers"]
    kernel = f"{kernel_layer['kernel']}×{kernel_layer['kernel']}"
    table = _new_table(f"Direct {kernel} convolution against a 1×1 bottleneck, on {shape_text(direct['input'])}")
    _add_columns(table, ("", f"direct {kernel}", f"1×1 reduce + {kernel}", "saving"), left=1)
    table.add_row("layers", _design_text(direct), _design_text(reduced), "")
    table.add_row("output", shape_text(direct["output"]), shape_text(reduced["output"]), "")
    for key in BOTTLENECK_QUANTITIES:
        ratio = ratio_text(saving[key]) if key in saving else ""
        table.add_row(QUANTITY_LABELS[key], count_text(direct[key]), count_text(reduced[key]), ratio)
    table.add_section()
    for tool in TOOL_COLUMNS:
        counts = (direct["conventions"][tool], reduced["conventions"][tool])
        table.add_row(tool.replace("_", " "), *map(count_text, counts), "")
    notes = (
        f"bottleneck MACs = {layer_text(reduce_layer)} {count_text(reduce_layer['macs'])} + "
        f"{layer_text(kernel_layer)} {count_text(kernel_layer['macs'])}; saving = direct ÷ bottleneck",
        *MACS_NOTES,
        *TOOLS_NOTES,
    )
    return Group(table, _notes(*notes))


# ---- inception: four branches, concatenated -------------------------------------------------------

INCEPTION_CSV_COLUMNS = ("output", "output_channels", "weights", "bias", "params", "macs", "flops", *TOOL_COLUMNS)


def inception_csv_rows(data: dict) -> list[list]:
    """One row per branch, then the module's total (whose output is the concatenation)."""
    rows: list[list] = [["branch", "layers", *INCEPTION_CSV_COLUMNS]]
    total = {**data, "name": "total", "layers": []}
    for entry in [*data["branches"], total]:
        flat = {**entry, **entry["conventions"]}
        rows.append([entry["name"], _design_text(entry), *(_csv_cell(key, flat[key]) for key in INCEPTION_CSV_COLUMNS)])
    return rows


def inception_table(data: dict) -> Group:
    """One row per branch and the module's total; other tools' counts below."""
    table = _new_table(f"Inception module on {shape_text(data['input'])}")
    _add_columns(table, ("branch", "layers", "out", "weights", "bias", "params", "MACs"), left=2)
    for branch in data["branches"]:
        table.add_row(branch["name"], _design_text(branch), str(branch["output_channels"]), *_module_cells(branch))
    table.add_section()
    concat = f"concat → {shape_text(data['output'])}"
    table.add_row("Σ", concat, str(data["output_channels"]), *_module_cells(data), style="bold")
    notes = (
        "out = output channels; the module's output concatenates the four branches along the channels",
        *MACS_NOTES,
        "max-pool: 3×3, stride 1, 'same': no params, no MACs, no FLOPs (it only compares)",
    )
    rows = [(branch["name"], branch) for branch in data["branches"]]
    return Group(table, _notes(*notes), _tools_table("The same module as other tools count it", rows, data))


def _module_cells(entry: dict) -> list[str]:
    return [count_text(entry[key]) for key in ("weights", "bias", "params", "macs")]


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


BENCH_HEADERS = (
    "layer",
    "N·H·W·C→F",
    "ours",
    "NumPy",
    "torch",
    "×NumPy",
    "×torch",
    "FLOP/B",
    "bound",
    "%roof",
    "%peak",
    "ok",
)


def bench_table(report: dict) -> Group:
    """``conv1x1 bench``: GFLOP/s per layer for us, NumPy and PyTorch, ratios and the roofline."""
    table = _new_table("conv1x1 bench: GFLOP/s, float32, medians of repeats")
    _add_columns(table, BENCH_HEADERS, left=2)
    for row in report["layers"]:
        table.add_row(
            row["name"],
            row["spec"],
            _gflops_text(row["ours_gflops"]),
            _gflops_text(row["numpy_gflops"]),
            _gflops_text(row["torch_gflops"]),
            _optional_ratio(row["vs_numpy"]),
            _optional_ratio(row["vs_torch"]),
            f"{row['intensity']:.1f}",
            row["bound"],
            f"{row['percent_of_attainable']:.0f}",
            f"{row['percent_of_peak']:.0f}",
            "yes" if row["verified"] else Text("NO", style="bold red"),
        )
    return Group(table, _notes(*_bench_notes(report)))


def _gflops_text(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _optional_ratio(value: float | None) -> str:
    return "—" if value is None else ratio_text(value)


def _bench_notes(report: dict) -> list[str]:
    machine, limits, summary = report["machine"], report["limits"], report["summary"]
    blas = (
        "; ".join(
            f"{entry.get('internal_api')} {entry.get('version')} ({entry.get('architecture')} kernel, "
            f"{entry.get('num_threads')} threads)"
            for entry in machine["blas"]
        )
        or "unknown"
    )
    peak = summary["median_percent_of_peak_compute_bound"]
    notes = [
        f"GFLOP/s = {report['flops']}; ratios are our speed over theirs (>1: we are faster)",
        f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores; numpy {machine['numpy']} with {blas}; "
        f"numba {machine['numba']}; torch {machine['torch'] or 'not installed'}",
        f"limits: FMA peak {limits['peak_gflops']:.1f} GFLOP/s, NumPy sgemm {limits['sgemm_gflops']:.1f} GFLOP/s, "
        f"bandwidth {limits['bandwidth_gbs']:.1f} GB/s"
        + (" (saved for conv1x1 shapes)" if report["limits_saved"] else ""),
        "vs NumPy: "
        + _median_and_min(summary["median_vs_numpy"], summary["min_vs_numpy"])
        + "; vs torch: "
        + _median_and_min(summary["median_vs_torch"], summary["min_vs_torch"]),
        f"worst layer: {summary['worst_layer']} at {_optional_ratio(summary['worst_vs_best'])} of the faster other; "
        f"compute-bound layers at a median {'—' if peak is None else f'{peak:.0f}%'} of the FMA peak",
    ]
    if summary["mismatches"]:
        notes.append(f"RESULTS DIFFERING FROM NUMPY: {', '.join(summary['mismatches'])}")
    notes += [f"warning: {warning}" for warning in machine["warnings"]]
    return notes


def _median_and_min(median: float | None, minimum: float | None) -> str:
    return f"median {_optional_ratio(median)}, min {_optional_ratio(minimum)}"


def bench_csv_rows(report: dict) -> list[list]:
    keys = (
        "name",
        "spec",
        "ours_gflops",
        "numpy_gflops",
        "torch_gflops",
        "vs_numpy",
        "vs_torch",
        "intensity",
        "bound",
        "percent_of_attainable",
        "percent_of_peak",
        "verified",
    )
    return [list(keys), *([row[key] for key in keys] for row in report["layers"])]
