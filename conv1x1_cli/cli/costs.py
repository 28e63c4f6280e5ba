"""``shapes``, ``bottleneck`` and ``inception``: costs of layers from specs, without touching data.

Only ``costs`` (pure integers) and rich are imported: these commands start without NumPy or Numba."""

from __future__ import annotations

import click

from .. import costs
from ..costs.layers import chain_cost
from ..costs.volume import ACTIVATIONS, parse_filters, parse_spec
from .options import BIAS_OPTION, DTYPE_OPTION, FORMAT_OPTION, LAYOUT_OPTION, Command, stdout_console, usage_error


def parse_volume(spec: str, layout: str) -> costs.Volume:
    with usage_error("SPEC"):
        return parse_spec(spec, layout)


@click.command(cls=Command)
@click.argument("spec")
@click.option(
    "--filters",
    "-f",
    required=True,
    metavar="F[,F...]",
    help="Output channels; a comma-separated list for a chain of 1×1 layers.",
)
@LAYOUT_OPTION
@BIAS_OPTION
@click.option(
    "--activation",
    type=click.Choice(list(ACTIVATIONS)),
    default="relu",
    show_default=True,
    help="ReLU after the last layer, or none (as in apply); changes only ptflops' count.",
)
@DTYPE_OPTION
@click.option(
    "--chunks",
    metavar="ROWSxCOLS",
    default=None,
    help="Also plan a Dask run in blocks of ROWS×COLS pixels: number of tasks and memory per task.",
)
@FORMAT_OPTION
def shapes(spec, filters, layout, bias, activation, dtype, chunks, fmt):
    """Shapes, parameters, MACs, FLOPs and roofline of 1×1 convolutions, without touching data.

    SPEC is HxWxC or NxHxWxC (with --layout nchw: CxHxW or NxCxHxW). A ReLU follows every layer.
    Under the table: what torchinfo, fvcore, ptflops and thop report for the same layers. The
    roofline uses the limits `conv1x1 bench` measured (defaults until it has run).

    \b
    Examples:
      conv1x1 shapes 28x28x192 --filters 32
      conv1x1 shapes 8x56x56x256 --filters 64 --format json
      conv1x1 shapes 32x32x192 --filters 96,48,10
    """
    from ..bench.machine import load_limits
    from ..render.costs import shapes_csv_rows, shapes_table
    from ..render.tables import print_report

    volume = parse_volume(spec, layout)
    with usage_error("'--filters'"):
        filter_counts = parse_filters(filters)
    chain = chain_cost(volume, filter_counts, bias=bias, activation=activation, dtype=dtype)
    data = chain.as_dict(load_limits().for_dtype(dtype))
    if chunks:
        from ..costs.chunks import chunk_plan, parse_chunks

        with usage_error("'--chunks'"):
            data["chunks"] = chunk_plan(volume, filter_counts, parse_chunks(chunks), dtype).as_dict()
    print_report(data, fmt, stdout_console(), table=lambda rows: shapes_table(rows, dtype), csv_rows=shapes_csv_rows)


@click.command(cls=Command)
@click.argument("spec")
@click.option("--reduce", "-r", type=click.IntRange(min=1), required=True, help="Channels of the 1×1 reduce (R).")
@click.option("--kernel", "-k", type=click.IntRange(min=1), default=5, show_default=True, help="K of the K×K conv.")
@click.option("--filters", "-f", type=click.IntRange(min=1), required=True, help="Output channels (F).")
@LAYOUT_OPTION
@BIAS_OPTION
@DTYPE_OPTION
@FORMAT_OPTION
def bottleneck(spec, reduce, kernel, filters, layout, bias, dtype, fmt):
    """Compare a direct K×K convolution with a 1×1 bottleneck in front of it.

    Direct: K×K 'same' convolution, C → F. Bottleneck: 1×1 reduce C → R, then the K×K, R → F.
    Shows MACs, params and output shape of each, side by side, and the saving as a ratio.

    \b
    Examples:
      conv1x1 bottleneck 28x28x192 --reduce 16 --kernel 5 --filters 32
      conv1x1 bottleneck 14x14x480 -r 96 -k 3 -f 208 --format json
    """
    from ..render.costs import bottleneck_csv_rows, bottleneck_table
    from ..render.tables import print_report

    volume = parse_volume(spec, layout)
    cost = costs.bottleneck_cost(volume, reduce=reduce, kernel=kernel, filters=filters, bias=bias, dtype=dtype)
    print_report(cost.as_dict(), fmt, stdout_console(), table=bottleneck_table, csv_rows=bottleneck_csv_rows)


@click.command(cls=Command)
@click.argument("spec")
@click.argument("columns", nargs=-1, type=click.IntRange(min=1), metavar="#1×1 #3×3RED #3×3 #5×5RED #5×5 POOLPROJ")
@LAYOUT_OPTION
@BIAS_OPTION
@DTYPE_OPTION
@FORMAT_OPTION
def inception(spec, columns, layout, bias, dtype, fmt):
    """Cost a GoogLeNet Inception module given its six columns, in the paper's Table 1 order.

    Branches: 1×1; 1×1 reduce → 3×3; 1×1 reduce → 5×5; 3×3 max-pool → 1×1 pool projection;
    every convolution 'same' with a ReLU, outputs concatenated. Under the table: what torchinfo,
    fvcore, ptflops and thop report for the same module.

    \b
    Examples:
      conv1x1 inception 28x28x192 64 96 128 16 32 32      inception (3a)
      conv1x1 inception 28x28x256 128 128 192 32 96 64 --format json
    """
    from ..render.costs import inception_csv_rows, inception_table
    from ..render.tables import print_report

    volume = parse_volume(spec, layout)
    if len(columns) != len(costs.INCEPTION_COLUMNS):
        names = ", ".join(costs.INCEPTION_COLUMNS)
        raise click.BadParameter(f"give the six columns {names}; got {len(columns)}", param_hint="COLUMNS")
    cost = costs.inception_cost(volume, list(columns), bias=bias, dtype=dtype)
    print_report(cost.as_dict(), fmt, stdout_console(), table=inception_table, csv_rows=inception_csv_rows)
