"""Real networks built in PyTorch, exported to ONNX and safetensors, and counted layer by layer.

The tests read these files with our own code and compare what it finds with ``torch_layer_counts``, which
only asks PyTorch (forward hooks, module attributes) and so is independent of our accounting. Everything is
deterministic: the same seed gives the same weights, input, files and counts on every run.

Import it as ``from models import builders`` (``tests/conftest.py`` puts ``tests/`` on ``sys.path``),
after ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest

# pytest --doctest-modules imports every module under tests/ while collecting: without torch, this file
# is then skipped instead of failing the whole collection.
torch = pytest.importorskip("torch")
nn = torch.nn

__all__ = [
    "EXAMPLE_INPUTS",
    "build",
    "export_onnx",
    "mixed_model",
    "mobilenet_v1",
    "resnet50_stage",
    "save_safetensors",
    "save_safetensors_half",
    "torch_layer_counts",
]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
    """Conv (no bias: the BatchNorm's shift replaces it) + BatchNorm2d + ReLU, as every MobileNet layer."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(),
        )
    )


# Table 1 of Howard et al. 2017 (arXiv 1704.04861), width multiplier 1: (depthwise stride, pointwise filters)
# of the 13 depthwise separable layers. The table gives s2 for the last depthwise layer, but its input and
# output are both 7×7×1024 (and the average pool that follows is 7×7): it is stride 1 in practice, here too.
MOBILENET_V1_LAYERS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), *[(1, 512)] * 5, (2, 1024), (1, 1024)]


def mobilenet_v1(num_classes: int = 1000):
    """MobileNet v1 on 1×3×224×224: 4.2 M weights, 569 M multiply-adds, 95% of them in the pointwise convs.

    Names: ``features.0.conv`` (the 3×3 stride-2 stem), ``features.<i>.dw.conv`` and ``features.<i>.pw.conv``
    for i = 1..13, and ``fc``; each conv has its ``.bn`` and ``.relu`` beside it. The paper's final softmax
    is left out: it has no weights and PyTorch classifiers return logits.
    """
    features = [_conv_bn_relu(3, 32, 3, stride=2)]
    channels = 32
    for stride, filters in MOBILENET_V1_LAYERS:
        dw = _conv_bn_relu(channels, channels, 3, stride=stride, groups=channels)
        features.append(nn.Sequential(OrderedDict(dw=dw, pw=_conv_bn_relu(channels, filters, 1))))
        channels = filters
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(*features),
            pool=nn.AvgPool2d(7),
            flatten=nn.Flatten(),
            fc=nn.Linear(1024, num_classes),
        )
    )


class Bottleneck(nn.Module):
    """ResNet-50's bottleneck block (He et al. 2016), named and ordered as torchvision's.

    1×1 reduce, 3×3, 1×1 expand, each conv without bias and followed by BatchNorm2d; ReLU after the first two
    and after the sum with the shortcut. A 1×1 projection (``downsample``) replaces the identity shortcut when
    the channel counts differ. torchvision runs the projection after ``conv3``: so does this forward, so both
    give the same hook order.
    """

    def __init__(self, in_channels: int, width: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if in_channels != out_channels:
            conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
            self.downsample = nn.Sequential(conv, nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def resnet50_stage():
    """ResNet-50's conv2_x stage on 1×64×56×56: three bottlenecks (1×1 64, 3×3 64, 1×1 256), stride 1.

    The first block projects its 64-channel input to 256 with a 1×1 conv; the other two add their input.
    Names follow torchvision's ``resnet50()``: ``layer1.0.conv1`` … ``layer1.0.downsample.0`` … ``layer1.2.conv3``.
    """
    blocks = [Bottleneck(64, 64, 256), Bottleneck(256, 64, 256), Bottleneck(256, 64, 256)]
    return nn.Sequential(OrderedDict(layer1=nn.Sequential(*blocks)))


def mixed_model():
    """One of each layer kind our counts tell apart, on 1×16×32×32, with and without bias.

    grouped 3×3 (32×32×32) → ReLU → pointwise (24×32×32) → dilated 3×3 stride 2 (24×16×16) → transposed 2×2
    stride 2 (8×32×32) → average pool → 8 → fully connected 10 → fully connected 5 (no bias).
    """
    return nn.Sequential(
        OrderedDict(
            grouped=nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=True),
            relu=nn.ReLU(),
            pointwise=nn.Conv2d(32, 24, 1, bias=True),
            dilated=nn.Conv2d(24, 24, 3, stride=2, padding=2, dilation=2, bias=False),
            transposed=nn.ConvTranspose2d(24, 8, 2, stride=2, bias=True),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(8, 10, bias=True),
            head=nn.Linear(10, 5, bias=False),
        )
    )


EXAMPLE_INPUTS = {
    "mobilenet_v1": (1, 3, 224, 224),
    "resnet50_stage": (1, 64, 56, 56),
    "mixed_model": (1, 16, 32, 32),
}
_BUILDERS = {"mobilenet_v1": mobilenet_v1, "resnet50_stage": resnet50_stage, "mixed_model": mixed_model}


def _randomise(model) -> None:
    """Weights that keep activations near 1 through every layer, and BatchNorms that are far from identity.

    PyTorch's default init (uniform, ±1/√fan_in) shrinks the signal by about √6 per conv + ReLU: after
    MobileNet's 27 convs the features are ~2e-11 and the logits are just the classifier's bias, so an output
    check would check nothing. He init (normal, std √(2/fan_in)) keeps them near 1 (features 2.4, logits 3 RMS).
    A fresh BatchNorm (mean 0, var 1, weight 1, bias 0) is the identity, so folding it into the conv would
    change nothing: random statistics and affine make folding visible.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.uniform_(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)


def build(name: str):
    """``(model, example input)`` for a name of ``EXAMPLE_INPUTS``: the model in eval() mode (BatchNorm uses
    its running statistics, which is what exporters fold), with weights and input drawn from seed 0."""
    torch.manual_seed(0)
    model = _BUILDERS[name]()
    with torch.no_grad():
        _randomise(model)
    return model.eval(), torch.randn(EXAMPLE_INPUTS[name])


def export_onnx(model, example, path, *, dynamo: bool) -> Path:
    """Write ``model`` to ``path`` as ONNX, with the graph input named ``input`` and the output ``output``.

    Both exporters fold each eval-mode BatchNorm into the Conv before it, so the files hold no
    BatchNormalization node and their Conv weights are not the state dict's.

    ``dynamo=False``: the TorchScript exporter, opset 17, constant folding on, all weights inside the .onnx.
    Folded weights and biases become ``onnx::Conv_<n>``; unfolded ones keep their parameter names; a Linear
    without bias becomes a MatMul on a transposed copy, ``onnx::MatMul_<n>``.

    ``dynamo=True``: the default ``torch.export`` exporter (opset 20 in torch 2.13), ``external_data=True``:
    every tensor over 256 bytes goes to ``<file name>.data`` beside the .onnx (smaller ones stay inline).
    Initializers keep the parameter names even when folded (``features.0.conv.weight`` holds weight × BN scale)
    and folded biases are new, ``<conv>.weight_bias``; node names are generated (``node_Conv_386``,
    ``node_linear``), the module path is in each node's ``pkg.torch.onnx.name_scopes`` metadata.

    The warnings both exporters give about themselves (deprecation of the TorchScript one, a torch-internal
    FutureWarning) are silenced: choosing each exporter is deliberate here.
    """
    path = Path(path)
    if dynamo:  # verbose=False: no progress lines on stdout
        options = {"dynamo": True, "external_data": True, "verbose": False}
    else:
        options = {"dynamo": False, "opset_version": 17, "do_constant_folding": True}
    with warnings.catch_warnings():
        for message in ("You are using the legacy TorchScript", "The feature will be removed", ".*LeafSpec"):
            warnings.filterwarnings("ignore", message=message)
        torch.onnx.export(model, (example,), path, input_names=["input"], output_names=["output"], **options)
    return path


def _state_dict(model, dtype=None) -> dict:
    """The state dict as contiguous tensors (safetensors refuses views), float ones converted to ``dtype``."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.detach().contiguous()
    return tensors


def save_safetensors(model, path) -> Path:
    """Save ``model.state_dict()`` (BatchNorm statistics included, nothing folded) as a .safetensors file."""
    from safetensors.torch import save_file

    save_file(_state_dict(model), str(path))
    return Path(path)


def save_safetensors_half(model, path, dtype) -> Path:
    """As ``save_safetensors``, with every float tensor in ``dtype``: ``torch.float16`` or ``torch.bfloat16``.

    Integer tensors (BatchNorm's ``num_batches_tracked``) keep their dtype.
    """
    from safetensors.torch import save_file

    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float16 or torch.bfloat16, not {dtype}")
    save_file(_state_dict(model, dtype), str(path))
    return Path(path)


_COUNTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def _kind(module) -> str:
    if isinstance(module, nn.Linear):
        return "fully connected"
    if isinstance(module, nn.ConvTranspose2d):
        return "transposed"
    if module.groups == 1:
        return "pointwise" if all(size == 1 for size in module.kernel_size) else "full"
    return "depthwise" if module.groups == module.in_channels else "grouped"


def _macs(module, inputs, output) -> int:
    """Multiply-adds of one call: one per (output value, weight it reads) pair, from the shapes alone."""
    if isinstance(module, nn.Linear):
        return inputs.numel() // module.in_features * module.in_features * module.out_features
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.ConvTranspose2d):  # each input pixel times each kernel weight it scatters through
        return inputs.numel() * (module.out_channels // module.groups) * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def torch_layer_counts(model, example) -> list[dict]:
    """One dict per Conv1d/Conv2d/ConvTranspose2d/Linear call of ``model(example)``, in forward order.

    The reference our counts are compared with: it reads only the modules PyTorch ran and the shapes it saw.
    Keys: ``module`` (qualified name), ``kind`` ("pointwise", "depthwise", "grouped", "full", "transposed",
    "fully connected"), ``input`` and ``output`` (NCHW shape tuples), ``weights``, ``bias`` (0 without) and
    ``macs``. A module called twice appears twice.
    """
    rows = []

    def record(name):
        def hook(module, args, output):
            rows.append(
                {
                    "module": name,
                    "kind": _kind(module),
                    "input": tuple(args[0].shape),
                    "output": tuple(output.shape),
                    "weights": module.weight.numel(),
                    "bias": 0 if module.bias is None else module.bias.numel(),
                    "macs": _macs(module, args[0], output),
                }
            )

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, _COUNTED)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return rows
