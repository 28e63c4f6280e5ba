"""``model``: every layer of an ONNX model costed by kind, a safetensors file's weights listed by kind,
or one tensor of either written out as .npy."""

from __future__ import annotations

import click

from ..costs.models import KINDS, SORT_KEYS
from ..costs.volume import parse_positive
from ..errors import ArgumentError
from .options import FORMAT_OPTION, PLOT_HELP, Command, stdout_console, usage_error, write_picture


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=1x3x224x224`` as (name, shape)."""
    name, equals, spec = text.rpartition("=")
    if not equals or not name or not spec:
        raise ArgumentError(f"give NAME=SHAPE, such as input=1x3x224x224; got {text!r}", "--input")
    sizes = spec.replace("×", "x").split("x")
    return name, tuple(parse_positive(size.strip(), f"a dimension of {name}") for size in sizes)


@click.command(cls=Command)
@click.argument("path", metavar="FILE")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=SHAPE",
    help="Shape of a graph input with symbolic dimensions, e.g. input=1x3x224x224 (repeatable).",
)
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Batch size N: the first dimension of inputs.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(list(KINDS)),
    help="Show only layers of this kind (repeatable); totals stay the whole model's.",
)
@click.option("--sort", type=click.Choice(list(SORT_KEYS)), default="order", show_default=True, help="Row order.")
@click.option("--extract", metavar="NAME", default=None, help="Write this tensor (or node's weights) to -o as .npy.")
@click.option("-o", "--output", "output_path", default=None, help="Output .npy path for --extract, or - for stdout.")
@click.option(
    "--plot", "plot_path", metavar="OUT.png", default=None, help="MACs per layer as bars by kind. " + PLOT_HELP
)
@FORMAT_OPTION
def model(path, inputs, batch, kinds, sort, extract, output_path, plot_path, fmt):
    """Cost every layer with weights of an ONNX model, or list a safetensors file's weights by kind.

    \b
    ONNX: every Conv (any kernel, stride, dilation, group), ConvTranspose, and Gemm or MatMul with
    weights, classified as pointwise (1×1, one group), depthwise, grouped, full K×K, transposed or
    fully connected, with shapes from ONNX shape inference, MACs, FLOPs, roofline and shares; then
    a summary by kind, and a count of the nodes that were not costed. safetensors (weights without a
    graph): convolution and linear weights classified by shape; MACs are unknown without spatial sizes.
    Needs the models extra: pip install "conv1x1[models]". Pickled checkpoints are refused.

    \b
    Examples:
      conv1x1 model mobilenet_v1.onnx
      conv1x1 model resnet50.onnx --batch 8 --kind pointwise --sort macs
      conv1x1 model detector.onnx --input images=1x3x640x640 --format csv
      conv1x1 model model.safetensors
      conv1x1 model model.safetensors --extract layer1.0.conv1.weight -o bank.npy
      conv1x1 model mobilenet_v1.onnx --plot macs.png
    """
    from ..api import extract_tensor, model_cost

    if (extract is None) != (output_path is None):
        raise click.UsageError("--extract NAME and -o OUTPUT go together")
    if extract is not None:
        _write_tensor(extract_tensor(path, extract), output_path)
        return
    with usage_error("'--input'"):
        shapes = dict(parse_input_shape(text) for text in inputs)
    cost = model_cost(path, shapes, batch)
    data = _report(cost, kinds, sort, plot_path)
    if plot_path is not None:
        from ..render.pictures import model_png

        write_picture(plot_path, lambda: model_png(data, path, plot_path))
        return
    from ..render.models import model_csv_rows, model_table
    from ..render.tables import print_report

    print_report(data, fmt, stdout_console(), table=lambda rows: model_table(rows, path), csv_rows=model_csv_rows)


def _report(cost, kinds, sort: str, plot_path: str | None) -> dict:
    """The report of an ONNX model's layers (with the roofline of bench's limits), or of a safetensors
    file's weights, which has no layers to select, sort or plot."""
    from ..costs.models import ModelCost

    if not isinstance(cost, ModelCost):
        if kinds or sort != "order" or plot_path is not None:
            raise click.UsageError("--kind, --sort and --plot need layers: a safetensors file has only weights")
        return cost.as_dict()
    from ..bench.machine import load_limits

    dtype = "float64" if any(layer.itemsize == 8 for layer in cost.layers) else "float32"
    return cost.selected(kinds, sort).as_dict(load_limits().for_dtype(dtype))


def _write_tensor(values, output_path: str) -> None:
    from ..sources.npy import NpyOutput

    with NpyOutput(output_path, values.shape, values.dtype) as output:
        output.write(values)
