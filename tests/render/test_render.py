"""Tables, JSON and CSV: three renderings of the same data, no digit lost at any width."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from conv1x1_cli.costs import bottleneck_cost, chain_cost, inception_cost, parse_spec
from conv1x1_cli.costs.roofline import MachineLimits
from conv1x1_cli.render.costs import (
    bottleneck_csv_rows,
    bottleneck_table,
    inception_csv_rows,
    inception_table,
    shapes_csv_rows,
    shapes_table,
)
from conv1x1_cli.render.tables import layer_text, print_report

LIMITS = MachineLimits(peak_gflops=100.0, sgemm_gflops=80.0, bandwidth_gbs=10.0, threads=2, source="measured (test)")


def chain_data(spec="32x32x192", filters=(96, 48, 10)):
    return chain_cost(parse_spec(spec), list(filters)).as_dict(LIMITS)


def bottleneck_data():
    return bottleneck_cost(parse_spec("28x28x192"), reduce=16, kernel=5, filters=32).as_dict()


def inception_data():
    return inception_cost(parse_spec("28x28x192"), [64, 96, 128, 16, 32, 32]).as_dict()


def render(data, fmt, table, csv_rows, width=80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    print_report(data, fmt, console, table=table, csv_rows=csv_rows)
    return console.file.getvalue()


def parse_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_json_is_the_data_itself():
    data = chain_data()
    assert json.loads(render(data, "json", shapes_table, shapes_csv_rows)) == data


def test_shapes_csv_has_a_row_per_layer_and_a_total_with_roofline_and_tools():
    rows = parse_csv(render(chain_data(), "csv", shapes_table, shapes_csv_rows))
    assert [row["layer"] for row in rows] == ["1", "2", "3", "total"]
    assert rows[0]["output"] == "32x32x96" and rows[-1]["output"] == "32x32x10"
    assert rows[-1]["macs"] == str(1024 * (192 * 96 + 96 * 48 + 48 * 10))
    assert rows[-1]["ptflops"] == "24557568" and rows[-1]["fvcore"] == rows[-1]["macs"]
    assert {row["bound"] for row in rows} <= {"compute", "memory"} and float(rows[0]["intensity"]) > 0


def test_shapes_table_shows_every_digit_even_when_80_columns_are_too_few():
    text = render(chain_data("8x224x224x1024", (2048, 1000)), "table", shapes_table, shapes_csv_rows)
    data = chain_data("8x224x224x1024", (2048, 1000))
    for value in (data["macs"], data["flops"], data["conventions"]["ptflops"], data["layers"][0]["macs"]):
        assert f"{value:,}" in text
    assert "…" not in text


def test_shapes_table_roofline_columns_and_limits():
    text = render(chain_data(), "table", shapes_table, shapes_csv_rows, width=120)
    assert "FLOP/B" in text and "compute" in text
    assert "10.0 FLOP/B" in text and "100.0 GFLOP/s" in text and "measured (test)" in text
    assert "Σ" in text and "24,242,176" in text  # torchinfo's count for the chain


def test_single_layer_has_no_total_row():
    text = render(chain_data("28x28x192", (32,)), "table", shapes_table, shapes_csv_rows, width=120)
    assert "Σ" not in text and "4,892,160" in text  # ptflops' count for the lecture layer


def test_bottleneck_table_puts_the_lecture_numbers_side_by_side():
    text = render(bottleneck_data(), "table", bottleneck_table, bottleneck_csv_rows)
    macs_line = next(line for line in text.splitlines() if line.strip().startswith("MACs"))
    assert "120,422,400" in macs_line and "12,443,648" in macs_line and "9.68×" in macs_line
    assert "2,408,448" in text and "10,035,200" in text


def test_bottleneck_csv_one_row_per_quantity():
    rows = {row["quantity"]: row for row in parse_csv(render(bottleneck_data(), "csv", None, bottleneck_csv_rows))}
    assert (rows["macs"]["direct"], rows["macs"]["bottleneck"]) == ("120422400", "12443648")
    assert float(rows["macs"]["saving"]) == pytest.approx(120_422_400 / 12_443_648)
    assert rows["output"]["direct"] == rows["output"]["bottleneck"] == "28x28x32"
    assert rows["thop"]["bottleneck"] == "12443648" and rows["torchinfo"]["direct"] == "120447488"


def test_inception_table_and_csv_carry_the_same_numbers():
    data = inception_data()
    text = render(data, "table", inception_table, inception_csv_rows)
    rows = parse_csv(render(data, "csv", inception_table, inception_csv_rows))
    assert [row["branch"] for row in rows] == ["1×1", "3×3", "5×5", "pool proj", "total"]
    assert rows[-1]["output"] == "28x28x256" and rows[-1]["params"] == "163696" and rows[-1]["macs"] == "128049152"
    assert rows[3]["layers"] == "3×3 max-pool + 1×1 192→32" and rows[3]["ptflops"] == str(4_841_984 + 2 * 784 * 224)
    for value in ("163,328", "163,696", "128,049,152", "129,215,744", "28×28×256"):
        assert value in text


def test_layer_text_names_kernels_and_channels():
    layers = inception_data()["branches"][3]["layers"]
    assert [layer_text(layer) for layer in layers] == ["3×3 max-pool", "1×1 192→32"]


def test_bench_renders_as_table_and_csv_from_one_report(tmp_path, monkeypatch):
    """A real (tiny) bench run, rendered both ways; the numbers in the table are the report's."""
    from rich.console import Console

    from conv1x1_cli.bench.suite import BenchLayer, run_bench
    from conv1x1_cli.render.bench import bench_csv_rows, bench_table

    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))
    report = run_bench(quick=True, torch=False, layers=[BenchLayer("tiny", 1, 8, 8, 16, 8)], save=False).as_dict()
    console = Console(width=200, record=True, color_system=None)
    console.print(bench_table(report))
    text = console.export_text()
    row = report["layers"][0]
    assert "tiny" in text and f"{row['ours_gflops']:,.1f}" in text and "yes" in text
    header, values = bench_csv_rows(report)
    assert dict(zip(header, values, strict=True))["ours_gflops"] == row["ours_gflops"]


def apply_report(**timings):
    from conv1x1_cli.costs import Volume
    from conv1x1_cli.engine.layers import Layer
    from conv1x1_cli.engine.report import ApplyReport

    bank = np.ones((192, 32), np.float32)
    layer = Layer(bank=bank, bias=None, relu=True)
    return ApplyReport.of((28, 28, 192), Volume(1, 28, 28, 192), [layer], **timings)


@pytest.mark.parametrize(
    ("timings", "time_text"),
    [
        (
            {"seconds": 7.5, "kernel_seconds": 0.0002, "setup_seconds": 7.4, "compiled": True},
            "7,500.0 ms (kernel 0.2 ms; compiling it 7,400.0 ms, once: cached for later runs)",
        ),
        (
            {"seconds": 0.41, "kernel_seconds": 0.0003, "setup_seconds": 0.4},
            "410.0 ms (kernel 0.3 ms; loading it 400.0 ms)",
        ),
        ({"seconds": 2.0, "kernel_seconds": 1.5}, "2,000.0 ms (kernel 1,500.0 ms)"),
    ],
    ids=["compiled", "loaded", "not measured"],
)
def test_apply_summary_says_where_the_time_went(timings, time_text):
    from conv1x1_cli.render.apply import apply_summary

    console = Console(width=200, record=True)
    console.print(apply_summary(apply_report(**timings)))
    lines = console.export_text().splitlines()
    assert any(line.split() == ["time", *time_text.split()] for line in lines), lines
