"""Model files as sources of banks: ``model.safetensors#layer1.0.conv1.weight``, ``model.onnx#<name>``.

A reference is a model file's path, ``#``, and the name of a tensor in it (for ONNX, an initializer,
or a Conv, Gemm or MatMul node, which brings its bias). Pickled checkpoints (``.pt``, ``.pth``,
``.bin``, ``.ckpt``, ``.pkl``) are refused: unpickling a stranger's file runs the stranger's code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MODEL_SUFFIXES = (".onnx", ".safetensors")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
_CONVERT = (
    "convert it once, where you trust it: "
    'python -c "import torch, safetensors.torch as s; '
    "s.save_file(torch.load('FILE', weights_only=True), 'STEM.safetensors')\""
)


def is_model_file(path: str) -> bool:
    return path.lower().endswith(MODEL_SUFFIXES)


def refuse_pickle(path: str) -> None:
    """One line saying why a pickled checkpoint is not read, and how to convert it."""
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise InputError(
            f"{path}: a pickled PyTorch checkpoint; conv1x1 never unpickles (it could run any code): "
            + _CONVERT.replace("FILE", os.path.basename(path)).replace(
                "STEM", os.path.splitext(os.path.basename(path))[0]
            )
        )


def split_reference(text: str) -> tuple[str, str] | None:
    """(model file, tensor name) when ``text`` is a reference to a tensor in a model file, else None.

    An existing file's path is a path, whatever it holds; otherwise the last ``#`` that follows a
    model file's name separates it from the tensor's.

    >>> split_reference("net.safetensors#layer1.0.conv1.weight")
    ('net.safetensors', 'layer1.0.conv1.weight')
    >>> split_reference("bank.npy") is None
    True
    """
    if os.path.exists(text):
        return None
    for index in range(len(text) - 1, -1, -1):
        if text[index] == "#" and is_model_file(text[:index]):
            return text[:index], text[index + 1 :]
    return None


@dataclass(frozen=True)
class TensorReference:
    """A bank (or bias) read from a model file: its values, the bias that came with it (a Conv node's),
    and its layout when the file says it ("cf" or "fc"; None leaves it to the caller's option)."""

    values: np.ndarray
    bias: np.ndarray | None
    layout: str | None


def open_model(path: str, name: str | None = None, input_shapes=None, batch=None, infer_shapes: bool = True):
    """An OnnxModel or a SafetensorsFile for ``path``, by its suffix (one line for anything else)."""
    refuse_pickle(path)
    lowered = path.lower()
    if lowered.endswith(".onnx"):
        from .onnx_model import OnnxModel

        return OnnxModel(path, input_shapes, batch, name=name, infer_shapes=infer_shapes)
    if lowered.endswith(".safetensors"):
        if input_shapes or batch is not None:
            raise InputError(f"{name or path}: a safetensors file has no graph inputs to give shapes to")
        from .safetensors_file import SafetensorsFile

        return SafetensorsFile(path, name)
    raise InputError(f"{name or path}: not a model file (.onnx or .safetensors)")


def load_reference(text: str) -> TensorReference:
    """The tensor a reference names (see the module docstring)."""
    split = split_reference(text)
    if split is None:
        raise InputError(f"{text}: not a reference to a tensor in a model file (FILE.onnx#NAME)")
    path, tensor = split
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if not tensor:
        raise InputError(f"{text}: no tensor named after '#'")
    model = open_model(path, infer_shapes=False)
    if path.lower().endswith(".safetensors"):
        return TensorReference(model.read(tensor), None, None)
    values, bias, layout = model.bank(tensor)
    if bias is not None and bias.ndim != 1 and bias.size == bias.shape[-1]:
        bias = bias.reshape(-1)  # a Gemm's (1, F) bias
    return TensorReference(values, bias, layout)
