"""Filter banks and biases read from files (.npy, or tensors in model files), named by their paths in
every message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..sources.model_files import load_reference, refuse_pickle, split_reference
from ..sources.npy import load_array
from .layers import Layer, as_bank, build_layers


@dataclass(frozen=True)
class BankFiles:
    """Filter banks (as (C, F)) and their biases (None where a bank has none), read from .npy files or
    model files (``model.onnx#conv1``), named by their paths in messages."""

    weight_paths: list[str]
    bias_names: list[str]
    banks: list[np.ndarray]
    biases: list[np.ndarray | None]

    @classmethod
    def load(cls, weight_paths: Sequence[str], bias_paths: Sequence[str], weights_layout: str) -> BankFiles:
        """The banks, and biases: the i-th of ``bias_paths`` for the i-th bank, or the bias a Conv node
        of a model file brings with its bank (both at once is refused)."""
        banks, biases, bias_names = [], [], []
        for path in weight_paths:
            values, bias, layout = _read(path)
            banks.append(as_bank(values, layout or weights_layout, path))
            biases.append(bias)
            bias_names.append(f"{path} (its bias)")
        for index, path in enumerate(bias_paths):
            if biases[index] is not None:
                raise InputError(
                    f"{weight_paths[index]}: brings its own bias from the model; --bias {path} would add a second"
                )
            biases[index], bias_names[index] = _read(path)[0], path
        return cls(list(weight_paths), bias_names, banks, biases)

    @property
    def filters(self) -> list[int]:
        return [bank.shape[1] for bank in self.banks]

    def layers(self, activation: str, channels: int, dtype: np.dtype, input_name: str) -> list[Layer]:
        return build_layers(
            self.banks,
            self.biases,
            activation,
            channels,
            dtype,
            names=self.weight_paths,
            input_name=input_name,
            bias_names=self.bias_names,
        )


def _read(path: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(values, the bias that came with them, their layout if the file says it) of a .npy file or a
    reference to a tensor in a model file."""
    if split_reference(path) is not None:
        reference = load_reference(path)
        return reference.values, reference.bias, reference.layout
    refuse_pickle(path)
    return load_array(path), None, None
