"""Model accounting on hand-worked layers: every kind, its MACs, FLOPs and params, and the summaries."""

from __future__ import annotations

import pytest

from conv1x1_cli.costs.models import LayerSpec, model_cost, spec_cost, tensor_kind, tensor_listing


def conv(name, source, result, kernel=(1, 1), groups=1, bias=0, op="Conv", stride=(1, 1)):
    return LayerSpec(name, op, f"{name}.weight", None, source, result, kernel, stride, (1, 1), groups, bias)


def fully_connected(name, source, result, bias=0, op="Gemm"):
    return LayerSpec(name, op, f"{name}.weight", None, source, result, (), (), (), 1, bias)


# (layer, kind, weights, MACs, FLOPs), each worked by hand in the comment beside it
CASES = [
    # 2 images × 8×8 outputs × 16 filters × 32 channels
    (conv("pw", (2, 32, 8, 8), (2, 16, 8, 8), bias=16), "pointwise", 512, 65_536, 2 * 65_536 + 2 * 64 * 16),
    # 32 filters of 1 channel × 3×3, on 10×10 outputs
    (conv("dw", (1, 32, 10, 10), (1, 32, 10, 10), (3, 3), groups=32), "depthwise", 288, 28_800, 57_600),
    # 4 groups: each of 24 filters reads 16/4 = 4 channels × 3×3; 5×5 outputs
    (conv("g", (1, 16, 5, 5), (1, 24, 5, 5), (3, 3), groups=4), "grouped", 864, 21_600, 43_200),
    # stride 2: 3×3×3 kernels, 16 filters, on 112×112 outputs (the 224×224 input does not count)
    (conv("stem", (1, 3, 224, 224), (1, 16, 112, 112), (3, 3), stride=(2, 2)), "full", 432, 5_419_008, 10_838_016),
    # 1×1 convolution in 4 groups is grouped, not pointwise (ShuffleNet)
    (conv("g1", (1, 8, 4, 4), (1, 8, 4, 4), groups=4), "grouped", 16, 256, 512),
    # transposed: every one of 3×3 input pixels × 4 channels meets 2 filters × 2×2 kernel; bias on 6×6 outputs
    (conv("up", (1, 4, 3, 3), (1, 2, 6, 6), (2, 2), op="ConvTranspose", bias=2), "transposed", 32, 288, 576 + 72),
    # fully connected on a batch of 5: 5 × 10 × 3
    (fully_connected("fc", (5, 10), (5, 3), bias=3), "fully connected", 30, 150, 300 + 15),
    # MatMul on (2, 7, 10) tokens: 14 rows × 10 × 3
    (fully_connected("mm", (2, 7, 10), (2, 7, 3), op="MatMul"), "fully connected", 30, 420, 840),
    # a 1-D pointwise conv: kernel (1,), 100 positions
    (LayerSpec("c1", "Conv", "w", None, (1, 6, 100), (1, 4, 100), (1,), (1,), (1,), 1, 0), "pointwise", 24, 2400, 4800),
]


@pytest.mark.parametrize("spec, kind, weights, macs, flops", CASES, ids=[case[0].name for case in CASES])
def test_each_kind_counted_by_hand(spec, kind, weights, macs, flops):
    cost = spec_cost(spec)
    assert (cost.kind, cost.weights, cost.macs, cost.flops, cost.params) == (
        kind,
        weights,
        macs,
        flops,
        weights + spec.bias,
    )


def test_bytes_moved_are_input_output_and_parameters():
    cost = spec_cost(conv("pw", (2, 32, 8, 8), (2, 16, 8, 8), bias=16))
    assert cost.bytes_moved == (2 * 32 * 64 + 2 * 16 * 64 + 512 + 16) * 4


def test_summary_shares_and_selection_keep_the_whole_model():
    layers = [case[0] for case in CASES[:4]]
    cost = model_cost(layers, {"Relu": 3, "MaxPool": 1})
    data = cost.as_dict()
    assert data["totals"]["macs"] == 65_536 + 28_800 + 21_600 + 5_419_008
    assert sum(entry["macs_share"] for entry in data["by_kind"].values()) == pytest.approx(100.0)
    assert sum(entry["weights_share"] for entry in data["by_kind"].values()) == pytest.approx(100.0)
    assert data["uncosted"] == {"MaxPool": 1, "Relu": 3}
    only = cost.selected(["depthwise", "grouped"], sort="macs").as_dict()
    assert [row["name"] for row in only["layers"]] == ["dw", "g"]
    assert only["totals"] == data["totals"] and only["by_kind"] == data["by_kind"]
    assert only["layers"][0]["macs_share"] == pytest.approx(100 * 28_800 / data["totals"]["macs"])
    assert [row["name"] for row in cost.selected(sort="name").as_dict()["layers"]] == ["dw", "g", "pw", "stem"]
    assert [row["name"] for row in cost.selected().as_dict()["layers"]] == ["pw", "dw", "g", "stem"]


@pytest.mark.parametrize(
    "shape, kind",
    [
        ((64, 32, 1, 1), "pointwise"),
        ((32, 1, 3, 3), "depthwise"),
        ((64, 3, 7, 7), "full"),
        ((10, 64), "fully connected"),
        ((16, 8, 1), "pointwise"),
        ((16, 1, 5), "depthwise"),
        ((8, 4, 3, 3, 3), "full"),
        ((64,), None),
        ((2, 3, 4, 5, 6, 7), None),
    ],
)
def test_tensor_kinds_by_shape(shape, kind):
    assert tensor_kind(shape) == kind


def test_listing_pairs_biases_by_name_and_counts_the_rest():
    listing = tensor_listing(
        {
            "conv.weight": ((8, 4, 1, 1), "BF16"),
            "conv.bias": ((8,), "BF16"),
            "up.weight": ((8, 2, 2, 2), "F32"),  # a transposed conv: (C, F, K, K), bias of F = 2
            "up.bias": ((2,), "F32"),
            "bn.weight": ((8,), "F32"),
            "bn.running_mean": ((8,), "F32"),
        }
    ).as_dict()
    assert [(t["name"], t["kind"], t["weights"], t["bias"], t["params"]) for t in listing["tensors"]] == [
        ("conv.weight", "pointwise", 32, 8, 40),
        ("up.weight", "full", 64, 2, 66),
    ]
    assert (listing["other_tensors"], listing["other_values"]) == (2, 16)
    assert listing["totals"] == {"weights": 96, "params": 106, "macs": None}


def test_a_shared_weight_counts_once_and_each_bias_tensor_once():
    """Parameters count each tensor once, whichever layers use it: a weight two layers share, a bias
    two layers share, and a bias of one's own (the MACs count every use)."""

    def pointwise(name, weight, bias_name):
        return LayerSpec(name, "Conv", weight, bias_name, (1, 4, 2, 2), (1, 4, 2, 2), (1, 1), (1, 1), (1, 1), 1, 4)

    layers = [pointwise("a", "w", "b"), pointwise("b", "w", "b"), pointwise("c", "w", "c.bias")]
    cost = model_cost(layers, {})
    # 16 weights once; biases "b" and "c.bias": 4 + 4; MACs: 3 uses x 4 positions x 4 x 4
    assert [cost.total(field) for field in ("weights", "bias", "params", "macs")] == [16, 8, 24, 192]
    assert cost.by_kind()["pointwise"] == {"layers": 3, "macs": 192, "weights": 16, "params": 24, "flops": 432}
