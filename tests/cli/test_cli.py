"""The command line, in-process through Click's runner and as real processes in a pipeline."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import naive
import numpy as np
import pytest
from click.testing import CliRunner

from conv1x1_cli.cli import main

LECTURE_OUTPUT_ROW0 = [2, 4, 6, 12, 10, 16]


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args, input=None):
    return runner.invoke(main, [str(arg) for arg in args], input=input, catch_exceptions=False)


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_apply_lecture_example(runner, samples_dir, tmp_path):
    out = tmp_path / "out.npy"
    result = invoke(runner, "apply", samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy", "-o", out)
    assert result.exit_code == 0, result.output
    doubled = np.load(out)
    assert doubled.shape == (6, 6, 1) and doubled.dtype == np.float32
    np.testing.assert_array_equal(doubled[0, :, 0], LECTURE_OUTPUT_ROW0)
    np.testing.assert_array_equal(doubled[..., 0], 2 * np.load(samples_dir / "lecture_6x6.npy"))


def test_apply_with_bias_matches_reference(runner, samples_dir, tmp_path):
    out = tmp_path / "out.npy"
    args = ["apply", samples_dir / "volume_28x28x192.npy", samples_dir / "bank_192x32.npy", "-o", out]
    assert invoke(runner, *args).exit_code == 0
    x, w = np.load(samples_dir / "volume_28x28x192.npy"), np.load(samples_dir / "bank_192x32.npy")
    np.testing.assert_allclose(np.load(out), naive.pointwise(x, w), rtol=1e-5, atol=1e-5)
    out2 = tmp_path / "out2.npy"
    small = [
        "apply",
        samples_dir / "volume_6x6x32.npy",
        samples_dir / "bank_32x8.npy",
        "-o",
        out2,
        "--bias",
        samples_dir / "bias_8.npy",
        "--activation",
        "none",
    ]
    assert invoke(runner, *small).exit_code == 0
    x, w, b = (np.load(samples_dir / name) for name in ("volume_6x6x32.npy", "bank_32x8.npy", "bias_8.npy"))
    np.testing.assert_allclose(np.load(out2), naive.pointwise(x, w, b, relu=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int16", ">f4", "float16"])
@pytest.mark.parametrize("fortran", [False, True])
def test_apply_dtypes_and_memory_orders(runner, rng, tmp_path, dtype, fortran):
    x = (rng.standard_normal((2, 5, 6, 4)) * 4).astype(dtype)
    x = np.asfortranarray(x) if fortran else x
    w = rng.standard_normal((4, 3))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    assert invoke(runner, "apply", tmp_path / "x.npy", tmp_path / "w.npy", "-o", tmp_path / "y.npy").exit_code == 0
    result = np.load(tmp_path / "y.npy")
    assert result.dtype == (np.float64 if dtype == "float64" else np.float32)
    reference = naive.pointwise(x.astype(result.dtype), w.astype(result.dtype))
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 4, 5, 6), (4, 5, 6)])
def test_apply_nchw_keeps_layout(runner, rng, tmp_path, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[-3], 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    args = ["apply", tmp_path / "x.npy", tmp_path / "w.npy", "-o", tmp_path / "y.npy", "--layout", "nchw"]
    assert invoke(runner, *args).exit_code == 0
    result = np.load(tmp_path / "y.npy")
    assert result.shape == (*shape[:-3], 3, *shape[-2:])
    expected = np.moveaxis(naive.pointwise(np.moveaxis(x, -3, -1), w), -1, -3)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bank_form", ["fc", "pytorch", "keras"])
def test_apply_weight_layouts(runner, rng, tmp_path, bank_form):
    x = rng.standard_normal((5, 5, 6)).astype(np.float32)
    bank = rng.standard_normal((6, 4)).astype(np.float32)
    stored = {"fc": bank.T, "pytorch": bank.T[:, :, None, None], "keras": bank[None, None]}[bank_form]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", stored)
    extra = ["--weights-layout", "fc"] if bank_form == "fc" else []
    assert (
        invoke(runner, "apply", tmp_path / "x.npy", tmp_path / "w.npy", "-o", tmp_path / "y.npy", *extra).exit_code == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), naive.pointwise(x, bank), rtol=1e-5, atol=1e-5)


def test_apply_stdin_to_stdout(runner, rng, tmp_path):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((5, 2)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    result = runner.invoke(main, ["apply", "-", str(tmp_path / "w.npy"), "-o", "-", "-q"], input=npy_bytes(x))
    assert result.exit_code == 0
    np.testing.assert_allclose(np.load(io.BytesIO(result.stdout_bytes)), naive.pointwise(x, w), rtol=1e-5, atol=1e-6)


def test_summary_goes_to_stderr_only(runner, samples_dir):
    result = runner.invoke(
        main, ["apply", str(samples_dir / "lecture_6x6.npy"), str(samples_dir / "times2.npy"), "-o", "-"]
    )
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"\x93NUMPY")
    assert "MACs" in result.stderr and "MACs" not in result.stdout_bytes.decode("latin1")


def test_shapes_table(runner):
    result = invoke(runner, "shapes", "28x28x192", "--filters", "32")
    assert result.exit_code == 0
    for text in ("28×28×192", "28×28×32", "6,144", "6,176", "4,816,896", "9,658,880"):
        assert text in result.output


def test_shapes_json_exact_numbers(runner):
    result = invoke(runner, "shapes", "28x28x192", "--filters", "32", "--format", "json")
    data = json.loads(result.output)
    assert data["input"] == [28, 28, 192] and data["output"] == [28, 28, 32]
    assert (data["weights"], data["bias"], data["params"]) == (6144, 32, 6176)
    assert data["macs"] == 4_816_896 and data["flops"] == 2 * 4_816_896 + 28 * 28 * 32
    assert (data["input_bytes"], data["output_bytes"], data["weight_bytes"]) == (602_112, 100_352, 24_704)


def test_shapes_csv_and_nchw(runner):
    result = invoke(
        runner,
        "shapes",
        "2x192x28x28",
        "--filters",
        "32",
        "--layout",
        "nchw",
        "--format",
        "csv",
        "--no-bias",
        "--dtype",
        "float64",
    )
    header, row = result.output.strip().splitlines()
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert values["output"] == "2x32x28x28" and values["params"] == "6144" and values["macs"] == str(2 * 4_816_896)
    assert values["input_bytes"] == str(2 * 28 * 28 * 192 * 8)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["28x28", "--filters", "3"], "must be HxWxC"),
        (["28x28x0", "--filters", "3"], "at least 1"),
        (["28xAx3", "--filters", "3"], "whole number"),
        (["28x28x3", "--filters", "0"], "at least 1"),
        (["28x28x3", "--filters", "many"], "whole number"),
    ],
)
def test_shapes_bad_arguments_are_usage_errors(runner, args, message):
    result = runner.invoke(main, ["shapes", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.fixture
def default_limits(monkeypatch, tmp_path):
    """No bench results: the roofline uses the labelled defaults."""
    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))
    from conv1x1_cli.costs.roofline import default_limits

    return default_limits()


def test_shapes_chain_json_totals_layers_conventions_and_roofline(runner, default_limits):
    data = json.loads(invoke(runner, "shapes", "32x32x192", "--filters", "96,48,10", "--format", "json").output)
    assert data["output"] == [32, 32, 10] and data["layers"][0]["output"] == [32, 32, 96]
    assert data["params"] == 23_674 and data["macs"] == 1024 * (192 * 96 + 96 * 48 + 48 * 10) == 24_084_480
    assert data["conventions"] == {
        "torchinfo": 24_242_176,
        "fvcore": 24_084_480,
        "ptflops": 24_557_568,
        "ptflops_aten": 24_242_176,
        "thop": 24_084_480,
    }
    assert sum(layer["conventions"]["ptflops"] for layer in data["layers"]) == 24_557_568
    first = data["layers"][0]
    bytes_moved = first["input_bytes"] + first["output_bytes"] + first["weight_bytes"]
    assert first["intensity"] == first["flops"] / bytes_moved
    assert data["roofline"]["ridge_intensity"] == default_limits.peak_gflops / default_limits.bandwidth_gbs
    assert data["roofline"]["source"] == default_limits.source
    assert all(entry["bound"] in ("compute", "memory") for entry in [data, *data["layers"]])


def test_shapes_activation_none_drops_ptflops_last_relu(runner, default_limits):
    args = ("shapes", "4x32x32x192", "--filters", "96,48,10", "--format", "json")
    relu, linear = (json.loads(invoke(runner, *args, "--activation", act).output) for act in ("relu", "none"))
    assert relu["conventions"]["ptflops"] - linear["conventions"]["ptflops"] == 2 * 32 * 32 * 10
    assert relu["macs"] == linear["macs"] == 4 * 24_084_480 and relu["conventions"]["thop"] == 4 * 24_084_480


def test_shapes_table_has_a_row_per_layer_a_total_and_other_tools(runner, default_limits):
    output = invoke(runner, "shapes", "32x32x192", "--filters", "96,48,10").output
    for text in ("32×32×96", "32×32×48", "Σ", "23,674", "24,084,480", "FLOP/B", "compute", "24,557,568"):
        assert text in output
    assert "defaults" in output and "…" not in output


def test_bottleneck_json_reproduces_the_lecture(runner):
    args = ("bottleneck", "28x28x192", "--reduce", "16", "--kernel", "5", "--filters", "32", "--format", "json")
    data = json.loads(invoke(runner, *args).output)
    assert data["direct"]["macs"] == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert data["bottleneck"]["macs"] == 28 * 28 * 16 * 192 + 28 * 28 * 32 * 5 * 5 * 16 == 12_443_648
    assert (data["direct"]["params"], data["bottleneck"]["params"]) == (153_632, 15_920)
    assert data["direct"]["output"] == data["bottleneck"]["output"] == [28, 28, 32]
    assert data["saving"]["macs"] == 120_422_400 / 12_443_648


def test_bottleneck_table_and_csv(runner):
    args = ("bottleneck", "2x192x28x28", "-r", "16", "-k", "5", "-f", "32", "--layout", "nchw")
    table = invoke(runner, *args).output
    assert "2×32×28×28" in table and f"{2 * 120_422_400:,}" in table and f"{2 * 12_443_648:,}" in table
    rows = {line.split(",")[0]: line.split(",") for line in invoke(runner, *args, "--format", "csv").output.split()}
    assert rows["params"][1:3] == ["153632", "15920"]


def test_inception_3a_json(runner):
    data = json.loads(invoke(runner, "inception", "28x28x192", 64, 96, 128, 16, 32, 32, "--format", "json").output)
    assert data["output"] == [28, 28, 256]
    assert (data["weights"], data["bias"], data["params"], data["macs"]) == (163_328, 368, 163_696, 128_049_152)
    assert [branch["output_channels"] for branch in data["branches"]] == [64, 128, 32, 32]
    assert [branch["macs"] for branch in data["branches"]] == [9_633_792, 101_154_816, 12_443_648, 4_816_896]
    assert data["conventions"]["ptflops"] == 128_049_152 + 368 * 784 + 2 * 368 * 784 + 2 * 192 * 784


def test_inception_table_and_csv(runner):
    table = invoke(runner, "inception", "28x28x192", 64, 96, 128, 16, 32, 32, "--no-bias").output
    assert "28×28×256" in table and "163,328" in table and "128,049,152" in table and "max-pool" in table
    csv_text = invoke(runner, "inception", "28x28x192", 64, 96, 128, 16, 32, 32, "--format", "csv").output
    assert csv_text.splitlines()[-1].startswith("total,,28x28x256,256,163328,368,163696,128049152,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bottleneck", "28x28x192", "--reduce", "0", "--filters", "32"], "0 is not in the range"),
        (["bottleneck", "28x28", "--reduce", "16", "--filters", "32"], "must be HxWxC"),
        (["inception", "28x28x192", "64", "96", "128"], "six columns #1×1, #3×3 reduce"),
        (["inception", "28x28x192", "64", "96", "128", "16", "32", "0"], "0 is not in the range"),
    ],
)
def test_bottleneck_and_inception_bad_arguments_are_usage_errors(runner, args, message):
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_show_prints_the_numbers(runner, samples_dir):
    result = invoke(runner, "show", samples_dir / "lecture_6x6.npy")
    assert result.exit_code == 0
    rows = [line.split() for line in result.output.splitlines()]
    assert ["0", "1", "2", "3", "6", "5", "8"] in rows  # row index, then the lecture's first row
    assert "shape 6×6" in result.output and "min 1" in result.output and "max 9" in result.output


def test_show_large_slices_are_strided(runner, tmp_path):
    np.save(tmp_path / "big.npy", np.arange(200 * 300, dtype=np.float32).reshape(200, 300, 1))
    result = invoke(runner, "show", tmp_path / "big.npy")
    # 200 rows in at most 24: every 9th; the columns: every k-th, as many as rich lays out in 80 columns
    found = re.search(r"every 9th row and every (\d+)\w\w column", result.output)
    assert found and len(result.output.splitlines()) < 40 and "…" not in result.output
    step = int(found.group(1))
    header = next(line for line in result.output.splitlines() if line.split()[:2] == ["0", str(step)])
    assert header.split() == [str(column) for column in range(0, 300, step)]
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_show_channel_out_of_range(runner, samples_dir):
    result = runner.invoke(main, ["show", str(samples_dir / "volume_6x6x32.npy"), "--channel", "32"])
    assert result.exit_code == 2 and "Invalid value for '--channel'" in result.output
    assert "32 is out of range" in result.output and "has 32 channels" in result.output


def write(tmp_path, name, array):
    np.save(tmp_path / name, array)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (str(d / "missing.npy"), write(d, "w.npy", np.ones((3, 2)))), "missing.npy: no such file"),
        (lambda d: (write(d, "x.npy", np.ones((4, 4, 3))), str(d / "gone.npy")), "gone.npy: no such file"),
        (
            lambda d: (write(d, "x.npy", np.ones((4, 4, 3))), write(d, "w.npy", np.ones((5, 2)))),
            "expects 5 input channels but",
        ),
        (lambda d: (write(d, "x.npy", np.ones(4)), write(d, "w.npy", np.ones((1, 2)))), "1-D"),
        (lambda d: (write(d, "x.npy", np.ones((1, 2, 3, 4, 5))), write(d, "w.npy", np.ones((5, 2)))), "5-D"),
        (
            lambda d: (write(d, "x.npy", np.ones((4, 4, 3))), write(d, "w.npy", np.ones((2, 3, 3, 3)))),
            "3x3 spatial kernel",
        ),
        (lambda d: (write(d, "x.npy", np.ones((4, 4, 3))), write(d, "w.npy", np.ones(3))), "must be 2-D"),
    ],
)
def test_bad_input_gives_one_line_and_no_output(runner, tmp_path, make, message):
    input_path, weights_path = make(tmp_path)
    out = tmp_path / "out.npy"
    result = runner.invoke(main, ["apply", input_path, weights_path, "-o", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not out.exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_channel_mismatch_names_both_counts_and_files(runner, tmp_path):
    x, w = write(tmp_path, "x.npy", np.ones((4, 4, 3))), write(tmp_path, "w.npy", np.ones((5, 2)))
    result = runner.invoke(main, ["apply", x, w, "-o", str(tmp_path / "o.npy")])
    assert f"{w}: bank expects 5 input channels but {x} has 3" in result.output


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "conv1x1_cli", *map(str, args)], capture_output=True, **kwargs)


def test_real_pipeline_through_stdout_and_stdin(samples_dir, rng, tmp_path):
    """Two real processes: the first writes .npy to a pipe, the second reads it from a non-seekable stdin."""
    second_bank = write(tmp_path, "w2.npy", rng.standard_normal((8, 3)).astype(np.float32))
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conv1x1_cli",
            "apply",
            str(samples_dir / "volume_6x6x32.npy"),
            str(samples_dir / "bank_32x8.npy"),
            "-o",
            "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    second = run_cli("apply", "-", second_bank, "-o", tmp_path / "out.npy", stdin=first.stdout)
    first.stdout.close()
    assert first.wait() == 0 and second.returncode == 0, second.stderr
    assert b"conv1x1 apply" in first.stderr.read()  # the summary went to stderr, not into the pipe
    x, w = np.load(samples_dir / "volume_6x6x32.npy"), np.load(samples_dir / "bank_32x8.npy")
    expected = naive.chain(x, [w, np.load(second_bank)])
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-5)


def test_python_dash_m_help_works():
    result = run_cli("--help", text=True)
    assert result.returncode == 0 and "apply" in result.stdout and "shapes" in result.stdout


def test_shapes_plans_dask_chunks(runner):
    """1000x1000 in 256x256 blocks: 4 x 4 = 16 tasks; each holds 65,536 pixels of 200 channels in, 8 out,
    and the packed bank as the kernel packs it: (200 + 1) rows x one 8-wide panel of float32 (F = 8 fits
    half a 16-lane register)."""
    result = invoke(runner, "shapes", "1000x1000x200", "--filters", "8", "--chunks", "256x256", "--format", "json")
    plan = json.loads(result.output)["chunks"]
    assert plan["tasks"] == 16 and plan["block_pixels"] == 65_536
    assert plan["bank_bytes"] == 201 * 8 * 4
    assert plan["per_task_bytes"] == 65_536 * 200 * 4 + 65_536 * 8 * 4 + 201 * 8 * 4
    table = invoke(runner, "shapes", "1000x1000x200", "--filters", "8", "--chunks", "256x256").output
    assert "16 tasks" in table


def test_chunks_needs_a_store_or_a_scheduler(runner, samples_dir, tmp_path):
    result = runner.invoke(
        main,
        [
            "apply",
            str(samples_dir / "lecture_6x6.npy"),
            str(samples_dir / "times2.npy"),
            "-o",
            str(tmp_path / "o.npy"),
            "--chunks",
            "4x4",
        ],
    )
    assert result.exit_code == 2 and "--chunks': chunks only apply to zarr stores" in result.output
