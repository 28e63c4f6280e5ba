"""Banks, biases and chains checked into layers: which axis holds the channels, which bank layouts are
recognised, and which class of error each kind of mistake raises."""

from __future__ import annotations

import numpy as np
import pytest

from conv1x1_cli.engine.layers import as_bank, build_layers, channel_axis
from conv1x1_cli.errors import ArgumentError, Conv1x1Error, InputError

F32 = np.dtype(np.float32)


@pytest.mark.parametrize(
    ("shape", "layout", "axis"),
    [
        ((7, 7, 64), "nhwc", 2),
        ((8, 7, 7, 64), "nhwc", 3),
        ((64,), "nhwc", 0),
        ((64, 7, 7), "nchw", 0),
        ((8, 64, 7, 7), "nchw", 1),
        ((2, 3, 64, 7, 7), "nchw", 2),
        ((64, 49), "nchw", 0),
    ],
)
def test_channel_axis_of_each_layout(shape, layout, axis):
    assert channel_axis(shape, layout) == axis


@pytest.mark.parametrize(("shape", "layout"), [((), "nhwc"), ((64,), "nchw")])
def test_arrays_without_a_channel_axis_are_refused(shape, layout):
    with pytest.raises(InputError, match="has no channel axis"):
        channel_axis(shape, layout)


def test_an_unknown_layout_is_an_argument_error():
    with pytest.raises(ArgumentError, match="layout must be one of nhwc, nchw, got 'hwcn'"):
        channel_axis((7, 7, 3), "hwcn")


def test_an_fc_bank_is_transposed_and_others_are_recognised_by_shape():
    bank = np.arange(6.0).reshape(3, 2)  # (C=3, F=2)
    np.testing.assert_array_equal(as_bank(bank.T, "fc"), bank)
    np.testing.assert_array_equal(as_bank(bank.T[:, :, None, None]), bank)  # PyTorch (F, C, 1, 1)
    np.testing.assert_array_equal(as_bank(bank[None, None]), bank)  # Keras (1, 1, C, F)
    with pytest.raises(ArgumentError, match=r"w\.npy: weights layout must be one of cf, fc"):
        as_bank(bank, "kc", "w.npy")


def test_too_many_biases_is_an_argument_error_and_a_wrong_chain_an_input_error():
    banks = [np.ones((3, 4)), np.ones((5, 2))]
    with pytest.raises(ArgumentError, match="3 biases given for 2 filter banks"):
        build_layers(banks, [None, None, None], "relu", 3, F32)
    mismatch = r"weights\[1\]: bank expects 5 input channels but the output of layer 1 has 4"
    with pytest.raises(InputError, match=mismatch):
        build_layers(banks, [], "relu", 3, F32)


def test_every_error_is_a_conv1x1_error_and_a_value_error():
    for error in (ArgumentError("a"), InputError("b")):
        assert isinstance(error, Conv1x1Error) and isinstance(error, ValueError)


def test_layers_are_in_the_compute_dtype_with_relu_but_on_a_linear_last_layer():
    layers = build_layers([np.ones((3, 4), np.int16), np.ones((4, 2))], [np.ones(4)], "none", 3, F32)
    assert [layer.bank.dtype for layer in layers] == [F32, F32]
    assert layers[0].bias.dtype == F32 and layers[1].bias is None
    assert [layer.relu for layer in layers] == [True, False]
