"""``conv1x1 model`` and model-file banks in ``apply``, through real processes: tables, errors (one line,
no traceback, nothing written), pickles refused, and the models extra imported only when used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

COMMAND = [sys.executable, "-m", "conv1x1_cli"]


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, **kwargs)


def assert_one_error_line(result, *fragments):
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr.decode()
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert b"Traceback" not in result.stderr


@pytest.fixture
def small_model(tmp_path):
    """input (N, 3, 8, 8) → 3×3 conv to 6 (stride 2) → 1×1 conv to 4 (bias) → global pool: every kind we
    need, written by hand so that each count can be checked by hand."""
    rng = np.random.default_rng(0)
    stem = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    pointwise = rng.standard_normal((4, 6, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "stem"], ["a"], name="stem", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Conv", ["b", "pw", "pw_bias"], ["c"], name="pw"),
        helper.make_node("GlobalAveragePool", ["c"], ["output"], name="pool"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in ((stem, "stem"), (pointwise, "pw"), (bias, "pw_bias"))],
    )
    path = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path, pointwise, bias


def costs_of_eight_channel_convs(path, nodes) -> dict:
    """``conv1x1 model``'s JSON for a graph of these nodes over a (1, 8, 10, 10) input, with an (8, 8, 1, 1)
    weight "w" of ones and biases "b" of zeros and "b2" of ones, saved at ``path``."""
    initializers = [
        numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
        numpy_helper.from_array(np.ones(8, np.float32), "b2"),
    ]
    graph = helper.make_graph(
        nodes,
        "eight_channels",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 10, 10])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = cli("model", path, "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_weights_and_biases_passed_through_identity_nodes_are_counted(tmp_path):
    """As PyTorch's TorchScript exporter writes two layers of equal weights (and folded BatchNorm biases
    that are equal): the tensors once, the second layer's through Identity nodes, here a chain of two."""
    path = tmp_path / "equal_layers.onnx"
    data = costs_of_eight_channel_convs(
        path,
        [
            helper.make_node("Conv", ["input", "w", "b"], ["a"], name="first"),
            helper.make_node("Identity", ["w"], ["w_again"]),
            helper.make_node("Identity", ["w_again"], ["w_twice"]),
            helper.make_node("Identity", ["b"], ["b_again"]),
            helper.make_node("Conv", ["a", "w_twice", "b_again"], ["output"], name="second"),
        ],
    )
    assert [(layer["name"], layer["weights"], layer["bias"]) for layer in data["layers"]] == [
        ("first", 64, 8),
        ("second", 64, 8),
    ]
    # each layer: 10·10 positions × 8 filters × 8 weights = 6,400 MACs, and 800 bias additions in FLOPs
    assert data["totals"] == {"weights": 128, "bias": 16, "params": 144, "macs": 12800, "flops": 27200}
    extracted = tmp_path / "second.npy"
    assert cli("model", path, "--extract", "w_twice", "-o", extracted).returncode == 0
    np.testing.assert_array_equal(np.load(extracted), np.ones((8, 8, 1, 1), np.float32))


def test_a_weight_two_layers_share_counts_once_in_the_parameters(tmp_path):
    """One 1x1 conv applied twice (PyTorch counts its 72 parameters once): both uses cost MACs."""
    data = costs_of_eight_channel_convs(
        tmp_path / "shared.onnx",
        [
            helper.make_node("Conv", ["input", "w", "b"], ["a"], name="first"),
            helper.make_node("Conv", ["a", "w", "b"], ["output"], name="again"),
        ],
    )
    assert [(layer["name"], layer["params"], layer["macs"]) for layer in data["layers"]] == [
        ("first", 72, 6400),
        ("again", 72, 6400),
    ]
    assert data["totals"] == {"weights": 64, "bias": 8, "params": 72, "macs": 12800, "flops": 27200}
    pointwise = data["by_kind"]["pointwise"]
    assert (pointwise["layers"], pointwise["weights"], pointwise["params"], pointwise["macs"]) == (2, 64, 72, 12800)


def test_a_weight_two_layers_share_with_biases_of_their_own_counts_each_bias(tmp_path):
    """One weight tensor, two bias tensors (as a file whose equal initializers were merged holds them):
    the weight counts once in the parameters, each bias once."""
    data = costs_of_eight_channel_convs(
        tmp_path / "shared_weight.onnx",
        [
            helper.make_node("Conv", ["input", "w", "b"], ["a"], name="first"),
            helper.make_node("Conv", ["a", "w", "b2"], ["output"], name="second"),
        ],
    )
    assert [(layer["name"], layer["params"]) for layer in data["layers"]] == [("first", 72), ("second", 72)]
    assert data["totals"] == {"weights": 64, "bias": 16, "params": 80, "macs": 12800, "flops": 27200}
    pointwise = data["by_kind"]["pointwise"]
    assert (pointwise["layers"], pointwise["weights"], pointwise["params"]) == (2, 64, 80)


def test_counts_worked_by_hand(small_model):
    path, _, _ = small_model
    result = cli("model", path, "--batch", "2", "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    stem, pointwise = data["layers"]
    # stem: 2 images × 4×4 outputs × 6 filters × 3·3·3 weights = 5,184 MACs; 162 weights
    assert (stem["kind"], stem["output"], stem["weights"], stem["macs"], stem["flops"]) == (
        "full",
        [2, 6, 4, 4],
        162,
        5184,
        10368,
    )
    # pointwise: 2 × 4×4 × 4 filters × 6 = 768 MACs, + 128 bias additions in FLOPs; 24 weights + 4 bias
    assert (pointwise["kind"], pointwise["macs"], pointwise["flops"], pointwise["params"]) == (
        "pointwise",
        768,
        1664,
        28,
    )
    assert data["totals"] == {"weights": 186, "bias": 4, "params": 190, "macs": 5952, "flops": 12032}
    assert round(data["by_kind"]["full"]["macs_share"], 4) == round(100 * 5184 / 5952, 4)
    assert data["uncosted"] == {"GlobalAveragePool": 1, "Relu": 1}


def test_input_shape_option(small_model):
    path, _, _ = small_model
    data = json.loads(cli("model", path, "--input", "input=3x3x16x16", "--format", "json").stdout)
    assert data["layers"][1]["output"] == [3, 4, 8, 8]


def test_table_in_a_pipe_and_sorting(small_model):
    path, _, _ = small_model
    result = cli("model", path, "--batch", "1", "--sort", "macs")
    text = result.stdout.decode()
    assert result.returncode == 0 and text.index(" stem ") < text.index(" pw ")
    assert "Summary by kind" in text and "not costed (no weights of a file, or not a layer with MACs): 1" in text
    only = cli("model", path, "--batch", "1", "--kind", "pointwise").stdout.decode()
    assert " pw " in only and " stem " not in only.split("Summary by kind")[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--input", "input=3x3"], "'--input': input 'input' has 4 dimensions, not 2"),
        (["--input", "images=1x3x8x8"], "'--input': " + "{path} has no graph input 'images' (its inputs: input)"),
        (["--input", "nonsense"], "'--input': give NAME=SHAPE"),
        (["--extract", "pw"], "--extract NAME and -o OUTPUT go together"),
        (["--batch", "0"], "'--batch'"),
    ],
)
def test_usage_errors_exit_2_with_one_error_line(small_model, args, fragment):
    path, _, _ = small_model
    result = cli("model", path, *args)
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("Error")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr.decode()
    assert fragment.format(path=path) in errors[0] and b"Traceback" not in result.stderr and not result.stdout


def test_unresolved_shapes_say_what_to_give(small_model):
    path, _, _ = small_model
    assert_one_error_line(cli("model", path), "cannot resolve the shape of 'input'", "--input NAME=", "--batch N")


def test_hostile_files_give_one_line_and_write_nothing(tmp_path, small_model):
    path, _, _ = small_model
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(path.read_bytes()[:50])
    assert_one_error_line(cli("model", truncated), "cut.onnx:", "ONNX model")
    pickle = tmp_path / "weights.pth"
    pickle.write_bytes(b"\x80\x04K\x01.")
    np.save(tmp_path / "x.npy", np.ones((2, 2, 6), np.float32))
    for args in (["model", pickle], ["apply", tmp_path / "x.npy", pickle, "-o", tmp_path / "y.npy"]):
        assert_one_error_line(cli(*args), "weights.pth: a pickled PyTorch checkpoint; conv1x1 never unpickles")
    out = tmp_path / "never.npy"
    assert_one_error_line(cli("model", path, "--extract", "absent", "-o", out), "no initializer or node")
    assert sorted(os.listdir(tmp_path)) == ["cut.onnx", "small.onnx", "weights.pth", "x.npy"]  # nothing written


def test_apply_takes_a_conv_node_with_its_bias(tmp_path, small_model):
    path, pointwise, bias = small_model
    pixels = np.random.default_rng(1).standard_normal((5, 4, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", pixels)
    result = cli("apply", tmp_path / "x.npy", f"{path}#pw", "-o", tmp_path / "y.npy", "-q")
    assert result.returncode == 0, result.stderr.decode()
    expected = np.maximum(pixels.astype(np.float64) @ pointwise[:, :, 0, 0].T.astype(np.float64) + bias, 0)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)
    two = cli("apply", tmp_path / "x.npy", f"{path}#pw", "--bias", f"{path}#pw_bias", "-o", tmp_path / "z.npy")
    assert_one_error_line(two, "brings its own bias from the model")
    assert not (tmp_path / "z.npy").exists()
    assert_one_error_line(
        cli("apply", tmp_path / "x.npy", f"{path}#stem", "-o", tmp_path / "z.npy"), "3x3 spatial kernel"
    )


def test_the_models_extra_is_named_when_missing(tmp_path, small_model):
    path, _, _ = small_model
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "onnx.py").write_text("raise ImportError('no onnx here')\n")
    environment = {**os.environ, "PYTHONPATH": str(blocker)}
    result = cli("model", path, env=environment)
    assert_one_error_line(result, 'reading ONNX models needs the models extra: pip install "conv1x1[models]"')


def test_shapes_and_help_never_import_the_model_readers():
    code = (
        "import sys; from click.testing import CliRunner; from conv1x1_cli.cli import main; "
        "r = CliRunner(); r.invoke(main, ['--help']); r.invoke(main, ['shapes', '28x28x192', '-f', '32']); "
        "r.invoke(main, ['model', '--help']); "
        "print(sorted(m for m in ('onnx', 'safetensors', 'numpy', 'numba') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_names_from_a_file_reach_the_terminal_as_text(tmp_path):
    """A tensor name with escape sequences and a newline is shown escaped (it may not clear the screen
    or fake a row), and one that looks like rich markup is shown as it is."""
    names = ["a\x1b]0;title\x07\x1b[2J\nfake row.weight", "[bold]b.weight"]
    header = {
        name: {"dtype": "F32", "shape": [4, 2, 1, 1], "data_offsets": [32 * i, 32 * (i + 1)]}
        for i, name in enumerate(names)
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "names.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(64))
    result = cli("model", path)
    assert result.returncode == 0, result.stderr.decode()
    shown = result.stdout.decode()
    assert "\x1b" not in shown and "\x07" not in shown
    assert "a\\x1b]0;title\\x07\\x1b[2J\\nfake row.weight" in shown
    assert not any(line.startswith("fake row") for line in shown.splitlines())
    assert "[bold]b.weight" in shown
