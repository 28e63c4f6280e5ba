"""conv1x1 explain: one pixel walked through the layers, checked against numbers worked by hand,
against a float64 NumPy reference (``tests/naive.py``) and against what ``apply`` and ``conv1x1``
compute at that pixel; every bank format apply reads; large layers summarised; one-line errors.

The command is invoked as a Click command object (``explain`` itself), and in a real process through
a two-line script that registers it, so these tests do not depend on ``cli/__init__.py`` listing it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import naive
import numpy as np
import pytest
from click.testing import CliRunner

from conv1x1_cli import conv1x1
from conv1x1_cli.cli import main
from conv1x1_cli.cli.explain import explain

# A real process running conv1x1 with `explain` registered (a second registration is harmless).
SCRIPT = (
    "from conv1x1_cli.cli import main\n"
    "from conv1x1_cli.cli.explain import explain\n"
    "from conv1x1_cli.cli.signals import run_main\n"
    "main.add_command(explain)\n"
    "run_main(main)\n"
)


def run_explain(*args, expect: int = 0):
    result = CliRunner().invoke(explain, [str(arg) for arg in args])
    assert result.exit_code == expect, result.output
    return result


def explain_json(*args) -> dict:
    return json.loads(run_explain(*args, "--format", "json").stdout)


def save(directory, name, array):
    path = directory / name
    np.save(path, array)
    return path


# --- reading the table back -------------------------------------------------------------------------------

PRODUCT_ROW = re.compile(r"channel (\d+)\s+(\S+) ·\s+(\S+) =\s+(\S+)")


def filter_blocks(output: str) -> dict[int, dict]:
    """Each walked filter's rows in the table: {filter: {"products": {channel: (x, w, x·w)}, "sum": ...,
    "bias": ..., "pre_activation": ..., "output": ...}}, as the text shows them."""
    blocks, current = {}, None
    for line in output.splitlines():
        if match := re.fullmatch(r"\s+filter (\d+)\s*", line):
            current = blocks.setdefault(int(match.group(1)), {"products": {}})
        elif current is None:
            continue
        elif match := PRODUCT_ROW.search(line):
            current["products"][int(match.group(1))] = match.group(2, 3, 4)
        elif match := re.search(r"sum(?: of all [\d,]+)?, in channel order\s+=\s+(\S+)", line):
            current["sum"] = match.group(1)
        elif match := re.search(r"\+ bias(?: \(none\))?\s+(\S+) =\s+(\S+)", line):
            current["bias"], current["pre_activation"] = match.groups()
        elif match := re.search(r"(?:ReLU|no activation)\s+=\s+(\S+)", line):
            current["output"] = match.group(1)
            current = None
    return blocks


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


# --- the lecture's example --------------------------------------------------------------------------------


def test_lecture_sample_shows_one_times_two_is_two(samples_dir):
    result = run_explain(samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy", "--pixel", "0,0")
    assert "1 · 2 = 2" in result.stdout
    block = filter_blocks(result.stdout)[0]
    assert block == {"products": {0: ("1", "2", "2")}, "sum": "2", "bias": "0", "pre_activation": "2", "output": "2"}
    assert "output at pixel (0, 0), 1 filter: [2]" in result.stdout
    assert last_line(result.stdout).startswith("apply computes [2] at pixel (0, 0): the same, difference 0")


LECTURE_OUTPUT = """\
samples/lecture_6x6.npy · pixel (0, 0) · 6×6 float32, one channel · apply computes in float32
x = [1]

layer: samples/times2.npy · 1 channel → 1 filter · no bias · ReLU
  filter 0
    channel 0               1 · 2 = 2
    sum, in channel order         = 2
    + bias (none)               0 = 2
    ReLU                          = 2

products and sums in float64 from the stored values, added in channel order
float32 rounding bound: (C + 1)·u·(Σ|x·w| + |b|), u = 2⁻²⁴ (README, Accuracy), plus the float64 walk-through's own
output at pixel (0, 0), 1 filter: [2]
apply computes [2] at pixel (0, 0): the same, difference 0 (within float32 rounding: bound 2.4e-07)
"""


def test_lecture_output_is_the_one_the_readme_shows(samples_dir, monkeypatch):
    monkeypatch.chdir(samples_dir.parent)
    result = run_explain("samples/lecture_6x6.npy", "samples/times2.npy", "--pixel", "0,0")
    assert result.stdout == LECTURE_OUTPUT


def test_lecture_sample_json_agrees_with_apply_and_states_the_bound(samples_dir):
    data = explain_json(samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy", "--pixel", "3,2")
    assert data["vector"] == [8.0] and data["output"] == [16.0]  # the image's (3, 2) is 8; times 2
    assert data["apply"]["output"] == [16.0] and data["apply"]["difference"] == [0.0]
    assert data["apply"]["agrees"] is True
    # (C + 1)·u·(Σ|x·w| + |b|) with C = 1, u = 2⁻²⁴, Σ = 16; plus the float64 walk-through's own 2⁻⁵³ share
    assert data["apply"]["bound"][0] == pytest.approx(2 * 2.0**-24 * 16, rel=1e-8)


# --- hand-worked: 3 channels, 2 filters, a bias, one filter below zero -------------------------------------


@pytest.fixture
def hand_worked(tmp_path):
    """A 2×3 image whose pixel (1, 2) is [1, 2, 3]; filters [0.5, -1, 2] and [1, -2, -1]; bias [1, -1]."""
    x = np.zeros((2, 3, 3), np.float32)
    x[1, 2] = [1, 2, 3]
    x[0, 0] = [9, 9, 9]  # another pixel, which must not leak in
    bank = np.array([[0.5, 1.0], [-1.0, -2.0], [2.0, -1.0]], np.float32)  # (C, F) = (3, 2)
    bias = np.array([1.0, -1.0], np.float32)
    return save(tmp_path, "x.npy", x), save(tmp_path, "w.npy", bank), save(tmp_path, "b.npy", bias)


def test_hand_worked_example_shows_every_product_sum_and_relu(hand_worked):
    x, w, b = hand_worked
    result = run_explain(x, w, "--bias", b, "--pixel", "1,2")
    blocks = filter_blocks(result.stdout)
    # filter 0: 1·0.5 + 2·(−1) + 3·2 = 0.5 − 2 + 6 = 4.5; + 1 = 5.5; ReLU(5.5) = 5.5
    assert blocks[0]["products"] == {0: ("1", "0.5", "0.5"), 1: ("2", "-1", "-2"), 2: ("3", "2", "6")}
    assert (blocks[0]["sum"], blocks[0]["bias"], blocks[0]["pre_activation"], blocks[0]["output"]) == (
        "4.5", "1", "5.5", "5.5",
    )  # fmt: skip
    # filter 1: 1·1 + 2·(−2) + 3·(−1) = 1 − 4 − 3 = −6; − 1 = −7; ReLU(−7) = 0
    assert blocks[1]["products"] == {0: ("1", "1", "1"), 1: ("2", "-2", "-4"), 2: ("3", "-1", "-3")}
    assert (blocks[1]["sum"], blocks[1]["bias"], blocks[1]["pre_activation"], blocks[1]["output"]) == (
        "-6", "-1", "-7", "0",
    )  # fmt: skip
    assert "x = [1, 2, 3]" in result.stdout
    assert "output at pixel (1, 2), 2 filters: [5.5, 0]" in result.stdout
    assert last_line(result.stdout).startswith("apply computes [5.5, 0] at pixel (1, 2): the same")


def test_hand_worked_json_has_the_same_numbers(hand_worked):
    x, w, b = hand_worked
    data = explain_json(x, w, "--bias", b, "--pixel", "1,2")
    (layer,) = data["layers"]
    assert [walk["filter"] for walk in layer["walked"]] == [0, 1]
    first, second = layer["walked"]
    assert first["products"] == [0.5, -2.0, 6.0] and first["weights"] == [0.5, -1.0, 2.0]
    assert (first["sum"], first["bias"], first["pre_activation"], first["output"]) == (4.5, 1.0, 5.5, 5.5)
    assert second["products"] == [1.0, -4.0, -3.0]
    assert (second["sum"], second["bias"], second["pre_activation"], second["output"]) == (-6.0, -1.0, -7.0, 0.0)
    assert first["activation"] == "relu" and layer["bias"] == str(b)
    assert data["vector"] == [1.0, 2.0, 3.0] and data["output"] == [5.5, 0.0]
    assert data["apply"]["output"] == [5.5, 0.0] and data["apply"]["agrees"] is True


def test_json_and_table_show_the_same_numbers(rng, tmp_path):
    """Random values (not whole numbers): every number of the table is the JSON's, as printed."""
    x = save(tmp_path, "x.npy", rng.standard_normal((3, 4, 5)).astype(np.float32))
    w = save(tmp_path, "w.npy", rng.standard_normal((5, 3)).astype(np.float32))
    b = save(tmp_path, "b.npy", rng.standard_normal(3).astype(np.float32))
    args = (x, w, "--bias", b, "--pixel", "2,1")
    table, data = filter_blocks(run_explain(*args).stdout), explain_json(*args)
    inputs = data["layers"][0]["input"]
    for walk in data["layers"][0]["walked"]:
        block = table[walk["filter"]]
        for channel, (x_text, w_text, product_text) in block["products"].items():
            assert float(x_text) == pytest.approx(inputs[channel], rel=1e-6)
            assert float(w_text) == pytest.approx(walk["weights"][channel], rel=1e-6)
            assert float(product_text) == pytest.approx(walk["products"][channel], rel=1e-6)
        for key in ("sum", "bias", "pre_activation", "output"):
            assert float(block[key]) == pytest.approx(walk[key], rel=1e-6, abs=1e-30)


# --- against apply and conv1x1, and against the float64 reference ----------------------------------------


def test_explain_agrees_with_what_apply_writes(rng, tmp_path):
    x = rng.standard_normal((5, 6, 7)).astype(np.float32)
    bank, bias = rng.standard_normal((7, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    paths = [save(tmp_path, name, array) for name, array in (("x.npy", x), ("w.npy", bank), ("b.npy", bias))]
    args = ["apply", *map(str, paths[:2]), "--bias", str(paths[2]), "-o", str(tmp_path / "y.npy"), "-q"]
    applied = CliRunner().invoke(main, args)
    assert applied.exit_code == 0, applied.output
    data = explain_json(paths[0], paths[1], "--bias", paths[2], "--pixel", "4,3")
    written = np.load(tmp_path / "y.npy")[4, 3]
    assert data["apply"]["output"] == written.tolist()  # the very values apply writes
    np.testing.assert_allclose(data["output"], naive.pointwise(x[4, 3], bank, bias), rtol=1e-13, atol=1e-13)
    difference = np.array(data["apply"]["output"]) - np.array(data["output"])
    assert np.all(np.abs(difference) <= data["apply"]["bound"]) and data["apply"]["agrees"] is True


def test_chain_of_two_banks_matches_the_float64_reference_layer_by_layer(rng, tmp_path):
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    banks = [rng.standard_normal((6, 10)).astype(np.float32), rng.standard_normal((10, 3)).astype(np.float32)]
    biases = [rng.standard_normal(10).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    names = ["x.npy", "w1.npy", "w2.npy", "b1.npy", "b2.npy"]
    arrays = [x, *banks, *biases]
    x_path, w1, w2, b1, b2 = (save(tmp_path, name, array) for name, array in zip(names, arrays, strict=True))
    data = explain_json(x_path, w1, w2, "--bias", b1, "--bias", b2, "--pixel", "3,1", "--activation", "none")
    first, second = data["layers"]
    hidden = naive.pointwise(x[3, 1], banks[0], biases[0], relu=True)
    np.testing.assert_allclose(first["output"], hidden, rtol=1e-13, atol=1e-13)
    assert second["input"] == first["output"]  # the second layer is fed the first's float64 output
    expected = naive.chain(x[3, 1], banks, biases, relu_last=False)
    np.testing.assert_allclose(data["output"], expected, rtol=1e-12, atol=1e-12)
    assert second["activation"] == "none" and first["activation"] == "relu"
    # layer 1 has 10 filters (more than 8): only filter 0 walked; layer 2's 3 are all walked
    assert [walk["filter"] for walk in first["walked"]] == [0]
    assert [walk["filter"] for walk in second["walked"]] == [0, 1, 2]
    kernel = conv1x1(x, banks, biases, activation="none")[3, 1]
    assert data["apply"]["output"] == kernel.tolist() and data["apply"]["agrees"] is True


def test_chain_table_walks_layer_by_layer(rng, tmp_path):
    x = save(tmp_path, "x.npy", rng.standard_normal((3, 3, 2)).astype(np.float32))
    w1 = save(tmp_path, "w1.npy", rng.standard_normal((2, 3)).astype(np.float32))
    w2 = save(tmp_path, "w2.npy", rng.standard_normal((3, 1)).astype(np.float32))
    output = run_explain(x, w1, w2, "--pixel", "0,2").stdout
    first, second = output.index("layer 1 of 2: "), output.index("layer 2 of 2: ")
    assert first < output.index("output of layer 1: ") < second
    assert "3 channels → 1 filter" in output[second:]


def test_nchw_batch_walks_the_pixel_of_that_image(rng, tmp_path):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)  # (N, C, H, W)
    bank = rng.standard_normal((4, 2)).astype(np.float32)
    data = explain_json(
        save(tmp_path, "x.npy", x), save(tmp_path, "w.npy", bank), "--pixel", "4,5", "--batch", 2, "--layout", "nchw"
    )
    assert data["batch"] == 2 and data["layout"] == "nchw"
    assert data["vector"] == x[2, :, 4, 5].astype(np.float64).tolist()
    np.testing.assert_allclose(data["output"], naive.pointwise(x[2, :, 4, 5], bank), rtol=1e-13, atol=1e-13)
    assert data["apply"]["output"] == conv1x1(x, bank, layout="nchw")[2, :, 4, 5].tolist()
    assert data["apply"]["agrees"] is True


def test_float64_input_is_checked_against_float64_rounding(rng, tmp_path):
    x = rng.standard_normal((2, 2, 9))
    bank = rng.standard_normal((9, 2))
    data = explain_json(save(tmp_path, "x.npy", x), save(tmp_path, "w.npy", bank), "--pixel", "1,0")
    assert data["compute_dtype"] == "float64" and data["apply"]["unit_roundoff"] == 2.0**-53
    assert max(data["apply"]["bound"]) < 1e-13 and data["apply"]["agrees"] is True


def test_a_float64_bank_on_float32_input_agrees_within_the_rounding_of_its_weights(tmp_path):
    """apply computes in float32, so it rounds a float64 bank (0.1 is not a float32): the bound allows for it."""
    x = np.full((1, 1, 4), 3, np.float32)
    bank = np.full((4, 1), 0.1)  # float64
    data = explain_json(save(tmp_path, "x.npy", x), save(tmp_path, "w.npy", bank), "--pixel", "0,0")
    assert data["layers"][0]["walked"][0]["products"] == [0.30000000000000004] * 4  # 3 · 0.1 in float64
    assert data["apply"]["difference"][0] != 0 and data["apply"]["agrees"] is True


def test_nan_stays_nan_through_relu_and_counts_as_agreeing():
    from conv1x1_cli.api import explain_pixel

    walk = explain_pixel(np.array([[[np.nan, 1.0]]], np.float32), np.ones((2, 1), np.float32), pixel=(0, 0))
    assert math.isnan(walk.output[0]) and math.isnan(walk.check.output[0])
    assert walk.check.difference == [0.0] and walk.check.agrees


# --- every bank format apply accepts -----------------------------------------------------------------------


@pytest.fixture
def small(rng, tmp_path):
    x = rng.standard_normal((3, 3, 4)).astype(np.float32)
    bank = rng.standard_normal((4, 2)).astype(np.float32)  # (C, F)
    bias = rng.standard_normal(2).astype(np.float32)
    return tmp_path, x, bank, bias


def walk_of(*args) -> tuple:
    data = explain_json(*args)
    return data["output"], [walk["products"] for walk in data["layers"][0]["walked"]], data["apply"]["agrees"]


def test_pytorch_keras_and_fc_banks_walk_as_the_cf_bank(small):
    folder, x, bank, _ = small
    x_path = save(folder, "x.npy", x)
    expected = walk_of(x_path, save(folder, "cf.npy", bank), "--pixel", "2,2")
    assert expected[2] is True
    assert walk_of(x_path, save(folder, "torch.npy", bank.T[:, :, None, None]), "--pixel", "2,2") == expected
    assert walk_of(x_path, save(folder, "keras.npy", bank[None, None]), "--pixel", "2,2") == expected
    fc = save(folder, "fc.npy", np.ascontiguousarray(bank.T))
    assert walk_of(x_path, fc, "--weights-layout", "fc", "--pixel", "2,2") == expected


def test_a_safetensors_tensor_and_its_bias(small):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    folder, x, bank, bias = small
    model = folder / "model.safetensors"
    tensors = {"conv.weight": np.ascontiguousarray(bank.T[:, :, None, None]), "conv.bias": bias}  # PyTorch's
    safetensors_numpy.save_file(tensors, model)
    x_path = save(folder, "x.npy", x)
    data = explain_json(x_path, f"{model}#conv.weight", "--bias", f"{model}#conv.bias", "--pixel", "1,1")
    assert data["layers"][0]["bank"] == f"{model}#conv.weight"
    np.testing.assert_allclose(data["output"], naive.pointwise(x[1, 1], bank, bias), rtol=1e-13, atol=1e-13)
    assert data["apply"]["agrees"] is True


def test_an_onnx_conv_node_brings_its_own_bias(small):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    folder, x, bank, bias = small
    weight = numpy_helper.from_array(np.ascontiguousarray(bank.T[:, :, None, None]), "W")
    node = helper.make_node("Conv", ["input", "W", "B"], ["output"], name="Pointwise", kernel_shape=[1, 1])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 3, 3])],
        initializer=[weight, numpy_helper.from_array(bias, "B")],
    )
    model = folder / "model.onnx"
    onnx.save(helper.make_model(graph), model)
    data = explain_json(save(folder, "x.npy", x), f"{model}#Pointwise", "--pixel", "0,1")
    assert data["layers"][0]["bias"] == f"{model}#Pointwise (its bias)"
    assert [walk["bias"] for walk in data["layers"][0]["walked"]] == bias.astype(np.float64).tolist()
    np.testing.assert_allclose(data["output"], naive.pointwise(x[0, 1], bank, bias), rtol=1e-13, atol=1e-13)


# --- large layers, summarised ------------------------------------------------------------------------------


def test_192_channels_are_summarised_and_the_sum_is_over_all_of_them(samples_dir):
    volume, bank_path = samples_dir / "volume_28x28x192.npy", samples_dir / "bank_192x32.npy"
    args = (volume, bank_path, "--pixel", "3,4")
    output = run_explain(*args).stdout
    block = filter_blocks(output)[0]
    shown = sorted(block["products"])
    skipped = [int(count) for count in re.findall(r"… (\d+) more channels?$", output, re.MULTILINE)]
    assert len(shown) <= 9 and shown[:3] == [0, 1, 2] and shown[-3:] == [189, 190, 191]
    assert skipped and len(shown) + sum(skipped) == 192  # every channel shown or counted
    assert "sum of all 192, in channel order" in output
    x = np.load(volume)[3, 4].astype(np.float64)
    bank = np.load(bank_path).astype(np.float64)
    walk = explain_json(*args)["layers"][0]["walked"][0]
    channel_order = 0.0
    for product in x * bank[:, 0]:
        channel_order += product
    assert walk["sum"] == channel_order  # exactly the channel-order float64 sum
    assert walk["sum"] == pytest.approx(math.fsum(x * bank[:, 0]), rel=1e-13)
    assert float(block["sum"]) == pytest.approx(walk["sum"], rel=1e-7)
    largest = sorted(range(192), key=lambda channel: -abs(walk["products"][channel]))[:3]
    assert set(largest) <= set(shown)
    assert output.count("among the largest |x·w|") == 3


def test_32_filters_walk_filter_0_and_give_every_output(samples_dir):
    data = explain_json(samples_dir / "volume_28x28x192.npy", samples_dir / "bank_192x32.npy", "--pixel", "0,0")
    assert [walk["filter"] for walk in data["layers"][0]["walked"]] == [0]
    assert len(data["output"]) == 32 and len(data["apply"]["output"]) == 32 and data["apply"]["agrees"] is True


def test_filter_option_picks_the_filters_walked(samples_dir):
    args = (samples_dir / "volume_28x28x192.npy", samples_dir / "bank_192x32.npy", "--pixel", "0,0")
    output = run_explain(*args, "--filter", "31", "--filter", "5").stdout
    assert sorted(filter_blocks(output)) == [5, 31]
    assert "walked: filter 5, 31 (output below has all)" in output


def test_a_long_output_vector_is_summarised_with_its_indices(rng, tmp_path):
    x = save(tmp_path, "x.npy", rng.standard_normal((2, 2, 3)).astype(np.float32))
    bank = rng.standard_normal((3, 20)).astype(np.float32)
    bank[:, 11] = 50  # filter 11 has by far the largest output
    output = run_explain(x, save(tmp_path, "w.npy", bank), "--pixel", "1,1", "--activation", "none").stdout
    line = next(line for line in output.splitlines() if line.startswith("output at pixel"))
    assert re.search(r"\[0: \S+, 1: \S+, 2: \S+, … \d+ more …, ", line)
    assert ", 11: " in line and re.search(r"17: \S+, 18: \S+, 19: \S+\]", line)
    assert "20 values: the first 3, the last 3 and the 3 largest in magnitude" in line
    assert "apply computes its 20 values at pixel (1, 1): the same" in last_line(output)


# --- the Python API ----------------------------------------------------------------------------------------


def test_explain_pixel_is_importable_from_the_api_and_takes_arrays():
    from conv1x1_cli.api import explain_pixel

    image = np.arange(6, dtype=np.float32).reshape(2, 3)  # 2-D: one channel
    walk = explain_pixel(image, [np.array([[2.0, -1.0]]), np.array([[1.0], [1.0]])], pixel=(1, 2))
    assert walk.vector == [5.0]
    assert walk.layers[0].output == [10.0, 0.0] and walk.output == [10.0]
    assert walk.check.output == [10.0] and walk.check.agrees
    assert walk.as_dict()["layers"][1]["input"] == [10.0, 0.0]


# --- bad input: one line, the option or file named ---------------------------------------------------------


def one_error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    return errors[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--pixel", "2,0"], "Invalid value for '--pixel': 2,0 is out of range: x.npy has 2×3 pixels"),
        (["--pixel", "0,3"], "(rows 0 to 1, columns 0 to 2)"),
        (["--pixel", "1"], "'1' must be ROW,COL"),
        (["--pixel", "a,b"], "'a,b' must be ROW,COL"),
        (["--pixel", "-1,0"], "'-1,0' must be ROW,COL"),
        (["--pixel", "0,0", "--batch", "1"], "Invalid value for '--batch': 1: x.npy is 3-D, not a batch of images"),
        (["--pixel", "0,0", "--filter", "2"], "Invalid value for '--filter': 2 is out of range"),
        (["--pixel", "0,0", "--bias", "b.npy", "--bias", "b.npy"], "'--bias': given 2 times for 1 bank"),
        ([], "Missing option '--pixel'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(hand_worked, args, fragment, monkeypatch):
    x, w, _ = hand_worked
    monkeypatch.chdir(x.parent)
    result = CliRunner().invoke(explain, [x.name, w.name, *args])
    assert result.exit_code == 2
    assert fragment in one_error_line(result)


def test_a_usage_error_exits_2_from_the_real_process(hand_worked):
    x, w, _ = hand_worked
    command = [sys.executable, "-c", SCRIPT, "explain", x.name, w.name, "--pixel", "5,5"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=x.parent)
    assert result.returncode == 2
    assert "Invalid value for '--pixel': 5,5 is out of range" in one_error_line(result)


def test_batch_out_of_range_is_a_usage_error(rng, tmp_path):
    x = save(tmp_path, "x.npy", rng.standard_normal((2, 3, 3, 4)).astype(np.float32))
    w = save(tmp_path, "w.npy", np.ones((4, 1), np.float32))
    result = run_explain(x, w, "--pixel", "0,0", "--batch", 2, expect=2)
    assert f"Invalid value for '--batch': 2 is out of range: {x} has 2 images" in result.stderr


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda folder: ["missing.npy", "w.npy"], "Error: missing.npy: no such file"),
        (lambda folder: ["x.npy", "missing.npy"], "Error: missing.npy: no such file"),
        (lambda folder: ["x.npy", "w2.npy"], "Error: w2.npy: bank expects 2 input channels but x.npy has 3"),
        (lambda folder: ["x.npy", "w.npy", "--bias", "w2.npy"], "Error: w2.npy: bias must have shape (2,)"),
        (lambda folder: ["x.npy", "k3.npy"], "Error: k3.npy: bank of shape (2, 3, 3, 3) has a 3x3 spatial kernel"),
        (lambda folder: ["text.npy", "w.npy"], "Error: text.npy: not a valid .npy file"),
        (lambda folder: ["-", "-"], "Error: '-' (standard input) is named 2 times"),
    ],
)
def test_bad_files_exit_1_with_one_line_from_the_real_process(hand_worked, make, fragment):
    folder = hand_worked[0].parent
    save(folder, "w2.npy", np.ones((2, 1), np.float32))
    save(folder, "k3.npy", np.ones((2, 3, 3, 3), np.float32))
    (folder / "text.npy").write_text("hello")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "explain", *make(folder), "--pixel", "0,0"],
        capture_output=True,
        text=True,
        cwd=folder,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [one_error_line(result)]
    assert one_error_line(result).startswith(fragment)


def test_stdin_input_in_a_real_pipe(hand_worked):
    x, w, b = hand_worked
    with open(x, "rb") as stdin:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, "explain", "-", w.name, "--bias", b.name, "--pixel", "1,2"],
            stdin=stdin,
            capture_output=True,
            text=True,
            cwd=x.parent,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("<stdin> · pixel (1, 2)")
    assert last_line(result.stdout).startswith("apply computes [5.5, 0] at pixel (1, 2): the same")
