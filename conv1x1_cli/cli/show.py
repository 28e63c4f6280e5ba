"""``show``: one channel of a .npy array as a heat-map table, or as a picture; every channel as a grid."""

from __future__ import annotations

import click

from .options import LAYOUT_OPTION, Command, stdout_console, write_picture


@click.command(cls=Command)
@click.argument("path", metavar="FILE")
@click.option("--channel", "-c", type=click.IntRange(min=0), default=None, help="Channel to show  [default: 0].")
@click.option("--batch", "-n", type=click.IntRange(min=0), default=0, show_default=True, help="Image of a 4-D batch.")
@LAYOUT_OPTION
@click.option(
    "--max-rows",
    type=click.IntRange(min=2),
    default=24,
    show_default=True,
    help="Larger slices are previewed with a stride.",
)
@click.option(
    "--png",
    "png_path",
    metavar="OUT.png",
    default=None,
    help='Draw the channel as a heat map at this path (- for stdout) instead; needs pip install "conv1x1[plot]".',
)
@click.option("--grid", is_flag=True, help="With --png: every channel as a grid of heat maps on one colour scale.")
def show(path, channel, batch, layout, max_rows, png_path, grid):
    """Print one 2-D channel of a .npy array as a heat-map table of its numbers, or draw it.

    \b
    With --png the channel is drawn as a heat map (colour bar, row and column indices, shape, min,
    max and mean in the title; slices up to 16×16 carry their numbers); with --png and --grid every
    channel is drawn, one small heat map each on one colour scale, channels over 48×48 taken at every
    k-th row and column (the title says k).

    \b
    Examples:
      conv1x1 show samples/lecture_6x6.npy
      conv1x1 show out.npy --channel 3 --batch 0
      conv1x1 show out.npy --channel 3 --png channel3.png
      conv1x1 show out.npy --grid --png maps.png
    """
    from ..sources.npy import load_array

    if grid and png_path is None:
        raise click.UsageError("--grid draws a picture: give --png OUT.png")
    if grid and channel is not None:
        raise click.UsageError("--grid draws every channel: --channel does not apply")
    array = load_array(path)
    if png_path is not None:
        write_picture(png_path, lambda: _picture(array, channel or 0, batch, layout, path, grid, png_path))
        return
    from ..render.show import channel_table

    console = stdout_console()
    console.print(channel_table(array, channel or 0, batch, layout, path, console.width, max_rows))


def _picture(array, channel: int, batch: int, layout: str, path: str, grid: bool, png_path: str) -> bytes:
    from ..render import pictures
    from ..render.show import channel_plane, channels_last, what_is_shown

    image = f" · image {batch}" if array.ndim == 4 else ""
    if grid:
        return pictures.grid_png(channels_last(array, batch, layout, path), f"{path}{image}", png_path)
    plane = channel_plane(array, channel, batch, layout, path)
    title = f"{path} · channel {channel}{image}"
    return pictures.channel_png(plane, title, what_is_shown(plane.shape, array.shape), png_path)
