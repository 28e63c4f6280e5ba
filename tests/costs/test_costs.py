"""Accounting against hand-worked numbers."""

from __future__ import annotations

import pytest

from conv1x1_cli.costs import (
    bottleneck_cost,
    chain_cost,
    inception_cost,
    layer_cost,
    max_pool_cost,
    parse_filters,
    parse_spec,
)
from conv1x1_cli.costs.roofline import MachineLimits
from conv1x1_cli.errors import ArgumentError as SpecError


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


def test_kxk_same_convolution_keeps_the_shape_and_costs_k_squared_more():
    cost = layer_cost(parse_spec("28x28x192"), 32, kernel=5)
    assert cost.output == (28, 28, 32) and cost.kernel == 5
    assert (cost.weights, cost.params) == (5 * 5 * 192 * 32, 5 * 5 * 192 * 32 + 32) == (153_600, 153_632)
    assert cost.macs == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400


def test_lecture_bottleneck_28x28x192_reduce_16_kernel_5_filters_32():
    cost = bottleneck_cost(parse_spec("28x28x192"), reduce=16, kernel=5, filters=32)
    assert cost.direct.total("macs") == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert [layer.macs for layer in cost.bottleneck.layers] == [28 * 28 * 16 * 192, 28 * 28 * 32 * 5 * 5 * 16]
    assert cost.bottleneck.total("macs") == 2_408_448 + 10_035_200 == 12_443_648
    assert cost.direct.output == cost.bottleneck.output == (28, 28, 32)
    assert (cost.direct.total("params"), cost.bottleneck.total("params")) == (153_632, 3_072 + 16 + 12_800 + 32)
    assert cost.saving("macs") == 120_422_400 / 12_443_648
    data = cost.as_dict()
    assert data["direct"]["macs"] == 120_422_400 and data["bottleneck"]["params"] == 15_920
    assert data["saving"]["macs"] == pytest.approx(9.6774, abs=1e-4)
    assert data["saving"]["params"] == pytest.approx(153_632 / 15_920)


def test_inception_3a_branch_by_branch():
    module = inception_cost(parse_spec("28x28x192"), [64, 96, 128, 16, 32, 32])
    assert module.output == (28, 28, 64 + 128 + 32 + 32)
    names = [branch.name for branch in module.branches]
    weights = [branch.layers.total("weights") for branch in module.branches]
    macs = [branch.layers.total("macs") for branch in module.branches]
    assert names == ["1×1", "3×3", "5×5", "pool proj"]
    assert weights == [192 * 64, 192 * 96 + 9 * 96 * 128, 192 * 16 + 25 * 16 * 32, 192 * 32]
    assert weights == [12_288, 129_024, 15_872, 6_144]
    assert macs == [784 * weight for weight in weights]
    assert (module.total("weights"), module.total("bias"), module.total("params")) == (163_328, 368, 163_696)
    assert module.total("macs") == 128_049_152
    data = module.as_dict()
    assert data["output"] == [28, 28, 256] and data["macs"] == 128_049_152
    assert [branch["output_channels"] for branch in data["branches"]] == [64, 128, 32, 32]


def test_max_pool_branch_has_no_params_and_no_macs():
    module = inception_cost(parse_spec("2x28x28x192"), [64, 96, 128, 16, 32, 32], bias=False)
    pool, projection = module.branches[3].layers.layers
    assert (pool.op, pool.output, pool.params, pool.macs, pool.flops) == ("max-pool", (2, 28, 28, 192), 0, 0, 0)
    assert projection.macs == 2 * 784 * 192 * 32 and module.total("bias") == 0
    assert max_pool_cost(parse_spec("7x7x832")).conventions.ptflops == 2 * 49 * 832


def test_inception_needs_six_columns():
    with pytest.raises(SpecError, match="6 columns"):
        inception_cost(parse_spec("28x28x192"), [64, 96, 128])


def test_roofline_intensity_is_flops_per_byte_moved():
    limits = MachineLimits(peak_gflops=200.0, sgemm_gflops=150.0, bandwidth_gbs=20.0, threads=2, source="hand")
    chain = chain_cost(parse_spec("28x28x192"), [32, 8])
    data = chain.as_dict(limits)
    first = chain.layers[0]
    assert data["layers"][0]["intensity"] == first.flops / (602_112 + 100_352 + 24_704)
    assert data["layers"][0]["bound"] == "compute" and data["layers"][1]["bound"] == "memory"
    fused = 602_112 + 28 * 28 * 8 * 4 + (6_176 + 264) * 4
    assert data["intensity"] == chain.total("flops") / fused
    assert data["roofline"] == {**limits.as_dict(), "ridge_intensity": 10.0}


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
