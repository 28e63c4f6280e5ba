"""``explain``: one pixel walked through the layers as the lecture does, over ``api.explain_files``."""

from __future__ import annotations

import re

import click

from .options import (
    ACTIVATION_OPTION,
    BIAS_FILES_OPTION,
    LAYOUT_OPTION,
    WEIGHTS_LAYOUT_OPTION,
    Command,
    check_bias_count,
    stdout_console,
)

_PIXEL = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*")


def parse_pixel(ctx, param, value: str) -> tuple[int, int]:
    """``ROW,COL`` as two whole numbers from 0; anything else is a usage error of ``--pixel``."""
    match = _PIXEL.fullmatch(value)
    if match is None:
        raise click.BadParameter(f"{value!r} must be ROW,COL: two whole numbers from 0, such as 2,3")
    return int(match.group(1)), int(match.group(2))


@click.command(cls=Command)
@click.argument("input_path", metavar="INPUT")
@click.argument("weight_paths", metavar="WEIGHTS...", nargs=-1, required=True)
@click.option("--pixel", required=True, metavar="ROW,COL", callback=parse_pixel, help="The pixel to walk through.")
@click.option("--batch", "-n", type=click.IntRange(min=0), default=0, show_default=True, help="Image of a 4-D batch.")
@BIAS_FILES_OPTION
@LAYOUT_OPTION
@WEIGHTS_LAYOUT_OPTION
@ACTIVATION_OPTION
@click.option(
    "--filter",
    "filters",
    type=click.IntRange(min=0),
    multiple=True,
    metavar="K",
    help="Walk filter K of the last layer in full (repeatable) [default: every filter up to 8, else filter 0].",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def explain(input_path, weight_paths, pixel, batch, bias_paths, layout, weights_layout, activation, filters, fmt):
    """Walk one pixel of INPUT through the 1×1 layer(s) in WEIGHTS, as the lecture does.

    The pixel's C-vector x, then for each filter: every channel's x · w, their sum (in float64, in
    channel order), + bias, the ReLU and the output; then the output vector of all F filters, and a
    last line comparing it with what apply computes at that pixel (the difference, and whether it is
    within the compute dtype's rounding bound). Several banks are a chain, walked layer by layer.

    INPUT, WEIGHTS, --bias, --layout, --weights-layout and --activation are as for apply: a .npy
    input (or - for stdin), banks as .npy (C, F), (F, C), PyTorch (F, C, 1, 1), Keras (1, 1, C, F) or
    a tensor in a model file (model.safetensors#NAME, model.onnx#NODE).

    \b
    Large layers are summarised:
      - up to 12 channels every product is shown; beyond, the first 3, the last 3 and the
        3 largest |x·w|, with "… N more channels" lines for the rest; the sum is always over
        every channel;
      - a layer of up to 8 filters has every filter walked; a wider one only filter 0 (or, in
        the last layer, those given with --filter); every output vector still has all F;
      - vectors of more than 12 values are shown the same way: the first 3, the last 3 and the
        3 largest in magnitude, with their indices.

    Numbers are whole when they are whole, else with the fewest digits that identify them in the
    compute dtype; --format json gives every value in full.

    \b
    Examples:
      conv1x1 explain samples/lecture_6x6.npy samples/times2.npy --pixel 0,0
      conv1x1 explain samples/volume_6x6x32.npy samples/bank_32x8.npy --bias samples/bias_8.npy --pixel 2,3
      conv1x1 explain feats.npy w1.npy w2.npy --pixel 10,4 --batch 1 --layout nchw --format json
    """
    from ..api import explain_files
    from ..render.explain import explain_table
    from ..render.tables import print_report

    check_bias_count(bias_paths, weight_paths)
    explanation = explain_files(
        input_path,
        weight_paths,
        bias_paths,
        pixel=pixel,
        batch=batch,
        layout=layout,
        weights_layout=weights_layout,
        activation=activation,
        filters=list(filters) or None,
    )
    print_report(explanation.as_dict(), fmt, stdout_console(), table=explain_table, csv_rows=None)
