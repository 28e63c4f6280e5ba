"""``apply``: a thin shell over ``api.apply``, which picks the backend (in memory, streamed, Dask)."""

from __future__ import annotations

from dataclasses import replace

import click

from .options import (
    ACTIVATION_OPTION,
    BIAS_FILES_OPTION,
    LAYOUT_OPTION,
    WEIGHTS_LAYOUT_OPTION,
    Command,
    check_bias_count,
    quiet_libraries,
    storage_options,
    usage_error,
)


@click.command(cls=Command)
@click.argument("input_path", metavar="INPUT")
@click.argument("weight_paths", metavar="WEIGHTS...", nargs=-1, required=True)
@click.option("-o", "--output", "output_path", required=True, help="Output .npy path, .zarr store, or - for stdout.")
@BIAS_FILES_OPTION
@LAYOUT_OPTION
@WEIGHTS_LAYOUT_OPTION
@ACTIVATION_OPTION
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Kernel threads [default: all cores; one for a run of under 2^28 multiply-adds].",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run on this dask.distributed scheduler [.zarr runs: $DASK_SCHEDULER_ADDRESS, else threads of this process].",
)
@click.option("--chunks", metavar="ROWSxCOLS", default=None, help="Dask block size in pixels (stores and --scheduler).")
@click.option(
    "--storage-option",
    "storage_pairs",
    metavar="KEY=VALUE",
    multiple=True,
    help="Passed to the fsspec file system of s3://, gs://… stores, here and on the workers (repeatable; "
    "VALUE read as JSON when it parses, e.g. anon=true).",
)
@click.option(
    "--codec",
    metavar="NAME[:LEVEL]",
    default=None,
    help="Output store compression: zstd (level 1), lz4 (Blosc, level 5) or none [default: zstd:1].",
)
@click.option("--overwrite", is_flag=True, help="Replace what is already at an output store (.npy files always are).")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr unless it fails: no summary, bar or warning.")
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
    storage_pairs,
    codec,
    overwrite,
    quiet,
):
    """Apply a 1×1 convolution (+ bias, + ReLU) to INPUT with each bank in WEIGHTS, in order.

    INPUT is a .npy file or - for stdin: (H, W), (H, W, C) or (N, H, W, C) — or with --layout nchw,
    (C, H, W) or (N, C, H, W). A bank is (C, F), (F, C) with --weights-layout fc, PyTorch (F, C, 1, 1)
    or Keras (1, 1, C, F). The output keeps the input's layout; float64 input gives float64, anything
    else float32. A short summary goes to stderr; stdout carries only data.

    \b
    INPUT or OUTPUT may also be a zarr store (path ending in .zarr, local or an fsspec URL such as
    s3://bucket/x.zarr; needs `pip install "conv1x1[dask]"`, and "conv1x1[s3]" for S3): the run then
    goes through Dask, on --scheduler or $DASK_SCHEDULER_ADDRESS when given, else on threads of this
    process. An output store already there is replaced only with --overwrite.

    \b
    Examples:
      conv1x1 apply samples/volume_6x6x32.npy samples/bank_32x8.npy -o out.npy
      cat in.npy | conv1x1 apply - w.npy -o - | conv1x1 apply - w2.npy -o out.npy
      conv1x1 apply scene.zarr w.npy -o reduced.zarr --scheduler tcp://10.0.0.5:8786
    """
    from ..api import ApplyOptions, check_apply_options
    from ..api import apply as apply_files
    from ..costs.chunks import parse_chunks
    from ..render.progress import progress_bar, stderr_console

    check_bias_count(bias_paths, weight_paths)
    with usage_error("'--chunks'"):
        block = parse_chunks(chunks) if chunks else None
    with usage_error("'--storage-option'"):
        storage = storage_options(storage_pairs)
    choices = (bias_paths, layout, weights_layout, activation, threads, scheduler, block)
    options = ApplyOptions(*choices, storage_options=storage, overwrite=overwrite, codec=codec)
    check_apply_options(input_path, weight_paths, output_path, options)  # (before the bar shows)
    with quiet_libraries(quiet), progress_bar("convolving", enabled=not quiet) as progress:
        report = apply_files(input_path, weight_paths, output_path, replace(options, progress=progress))
    if not quiet:
        from ..render.apply import apply_summary

        stderr_console().print(apply_summary(report))
