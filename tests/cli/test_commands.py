"""The command line where the older tests left gaps: values of inputs larger than one streaming chunk,
float64 kept to float64 precision, the exit status of usage errors in a real process, options no test
used, and the numbers of the apply summary.

Everything goes through the CLI (Click's runner on ``conv1x1_cli.cli.main``, or ``python -m
conv1x1_cli``) and is checked against ``tests/naive.py``. Module-level names used besides the CLI:
``conv1x1_cli.engine.stack.CHUNK_BYTES`` and ``chunk_pixels`` (to size the inputs past one chunk, so the tests
keep doing so if the chunk size changes) and ``conv1x1_cli.bench.suite.SUITE`` / ``QUICK_NAMES`` (patched to
a tiny suite so that ``bench`` runs in seconds).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys

import naive
import numpy as np
import pytest
from click.testing import CliRunner

from conv1x1_cli.cli import main

COMMAND = [sys.executable, "-m", "conv1x1_cli"]


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args, input=None):
    return runner.invoke(main, [str(arg) for arg in args], input=input, catch_exceptions=False)


def save(directory, name, array):
    path = directory / name
    np.save(path, array)
    return path


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# --- inputs larger than one chunk: every chunk is read from its own place ---------------------------------


def chunks_per_image(pixels_per_image: int, channels: int, filters: int, itemsize: int) -> float:
    from conv1x1_cli.engine.stack import chunk_pixels

    widest = max(channels, filters)
    return pixels_per_image / chunk_pixels(widest, widest, itemsize)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_apply_on_a_file_of_several_chunks_per_image_matches_the_reference(runner, rng, tmp_path, layout):
    """2 images of 1100x1000 pixels, 8 channels, float32: 70 MB, each image 1.05 chunks of 32 MiB, so each
    image is read as a full chunk and a short one, from a file offset that is not the image's start."""
    from conv1x1_cli.engine.stack import CHUNK_BYTES

    batch, height, width, channels, filters = 2, 1100, 1000, 8, 3
    x = rng.standard_normal((batch, height, width, channels), dtype=np.float32)
    bank = rng.standard_normal((channels, filters)).astype(np.float32)
    stored = x if layout == "nhwc" else np.ascontiguousarray(np.moveaxis(x, -1, 1))
    assert stored.nbytes > 2 * CHUNK_BYTES and chunks_per_image(height * width, channels, filters, 4) > 1
    args = ["apply", save(tmp_path, "x.npy", stored), save(tmp_path, "w.npy", bank), "-o", tmp_path / "y.npy"]
    assert invoke(runner, *args, "--layout", layout, "--activation", "none", "-q").exit_code == 0
    del stored
    result = np.load(tmp_path / "y.npy")
    if layout == "nchw":
        assert result.shape == (batch, filters, height, width)
        result = np.moveaxis(result, 1, -1)
    naive.assert_close_to_reference(result, x, bank, relu=False)


# --- float64 stays float64 to float64 precision; float32 to float32's -------------------------------------


def inputs_that_need_every_bit(rng, dtype):
    """Values whose low mantissa bits matter: rounding them to float32 moves every result by ~1e-8."""
    x = (rng.standard_normal((2, 9, 7, 6)) * (1 + 1e-9 * rng.standard_normal((2, 9, 7, 6)))).astype(dtype)
    bank = rng.standard_normal((6, 5)).astype(dtype)
    bias = rng.standard_normal(5).astype(dtype)
    return x, bank, bias


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("source", ["file nhwc", "file nchw", "stdin", "fortran file"])
def test_apply_keeps_the_precision_of_its_dtype(runner, rng, tmp_path, dtype, source):
    x, bank, bias = inputs_that_need_every_bit(rng, dtype)
    layout = "nchw" if source == "file nchw" else "nhwc"
    stored = np.ascontiguousarray(np.moveaxis(x, -1, 1)) if layout == "nchw" else x
    stored = np.asfortranarray(stored) if source == "fortran file" else stored
    w, b = save(tmp_path, "w.npy", bank), save(tmp_path, "b.npy", bias)
    options = ["--bias", b, "--layout", layout, "--activation", "none", "-q"]
    if source == "stdin":
        result = invoke(runner, "apply", "-", w, "-o", "-", *options, input=npy_bytes(stored))
        assert result.exit_code == 0
        out = np.load(io.BytesIO(result.stdout_bytes))
    else:
        result = invoke(runner, "apply", save(tmp_path, "x.npy", stored), w, "-o", tmp_path / "y.npy", *options)
        assert result.exit_code == 0
        out = np.load(tmp_path / "y.npy")
    assert out.dtype == dtype
    out = np.moveaxis(out, 1, -1) if layout == "nchw" else out
    naive.assert_close_to_reference(out, x, bank, bias, relu=False)


def test_float64_chain_with_two_biases_keeps_float64_precision(runner, rng, tmp_path):
    x, first, bias = inputs_that_need_every_bit(rng, np.float64)
    second, second_bias = rng.standard_normal((5, 4)), rng.standard_normal(4)
    paths = [save(tmp_path, f"{index}.npy", array) for index, array in enumerate((x, first, second, bias, second_bias))]
    args = ["apply", paths[0], paths[1], paths[2], "-o", tmp_path / "y.npy", "--bias", paths[3], "--bias", paths[4]]
    assert invoke(runner, *args, "-q").exit_code == 0
    out = np.load(tmp_path / "y.npy")
    assert out.dtype == np.float64
    naive.assert_chain_close_to_reference(out, x, [first, second], [bias, second_bias])


# --- usage errors: status 2 from the real process, one line, no traceback ---------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["shapes", "28x28", "--filters", "3"], "must be HxWxC"),
        (["inception", "28x28x192", "64", "96", "128"], "six columns"),
        (["apply", "x.npy", "w.npy", "-o", "y.npy", "--layout", "hwc"], "'hwc' is not one of"),
        (["apply", "x.npy", "w.npy", "-o", "y.npy", "--chunks", "4x4"], "chunks only apply to zarr stores"),
        (["shapes", "28x28x3", "--filters", "3", "--no-such-option"], "No such option"),
    ],
)
def test_usage_errors_exit_2_with_one_error_line_from_the_real_process(tmp_path, args, fragment):
    save(tmp_path, "x.npy", np.ones((4, 4, 3), np.float32))
    save(tmp_path, "w.npy", np.ones((3, 2), np.float32))
    result = subprocess.run([*COMMAND, *args], capture_output=True, text=True, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "y.npy").exists()


def test_a_user_error_that_is_not_a_usage_error_still_exits_1(tmp_path):
    """The other side of the line: a file that cannot be used is status 1, not 2."""
    save(tmp_path, "w.npy", np.ones((3, 2), np.float32))
    result = subprocess.run(
        [*COMMAND, "apply", "missing.npy", "w.npy", "-o", "y.npy"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["Error: missing.npy: no such file"]


# --- show: --batch, --layout nchw, --max-rows -------------------------------------------------------------


def shown_rows(output: str) -> dict[int, list[float]]:
    """The heat-map table's body: {row index: the numbers shown in that row}."""
    lines = output.splitlines()
    body = lines[next(index for index, line in enumerate(lines) if "───" in line) + 1 :]
    rows = {}
    for line in body:
        cells = line.split()
        if not cells or not all(re.fullmatch(r"-?[\d.]+(e[+-]?\d+)?", cell) for cell in cells):
            break
        rows[int(cells[0])] = [float(cell) for cell in cells[1:]]
    return rows


def test_show_batch_picks_the_image(runner, tmp_path):
    array = np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2)  # (N, H, W, C)
    path = save(tmp_path, "batch.npy", array)
    result = invoke(runner, "show", path, "--batch", 2, "--channel", 1)
    assert result.exit_code == 0
    plane = array[2, :, :, 1]
    assert shown_rows(result.output) == {row: plane[row].tolist() for row in range(4)}
    assert "image 2" in result.output
    assert f"min {plane.min():.0f}" in result.output and f"max {plane.max():.0f}" in result.output
    out_of_range = runner.invoke(main, ["show", str(path), "--batch", "3"])
    assert out_of_range.exit_code == 2
    assert (
        "Invalid value for '--batch': 3 is out of range" in out_of_range.output
        and "has 3 images" in out_of_range.output
    )


def test_show_layout_nchw_takes_the_channel_from_the_first_axis(runner, tmp_path):
    array = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)  # (C, H, W)
    path = save(tmp_path, "chw.npy", array)
    result = invoke(runner, "show", path, "--layout", "nchw", "--channel", 1)
    assert result.exit_code == 0
    assert shown_rows(result.output) == {row: array[1, row].tolist() for row in range(4)}
    text = " ".join(result.output.split())
    assert "4×5 of 3×4×5" in text and "min 20" in text and "max 39" in text
    batched = save(tmp_path, "nchw.npy", np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2))
    second = invoke(runner, "show", batched, "--layout", "nchw", "--batch", 1, "--channel", 2)
    assert shown_rows(second.output) == {0: [20.0, 21.0], 1: [22.0, 23.0]}


def test_show_max_rows_sets_the_preview_stride(runner, tmp_path):
    path = save(tmp_path, "tall.npy", np.arange(40 * 3, dtype=np.float32).reshape(40, 3, 1))
    result = invoke(runner, "show", path, "--max-rows", 5)
    assert result.exit_code == 0
    # 40 rows in at most 5: every ceil(40 / 5) = 8th row; the 3 columns fit, so all are shown
    expected = {row: [float(3 * row), 3 * row + 1.0, 3 * row + 2.0] for row in (0, 8, 16, 24, 32)}
    assert shown_rows(result.output) == expected
    assert "every 8th row and every column" in " ".join(result.output.split())
    everything = invoke(runner, "show", path, "--max-rows", 40)
    assert sorted(shown_rows(everything.output)) == list(range(40)) and "preview" not in everything.output
    assert runner.invoke(main, ["show", str(path), "--max-rows", "1"]).exit_code == 2


# --- apply --threads --------------------------------------------------------------------------------------

# Runs the command in a fresh process, then names the kernel's pool threads that were started: the
# kernel starts them for a run that may use more than one thread, and never for --threads 1.
THREADS_SCRIPT = """
import sys, threading
from conv1x1_cli.cli import main
main.main(sys.argv[1:], standalone_mode=False)
print(sorted(t.name for t in threading.enumerate() if t.name.startswith("conv1x1-worker")))
"""


def test_apply_threads_1_runs_the_kernel_on_the_calling_thread_alone(rng, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: every run uses one thread")
    # 512·512·32·32 = 2^28 multiply-adds: the least work a whole run is shared out for (engine.stack)
    x = rng.standard_normal((512, 512, 32), dtype=np.float32)
    bank = rng.standard_normal((32, 32), dtype=np.float32)
    args = ["apply", str(save(tmp_path, "x.npy", x)), str(save(tmp_path, "w.npy", bank)), "-q"]
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    runs = {}
    for threads in (None, 1):
        extra = [] if threads is None else ["--threads", str(threads)]
        out = tmp_path / f"y{threads}.npy"
        run = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, *args, "-o", str(out), *extra],
            capture_output=True,
            text=True,
            env=env,
        )
        assert run.returncode == 0, run.stderr
        runs[threads] = run.stdout.strip()
        naive.assert_close_to_reference(np.load(out), x, bank)
    assert runs == {None: "['conv1x1-worker-1']", 1: "[]"}


def test_apply_threads_must_be_positive(runner, samples_dir, tmp_path):
    args = ["apply", samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy", "-o", tmp_path / "o.npy"]
    result = runner.invoke(main, [*map(str, args), "--threads", "0"])
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output


# --- two biases on the in-memory path (stdin, Fortran order) ----------------------------------------------


@pytest.mark.parametrize("source", ["stdin", "fortran file"])
def test_two_biases_on_the_in_memory_path_each_go_to_their_layer(runner, rng, tmp_path, source):
    x = rng.standard_normal((5, 7, 6)).astype(np.float32)
    banks = [rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)]
    # Biases large against the products, so each one's place shows: a wrong bias moves results by whole units.
    biases = [np.array([3.0, -2.0, 1.5, 4.0], np.float32), np.array([-5.0, 6.0, 2.5], np.float32)]
    w = [save(tmp_path, f"w{index}.npy", bank) for index, bank in enumerate(banks)]
    b = [save(tmp_path, f"b{index}.npy", bias) for index, bias in enumerate(biases)]
    options = ["--bias", b[0], "--bias", b[1], "--activation", "none", "-q"]
    if source == "stdin":
        result = invoke(runner, "apply", "-", *w, "-o", "-", *options, input=npy_bytes(x))
        assert result.exit_code == 0
        out = np.load(io.BytesIO(result.stdout_bytes))
    else:
        path = save(tmp_path, "x.npy", np.asfortranarray(x))
        assert invoke(runner, "apply", path, *w, "-o", tmp_path / "y.npy", *options).exit_code == 0
        out = np.load(tmp_path / "y.npy")
    naive.assert_chain_close_to_reference(out, x, banks, biases, relu_last=False)


# --- the apply summary: params, MACs and GFLOP/s ----------------------------------------------------------


def summary_fields(stderr: str) -> dict[str, str]:
    fields = {}
    for line in stderr.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)  # label, then value, 2+ spaces apart
        if len(parts) == 2:
            fields[parts[0]] = parts[1]
    return fields


def assert_end_to_end_rate(fields: dict[str, str], flops: int, other_flops: int) -> None:
    """The printed end-to-end GFLOP/s is ``flops`` over the printed time, to the precision both are
    printed with (3 digits; 0.1 ms), and that precision tells ``flops`` from ``other_flops``."""
    rate = float(re.search(r"([\d.,e+-]+) GFLOP/s end to end", fields["speed"]).group(1).replace(",", ""))
    milliseconds = float(re.match(r"([\d,.]+) ms", fields["time"]).group(1).replace(",", ""))
    precision = 0.005 + 0.05 / milliseconds  # half a unit of the 3rd digit, and half of 0.1 ms
    assert 2 * precision < abs(flops - other_flops) / flops, f"a run of {milliseconds} ms is too short to tell"
    assert rate == pytest.approx(flops / (milliseconds * 1e-3) / 1e9, rel=precision)


@pytest.mark.parametrize("with_bias", [False, True])
def test_apply_summary_counts_params_macs_and_flops_of_a_chain(runner, rng, tmp_path, with_bias):
    """2 images of 500x600 pixels, 4 channels -> 3 -> 2: 600,000 pixels.
    params: 4·3 + 3·2 = 18 weights, + 3 + 2 = 5 biases; MACs: 600,000·(4·3 + 3·2) = 10,800,000;
    FLOPs: 2·MACs = 21,600,000, + 600,000·(3 + 2) = 3,000,000 bias additions."""
    x = rng.standard_normal((2, 500, 600, 4)).astype(np.float32)
    paths = [save(tmp_path, "x.npy", x), save(tmp_path, "w1.npy", np.ones((4, 3), np.float32))]
    paths.append(save(tmp_path, "w2.npy", np.ones((3, 2), np.float32)))
    bias_options = []
    if with_bias:
        bias_options = ["--bias", save(tmp_path, "b1.npy", np.ones(3)), "--bias", save(tmp_path, "b2.npy", np.ones(2))]
    result = invoke(runner, "apply", *paths, "-o", tmp_path / "y.npy", *bias_options)
    assert result.exit_code == 0
    fields = summary_fields(result.stderr)
    assert fields["input"] == "2×500×600×4" and fields["weights 1"] == "4×3" and fields["weights 2"] == "3×2"
    assert fields["output"] == "2×500×600×2"
    assert fields["params"] == ("23" if with_bias else "18")
    assert fields["MACs"] == "10,800,000"
    with_bias_flops, without_bias_flops = 21_600_000 + 3_000_000, 21_600_000
    if with_bias:
        assert_end_to_end_rate(fields, with_bias_flops, without_bias_flops)
    else:
        assert_end_to_end_rate(fields, without_bias_flops, with_bias_flops)


def test_apply_summary_counts_one_layer_without_bias_exactly(runner, samples_dir, tmp_path):
    """The lecture's 28x28x192 -> 32 without a bias: 6,144 params, 4,816,896 MACs (its FLOPs: twice that)."""
    args = ["apply", samples_dir / "volume_28x28x192.npy", samples_dir / "bank_192x32.npy", "-o", tmp_path / "o.npy"]
    fields = summary_fields(invoke(runner, *args).stderr)
    assert (fields["params"], fields["MACs"]) == ("6,144", "4,816,896")


# --- bottleneck and inception --dtype ---------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "size"), [("float16", 2), ("float32", 4), ("float64", 8)])
def test_bottleneck_dtype_sets_the_byte_counts(runner, dtype, size):
    args = ("bottleneck", "28x28x192", "-r", "16", "-k", "5", "-f", "32", "--dtype", dtype, "--format", "json")
    data = json.loads(invoke(runner, *args).output)
    direct, reduced = data["direct"], data["bottleneck"]
    assert direct["input_bytes"] == reduced["input_bytes"] == 28 * 28 * 192 * size
    assert direct["output_bytes"] == reduced["output_bytes"] == 28 * 28 * 32 * size
    assert direct["weight_bytes"] == 153_632 * size and reduced["weight_bytes"] == 15_920 * size
    assert [layer["output_bytes"] for layer in reduced["layers"]] == [28 * 28 * 16 * size, 28 * 28 * 32 * size]
    assert direct["macs"] == 120_422_400  # counts do not depend on the dtype


@pytest.mark.parametrize(("dtype", "size"), [("float16", 2), ("float32", 4), ("float64", 8)])
def test_inception_dtype_sets_the_byte_counts(runner, dtype, size):
    args = ("inception", "28x28x192", 64, 96, 128, 16, 32, 32, "--dtype", dtype, "--format", "json")
    data = json.loads(invoke(runner, *args).output)
    pixels = 28 * 28
    branches = {branch["name"]: branch for branch in data["branches"]}
    assert [branch["input_bytes"] for branch in data["branches"]] == [pixels * 192 * size] * 4
    assert [branch["output_bytes"] for branch in data["branches"]] == [pixels * c * size for c in (64, 128, 32, 32)]
    assert branches["3×3"]["weight_bytes"] == (192 * 96 + 96 + 9 * 96 * 128 + 128) * size
    pool, projection = branches["pool proj"]["layers"]
    assert (pool["input_bytes"], pool["output_bytes"], pool["weight_bytes"]) == (pixels * 192 * size,) * 2 + (0,)
    assert projection["weight_bytes"] == (192 * 32 + 32) * size
    assert data["params"] == 163_696  # counts do not depend on the dtype


# --- bench ------------------------------------------------------------------------------------------------


def test_bench_quick_json_runs_the_quick_layers_and_verifies_them(runner, monkeypatch, tmp_path):
    """A two-layer suite of which --quick runs one; --no-torch leaves torch out, --threads 1 is passed on
    (and, being fewer than the cores, the limits are not saved)."""
    from conv1x1_cli.bench import suite as bench

    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))
    tiny = (bench.BenchLayer("tiny", 1, 8, 8, 16, 8), bench.BenchLayer("tiny batch", 2, 5, 5, 40, 24))
    monkeypatch.setattr(bench, "SUITE", tiny)
    monkeypatch.setattr(bench, "QUICK_NAMES", ("tiny batch",))
    plot = tmp_path / "roofline.png"
    plotting = importlib.util.find_spec("matplotlib") is not None
    extra = ["--plot", plot] if plotting else []
    result = invoke(runner, "bench", "--quick", "--no-torch", "--threads", 1, "--format", "json", *extra)
    assert result.exit_code == 0
    assert plot.read_bytes().startswith(b"\x89PNG") if plotting else not plot.exists()
    report = json.loads(result.stdout)
    assert set(report) >= {"flops", "machine", "limits", "limits_saved", "threads", "layers", "summary", "seconds"}
    assert report["threads"] == 1 and report["machine"]["torch"] is None
    assert report["limits_saved"] is (os.cpu_count() == 1)
    assert report["limits"]["threads"] == 1 and report["limits"]["source"].startswith("measured ")
    (layer,) = report["layers"]
    assert (layer["name"], layer["spec"], layer["batch"], layer["channels"], layer["filters"]) == (
        "tiny batch",
        "2x5x5x40→24",
        2,
        40,
        24,
    )
    assert layer["flops"] == 2 * 2 * 5 * 5 * 40 * 24 and layer["bytes_moved"] == (50 * 40 + 50 * 24 + 40 * 24) * 4
    assert layer["verified"] is True and 0 <= layer["max_error_ratio"] <= 1
    assert layer["level"] in {level["name"] for level in report["limits"]["levels"]} | {"DRAM"}
    assert layer["working_set"] == layer["bytes_moved"] and layer["ours_microseconds"] > 0
    assert math.isclose(layer["roof_microseconds"], layer["flops"] / layer["attainable_gflops"] / 1e3)
    assert layer["torch_seconds"] is None and layer["vs_torch"] is None
    assert layer["ours_seconds"] > 0 and layer["numpy_seconds"] > 0 and layer["repeats"] >= 4
    assert math.isclose(layer["ours_gflops"], layer["flops"] / layer["ours_seconds"] / 1e9)
    assert report["summary"]["mismatches"] == [] and report["summary"]["worst_layer"] == "tiny batch"
