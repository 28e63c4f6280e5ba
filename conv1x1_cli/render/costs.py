"""``shapes``, ``bottleneck`` and ``inception``: their reports as tables for people and rows for CSV."""

from __future__ import annotations

from rich.console import Group

from .tables import (
    add_columns,
    bytes_text,
    count_text,
    csv_cell,
    layer_text,
    levels_note,
    new_table,
    notes,
    ratio_text,
    shape_text,
)

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


def _tool_cells(conventions: dict) -> list[str]:
    return [count_text(conventions[tool]) for tool in TOOL_COLUMNS]


def _tools_table(title: str, rows: list[tuple[str, dict]], totals: dict | None) -> Group:
    """Our MACs beside each tool's count, one row per entry in ``rows`` (label, entry) and a Σ row."""
    table = new_table(title)
    add_columns(table, ("", "our MACs", "torchinfo", "fvcore", "ptflops", "ptflops aten", "thop"), left=1)
    for label, entry in rows:
        table.add_row(label, count_text(entry["macs"]), *_tool_cells(entry["conventions"]))
    if totals is not None:
        table.add_section()
        table.add_row("Σ", count_text(totals["macs"]), *_tool_cells(totals["conventions"]), style="bold")
    return Group(table, notes(*TOOLS_NOTES))


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
        rows.append([label, *(csv_cell(key, flat.get(key, "")) for key in COST_COLUMNS), *plan])
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
    lines = [memory, *MACS_NOTES]
    if "roofline" in data:
        lines += _roofline_notes(data["roofline"], chain=len(data["layers"]) > 1)
    if "chunks" in data:
        lines.append(_chunks_note(data["chunks"]))
    table = new_table("1×1 convolution cost")
    headers = ["#", "input", "output", "weights", "bias", "params", "MACs", "FLOPs"]
    if "roofline" in data:
        headers += ["FLOP/B", "bound"]
    add_columns(table, headers, left=3)
    for index, layer in enumerate(data["layers"], start=1):
        table.add_row(str(index), *_shapes_cells(layer))
    if len(data["layers"]) > 1:
        table.add_section()
        table.add_row("Σ", *_shapes_cells(data), style="bold")
    rows = [(str(index), layer) for index, layer in enumerate(data["layers"], start=1)]
    tools = _tools_table("The same layers as other tools count them", rows, data if len(rows) > 1 else None)
    return Group(table, notes(*lines), tools)


def _shapes_cells(entry: dict) -> list[str]:
    cells = [shape_text(entry["input"]), shape_text(entry["output"])]
    cells += [count_text(entry[key]) for key in ("weights", "bias", "params", "macs", "flops")]
    if "intensity" in entry:
        cells += [f"{entry['intensity']:,.1f}", f"{entry['bound']} ({entry['level']})"]
    return cells


def _roofline_notes(limits: dict, chain: bool) -> list[str]:
    peak = limits["peak_gflops"]
    if limits.get("levels"):
        notes = [
            "FLOP/B = FLOPs per byte of input, output and params; bound: the roof that binds, and where the data are",
            f"{levels_note(limits['levels'])}; peak {peak:,.1f} GFLOP/s; limits: {limits['source']}",
        ]
    else:
        ridge, bandwidth = limits["ridge_intensity"], limits["bandwidth_gbs"]
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
    rows.append(["output", csv_cell("output", direct["output"]), csv_cell("output", reduced["output"]), ""])
    rows += [[key, direct[key], reduced[key], saving.get(key, "")] for key in BOTTLENECK_QUANTITIES]
    rows += [[tool, direct["conventions"][tool], reduced["conventions"][tool], ""] for tool in TOOL_COLUMNS]
    return rows


def bottleneck_table(data: dict) -> Group:
    """The two designs side by side, one row per quantity, with the saving; other tools' counts below."""
    direct, reduced, saving = data["direct"], data["bottleneck"], data["saving"]
    reduce_layer, kernel_layer = reduced["layers"]
    kernel = f"{kernel_layer['kernel']}×{kernel_layer['kernel']}"
    table = new_table(f"Direct {kernel} convolution against a 1×1 bottleneck, on {shape_text(direct['input'])}")
    add_columns(table, ("", f"direct {kernel}", f"1×1 reduce + {kernel}", "saving"), left=1)
    table.add_row("layers", _design_text(direct), _design_text(reduced), "")
    table.add_row("output", shape_text(direct["output"]), shape_text(reduced["output"]), "")
    for key in BOTTLENECK_QUANTITIES:
        ratio = ratio_text(saving[key]) if key in saving else ""
        table.add_row(QUANTITY_LABELS[key], count_text(direct[key]), count_text(reduced[key]), ratio)
    table.add_section()
    for tool in TOOL_COLUMNS:
        counts = (direct["conventions"][tool], reduced["conventions"][tool])
        table.add_row(tool.replace("_", " "), *map(count_text, counts), "")
    lines = (
        f"bottleneck MACs = {layer_text(reduce_layer)} {count_text(reduce_layer['macs'])} + "
        f"{layer_text(kernel_layer)} {count_text(kernel_layer['macs'])}; saving = direct ÷ bottleneck",
        *MACS_NOTES,
        *TOOLS_NOTES,
    )
    return Group(table, notes(*lines))


# ---- inception: four branches, concatenated -------------------------------------------------------

INCEPTION_CSV_COLUMNS = ("output", "output_channels", "weights", "bias", "params", "macs", "flops", *TOOL_COLUMNS)


def inception_csv_rows(data: dict) -> list[list]:
    """One row per branch, then the module's total (whose output is the concatenation)."""
    rows: list[list] = [["branch", "layers", *INCEPTION_CSV_COLUMNS]]
    total = {**data, "name": "total", "layers": []}
    for entry in [*data["branches"], total]:
        flat = {**entry, **entry["conventions"]}
        rows.append([entry["name"], _design_text(entry), *(csv_cell(key, flat[key]) for key in INCEPTION_CSV_COLUMNS)])
    return rows


def inception_table(data: dict) -> Group:
    """One row per branch and the module's total; other tools' counts below."""
    table = new_table(f"Inception module on {shape_text(data['input'])}")
    add_columns(table, ("branch", "layers", "out", "weights", "bias", "params", "MACs"), left=2)
    for branch in data["branches"]:
        table.add_row(branch["name"], _design_text(branch), str(branch["output_channels"]), *_module_cells(branch))
    table.add_section()
    concat = f"concat → {shape_text(data['output'])}"
    table.add_row("Σ", concat, str(data["output_channels"]), *_module_cells(data), style="bold")
    lines = (
        "out = output channels; the module's output concatenates the four branches along the channels",
        *MACS_NOTES,
        "max-pool: 3×3, stride 1, 'same': no params, no MACs, no FLOPs (it only compares)",
    )
    rows = [(branch["name"], branch) for branch in data["branches"]]
    return Group(table, notes(*lines), _tools_table("The same module as other tools count it", rows, data))


def _module_cells(entry: dict) -> list[str]:
    return [count_text(entry[key]) for key in ("weights", "bias", "params", "macs")]
