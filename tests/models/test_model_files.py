"""Real models, built in PyTorch and exported by both ONNX exporters and as safetensors: our counts
against PyTorch's, layer by layer; MobileNet against its paper's Table 2; banks taken from each format
against PyTorch's conv2d."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("safetensors")
from models import builders  # noqa: E402

from conv1x1_cli import extract_tensor, model_cost  # noqa: E402

EXPORTERS = ("torchscript", "dynamo")
MODELS = tuple(builders.EXAMPLE_INPUTS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{(model, format): path} for every model: ONNX from both exporters, and float32, float16 and
    bfloat16 safetensors; plus the models themselves under (model, "torch")."""
    folder = tmp_path_factory.mktemp("models")
    made = {}
    for name in MODELS:
        model, example = builders.build(name)
        made[name, "torch"] = (model, example)
        for exporter in EXPORTERS:
            made[name, exporter] = str(
                builders.export_onnx(model, example, folder / f"{name}_{exporter}.onnx", dynamo=exporter == "dynamo")
            )
        made[name, "safetensors"] = str(builders.save_safetensors(model, folder / f"{name}.safetensors"))
        for label, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
            made[name, label] = str(
                builders.save_safetensors_half(model, folder / f"{name}_{label}.safetensors", dtype)
            )
    return made


def folded_bias(model) -> set[str]:
    """The convolutions a BatchNorm follows: both exporters fold it into their bias (F values)."""
    modules = list(model.named_modules())
    return {
        name
        for (name, module), (_, after) in itertools.pairwise(modules)
        if isinstance(module, torch.nn.Conv2d) and isinstance(after, torch.nn.BatchNorm2d)
    }


def torch_rows(model, example) -> list[tuple]:
    """PyTorch's own count of every layer, with the bias the exporters give it, in a comparable form."""
    folded = folded_bias(model)
    rows = []
    for row in builders.torch_layer_counts(model, example):
        bias = row["output"][1] if row["module"] in folded else row["bias"]
        rows.append(
            (row["kind"], row["input"], row["output"], row["weights"], bias, row["weights"] + bias, row["macs"])
        )
    return sorted(rows)


def our_rows(cost) -> list[tuple]:
    return sorted(
        (layer.kind, layer.input, layer.output, layer.weights, layer.bias, layer.params, layer.macs)
        for layer in cost.layers
    )


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", MODELS)
def test_every_layer_counted_as_pytorch_counts_it(files, name, exporter):
    model, example = files[name, "torch"]
    cost = model_cost(files[name, exporter])
    assert our_rows(cost) == torch_rows(model, example)
    assert "BatchNormalization" not in cost.uncosted  # folded by both exporters


def test_the_file_order_is_the_forward_order_for_a_chain(files):
    model, example = files["mobilenet_v1", "torch"]
    reference = [row["macs"] for row in builders.torch_layer_counts(model, example)]
    for exporter in EXPORTERS:
        assert [layer.macs for layer in model_cost(files["mobilenet_v1", exporter]).layers] == reference


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_mobilenet_reproduces_table_2_of_its_paper(files, exporter):
    """Howard et al. 2017, Table 2: 1×1 94.86 % of mult-adds and 74.59 % of parameters; depthwise 3.06 /
    1.06; the full 3×3 stem 1.19 / 0.02; fully connected 0.18 / 24.33; 569 M mult-adds, 4.2 M parameters.
    The stem's 1.19 % is the one figure that does not hold: it is 1.91 % (10.8 M of 568.7 M), and the
    paper's own column adds up to 99.29 %, short by the 0.72 that swapping two digits lost."""
    data = model_cost(files["mobilenet_v1", exporter]).as_dict()
    kinds, totals = data["by_kind"], data["totals"]
    assert totals["macs"] == 568_740_352 and round(totals["macs"] / 1e6) == 569
    assert totals["weights"] == 4_209_088 and round(totals["weights"] / 1e5) == 42
    shares = {kind: (round(entry["macs_share"], 2), round(entry["weights_share"], 2)) for kind, entry in kinds.items()}
    assert shares == {
        "pointwise": (94.86, 74.59),
        "depthwise": (3.06, 1.06),
        "full": (1.91, 0.02),
        "fully connected": (0.18, 24.33),
    }
    assert [kinds[kind]["layers"] for kind in ("pointwise", "depthwise", "full", "fully connected")] == [13, 13, 1, 1]
    # the biases: 1,000 of the classifier, and one per filter of every conv, from the folded BatchNorms
    assert totals["bias"] == 1000 + 32 + sum(
        layer.output[1] for layer in model_cost(files["mobilenet_v1", exporter]).layers[1:-1]
    )


def test_safetensors_listing_classifies_by_shape(files):
    listing = model_cost(files["mixed_model", "safetensors"]).as_dict()
    kinds = {tensor["name"]: tensor["kind"] for tensor in listing["tensors"]}
    # a grouped conv's weight (F, C/groups, K, K) looks like a full one without its graph
    assert kinds == {
        "grouped.weight": "full",
        "pointwise.weight": "pointwise",
        "dilated.weight": "full",
        "transposed.weight": "full",
        "fc.weight": "fully connected",
        "head.weight": "fully connected",
    }
    assert listing["totals"] == {"weights": 8002, "params": 8076, "macs": None}
    mobilenet = model_cost(files["mobilenet_v1", "safetensors"]).as_dict()
    summary = {kind: (entry["layers"], entry["weights"]) for kind, entry in mobilenet["by_kind"].items()}
    assert summary == {
        "pointwise": (13, 3_139_584),
        "depthwise": (13, 44_640),
        "full": (1, 864),
        "fully connected": (1, 1_024_000),
    }
    assert mobilenet["other_tensors"] == 27 * 5  # weight, bias, running mean and variance, batches of each BN


# --- banks straight from model files ---------------------------------------------------------------------


def run_apply(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conv1x1_cli", "apply", *map(str, args), "-q"], capture_output=True)


def apply_with(tmp_path, pixels_nchw: np.ndarray, *bank_args) -> np.ndarray:
    """conv1x1 apply on NCHW pixels, through a real process, with banks and biases given as arguments."""
    np.save(tmp_path / "x.npy", pixels_nchw)
    result = run_apply(tmp_path / "x.npy", *bank_args, "--layout", "nchw", "-o", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr.decode()
    return np.load(tmp_path / "y.npy")


def onnx_node(path: str, weight: str) -> str:
    """The name of the node that uses initializer ``weight`` (the dynamo exporter generates node names)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return next(node.name for node in graph.node if len(node.input) > 1 and node.input[1] == weight)


@pytest.fixture
def mixed_input():
    return np.random.default_rng(3).standard_normal((2, 16, 5, 7)).astype(np.float32)


def pointwise_reference(model, pixels: np.ndarray) -> np.ndarray:
    """PyTorch: the mixed model's pointwise conv (32 → 24, with bias) and a ReLU, on 32-channel pixels."""
    with torch.no_grad():
        return torch.relu(model.pointwise(torch.from_numpy(pixels))).numpy()


def test_banks_from_each_file_format_equal_pytorchs_conv2d(files, tmp_path):
    model, _ = files["mixed_model", "torch"]
    pixels = np.random.default_rng(4).standard_normal((2, 32, 5, 7)).astype(np.float32)
    expected = pointwise_reference(model, pixels)
    safetensors = files["mixed_model", "safetensors"]
    torchscript, dynamo = files["mixed_model", "torchscript"], files["mixed_model", "dynamo"]
    choices = {
        "safetensors tensors": (f"{safetensors}#pointwise.weight", "--bias", f"{safetensors}#pointwise.bias"),
        "TorchScript ONNX node": (f"{torchscript}#/pointwise/Conv",),
        "dynamo ONNX node": (f"{dynamo}#{onnx_node(dynamo, 'pointwise.weight')}",),
        "dynamo ONNX initializers": (f"{dynamo}#pointwise.weight", "--bias", f"{dynamo}#pointwise.bias"),
    }
    for label, arguments in choices.items():
        got = apply_with(tmp_path, pixels, *arguments)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=label)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_folded_conv_node_equals_conv_batchnorm_relu(files, tmp_path, exporter):
    """MobileNet's pointwise layer 5 (256 → 256): the exported node, weights and folded bias, equals
    PyTorch's conv, BatchNorm (eval) and ReLU."""
    model, _ = files["mobilenet_v1", "torch"]
    path = files["mobilenet_v1", exporter]
    layer = model_cost(path).layers[10]
    assert layer.kind == "pointwise" and layer.input[1] == 256
    pixels = np.random.default_rng(5).standard_normal((1, 256, 6, 5)).astype(np.float32)
    with torch.no_grad():
        expected = model.features[5].pw(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(apply_with(tmp_path, pixels, f"{path}#{layer.name}"), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("label, dtype", [("float16", "float16"), ("bfloat16", "bfloat16")])
def test_half_precision_banks_are_computed_in_float32(files, tmp_path, label, dtype):
    model, _ = files["mixed_model", "torch"]
    path = files["mixed_model", label]
    pixels = np.random.default_rng(6).standard_normal((1, 32, 4, 4)).astype(np.float32)
    rounded = {name: tensor.to(getattr(torch, dtype)).float() for name, tensor in model.pointwise.state_dict().items()}
    expected = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(pixels), rounded["weight"], rounded["bias"]))
    got = apply_with(tmp_path, pixels, f"{path}#pointwise.weight", "--bias", f"{path}#pointwise.bias")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_extract_writes_the_tensor_as_stored(files, tmp_path):
    model, _ = files["mixed_model", "torch"]
    out = tmp_path / "bank.npy"
    path = files["mixed_model", "safetensors"]
    result = subprocess.run(
        [sys.executable, "-m", "conv1x1_cli", "model", path, "--extract", "pointwise.weight", "-o", out],
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert np.array_equal(np.load(out), model.pointwise.weight.detach().numpy())
    torchscript = files["mixed_model", "torchscript"]
    assert np.array_equal(extract_tensor(torchscript, "/pointwise/Conv"), model.pointwise.weight.detach().numpy())


def test_model_command_json_and_csv_agree(files):
    path = files["resnet50_stage", "torchscript"]

    def run(*extra):
        result = subprocess.run([sys.executable, "-m", "conv1x1_cli", "model", path, *extra], capture_output=True)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    data = json.loads(run("--format", "json"))
    assert data["totals"]["macs"] == 667_942_912
    assert {kind: entry["layers"] for kind, entry in data["by_kind"].items()} == {"pointwise": 7, "full": 3}
    csv_lines = run("--format", "csv", "--kind", "full", "--sort", "macs").splitlines()
    layer_rows = [line for line in csv_lines if line.startswith("layer,")]
    assert len(layer_rows) == 3 and all(",full," in row for row in layer_rows)
    assert csv_lines[-1].startswith("total,total,") and ",667942912," in csv_lines[-1]
    table = run("--kind", "pointwise")
    assert "Summary by kind" in table and "667,942,912" in table and "/layer1/layer1.0/conv2/Conv" not in table
