"""Other tools' counts: our predictions against hand-worked numbers, and against the real tools.

The second half builds each model in PyTorch, independently of our accounting, runs torchinfo,
fvcore, ptflops (both backends) and thop on it the usual way, and compares their own numbers with
``conventions.py``'s. It skips where torch or a tool is not installed (``pip install ".[conventions]"``).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest

from conv1x1_cli.costs import bottleneck_cost, chain_cost, inception_cost, layer_cost, parse_spec
from conv1x1_cli.costs.conventions import RULES, TOOLS, ToolCounts, layer_counts, max_pool_counts, total_counts

# The measurements: Conv2d(192, 32, 1) + ReLU on one 28×28×192 image.
LECTURE_LAYER = {
    "torchinfo": 4_816_896 + 25_088,
    "fvcore": 4_816_896,
    "ptflops": 4_816_896 + 25_088 + 2 * 25_088,
    "ptflops_aten": 4_816_896 + 25_088,
    "thop": 4_816_896,
}


def test_lecture_layer_matches_the_measured_numbers():
    assert layer_cost(parse_spec("28x28x192"), 32).conventions.as_dict() == LECTURE_LAYER


def test_without_bias_only_the_bias_counting_tools_change():
    counts = layer_cost(parse_spec("28x28x192"), 32, bias=False).conventions
    assert (counts.torchinfo, counts.ptflops_aten, counts.ptflops) == (4_816_896, 4_816_896, 4_816_896 + 2 * 25_088)


def test_batch_multiplies_all_but_ptflops():
    one, four = (layer_cost(parse_spec(spec), 32).conventions for spec in ("28x28x192", "4x28x28x192"))
    assert (four.torchinfo, four.fvcore, four.thop) == (4 * one.torchinfo, 4 * one.fvcore, 4 * one.thop)
    assert (four.ptflops, four.ptflops_aten) == (one.ptflops, one.ptflops_aten)


def test_a_linear_last_layer_drops_only_ptflops_last_relu():
    with_relu = chain_cost(parse_spec("32x32x192"), [96, 48, 10]).conventions
    linear = chain_cost(parse_spec("32x32x192"), [96, 48, 10], activation="none").conventions
    assert with_relu.ptflops - linear.ptflops == 2 * 32 * 32 * 10
    assert with_relu.torchinfo == linear.torchinfo == 24_084_480 + 157_696


def test_max_pool_counts_only_in_ptflops_twice_its_input():
    pool = max_pool_counts(images=4, pixels=784, channels=192)
    assert pool == ToolCounts(ptflops=2 * 784 * 192)


def test_counts_add_up_tool_by_tool():
    part = layer_counts(images=1, pixels=4, channels=3, filters=2, kernel=3, bias=True, relu=False)
    assert total_counts([part, part]) == part + part == ToolCounts(*(2 * value for value in part.as_dict().values()))
    assert part.fvcore == 4 * 2 * 3 * 9 and part.torchinfo == part.fvcore + 4 * 2


def test_every_rule_names_its_version_and_call():
    assert TOOLS == ("torchinfo", "fvcore", "ptflops", "ptflops_aten", "thop")
    assert all(rule.version and rule.call and rule.summary for rule in RULES.values())


# ---- the real tools -------------------------------------------------------------------------------
# Models are built inside the tests, so that the tests above still run where torch is not installed.


def conv_relu(nn, channels, filters, kernel=1, bias=True, relu=True):
    conv = nn.Conv2d(channels, filters, kernel, padding=kernel // 2, bias=bias)
    return [conv, nn.ReLU()] if relu else [conv]


def inception_model(torch, channels, ones, reduce3, threes, reduce5, fives, pool_proj, bias=True):
    """GoogLeNet's module as PyTorch users write it (torchvision's layout, without batch norm)."""
    nn = torch.nn

    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.branch1 = nn.Sequential(*conv_relu(nn, channels, ones, bias=bias))
            self.branch2 = nn.Sequential(
                *conv_relu(nn, channels, reduce3, bias=bias), *conv_relu(nn, reduce3, threes, 3, bias)
            )
            self.branch3 = nn.Sequential(
                *conv_relu(nn, channels, reduce5, bias=bias), *conv_relu(nn, reduce5, fives, 5, bias)
            )
            self.branch4 = nn.Sequential(
                nn.MaxPool2d(3, stride=1, padding=1), *conv_relu(nn, channels, pool_proj, bias=bias)
            )

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    return Inception()


INCEPTION_3A = [64, 96, 128, 16, 32, 32]


def chain_model(torch, bias, relu_last):
    nn = torch.nn
    return nn.Sequential(
        *conv_relu(nn, 192, 96, bias=bias),
        *conv_relu(nn, 96, 48, bias=bias),
        *conv_relu(nn, 48, 10, bias=bias, relu=relu_last),
    )


def bottleneck(spec):
    return bottleneck_cost(parse_spec(spec), reduce=16, kernel=5, filters=32)


# Each case: (PyTorch model from torch, input (N, C, H, W), our cost with .conventions and .total).
CASES = {
    "layer": (
        lambda torch: torch.nn.Sequential(*conv_relu(torch.nn, 192, 32)),
        (1, 192, 28, 28),
        lambda: chain_cost(parse_spec("28x28x192"), [32]),
    ),
    "layer-no-bias-batch-4": (
        lambda torch: torch.nn.Sequential(*conv_relu(torch.nn, 192, 32, bias=False)),
        (4, 192, 28, 28),
        lambda: chain_cost(parse_spec("4x28x28x192"), [32], bias=False),
    ),
    "chain-batch-4": (
        lambda torch: chain_model(torch, bias=True, relu_last=True),
        (4, 192, 32, 32),
        lambda: chain_cost(parse_spec("4x32x32x192"), [96, 48, 10]),
    ),
    "chain-linear-last": (
        lambda torch: chain_model(torch, bias=True, relu_last=False),
        (1, 192, 32, 32),
        lambda: chain_cost(parse_spec("32x32x192"), [96, 48, 10], activation="none"),
    ),
    "chain-no-bias": (
        lambda torch: chain_model(torch, bias=False, relu_last=True),
        (1, 192, 32, 32),
        lambda: chain_cost(parse_spec("32x32x192"), [96, 48, 10], bias=False),
    ),
    "direct-5x5": (
        lambda torch: torch.nn.Sequential(*conv_relu(torch.nn, 192, 32, 5)),
        (1, 192, 28, 28),
        lambda: bottleneck("28x28x192").direct,
    ),
    "bottleneck-5x5-batch-4": (
        lambda torch: torch.nn.Sequential(*conv_relu(torch.nn, 192, 16), *conv_relu(torch.nn, 16, 32, 5)),
        (4, 192, 28, 28),
        lambda: bottleneck("4x28x28x192").bottleneck,
    ),
    "inception-3a": (
        lambda torch: inception_model(torch, 192, *INCEPTION_3A),
        (1, 192, 28, 28),
        lambda: inception_cost(parse_spec("28x28x192"), INCEPTION_3A),
    ),
    "inception-3a-no-bias-batch-4": (
        lambda torch: inception_model(torch, 192, *INCEPTION_3A, bias=False),
        (4, 192, 28, 28),
        lambda: inception_cost(parse_spec("4x28x28x192"), INCEPTION_3A, bias=False),
    ),
}


@contextlib.contextmanager
def quiet():
    """The tools print progress and warnings; only their return values matter here."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def run_torchinfo(model, shape):
    torchinfo = pytest.importorskip("torchinfo")
    stats = torchinfo.summary(model, input_size=shape, verbose=0)
    return stats.total_mult_adds, stats.total_params


def run_fvcore(model, shape):
    import torch

    fvcore_nn = pytest.importorskip("fvcore.nn")
    analysis = fvcore_nn.FlopCountAnalysis(model, torch.randn(shape))
    analysis.unsupported_ops_warnings(False)
    return analysis.total(), fvcore_nn.parameter_count(model)[""]


def run_ptflops(model, shape, **backend):
    ptflops = pytest.importorskip("ptflops")
    # The usual call takes (C, H, W) and always builds a batch of one image.
    return ptflops.get_model_complexity_info(
        model, tuple(shape[1:]), as_strings=False, print_per_layer_stat=False, **backend
    )


def run_thop(model, shape):
    import torch

    thop = pytest.importorskip("thop")
    macs, params = thop.profile(model, inputs=(torch.randn(shape),), verbose=False)
    assert float(macs).is_integer() and float(params).is_integer()  # thop returns floats
    return macs, params


RUNNERS = {
    "torchinfo": run_torchinfo,
    "fvcore": run_fvcore,
    "ptflops": run_ptflops,
    "ptflops_aten": lambda model, shape: run_ptflops(model, shape, backend="aten"),
    "thop": run_thop,
}


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("case", list(CASES))
def test_real_tool_reports_what_we_predict(tool, case):
    torch = pytest.importorskip("torch")
    build, shape, ours = CASES[case]
    torch.manual_seed(0)
    with quiet(), torch.no_grad():
        reported, params = RUNNERS[tool](build(torch).eval(), shape)
    cost = ours()
    assert int(reported) == getattr(cost.conventions, tool)
    assert int(params) == cost.total("params")
