"""The ONNX reader on small models made with onnx.helper: layers, shapes, tensors, and a hostile file
for every rule (external data out of the folder, corrupt protobuf, the 2 GiB limit, opsets, shapes)."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conv1x1_cli.errors import ArgumentError, InputError  # noqa: E402
from conv1x1_cli.sources.onnx_model import OnnxModel  # noqa: E402


def conv_model(batch="N", weight=None, bias=None, group=1, opset=17, strides=(1, 1)):
    """input (batch, 4, 6, 6) → Conv with an (8, 4/group, 1, 1) weight (and bias) → output."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 4 // group, 1, 1)).astype(np.float32) if weight is None else weight
    initializers = [numpy_helper.from_array(weight, "w")]
    inputs = ["input", "w"]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias, "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["output"], name="conv", group=group, strides=list(strides))
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 4, 6, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def save(model, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def test_a_pointwise_conv_and_its_shapes(tmp_path):
    bias = np.arange(8, dtype=np.float32)
    path = save(conv_model(batch=2, bias=bias), tmp_path / "m.onnx")
    layers, uncosted = OnnxModel(path).layers()
    assert uncosted == {}
    (layer,) = layers
    assert (layer["input"], layer["output"], layer["kernel"], layer["groups"], layer["bias"]) == (
        (2, 4, 6, 6),
        (2, 8, 6, 6),
        (1, 1),
        1,
        8,
    )


def test_symbolic_batch_needs_batch_or_input(tmp_path):
    path = save(conv_model(), tmp_path / "m.onnx")
    with pytest.raises(InputError, match=r"cannot resolve the shape of 'input' .*\?x4x6x6.*--input NAME="):
        OnnxModel(path).layers()
    assert OnnxModel(path, batch=3).layers()[0][0]["output"] == (3, 8, 6, 6)
    assert OnnxModel(path, input_shapes={"input": (5, 4, 6, 6)}).layers()[0][0]["input"] == (5, 4, 6, 6)


def test_input_overrides_are_checked(tmp_path):
    path = save(conv_model(), tmp_path / "m.onnx")
    with pytest.raises(ArgumentError, match=r"has no graph input 'images' \(its inputs: input\)"):
        OnnxModel(path, input_shapes={"images": (1, 4, 6, 6)})
    with pytest.raises(ArgumentError, match=r"input 'input' has 4 dimensions, not 2"):
        OnnxModel(path, input_shapes={"input": (1, 4)})


def test_shape_inference_failure_is_one_line(tmp_path):
    weight = np.zeros((8, 4, 1), np.float32)  # one spatial axis for a 2-D input
    path = save(conv_model(batch=1, weight=weight), tmp_path / "m.onnx")
    with pytest.raises(InputError, match=r"^.*m\.onnx: shape inference failed: .*spatial dimensions") as caught:
        OnnxModel(path)
    assert "\n" not in str(caught.value)


def test_weights_that_do_not_fit_the_input_are_refused(tmp_path):
    weight = np.zeros((8, 3, 1, 1), np.float32)  # 3 channels a filter for a 4-channel input
    path = save(conv_model(batch=1, weight=weight), tmp_path / "m.onnx")
    with pytest.raises(InputError, match=r"node 'conv': weight of shape \(8, 3, 1, 1\) does not fit 4 input"):
        OnnxModel(path).layers()


def test_an_operator_the_opset_does_not_define_is_refused(tmp_path):
    model = conv_model(batch=1)
    model.graph.node.append(helper.make_node("FooBar", ["output"], ["more"], name="odd"))
    path = save(model, tmp_path / "m.onnx")
    with pytest.raises(InputError, match=r"node 'odd': operator 'FooBar' is not in ONNX opset 17"):
        OnnxModel(path)


def test_unknown_opset_is_refused(tmp_path):
    path = save(conv_model(batch=1, opset=999), tmp_path / "m.onnx")
    with pytest.raises(InputError, match=r"uses ONNX opset 999; onnx .* knows 1 to \d+"):
        OnnxModel(path)


@pytest.mark.parametrize("cut", [10, 100, -7])
def test_truncated_protobuf_is_refused(tmp_path, cut):
    whole = conv_model(batch=1).SerializeToString()
    path = tmp_path / "t.onnx"
    path.write_bytes(whole[:cut])
    with pytest.raises(InputError, match=r"t\.onnx: (is not a valid ONNX model|is not an ONNX model)"):
        OnnxModel(str(path))


def test_random_bytes_are_not_a_model(tmp_path):
    path = tmp_path / "r.onnx"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(InputError, match=r"r\.onnx: (is not a valid ONNX model|is not an ONNX model)"):
        OnnxModel(str(path))


def test_a_model_over_protobufs_limit_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as stream:  # sparse: no disk space used
        stream.truncate(2**31)
    with pytest.raises(InputError, match=r"is 2147483648 bytes, over protobuf's 2 GiB limit"):
        OnnxModel(str(path))


def test_a_folder_is_not_a_model(tmp_path):
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(InputError, match=r"d\.onnx: is not a regular file"):
        OnnxModel(str(tmp_path / "d.onnx"))


# --- external data -------------------------------------------------------------------------------------


def external_model(tmp_path, location: str, offset=0, length=None, write_data=True):
    """A model whose weight (8, 4, 1, 1) lives at ``location`` (relative to the model) in external data."""
    weight = np.arange(32, dtype=np.float32).reshape(8, 4, 1, 1)
    model = conv_model(batch=1, weight=weight)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length or 128))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    if write_data:
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\0" * offset + weight.tobytes())
    return save(model, folder / "m.onnx"), weight


def test_external_data_inside_the_folder_is_read(tmp_path):
    path, weight = external_model(tmp_path, "weights/m.data", offset=64)
    model = OnnxModel(path)
    assert np.array_equal(model.tensor("w"), weight)
    values, bias, layout = model.bank("conv")
    assert np.array_equal(values, weight) and bias is None and layout == "fc"


@pytest.mark.parametrize(
    "location, message",
    [
        ("/etc/passwd", "is not a relative path"),
        ("../outside.data", "climbs out of the model's folder"),
        ("weights/../../outside.data", "climbs out of the model's folder"),
        ("C:/Windows/win.ini", "is not a relative path"),
        ("", "is not a relative path"),
    ],
)
def test_external_data_outside_the_folder_is_refused(tmp_path, location, message):
    path, _ = external_model(tmp_path, location or "x", write_data=False)
    if not location:
        model = onnx.load(path, load_external_data=False)
        model.graph.initializer[0].external_data[0].value = ""
        onnx.save(model, path)
    with pytest.raises(InputError, match=message):
        OnnxModel(path)


def test_a_symlink_leading_out_of_the_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.data"
    secret.write_bytes(b"\0" * 128)
    path, _ = external_model(tmp_path, "link.data", write_data=False)
    os.symlink(secret, tmp_path / "model" / "link.data")
    with pytest.raises(InputError, match=r"'link\.data' leads out of the model's folder \(a symlink\)"):
        OnnxModel(path)


def test_a_symlink_inside_the_folder_is_followed(tmp_path):
    path, weight = external_model(tmp_path, "real.data")
    os.symlink(tmp_path / "model" / "real.data", tmp_path / "model" / "link.data")
    model = onnx.load(path, load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "link.data"
    onnx.save(model, path)
    assert np.array_equal(OnnxModel(path).tensor("w"), weight)


def test_external_data_ranges_are_checked(tmp_path):
    path, _ = external_model(tmp_path, "m.data", length=64)
    with pytest.raises(InputError, match=r"64 bytes at offset 0, but the tensor needs 128"):
        OnnxModel(path)
    path, _ = external_model(tmp_path, "short.data", write_data=False)
    (tmp_path / "model" / "short.data").write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match=r"bytes 0 to 128 lie beyond its end \(100\)"):
        OnnxModel(path)
    path, _ = external_model(tmp_path, "missing.data", write_data=False)
    with pytest.raises(InputError, match=r"'missing\.data' does not exist"):
        OnnxModel(path)


# --- tensors and banks ------------------------------------------------------------------------------------


def test_conv_node_brings_its_bias(tmp_path):
    bias = np.linspace(-1, 1, 8, dtype=np.float32)
    path = save(conv_model(batch=1, bias=bias), tmp_path / "m.onnx")
    values, got_bias, layout = OnnxModel(path, infer_shapes=False).bank("conv")
    assert values.shape == (8, 4, 1, 1) and np.array_equal(got_bias, bias) and layout == "fc"
    values, got_bias, layout = OnnxModel(path, infer_shapes=False).bank("w")
    assert got_bias is None and layout is None


@pytest.mark.parametrize("data_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE])
def test_half_and_double_tensors(tmp_path, data_type):
    values = np.array([[1.0, -2.5], [0.15625, 3.0]], np.float64)
    tensor = helper.make_tensor("t", data_type, values.shape, values.flatten().tolist())
    model = conv_model(batch=1)
    model.graph.initializer.append(tensor)
    path = save(model, tmp_path / "m.onnx")
    read = OnnxModel(path, infer_shapes=False).tensor("t")
    assert read.dtype == (np.float64 if data_type == TensorProto.DOUBLE else np.float32)
    assert np.array_equal(read, values)  # every value here is exact in float16 and bfloat16


def test_gemm_and_matmul_layers_and_their_banks(tmp_path):
    rng = np.random.default_rng(2)
    w_gemm = rng.standard_normal((10, 6)).astype(np.float32)  # (F, C) with transB
    b_gemm = rng.standard_normal(10).astype(np.float32)
    w_matmul = rng.standard_normal((10, 3)).astype(np.float32)  # (C, F)
    b_add = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["input", "wg", "bg"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "wm"], ["m"], name="head"),
        helper.make_node("Add", ["m", "ba"], ["output"], name="head_bias"),
    ]
    initializers = [
        numpy_helper.from_array(a, n) for a, n in ((w_gemm, "wg"), (b_gemm, "bg"), (w_matmul, "wm"), (b_add, "ba"))
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        initializers,
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fc.onnx")
    model = OnnxModel(path)
    layers, uncosted = model.layers()
    assert [(layer["op"], layer["input"], layer["output"], layer["bias"]) for layer in layers] == [
        ("Gemm", (4, 6), (4, 10), 10),
        ("MatMul", (4, 10), (4, 3), 3),
    ]
    assert uncosted == {"Relu": 1, "Add": 1}
    bank, bias, layout = model.bank("fc")
    assert layout == "cf" and np.array_equal(bank, w_gemm.T) and np.array_equal(bias, b_gemm)
    bank, bias, layout = model.bank("head")
    assert layout == "cf" and np.array_equal(bank, w_matmul) and np.array_equal(bias, b_add)
    with pytest.raises(InputError, match=r"node 'relu' is a Relu without a weight initializer"):
        model.bank("relu")
    with pytest.raises(InputError, match=r"has no initializer or node named 'nope'"):
        model.bank("nope")


def test_weights_from_a_constant_node_are_weights(tmp_path):
    weight = np.arange(32, dtype=np.float32).reshape(8, 4, 1, 1)
    constant = helper.make_node("Constant", [], ["w"], name="weights", value=numpy_helper.from_array(weight, "w"))
    conv = helper.make_node("Conv", ["input", "w"], ["output"], name="conv")
    graph = helper.make_graph(
        [constant, conv],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "c.onnx")
    model = OnnxModel(path)
    layers, uncosted = model.layers()
    assert [(layer["name"], layer["weight"], layer["output"]) for layer in layers] == [("conv", "w", (1, 8, 6, 6))]
    assert uncosted == {"Constant": 1}
    assert np.array_equal(model.bank("conv")[0], weight)


def test_external_data_named_with_a_nul_byte_is_refused(tmp_path):
    path, _ = external_model(tmp_path, "x", write_data=False)
    model = onnx.load(path, load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "w.bin\0elsewhere"
    onnx.save(model, path)
    with pytest.raises(InputError, match="is not a relative path inside the model's folder"):
        OnnxModel(path)


def test_raw_data_of_a_part_value_is_refused(tmp_path):
    model = conv_model(batch=1)
    model.graph.initializer[0].raw_data = b"\0" * 127  # (8·4 float32 values are 128 bytes)
    with pytest.raises(InputError, match=r"tensor 'w' has 127 bytes of raw data: not whole float32s"):
        OnnxModel(save(model, tmp_path / "m.onnx")).tensor("w")


@pytest.mark.parametrize("group", [0, "a"])
def test_a_group_that_is_no_positive_integer_is_refused(tmp_path, group):
    model = conv_model(batch=1)
    del model.graph.node[0].attribute[:]
    model.graph.node[0].attribute.append(helper.make_attribute("group", group))
    with pytest.raises(InputError, match=r"node 'conv': group .* is not a positive integer"):
        OnnxModel(save(model, tmp_path / "m.onnx")).layers()
