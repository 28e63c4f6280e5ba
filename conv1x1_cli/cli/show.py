"""``show``: one channel of a .npy array as a heat-map table."""

from __future__ import annotations

import click

from .options import LAYOUT_OPTION, Command, stdout_console


@click.command(cls=Command)
@click.argument("path", metavar="FILE")
@click.option("--channel", "-c", type=click.IntRange(min=0), default=0, show_default=True, help="Channel to show.")
@click.option("--batch", "-n", type=click.IntRange(min=0), default=0, show_default=True, help="Image of a 4-D batch.")
@LAYOUT_OPTION
@click.option(
    "--max-rows",
    type=click.IntRange(min=2),
    default=24,
    show_default=True,
    help="Larger slices are previewed with a stride.",
)
def show(path, channel, batch, layout, max_rows):
    """Print one 2-D channel of a .npy array as a heat-map table of its numbers.

    \b
    Examples:
      conv1x1 show samples/lecture_6x6.npy
      conv1x1 show out.npy --channel 3 --batch 0
    """
    from ..render.show import channel_table
    from ..sources.npy import load_array

    console = stdout_console()
    array = load_array(path)
    console.print(channel_table(array, channel, batch, layout, path, console.width, max_rows))
