"""``model``: a model's layers and its summary by kind, as tables for people and rows for CSV."""

from __future__ import annotations

from rich.console import Group

from .tables import add_columns, count_text, file_text, levels_note, new_table, notes, printable, shape_text

LAYER_COLUMNS = (
    "name", "kind", "op", "input", "output", "kernel", "stride", "groups",
    "weights", "bias", "params", "macs", "flops", "intensity", "bound", "macs_share", "weights_share",
)  # fmt: skip
KIND_COLUMNS = ("layers", "macs", "macs_share", "weights", "weights_share", "params", "params_share")
TENSOR_COLUMNS = ("name", "kind", "shape", "dtype", "weights", "bias", "params")
MODEL_NOTES = (
    "MACs: weight multiply-accumulates (conv: N·H_out·W_out·F·C/groups·K_h·K_w; transposed: per input pixel; "
    "fully connected: rows·C·F)",
    "bias additions, activations, pooling and normalisation are not MACs; FLOPs = 2·MACs + bias additions",
    "weights: kernel entries only, as the MobileNet paper counts; a BatchNorm folded into a conv is its bias: params",
)


def is_listing(data: dict) -> bool:
    """Whether the report is a safetensors listing (tensors, no MACs) rather than a model's layers."""
    return "tensors" in data


def model_table(data: dict, title: str) -> Group:
    if is_listing(data):
        return _listing_table(data, title)
    table = new_table(f"{title}: layers with weights")
    with_roofline = "roofline" in data
    headers = ["#", "name", "kind", "input", "output", "kernel", "stride", "groups", "weights", "bias", "params"]
    headers += ["MACs", "FLOPs", *(["FLOP/B", "bound"] if with_roofline else []), "% MACs", "% weights"]
    add_columns(table, headers, left=5)
    for index, layer in enumerate(data["layers"], start=1):
        cells = [str(index), file_text(layer["name"]), layer["kind"], shape_text(layer["input"])]
        cells += [shape_text(layer["output"])]
        cells += [shape_text(layer["kernel"]) or "–", shape_text(layer["stride"]) or "–", str(layer["groups"])]
        cells += [count_text(layer[key]) for key in ("weights", "bias", "params", "macs", "flops")]
        if with_roofline:
            cells += [f"{layer['intensity']:,.1f}", f"{layer['bound']} ({layer['level']})"]
        cells += [_percent(layer["macs_share"]), _percent(layer["weights_share"])]
        table.add_row(*cells)
    lines = list(MODEL_NOTES)
    if with_roofline:
        limits = data["roofline"]
        if limits.get("levels"):
            lines.append(f"{levels_note(limits['levels'])}; peak {limits['peak_gflops']:,.0f} GFLOP/s")
            lines.append(f"limits: {limits['source']}")
        else:
            lines.append(
                f"roofline: compute-bound at ≥ {limits['ridge_intensity']:,.1f} FLOP/B "
                f"({limits['peak_gflops']:,.0f} GFLOP/s, {limits['bandwidth_gbs']:,.0f} GB/s; {limits['source']})"
            )
    return Group(table, _kinds_table(data, "Summary by kind"), notes(*lines, _uncosted_line(data["uncosted"])))


def _kinds_table(data: dict, title: str, listing: bool = False):
    table = new_table(title)
    columns = ("layers", "weights", "weights_share", "params", "params_share") if listing else KIND_COLUMNS
    headers = {"layers": "layers", "macs": "MACs", "weights": "weights", "params": "params"}
    add_columns(table, ["kind", *(headers.get(key, "%") for key in columns)], left=1)
    for kind, entry in data["by_kind"].items():
        table.add_row(kind, *(_cell(key, entry[key]) for key in columns))
    table.add_section()
    table.add_row("Σ", *(_total_cell(key, data) for key in columns), style="bold")
    return table


def _total_cell(key: str, data: dict) -> str:
    if key == "layers":
        return count_text(sum(entry["layers"] for entry in data["by_kind"].values()))
    if key.endswith("_share"):
        return _percent(100.0)
    return count_text(data["totals"][key])


def _listing_table(data: dict, title: str) -> Group:
    table = new_table(f"{title}: convolution and linear weights")
    add_columns(table, ["name", "kind", "shape", "dtype", "weights", "bias", "params"], left=4)
    for tensor in data["tensors"]:
        cells = [file_text(tensor["name"]), tensor["kind"], shape_text(tensor["shape"]), tensor["dtype"]]
        table.add_row(*cells, *(count_text(tensor[key]) for key in ("weights", "bias", "params")))
    others = f"other tensors (norms, embeddings, …): {data['other_tensors']:,}, with {data['other_values']:,} values"
    return Group(
        table, _kinds_table(data, "Summary by kind", listing=True), notes(data["note"] + ": MACs unknown", others)
    )


def _cell(key: str, value) -> str:
    return _percent(value) if key.endswith("_share") else count_text(value)


def _percent(value: float) -> str:
    return f"{value:.2f}"


def _uncosted_line(uncosted: dict) -> str:
    if not uncosted:
        return "every node of the graph was costed"
    counts = ", ".join(
        f"{count} {printable(op)}" for op, count in sorted(uncosted.items(), key=lambda item: (-item[1], item[0]))
    )
    return f"not costed (no weights of a file, or not a layer with MACs): {counts}"


def model_csv_rows(data: dict) -> list[list]:
    """One row per layer (or tensor), then one per kind and a total, told apart by the first column."""
    if is_listing(data):
        rows: list[list] = [["row", *TENSOR_COLUMNS]]
        rows += [["tensor", *(_csv(key, tensor[key]) for key in TENSOR_COLUMNS)] for tensor in data["tensors"]]
        for kind, entry in data["by_kind"].items():
            rows.append(["kind", kind, kind, "", "", entry["weights"], "", entry["params"]])
        return rows
    rows = [["row", *LAYER_COLUMNS]]
    rows += [["layer", *(_csv(key, layer.get(key, "")) for key in LAYER_COLUMNS)] for layer in data["layers"]]
    for kind, entry in data["by_kind"].items():
        summary = {"name": kind, "kind": kind, **entry}
        rows.append(["kind", *(_csv(key, summary.get(key, "")) for key in LAYER_COLUMNS)])
    rows.append(["total", *(_csv(key, {"name": "total", **data["totals"]}.get(key, "")) for key in LAYER_COLUMNS)])
    return rows


def _csv(key: str, value):
    return "x".join(map(str, value)) if isinstance(value, list) else value
