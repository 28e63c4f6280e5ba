"""Accounting against hand-worked numbers."""

from __future__ import annotations

import pytest

from conv1x1_cli.accounting import SpecError, chain_cost, layer_cost, parse_filters, parse_spec


def test_lecture_layer_28x28x192_to_32():
    cost = layer_cost(parse_spec("28x28x192"), 32)
    assert cost.output == (28, 28, 32)
    assert (cost.weights, cost.bias, cost.params) == (6_144, 32, 6_176)
    assert cost.macs == 28 * 28 * 192 * 32 == 4_816_896
    assert cost.flops == 2 * 4_816_896 + 28 * 28 * 32
    assert (cost.input_bytes, cost.output_bytes, cost.weight_bytes) == (602_112, 100_352, 24_704)


def test_no_bias_and_dtype_change_only_what_they_should():
    cost = layer_cost(parse_spec("28x28x192"), 32, bias=False, dtype="float16")
    assert (cost.bias, cost.params, cost.flops) == (0, 6_144, 2 * 4_816_896)
    assert (cost.input_bytes, cost.weight_bytes) == (301_056, 12_288)


def test_batch_multiplies_macs_but_not_params():
    single, batch = layer_cost(parse_spec("14x14x480"), 192), layer_cost(parse_spec("8x14x14x480"), 192)
    assert batch.macs == 8 * single.macs and batch.params == single.params
    assert batch.output == (8, 14, 14, 192)


def test_nchw_specs_read_channels_first():
    volume = parse_spec("4x3x224x224", layout="nchw")
    assert (volume.batch, volume.channels, volume.height, volume.width) == (4, 3, 224, 224)
    cost = layer_cost(volume, 64)
    assert cost.output == (4, 64, 224, 224)
    assert cost.macs == 4 * 224 * 224 * 3 * 64


def test_chain_totals_are_sums_of_layers():
    chain = chain_cost(parse_spec("32x32x192"), [96, 48, 10])
    assert [layer.output for layer in chain.layers] == [(32, 32, 96), (32, 32, 48), (32, 32, 10)]
    assert chain.total("params") == (192 * 96 + 96) + (96 * 48 + 48) + (48 * 10 + 10) == 23_674
    assert chain.total("macs") == 1024 * (192 * 96 + 96 * 48 + 48 * 10)
    summary = chain.as_dict()
    assert summary["output"] == [32, 32, 10] and len(summary["layers"]) == 3


def test_astronomical_sizes_stay_exact():
    cost = layer_cost(parse_spec("1000000x1000000x1000000x1000000"), 10**6)
    assert cost.macs == 10**30 and isinstance(cost.macs, int)
    assert cost.flops == 2 * 10**30 + 10**24


@pytest.mark.parametrize("spec", ["28x28", "28x28x0", "28x-1x3", "axbxc", "1x2x3x4x5", "", "28xx3", "2.5x3x3"])
def test_malformed_specs_are_refused(spec):
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_spec_separators_and_whitespace():
    assert parse_spec(" 28 × 28 × 192 ").shape() == (28, 28, 192)
    assert parse_spec("2X28X28X192").shape() == (2, 28, 28, 192)


@pytest.mark.parametrize("text", ["0", "-3", "3.5", "", "16,,8", "x"])
def test_bad_filter_lists_are_refused(text):
    with pytest.raises(SpecError):
        parse_filters(text)


def test_accounting_never_imports_numba():
    import subprocess
    import sys

    code = "import sys, conv1x1_cli.accounting, conv1x1_cli.cli; print('numba' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
