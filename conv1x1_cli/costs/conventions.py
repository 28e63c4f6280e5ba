"""What torchinfo, fvcore, ptflops and thop report for the same layers, each called the usual way.

The four tools disagree on one 1×1 layer because they count different things: the bias additions or
not, every ReLU and max-pool (twice) or not, the batch or always one image. Each rule below was read
from the tool's own conv and activation hooks (the versions in ``RULES``) and checked against the
real tools by ``tests/test_conventions.py``. The counts are exact Python integers; nothing is
imported but the standard library.

Only the layers this project costs are modelled: convolutions with a square kernel, stride 1 and
'same' padding (groups 1), each optionally followed by a ReLU, and 3×3 / stride 1 'same' max-pools.
Concatenation counts 0 in every tool.

>>> one = layer_counts(images=4, pixels=28 * 28, channels=192, filters=32, kernel=1, bias=True, relu=True)
>>> one.torchinfo, one.fvcore, one.ptflops, one.ptflops_aten, one.thop
(19367936, 19267584, 4892160, 4841984, 19267584)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Rule:
    """How one tool turns a model into its single "operations" number."""

    package: str  # the package the rule was read from, at ``version``
    version: str
    call: str  # the usual call, whose result the rule predicts
    bias: bool  # counts a conv's bias additions (N·H·W·F) on top of its weight MACs
    batch: bool  # multiplies by the batch N; False: the usual call always runs one image
    elementwise: int  # how many times each input element of a ReLU or max-pool is counted
    summary: str  # the rule in one line, for the README and the tables


RULES: dict[str, Rule] = {
    "torchinfo": Rule(
        "torchinfo",
        "1.8.0",
        "summary(model, input_size=(N, C, H, W)).total_mult_adds",
        bias=True,
        batch=True,
        elementwise=0,
        summary="every conv parameter (weights and bias) once per output pixel, times N; ReLU and pooling 0",
    ),
    "fvcore": Rule(
        "fvcore",
        "0.1.5.post20221221",
        "FlopCountAnalysis(model, x).total()",
        bias=False,
        batch=True,
        elementwise=0,
        summary="conv weight MACs times N, bias ignored; ReLU and cat ignored, max-pool unsupported (0, a warning)",
    ),
    "ptflops": Rule(
        "ptflops",
        "0.7.5",
        "get_model_complexity_info(model, (C, H, W))",
        bias=True,
        batch=False,
        elementwise=2,
        summary="conv weight MACs + bias for one image; every ReLU and max-pool counted twice (module hook "
        "and patched F.relu / F.max_pool2d), as its input's elements",
    ),
    "ptflops_aten": Rule(
        "ptflops",
        "0.7.5",
        "get_model_complexity_info(model, (C, H, W), backend='aten')",
        bias=True,
        batch=False,
        elementwise=0,
        summary="conv weight MACs + bias for one image; nothing else (only aten convolution and matmul ops count)",
    ),
    "thop": Rule(
        "thop",
        "0.1.1.post2209072238",
        "profile(model, inputs=(x,))",
        bias=False,
        batch=True,
        elementwise=0,
        summary="conv weight MACs times N, bias ignored; ReLU and pooling 0",
    ),
}
TOOLS = tuple(RULES)


@dataclass(frozen=True)
class ToolCounts:
    """The number each tool reports, in its own sense of "MACs" or "FLOPs" (none of them doubles)."""

    torchinfo: int = 0
    fvcore: int = 0
    ptflops: int = 0
    ptflops_aten: int = 0
    thop: int = 0

    def __add__(self, other: ToolCounts) -> ToolCounts:
        return ToolCounts(*(getattr(self, tool.name) + getattr(other, tool.name) for tool in fields(self)))

    def as_dict(self) -> dict:
        return asdict(self)


def total_counts(parts: Iterable[ToolCounts]) -> ToolCounts:
    """Every tool's count is a sum over modules, so a chain's or a module's count is the sum of its parts'."""
    return sum(parts, ToolCounts())


def _counts(images: int, weight_macs: int, bias_adds: int, elementwise: int) -> ToolCounts:
    """Each tool's count from per-image quantities: weight MACs, bias additions and ReLU/pool input elements."""
    per_tool = {}
    for tool, rule in RULES.items():
        per_image = weight_macs + (bias_adds if rule.bias else 0) + rule.elementwise * elementwise
        per_tool[tool] = per_image * (images if rule.batch else 1)
    return ToolCounts(**per_tool)


def layer_counts(
    *, images: int, pixels: int, channels: int, filters: int, kernel: int, bias: bool, relu: bool
) -> ToolCounts:
    """A K×K 'same' convolution (stride 1) on ``images`` images of ``pixels`` pixels each, and the
    ReLU after it when ``relu``."""
    return _counts(
        images,
        weight_macs=pixels * filters * channels * kernel * kernel,
        bias_adds=pixels * filters if bias else 0,
        elementwise=pixels * filters if relu else 0,
    )


def max_pool_counts(*, images: int, pixels: int, channels: int) -> ToolCounts:
    """A max-pool with stride 1 and 'same' padding: no parameters; only ptflops counts it (twice)."""
    return _counts(images, weight_macs=0, bias_adds=0, elementwise=pixels * channels)
