"""The ``conv1x1`` command: Click commands that parse arguments, call the API and hand results to render.

Heavy modules (the API and its NumPy and Numba) are imported inside the commands that need them, so
``conv1x1 --help`` and ``conv1x1 shapes`` start instantly.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys

import click

from . import accounting
from .accounting import SpecError

LAYOUT_OPTION = click.option(
    "--layout",
    type=click.Choice(["nhwc", "nchw"]),
    default="nhwc",
    show_default=True,
    help="Axis order of the data: channels last (NHWC / HWC) or first (NCHW / CHW).",
)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console():
    from rich.console import Console

    return Console(highlight=False)


def user_errors():
    """Turn the API's and the file layer's errors into one-line Click errors (no traceback)."""
    from .api import ShapeError
    from .io import InputError

    errors = (InputError, ShapeError, SpecError)
    if "conv1x1_cli.cluster" in sys.modules:  # only a Dask run can raise it; never import Dask for it
        errors += (sys.modules["conv1x1_cli.cluster"].ClusterError,)
    return errors


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="conv1x1", prog_name="conv1x1")
def main() -> None:
    """Apply, check and cost 1×1 (pointwise) convolutions on .npy arrays.

    \b
    conv1x1 apply in.npy w.npy -o out.npy            ReLU(x·w) at every pixel
    conv1x1 shapes 28x28x192 --filters 32            shapes, params, MACs, FLOPs, roofline
    conv1x1 bottleneck 28x28x192 -r 16 -k 5 -f 32    a 1×1 reduce before a K×K conv
    conv1x1 inception 28x28x192 64 96 128 16 32 32   a GoogLeNet module's cost
    conv1x1 show out.npy --channel 0                 look at one channel
    conv1x1 bench --quick                            our kernel against NumPy and PyTorch
    """


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("weight_paths", metavar="WEIGHTS...", nargs=-1, required=True)
@click.option("-o", "--output", "output_path", required=True, help="Output .npy path, or - for stdout.")
@click.option(
    "--bias", "bias_paths", multiple=True, metavar="B.npy", help="Bias of shape (F,); repeat once per bank, in order."
)
@LAYOUT_OPTION
@click.option(
    "--weights-layout",
    type=click.Choice(["cf", "fc"]),
    default="cf",
    show_default=True,
    help="Axis order of 2-D banks: (C, F) or (F, C). 4-D PyTorch and Keras banks are recognised.",
)
@click.option(
    "--activation",
    type=click.Choice(["relu", "none"]),
    default="relu",
    show_default=True,
    help="ReLU after the (last) layer, or none.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Kernel threads [default: all cores].")
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run on this dask.distributed scheduler [default: $DASK_SCHEDULER_ADDRESS; for .zarr, a local cluster].",
)
@click.option("--chunks", metavar="ROWSxCOLS", default=None, help="Dask block size in pixels (stores and --scheduler).")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def apply(
    input_path,
    weight_paths,
    output_path,
    bias_paths,
    layout,
    weights_layout,
    activation,
    threads,
    scheduler,
    chunks,
    quiet,
):
    """Apply a 1×1 convolution (+ bias, + ReLU) to INPUT with each bank in WEIGHTS, in order.

    INPUT is a .npy file or - for stdin: (H, W), (H, W, C) or (N, H, W, C) — or with --layout nchw,
    (C, H, W) or (N, C, H, W). A bank is (C, F), (F, C) with --weights-layout fc, PyTorch (F, C, 1, 1)
    or Keras (1, 1, C, F). The output keeps the input's layout; float64 input gives float64, anything
    else float32. A short summary goes to stderr; stdout carries only data.

    \b
    INPUT or OUTPUT may also be a zarr store (path ending in .zarr, local or an fsspec URL such as
    s3://bucket/x.zarr; needs `pip install "conv1x1[dask]"`): the run then goes through Dask, on
    --scheduler or $DASK_SCHEDULER_ADDRESS when given, else on a local cluster of this machine.

    \b
    Examples:
      conv1x1 apply samples/volume_6x6x32.npy samples/bank_32x8.npy -o out.npy
      cat in.npy | conv1x1 apply - w.npy -o - | conv1x1 apply - w2.npy -o out.npy
      conv1x1 apply scene.zarr w.npy -o reduced.zarr --scheduler tcp://10.0.0.5:8786
    """
    from .stores import is_store

    options = dict(
        bias_paths=bias_paths, layout=layout, weights_layout=weights_layout, activation=activation, threads=threads
    )
    try:
        if scheduler or is_store(input_path) or is_store(output_path):
            report = _apply_on_dask(input_path, weight_paths, output_path, scheduler, chunks, quiet, **options)
        else:
            if chunks:
                raise click.BadParameter("only applies to zarr stores and --scheduler runs", param_hint="'--chunks'")
            report = _apply_in_process(input_path, weight_paths, output_path, quiet, **options)
    except user_errors() as error:
        raise click.ClickException(str(error)) from None
    if not quiet:
        from .render import apply_summary

        stderr_console().print(apply_summary(report))


def _apply_in_process(input_path, weight_paths, output_path, quiet, **options):
    from .api import apply_files

    with _progress(enabled=not quiet) as progress:
        return apply_files(input_path, weight_paths, output_path, progress=progress, **options)


def _apply_on_dask(input_path, weight_paths, output_path, scheduler, chunks, quiet, **options):
    from .chunking import parse_chunks
    from .cluster import apply_stores

    try:
        block = parse_chunks(chunks) if chunks else None
    except SpecError as error:
        raise click.BadParameter(str(error), param_hint="'--chunks'") from None
    return apply_stores(
        input_path, weight_paths, output_path, scheduler=scheduler, chunks=block, progress=not quiet, **options
    )


@contextlib.contextmanager
def _progress(enabled: bool):
    """A progress bar on stderr for long runs, only when stderr is a terminal; yields a pixel callback."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("convolving"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task("pixels", total=None)
        yield lambda done, total=None: bar.update(task, advance=done, total=total)


BIAS_OPTION = click.option("--bias/--no-bias", default=True, show_default=True, help="Count a bias per filter.")
DTYPE_OPTION = click.option(
    "--dtype",
    type=click.Choice(list(accounting.DTYPE_BYTES)),
    default="float32",
    show_default=True,
    help="Element type for byte sizes.",
)
FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)


def parse_volume(spec: str, layout: str) -> accounting.Volume:
    try:
        return accounting.parse_spec(spec, layout)
    except SpecError as error:
        raise click.BadParameter(str(error), param_hint="SPEC") from None


@main.command()
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
    type=click.Choice(list(accounting.ACTIVATIONS)),
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
    from .machine import load_limits
    from .render import print_report, shapes_csv_rows, shapes_table

    volume = parse_volume(spec, layout)
    try:
        filter_counts = accounting.parse_filters(filters)
    except SpecError as error:
        raise click.BadParameter(str(error), param_hint="'--filters'") from None
    chain = accounting.chain_cost(volume, filter_counts, bias=bias, activation=activation, dtype=dtype)
    data = chain.as_dict(load_limits().for_dtype(dtype))
    if chunks:
        from .chunking import chunk_plan, parse_chunks

        try:
            data["chunks"] = chunk_plan(volume, filter_counts, parse_chunks(chunks), dtype).as_dict()
        except SpecError as error:
            raise click.BadParameter(str(error), param_hint="'--chunks'") from None
    print_report(data, fmt, stdout_console(), table=lambda rows: shapes_table(rows, dtype), csv_rows=shapes_csv_rows)


@main.command()
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
    from .render import bottleneck_csv_rows, bottleneck_table, print_report

    volume = parse_volume(spec, layout)
    cost = accounting.bottleneck_cost(volume, reduce=reduce, kernel=kernel, filters=filters, bias=bias, dtype=dtype)
    print_report(cost.as_dict(), fmt, stdout_console(), table=bottleneck_table, csv_rows=bottleneck_csv_rows)


@main.command()
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
    from .render import inception_csv_rows, inception_table, print_report

    volume = parse_volume(spec, layout)
    if len(columns) != len(accounting.INCEPTION_COLUMNS):
        names = ", ".join(accounting.INCEPTION_COLUMNS)
        raise click.BadParameter(f"give the six columns {names}; got {len(columns)}", param_hint="COLUMNS")
    cost = accounting.inception_cost(volume, list(columns), bias=bias, dtype=dtype)
    print_report(cost.as_dict(), fmt, stdout_console(), table=inception_table, csv_rows=inception_csv_rows)


@main.command()
@click.option("--quick", is_flag=True, help="A few layers and short repeats: a few seconds.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Our kernel's threads [default: all cores].")
@click.option(
    "--torch/--no-torch", "with_torch", default=True, show_default=True, help="Time PyTorch too, when it is installed."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def bench(quick, threads, with_torch, fmt):
    """Time our kernel against NumPy (matmul + maximum) and PyTorch (conv2d + relu) on real layers.

    Measures this machine's FMA peak and memory bandwidth first (a roofline, saved for `conv1x1
    shapes`), then every layer of a suite of GoogLeNet, ResNet-50, MobileNet, RGB-stem and
    hyperspectral pointwise layers, interleaving the contenders; prints medians. On machines that
    set OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE, unset both for this command: they slow NumPy.

    \b
    Examples:
      conv1x1 bench --quick
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE conv1x1 bench --format json > bench.json
    """
    from .bench import run_bench
    from .render import bench_csv_rows, bench_table, print_report

    with _steps_progress() as progress:
        report = run_bench(quick=quick, threads=threads, torch=with_torch, progress=progress)
    print_report(report.as_dict(), fmt, stdout_console(), table=bench_table, csv_rows=bench_csv_rows)


@contextlib.contextmanager
def _steps_progress():
    """A progress bar on stderr naming the step being measured, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), console=stderr_console(), transient=True) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda what, done, total: bar.update(task, description=what, completed=done, total=total)


@main.command()
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
    import numpy as np

    from .io import load_array
    from .render import slice_table

    console = stdout_console()
    try:
        array = load_array(path, "input")
        plane = channel_plane(array, channel, batch, layout, path)
    except user_errors() as error:
        raise click.ClickException(str(error)) from None
    cell_width = max(len(f"{value:.4g}") for value in (plane.min(), plane.max(), 123.4)) + 3 if plane.size else 6
    max_columns = max(2, (console.width - 6) // cell_width)
    stride = max(1, math.ceil(plane.shape[0] / max_rows), math.ceil(plane.shape[1] / max_columns))
    rows, columns = range(0, plane.shape[0], stride), range(0, plane.shape[1], stride)
    stats = {
        "shape": plane.shape,
        "min": float(np.min(plane)),
        "max": float(np.max(plane)),
        "mean": float(np.mean(plane, dtype=np.float64)),
    }
    title = f"{path} · channel {channel}" + (f" · image {batch}" if array.ndim == 4 else "")
    console.print(slice_table(plane[::stride, ::stride], rows, columns, stats, title, stride))


def channel_plane(array, channel: int, batch: int, layout: str, name: str):
    """The (H, W) plane of one channel (and one image of a batch)."""
    from .api import ShapeError

    if array.ndim not in (2, 3, 4) or array.size == 0:
        raise ShapeError(f"{name}: can show 2-D, 3-D or 4-D non-empty arrays, got shape {array.shape}")
    if array.ndim == 4:
        if batch >= array.shape[0]:
            raise ShapeError(f"{name}: --batch {batch} is out of range: the batch has {array.shape[0]} images")
        array = array[batch]
    if array.ndim == 2:
        if channel != 0:
            raise ShapeError(f"{name}: --channel {channel} is out of range: a 2-D array has one channel")
        return array
    channels = array.shape[0] if layout == "nchw" else array.shape[-1]
    if channel >= channels:
        raise ShapeError(f"{name}: --channel {channel} is out of range: the array has {channels} channels")
    return array[channel] if layout == "nchw" else array[..., channel]


def run() -> None:
    """Entry point: Click, plus exit 130 on Ctrl-C and quiet handling of a reader closing the pipe early."""
    _signals_become_exceptions()
    try:
        status = main.main(standalone_mode=False)
    except click.exceptions.Abort:  # Click's wrapper for KeyboardInterrupt
        sys.stderr.write("Interrupted\n")
        status = 128 + signal.SIGINT
    except click.ClickException as error:
        error.show()
        status = error.exit_code
    except BrokenPipeError:
        _silence_stdout()
        status = 128 + signal.SIGPIPE
    except Exception as error:
        # A signal that lands inside a library (Numba compiling, say) can surface as that library's own
        # error raised while the KeyboardInterrupt or SystemExit unwound: it is still an interruption.
        status = _interruption_status(error)
        if status is None:
            raise
    sys.exit(status if isinstance(status, int) else 0)


def _interruption_status(error: BaseException) -> int | None:
    while error is not None:
        if isinstance(error, KeyboardInterrupt | click.exceptions.Abort):
            sys.stderr.write("Interrupted\n")
            return 128 + signal.SIGINT
        if isinstance(error, SystemExit) and error.code == 128 + signal.SIGTERM:
            return error.code
        error = error.__context__
    # The handler's exception can also be lost on the way: raised inside a ctypes callback (llvmlite
    # calls back into Python while Numba compiles), it is printed and dropped, and the compiler then
    # fails with an error of its own.  The signal still arrived, so it is still an interruption.
    if _received_signal == signal.SIGINT:
        sys.stderr.write("Interrupted\n")
    return None if _received_signal is None else 128 + _received_signal


_received_signal: int | None = None


def _signals_become_exceptions() -> None:
    """Let every way of stopping us run the clean-up code (temporary outputs are removed on the way out).

    A file-size limit would otherwise kill the process with SIGXFSZ mid-write; ignored, the write fails
    with EFBIG and is reported. SIGTERM unwinds like Ctrl-C, with the conventional status 143.
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt_on_sigint)
    sys.unraisablehook = _quiet_about_lost_interrupts


def _quiet_about_lost_interrupts(unraisable) -> None:
    """Stay quiet about exceptions Python can only print (in a ctypes callback, a ``__del__``) once we
    are stopping for a signal: our handlers' own exceptions raised there (the signal is recorded in
    _received_signal and reported once, on the way out), and the clean-up errors of library objects
    the interruption left half-built (llvmlite's, when Ctrl-C lands in Numba's compiler)."""
    if _received_signal is None and not isinstance(unraisable.exc_value, KeyboardInterrupt | SystemExit):
        sys.__unraisablehook__(unraisable)


def _interrupt_on_sigint(signum, frame) -> None:
    global _received_signal
    _received_signal = signum
    raise KeyboardInterrupt


def _exit_on_sigterm(signum, frame) -> None:
    global _received_signal
    _received_signal = signum
    sys.stderr.write("Terminated\n")
    raise SystemExit(128 + signal.SIGTERM)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not complain about the closed pipe."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
