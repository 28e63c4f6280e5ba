"""ONNX models, read as untrusted input: their layers with weights, and their tensors as banks.

Read with the ``onnx`` package (the ``models`` extra), which parses the protobuf and infers shapes.
Everything it would do with the file system is done here instead, with checks: a model over
protobuf's 2 GiB limit is refused before parsing; every tensor kept in external data must name a
regular file inside the model's folder (no absolute path, no ``..``, no symlink leading out: the
class of CVE-2022-25882 and CVE-2024-27318) and a byte range inside it of exactly the tensor's size;
and those bytes are read only when the tensor is asked for, by this module, never by ``onnx``.

Layers are returned as plain dicts of ints and strings (``layers``): ``costs.models`` classifies and
counts them; ``sources`` knows nothing of costs.
"""

from __future__ import annotations

import math
import os
import stat
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError, InputError

PROTOBUF_LIMIT = 2**31 - 1  # bytes: protobuf refuses to parse larger messages
COSTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_STANDARD_DOMAINS = ("", "ai.onnx")
# ONNX TensorProto data types a bank or a bias may have, and how they are stored.
_FLOAT_TYPES = {1: "<f4", 10: "<f2", 11: "<f8", 16: "<u2"}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_TYPE_NAMES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def import_onnx(name: str):
    """The onnx package, or one line naming the extra that brings it."""
    try:
        import onnx
        import onnx.shape_inference
    except ImportError:
        raise InputError(f'{name}: reading ONNX models needs the models extra: pip install "conv1x1[models]"') from None
    return onnx


@dataclass(frozen=True)
class ExternalData:
    """Where a tensor's bytes lie outside the model: a checked file, offset and length."""

    path: str
    offset: int
    length: int


class OnnxModel:
    """A parsed, checked ONNX model with inferred shapes.

    ``input_shapes`` ({graph input name: shape}) and ``batch`` fix symbolic dimensions before shape
    inference (``batch`` the first dimension of every graph input not given a shape)."""

    def __init__(
        self,
        path: str,
        input_shapes: dict[str, tuple[int, ...]] | None = None,
        batch: int | None = None,
        name: str | None = None,
        infer_shapes: bool = True,  # (only costs need shapes; reading a bank does not)
    ):
        self.path, self.name = path, name or path
        self.onnx = import_onnx(self.name)
        self.model = self._parse()
        self._check_opsets()
        self.initializers = {tensor.name: tensor for tensor in self.model.graph.initializer}
        self.initializers.update(self._constants())
        self.initializers.update(self._passed_through_identities())
        self.external = {name: self._external_data(tensor) for name, tensor in self.initializers.items()}
        self._fix_inputs(input_shapes or {}, batch)
        self.shapes = self._inferred_shapes() if infer_shapes else {}

    def error(self, problem: str) -> InputError:
        return InputError(f"{self.name}: {problem}")

    # -- reading ---------------------------------------------------------------------------------------

    def _parse(self):
        try:
            info = os.stat(self.path)
        except OSError as error:
            raise self.error(error.strerror or "cannot be read") from None
        if not stat.S_ISREG(info.st_mode):
            raise self.error("is not a regular file")
        if info.st_size > PROTOBUF_LIMIT:
            raise self.error(
                f"is {info.st_size} bytes, over protobuf's 2 GiB limit: larger models keep their weights "
                "in external data files"
            )
        from google.protobuf.message import DecodeError

        try:
            with open(self.path, "rb") as stream:
                content = stream.read()
        except OSError as error:
            raise self.error(error.strerror or "cannot be read") from None
        try:
            model = self.onnx.load_model_from_string(content)
        except (DecodeError, ValueError, RuntimeError, RecursionError) as error:
            raise self.error(
                f"is not a valid ONNX model: truncated or corrupt protobuf ({type(error).__name__})"
            ) from None
        if model.ir_version < 1 or not model.opset_import or not model.graph.node:
            raise self.error("is not an ONNX model (no IR version, opset or graph nodes)")
        return model

    def _check_opsets(self) -> None:
        """Refuse an opset of the standard domain that onnx does not know, and an operator that opset
        does not define (shape inference passes unknown operators by, leaving their outputs unknown)."""
        newest = self.onnx.defs.onnx_opset_version()
        version = None
        for opset in self.model.opset_import:
            if opset.domain in _STANDARD_DOMAINS:
                if not 1 <= opset.version <= newest:
                    raise self.error(
                        f"uses ONNX opset {opset.version}; onnx {self.onnx.__version__} knows 1 to {newest}"
                    )
                version = opset.version
        for node in self.model.graph.node:
            if node.domain in _STANDARD_DOMAINS:
                try:
                    self.onnx.defs.get_schema(node.op_type, version or newest, "")
                except self.onnx.defs.SchemaError:
                    where = node.name or node.output[0]
                    raise self.error(
                        f"node {where!r}: operator {node.op_type!r} is not in ONNX opset {version}"
                    ) from None

    def _constants(self) -> dict:
        """The tensors of Constant nodes, by their output's name: some exporters give weights that way."""
        constants = {}
        for node in self.model.graph.node:
            if node.op_type == "Constant" and node.domain in _STANDARD_DOMAINS:
                values = [attribute.t for attribute in node.attribute if attribute.name == "value"]
                if values:
                    constants[node.output[0]] = values[0]
        return constants

    def _passed_through_identities(self) -> dict:
        """Initializers by the names Identity nodes pass them on under.  PyTorch's TorchScript exporter
        stores equal tensors once and hands each other user the one through an Identity: two layers
        with equal weights, or the BatchNorm biases it folds into convolutions while they are all
        equal (as when not trained).  (Nodes come in topological order: a chain resolves in one pass.)"""
        passed: dict = {}
        for node in self.model.graph.node:
            if node.op_type == "Identity" and node.domain in _STANDARD_DOMAINS and node.input and node.output:
                tensor = passed.get(node.input[0], self.initializers.get(node.input[0]))
                if tensor is not None:
                    passed[node.output[0]] = tensor
        return passed

    def _external_data(self, tensor) -> ExternalData | None:
        if tensor.data_location != self.onnx.TensorProto.EXTERNAL:
            return None
        fields = {entry.key: entry.value for entry in tensor.external_data}
        location = fields.get("location", "")
        where = f"tensor {tensor.name!r}: external data {location!r}"
        outside = os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location
        if not location or outside or "\0" in location:
            raise self.error(f"{where} is not a relative path inside the model's folder")
        if ".." in location.replace("\\", "/").split("/"):
            raise self.error(f"{where} climbs out of the model's folder ('..')")
        folder = os.path.realpath(os.path.dirname(os.path.abspath(self.path)))
        target = os.path.realpath(os.path.join(folder, location))
        if os.path.commonpath([folder, target]) != folder:
            raise self.error(f"{where} leads out of the model's folder (a symlink)")
        try:
            info = os.stat(target)
        except OSError:
            raise self.error(f"{where} does not exist") from None
        if not stat.S_ISREG(info.st_mode):
            raise self.error(f"{where} is not a regular file")
        try:
            offset = int(fields.get("offset", "0"))
            expected = math.prod(tensor.dims) * self._item_bytes(tensor)
            length = int(fields.get("length", str(expected)))
        except ValueError:
            raise self.error(f"{where}: offset and length must be integers") from None
        if offset < 0 or length != expected:
            raise self.error(f"{where}: {length} bytes at offset {offset}, but the tensor needs {expected}")
        if offset + length > info.st_size:
            raise self.error(f"{where}: bytes {offset} to {offset + length} lie beyond its end ({info.st_size})")
        return ExternalData(target, offset, length)

    def _item_bytes(self, tensor) -> int:
        try:
            return np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise self.error(f"tensor {tensor.name!r} has an unknown data type {tensor.data_type}") from None

    # -- shapes ----------------------------------------------------------------------------------------

    def graph_inputs(self) -> list:
        return [value for value in self.model.graph.input if value.name not in self.initializers]

    def _fix_inputs(self, input_shapes: dict[str, tuple[int, ...]], batch: int | None) -> None:
        inputs = {value.name: value for value in self.graph_inputs()}
        for input_name in input_shapes:
            if input_name not in inputs:
                known = ", ".join(inputs) or "none"
                raise ArgumentError(f"{self.name} has no graph input {input_name!r} (its inputs: {known})", "--input")
        for input_name, value in inputs.items():
            dims = value.type.tensor_type.shape.dim
            shape = input_shapes.get(input_name)
            if shape is not None:
                if len(dims) and len(dims) != len(shape):
                    raise ArgumentError(f"input {input_name!r} has {len(dims)} dimensions, not {len(shape)}", "--input")
                del dims[:]
                for size in shape:
                    dims.add().dim_value = size
            elif batch is not None and len(dims):
                dims[0].Clear()
                dims[0].dim_value = batch

    def _inferred_shapes(self) -> dict[str, tuple[int | None, ...]]:
        try:
            inferred = self.onnx.shape_inference.infer_shapes(
                self.model, check_type=True, strict_mode=True, data_prop=True
            )
        except Exception as error:  # onnx raises its own InferenceError, and others from its checker
            raise self.error(f"shape inference failed: {_first_line(error)}") from None
        shapes = {}
        graph = inferred.graph
        for value in (*graph.input, *graph.value_info, *graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                dims = value.type.tensor_type.shape.dim
                shapes[value.name] = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in dims)
        for name, tensor in self.initializers.items():
            shapes[name] = tuple(tensor.dims)
        return shapes

    def shape(self, tensor: str, node_name: str) -> tuple[int, ...]:
        shape = self.shapes.get(tensor)
        if shape is None or any(size is None for size in shape):
            written = "unknown" if shape is None else "x".join("?" if size is None else str(size) for size in shape)
            raise self.error(
                f"cannot resolve the shape of {tensor!r} (node {node_name!r}: {written}); "
                "give the graph inputs' shapes with --input NAME=1x3x224x224 or --batch N"
            )
        return shape  # type: ignore[return-value]

    # -- layers ----------------------------------------------------------------------------------------

    def layers(self) -> tuple[list[dict], Counter]:
        """(the layers with weights, as LayerSpec fields; the nodes not costed, counted by op type)."""
        layers: list[dict] = []
        uncosted: Counter[str] = Counter()
        consumers = self._consumers()
        for index, node in enumerate(self.model.graph.node):
            layer = None
            if node.domain in _STANDARD_DOMAINS and node.op_type in COSTED_OPS:
                layer = self._layer(node, node.name or f"{node.op_type}_{index}", consumers)
            if layer is None:
                uncosted[node.op_type if node.domain in _STANDARD_DOMAINS else f"{node.domain}.{node.op_type}"] += 1
            else:
                layers.append(layer)
        return layers, uncosted

    def _consumers(self) -> dict[str, list]:
        consumers: dict[str, list] = {}
        for node in self.model.graph.node:
            for tensor in node.input:
                consumers.setdefault(tensor, []).append(node)
        return consumers

    def _layer(self, node, name: str, consumers) -> dict | None:
        inputs = list(node.input)
        if len(inputs) < 2 or inputs[1] not in self.initializers:
            return None  # weights computed in the graph: no bank of a file to count
        if node.op_type == "MatMul" and len(self.initializers[inputs[1]].dims) != 2:
            return None  # a batch of matrices, not one layer's weights
        attributes = {attribute.name: self.onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
        weight = self.initializers[inputs[1]]
        bias_name = inputs[2] if len(inputs) > 2 and inputs[2] in self.initializers else None
        source, result = self.shape(inputs[0], name), self.shape(node.output[0], name)
        if node.op_type in ("Conv", "ConvTranspose"):
            spatial = len(weight.dims) - 2
            kernel = tuple(attributes.get("kernel_shape", weight.dims[2:]))
            stride = tuple(attributes.get("strides", [1] * spatial))
            dilation = tuple(attributes.get("dilations", [1] * spatial))
            groups = attributes.get("group", 1)
            if not isinstance(groups, int) or groups < 1:
                raise self.error(f"node {name!r}: group {groups!r} is not a positive integer")
            self._check_weight(name, node.op_type, tuple(weight.dims), kernel, groups, source[1], result[1])
        else:
            if node.op_type == "Gemm" and attributes.get("transA", 0):
                source = source[::-1]
            if node.op_type == "MatMul":
                bias_name = self._added_bias(node, consumers, result[-1])
            kernel = stride = dilation = ()
            groups = 1
        bias = math.prod(self.initializers[bias_name].dims) if bias_name else 0
        return {
            "name": name,
            "op": node.op_type,
            "weight": inputs[1],
            "bias_name": bias_name,
            "input": tuple(source),
            "output": tuple(result),
            "kernel": kernel,
            "stride": stride,
            "dilation": dilation,
            "groups": groups,
            "bias": bias,
            "itemsize": self._item_bytes(weight),
        }

    def _check_weight(self, name, op, dims, kernel, groups, channels, filters) -> None:
        """Weights that fit the shapes: what the counts rest on (shape inference does not check a
        Conv's channels against its weight's)."""
        if op == "Conv":
            expected = (filters, channels // groups, *kernel)
        else:
            expected = (channels, filters // groups, *kernel)
        if groups < 1 or channels % groups or filters % groups or dims != expected:
            raise self.error(
                f"node {name!r}: weight of shape {dims} does not fit {channels} input and {filters} output channels "
                f"in {groups} group(s) with a {'x'.join(map(str, kernel))} kernel"
            )

    def _added_bias(self, node, consumers, features: int) -> str | None:
        """The bias of a Linear layer exported as MatMul then Add of an initializer of F values."""
        following = consumers.get(node.output[0], [])
        if len(following) != 1 or following[0].op_type != "Add":
            return None
        for tensor in following[0].input:
            if tensor in self.initializers and math.prod(self.initializers[tensor].dims) == features:
                return tensor
        return None

    # -- tensors ---------------------------------------------------------------------------------------

    def node(self, name: str):
        return next((node for node in self.model.graph.node if node.name == name), None)

    def bank(self, reference: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
        """(weights, bias or None, their layout): an initializer by name (its layout is the caller's
        to say), or a Conv, Gemm or MatMul node by name, which brings its bias and says its layout:
        a Conv's (F, C, 1, 1), or a fully connected layer's (C, F). A name that is both a node's and
        an initializer's that the node uses names the node (exporters often name a Conv after its weight)."""
        node = self.node(reference)
        if node is None or (reference in self.initializers and reference not in node.input):
            if reference in self.initializers:  # (a node of the same name that does not use it: the tensor)
                return self.tensor(reference), None, None
            raise self.error(f"has no initializer or node named {reference!r}")
        inputs = list(node.input)
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(inputs) < 2 or inputs[1] not in self.initializers:
            raise self.error(f"node {reference!r} is a {node.op_type} without a weight initializer: no bank to take")
        weights = self.tensor(inputs[1])
        if node.op_type == "Conv":
            bias_name = inputs[2] if len(inputs) > 2 and inputs[2] in self.initializers else None
            return weights, (self.tensor(bias_name) if bias_name else None), "fc"
        if node.op_type == "Gemm":
            attributes = {attribute.name: attribute.i for attribute in node.attribute}
            if attributes.get("transA", 0):
                raise self.error(f"node {reference!r} transposes its input (transA): not a bank applied to pixels")
            bias_name = inputs[2] if len(inputs) > 2 and inputs[2] in self.initializers else None
            weights = weights.T if attributes.get("transB", 0) else weights
        else:
            bias_name = self._added_bias(node, self._consumers(), weights.shape[-1])
        return weights, (self.tensor(bias_name) if bias_name else None), "cf"

    def tensor(self, name: str) -> np.ndarray:
        """An initializer as a NumPy array (float16 and bfloat16 in float32), read from the model or
        from its checked external data."""
        tensor = self.initializers.get(name)
        if tensor is None:
            raise self.error(f"has no initializer named {name!r}")
        if tensor.data_type not in _FLOAT_TYPES:
            raise self.error(f"tensor {name!r} is not a floating-point tensor (ONNX type {tensor.data_type})")
        stored = np.dtype(_FLOAT_TYPES[tensor.data_type])
        external = self.external[name]
        if external is not None:
            values = np.fromfile(
                external.path, dtype=stored, count=external.length // stored.itemsize, offset=external.offset
            )
        elif tensor.raw_data:
            if len(tensor.raw_data) % stored.itemsize:
                raise self.error(f"tensor {name!r} has {len(tensor.raw_data)} bytes of raw data: not whole {stored}s")
            values = np.frombuffer(tensor.raw_data, dtype=stored)
        else:
            values = self._typed_field(tensor, stored)
        if values.size != math.prod(tensor.dims):
            raise self.error(f"tensor {name!r} holds {values.size} values for its shape {tuple(tensor.dims)}")
        if tensor.data_type == 16:  # bfloat16 is the top half of a float32
            values = (values.astype(np.uint32) << 16).view(np.float32)
        elif tensor.data_type == 10:
            values = values.astype(np.float32)
        return values.astype(values.dtype.newbyteorder("="), copy=False).reshape(tuple(tensor.dims))

    @staticmethod
    def _typed_field(tensor, stored: np.dtype) -> np.ndarray:
        if tensor.data_type == 1:
            return np.array(tensor.float_data, dtype=np.float32)
        if tensor.data_type == 11:
            return np.array(tensor.double_data, dtype=np.float64)
        # float16 and bfloat16 keep their bits in int32_data
        return np.array(tensor.int32_data, dtype=np.uint32).astype(np.uint16).view(stored)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
