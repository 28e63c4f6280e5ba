"""``bench``: our kernel against NumPy and PyTorch on real layers, and this machine's limits."""

from __future__ import annotations

import click

from ..errors import ArgumentError
from .options import PLOT_HELP, Command, stdout_console, write_picture


@click.command(cls=Command)
@click.option("--quick", is_flag=True, help="A few layers and short repeats: a few seconds.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Our kernel's threads [default: all cores].")
@click.option(
    "--torch/--no-torch", "with_torch", default=True, show_default=True, help="Time PyTorch too, when it is installed."
)
@click.option(
    "--isa",
    type=click.Choice(["native", "avx2"]),
    default="native",
    show_default=True,
    help="Compile our kernel, and pin NumPy's OpenBLAS and PyTorch, for this instruction set "
    "(avx2: what CPUs without AVX-512 run). Its limits are not saved.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option(
    "--plot", "plot_path", metavar="OUT.png", default=None, help="Also draw the roofline with every layer. " + PLOT_HELP
)
def bench(quick, threads, with_torch, isa, fmt, plot_path):
    """Time our kernel against NumPy (matmul + maximum) and PyTorch (conv2d + relu) on real layers.

    Measures this machine's FMA peak and memory bandwidth first (a roofline, saved for `conv1x1
    shapes`), then every layer of a suite of GoogLeNet, ResNet-50, MobileNet, RGB-stem and
    hyperspectral pointwise layers, interleaving the contenders; prints medians. On machines that
    set OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE, unset both for this command: they slow NumPy.

    \b
    Examples:
      conv1x1 bench --quick
      conv1x1 bench --isa avx2
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE conv1x1 bench --format json > bench.json
      conv1x1 bench --plot roofline.png
    """
    from ..bench.isa import PinningError, pin

    try:
        pinned = pin(isa)  # before NumPy, numba and torch load: each reads its variables once
    except PinningError as error:
        raise ArgumentError(str(error), option="--isa") from None
    if plot_path is not None:
        from ..render.pictures import require_matplotlib

        require_matplotlib(plot_path)  # before minutes of measuring, not after
    from ..bench.suite import run_bench
    from ..render.bench import bench_csv_rows, bench_table
    from ..render.progress import progress_bar
    from ..render.tables import print_report

    with progress_bar("starting") as progress:
        report = run_bench(quick=quick, threads=threads, torch=with_torch, progress=progress, pinned=pinned)
    data = report.as_dict()
    if plot_path is not None:
        from ..render.pictures import roofline_png

        write_picture(plot_path, lambda: roofline_png(data, plot_path))
    print_report(data, fmt, stdout_console(), table=bench_table, csv_rows=bench_csv_rows)
