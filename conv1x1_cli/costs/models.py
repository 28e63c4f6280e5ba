"""What every layer of a model costs, by kind: pointwise, depthwise, grouped, full K×K, transposed and
fully connected. Pure integer arithmetic on layer descriptions that ``sources`` reads from model files.

Conventions (those of ``shapes``): ``macs`` are multiply-accumulates of the weights; bias additions,
activations, pooling and normalisation are not MACs; ``flops`` = 2·macs + one addition per output of
a layer with a bias; ``weights`` count kernel entries only, ``params`` = weights + bias. A BatchNorm
that the exporter folded into a convolution is a bias of that convolution: its F values count as
params, not weights (the MobileNet paper counts weights only).

>>> conv = LayerSpec("pw", "Conv", "w", "b", (1, 32, 112, 112), (1, 64, 112, 112), (1, 1), (1, 1), (1, 1), 1, 64)
>>> cost = model_cost([conv], {})
>>> cost.layers[0].kind, cost.layers[0].macs, cost.layers[0].params
('pointwise', 25690112, 2112)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

from .layers import roofline_entry
from .roofline import MachineLimits

KINDS = ("pointwise", "depthwise", "grouped", "full", "transposed", "fully connected")
SORT_KEYS = ("order", "macs", "params", "weights", "name")


@dataclass(frozen=True)
class LayerSpec:
    """One layer with weights, as a model file describes it (shapes as the file has them: NCHW for
    convolutions, (..., K) → (..., M) for fully connected layers).

    ``op`` is the file's operator (ONNX ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul``);
    ``kernel``, ``stride`` and ``dilation`` have one entry per spatial axis (empty for Gemm/MatMul);
    ``channels`` and ``filters`` are the input and output channels (features); ``bias`` the number
    of bias values (0 without)."""

    name: str
    op: str
    weight: str  # the weight tensor's name in the file
    bias_name: str | None
    input: tuple[int, ...]
    output: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    bias: int
    itemsize: int = 4  # bytes per element of the weights (the model's dtype)

    @property
    def channels(self) -> int:
        return self.input[1] if self.kernel else self.input[-1]

    @property
    def filters(self) -> int:
        return self.output[1] if self.kernel else self.output[-1]


def layer_kind(op: str, kernel: tuple[int, ...], groups: int, channels: int) -> str:
    """Which kind of layer this is.

    >>> layer_kind("Conv", (1, 1), 1, 64), layer_kind("Conv", (3, 3), 32, 32), layer_kind("Conv", (3, 3), 4, 32)
    ('pointwise', 'depthwise', 'grouped')
    >>> layer_kind("Conv", (3, 3), 1, 3), layer_kind("ConvTranspose", (2, 2), 1, 8), layer_kind("Gemm", (), 1, 9)
    ('full', 'transposed', 'fully connected')
    """
    if op == "ConvTranspose":
        return "transposed"
    if not kernel:
        return "fully connected"
    if groups > 1:
        return "depthwise" if groups == channels else "grouped"
    return "pointwise" if all(size == 1 for size in kernel) else "full"


@dataclass(frozen=True)
class ModelLayerCost:
    """Exact counts of one layer of a model."""

    name: str
    op: str
    kind: str
    weight: str
    input: tuple[int, ...]
    output: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    weights: int
    bias: int
    params: int
    macs: int
    flops: int
    bytes_moved: int  # input + output + parameters, in the model's dtype
    itemsize: int  # bytes per element of the model's weights
    bias_name: str | None = None  # the bias tensor's name in the file (None: no bias, or not named)

    def as_dict(self, limits: MachineLimits | None = None) -> dict:
        row = asdict(self)
        del row["bias_name"]  # (only for counting a shared bias once; the rows name the weight as before)
        for key in ("input", "output", "kernel", "stride"):
            row[key] = list(row[key])
        if limits is not None:
            row.update(roofline_entry(self.flops, self.bytes_moved, math.prod(self.output) * self.itemsize, limits))
        return row


def spec_cost(spec: LayerSpec) -> ModelLayerCost:
    """The counts of one layer.

    A convolution costs, per output pixel and filter, one MAC per weight of the filter's group:
    N·H_out·W_out·F·(C/groups)·K_h·K_w. A transposed convolution multiplies every input pixel by
    every weight: N·H_in·W_in·C·(F/groups)·K_h·K_w. A fully connected layer: rows·C·F.
    """
    channels, filters = spec.channels, spec.filters
    kernel_size = math.prod(spec.kernel)
    if spec.op == "ConvTranspose":
        weights = channels * (filters // spec.groups) * kernel_size
        macs = spec.input[0] * math.prod(spec.input[2:]) * weights
        output_positions = spec.output[0] * math.prod(spec.output[2:])
    elif spec.kernel:
        weights = filters * (channels // spec.groups) * kernel_size
        output_positions = spec.output[0] * math.prod(spec.output[2:])
        macs = output_positions * weights
    else:
        weights = channels * filters
        output_positions = math.prod(spec.output[:-1])
        macs = output_positions * weights
    params = weights + spec.bias
    moved = (math.prod(spec.input) + math.prod(spec.output) + params) * spec.itemsize
    return ModelLayerCost(
        name=spec.name,
        op=spec.op,
        kind=layer_kind(spec.op, spec.kernel, spec.groups, channels),
        weight=spec.weight,
        input=spec.input,
        output=spec.output,
        kernel=spec.kernel,
        stride=spec.stride,
        groups=spec.groups,
        weights=weights,
        bias=spec.bias,
        params=params,
        macs=macs,
        flops=2 * macs + (output_positions * filters if spec.bias else 0),
        bytes_moved=moved,
        itemsize=spec.itemsize,
        bias_name=spec.bias_name,
    )


@dataclass(frozen=True)
class ModelCost:
    """Every layer with weights, the totals, a summary by kind, and the nodes that were not costed
    (by operator: nodes without weights, such as pooling and activations, have no MACs of ours)."""

    layers: tuple[ModelLayerCost, ...]
    uncosted: Mapping[str, int]
    selected_from: ModelCost | None = None  # the whole model, when these are some of its layers

    @property
    def whole(self) -> ModelCost:
        return self.selected_from or self

    def total(self, field: str) -> int:
        """The sum of ``field`` over the layers; in weights, bias and params, a tensor that several
        layers use (one module applied twice) counts once, as PyTorch counts parameters."""
        if field == "params":
            return self.total("weights") + self.total("bias")
        if field == "weights":
            return sum(layer.weights for layer in _first_use(self.layers, lambda layer: layer.weight))
        if field == "bias":
            return sum(layer.bias for layer in _first_use(self.layers, lambda layer: layer.bias_name))
        return sum(getattr(layer, field) for layer in self.layers)

    def by_kind(self) -> dict[str, dict[str, int]]:
        """Layers, MACs, weights, params and FLOPs of each kind present, in KINDS order (weights and
        params counting a shared tensor once, as ``total`` does)."""
        every_use = _by_kind(self.layers, ("macs", "flops"))
        weights_once = _by_kind(_first_use(self.layers, lambda layer: layer.weight), ("weights",))
        biases_once = _by_kind(_first_use(self.layers, lambda layer: layer.bias_name), ("bias",))
        summary = {}
        for kind, entry in every_use.items():
            weights = weights_once.get(kind, {}).get("weights", 0)  # (absent: its weights came first elsewhere)
            bias = biases_once.get(kind, {}).get("bias", 0)
            summary[kind] = {
                "layers": entry["layers"],
                "macs": entry["macs"],
                "weights": weights,
                "params": weights + bias,
                "flops": entry["flops"],
            }
        return summary

    def selected(self, kinds: Iterable[str] = (), sort: str = "order") -> ModelCost:
        """Only the layers of ``kinds`` (all when empty), sorted by ``sort`` (largest first; the file's
        order for "order", alphabetical for "name"). Totals and shares stay those of the whole model."""
        wanted = set(kinds)
        layers = [layer for layer in self.layers if not wanted or layer.kind in wanted]
        if sort == "name":
            layers.sort(key=lambda layer: layer.name)
        elif sort != "order":
            layers.sort(key=lambda layer: getattr(layer, sort), reverse=True)
        return ModelCost(tuple(layers), self.uncosted, selected_from=self.whole)

    def as_dict(self, limits: MachineLimits | None = None) -> dict:
        whole = self.whole
        totals = {field: whole.total(field) for field in ("weights", "bias", "params", "macs", "flops")}
        rows = []
        for layer in self.layers:
            row = layer.as_dict(limits)
            row["macs_share"] = _share(layer.macs, totals["macs"])
            row["weights_share"] = _share(layer.weights, totals["weights"])
            rows.append(row)
        kinds = {
            kind: entry
            | {field + "_share": _share(entry[field], totals[field]) for field in ("macs", "weights", "params")}
            for kind, entry in whole.by_kind().items()
        }
        data = {"totals": totals, "by_kind": kinds, "uncosted": dict(self.uncosted), "layers": rows}
        if limits is not None:
            data["roofline"] = {**limits.as_dict(), "ridge_intensity": limits.ridge_intensity}
        return data


def _share(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _first_use(
    layers: Iterable[ModelLayerCost], tensor: Callable[[ModelLayerCost], str | None]
) -> list[ModelLayerCost]:
    """The layers, less those that use a tensor (named by ``tensor``) that a layer before them uses: a
    weight or a bias that several layers share is counted at its first use.  Layers whose tensor has
    no name (no bias) are all kept."""
    seen: set[str] = set()
    first = []
    for layer in layers:
        name = tensor(layer)
        if name is None or name not in seen:
            first.append(layer)
        if name is not None:
            seen.add(name)
    return first


def _by_kind(items: Iterable[ModelLayerCost | TensorCost], fields: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """For each kind present (in KINDS order): how many items, and the sum of each field over them."""
    summary: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        members = [item for item in items if item.kind == kind]
        if members:
            summary[kind] = {"layers": len(members)}
            summary[kind].update({field: sum(getattr(item, field) for item in members) for field in fields})
    return summary


def _with_shares(summary: dict, totals: Mapping[str, int], fields: tuple[str, ...]) -> dict:
    """The summary with each field's share of its total, in percent, as ``<field>_share``."""
    return {
        kind: entry | {f"{field}_share": _share(entry[field], totals[field]) for field in fields}
        for kind, entry in summary.items()
    }


def model_cost(specs: Iterable[LayerSpec], uncosted: Mapping[str, int]) -> ModelCost:
    """The costs of a model's layers, in the order given, and the counts of its nodes not costed."""
    return ModelCost(tuple(spec_cost(spec) for spec in specs), dict(sorted(uncosted.items())))


# --------------------------------------------------------------------------
# Weights without a graph (safetensors): kinds by shape alone
# --------------------------------------------------------------------------


def tensor_kind(shape: tuple[int, ...]) -> str | None:
    """The kind of layer a weight tensor of this shape (PyTorch's order) belongs to, or None when
    it is no convolution or linear weight (biases, norms, embeddings of other ranks).

    (F, C, 1, 1) pointwise, (C, 1, K, K) depthwise (one input channel per filter; a full convolution
    over a one-channel input, a grayscale stem, has the same shape and the same counts), (F, C, K, K)
    full (a grouped convolution looks the same without its graph), (F, C) fully connected (an
    embedding table too); 3-D and 5-D convolutions likewise.

    >>> tensor_kind((64, 32, 1, 1)), tensor_kind((32, 1, 3, 3)), tensor_kind((64, 3, 7, 7)), tensor_kind((10, 64))
    ('pointwise', 'depthwise', 'full', 'fully connected')
    >>> tensor_kind((64,)) is None
    True
    """
    if len(shape) == 2:
        return "fully connected"
    if len(shape) not in (3, 4, 5):
        return None
    spatial = shape[2:]
    if all(size == 1 for size in spatial):
        return "pointwise"
    return "depthwise" if shape[1] == 1 else "full"


@dataclass(frozen=True)
class TensorCost:
    """A weight tensor of a file without a graph: its kind, weights, and its bias (the 1-D tensor named
    like it with ``bias`` for ``weight``). MACs need spatial sizes, which such files lack."""

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    weights: int
    bias: int
    params: int

    def as_dict(self) -> dict:
        row = asdict(self)
        row["shape"] = list(self.shape)
        row["macs"] = None
        return row


@dataclass(frozen=True)
class TensorListing:
    """The convolution and linear weights of a file without a graph, and the tensors left over."""

    tensors: tuple[TensorCost, ...]
    other_tensors: int
    other_values: int

    def by_kind(self) -> dict[str, dict[str, int]]:
        """Tensors ("layers"), weights and params of each kind present, in KINDS order."""
        return _by_kind(self.tensors, ("weights", "params"))

    def as_dict(self) -> dict:
        totals = {field: sum(getattr(tensor, field) for tensor in self.tensors) for field in ("weights", "params")}
        return {
            "totals": {**totals, "macs": None},
            "by_kind": _with_shares(self.by_kind(), totals, ("weights", "params")),
            "other_tensors": self.other_tensors,
            "other_values": self.other_values,
            "tensors": [tensor.as_dict() for tensor in self.tensors],
            "note": "MACs need spatial sizes, which a file of weights without a graph does not have",
        }


def tensor_listing(shapes: Mapping[str, tuple[tuple[int, ...], str]]) -> TensorListing:
    """Classify a file's tensors ({name: (shape, dtype)}, in file order) by shape.

    >>> listing = tensor_listing({"c.weight": ((8, 4, 1, 1), "F32"), "c.bias": ((8,), "F32")})
    >>> [(t.kind, t.weights, t.params) for t in listing.tensors], listing.other_tensors
    ([('pointwise', 32, 40)], 0)
    """
    tensors, used = [], set()
    for name, (shape, dtype) in shapes.items():
        kind = tensor_kind(shape)
        if kind is None:
            continue
        bias_name = _bias_name(name)
        bias = 0
        if bias_name in shapes and len(shapes[bias_name][0]) == 1:  # (F,): F is shape[1] for a transposed conv
            bias = shapes[bias_name][0][0]
            used.add(bias_name)
        weights = math.prod(shape)
        tensors.append(TensorCost(name, kind, shape, dtype, weights, bias, weights + bias))
        used.add(name)
    others = [shape for name, (shape, _) in shapes.items() if name not in used]
    return TensorListing(tuple(tensors), len(others), sum(math.prod(shape) for shape in others))


def _bias_name(weight_name: str) -> str:
    stem, dot, last = weight_name.rpartition(".")
    return f"{stem}{dot}bias" if last == "weight" else f"{weight_name}.bias"
