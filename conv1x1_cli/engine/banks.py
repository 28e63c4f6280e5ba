"""Filter banks and biases read from files, named by their paths in every message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..sources.npy import load_array
from .layers import Layer, as_bank, build_layers


@dataclass(frozen=True)
class BankFiles:
    """Filter banks (as (C, F)) and biases read from .npy files, named by their paths in messages."""

    weight_paths: list[str]
    bias_paths: list[str]
    banks: list[np.ndarray]
    biases: list[np.ndarray]

    @classmethod
    def load(cls, weight_paths: Sequence[str], bias_paths: Sequence[str], weights_layout: str) -> BankFiles:
        banks = [as_bank(load_array(path), weights_layout, path) for path in weight_paths]
        biases = [load_array(path) for path in bias_paths]
        return cls(list(weight_paths), list(bias_paths), banks, biases)

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
            bias_names=self.bias_paths,
        )
