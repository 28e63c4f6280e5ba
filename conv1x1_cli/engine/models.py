"""Models as data: every layer of an ONNX model costed by kind, the weights of a safetensors file
listed by kind, and any tensor of either taken out as an array (the API's ``model_cost`` and
``extract_tensor``; tests/models/ builds real models to check them on).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..costs.models import LayerSpec, ModelCost, TensorListing, tensor_listing
from ..costs.models import model_cost as cost_of_layers
from ..errors import InputError
from ..sources.model_files import open_model, split_reference
from ..sources.safetensors_file import SafetensorsFile


def model_cost(
    path: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None, batch: int | None = None
) -> ModelCost | TensorListing:
    """The costs of a model file's layers: a ``ModelCost`` for an ONNX model (every Conv, ConvTranspose,
    Gemm and MatMul with weights, shapes from ONNX shape inference after ``input_shapes`` and ``batch``
    fix the symbolic ones), or a ``TensorListing`` for a safetensors file (weights only: without a graph
    there are no spatial sizes, so no MACs)."""
    model = open_model(path, input_shapes=dict(input_shapes or {}), batch=batch)
    if isinstance(model, SafetensorsFile):
        return tensor_listing({name: (entry.shape, entry.dtype) for name, entry in model.tensors.items()})
    layers, uncosted = model.layers()
    return cost_of_layers([LayerSpec(**layer) for layer in layers], uncosted)


def extract_tensor(path: str, tensor: str) -> np.ndarray:
    """One tensor of a model file, as stored (float16 and bfloat16 in float32): an initializer or a
    node's weights of an ONNX model, or a tensor of a safetensors file."""
    model = open_model(path, infer_shapes=False)
    if isinstance(model, SafetensorsFile):
        return model.read(tensor)
    if tensor in model.initializers:
        return model.tensor(tensor)
    node = model.node(tensor)
    if node is None or len(node.input) < 2 or node.input[1] not in model.initializers:
        raise InputError(f"{path}: has no initializer or node with weights named {tensor!r}")
    return model.tensor(node.input[1])


def is_reference(text: str) -> bool:
    """Whether ``text`` names a tensor in a model file (``model.onnx#conv1``) rather than a file."""
    return split_reference(text) is not None
