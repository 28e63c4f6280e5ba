"""Running ``apply`` on a ``dask.distributed`` cluster: connecting or starting one, following its
tasks with a progress bar, and turning its failures into one-line errors.

``apply_stores`` is the store counterpart of ``api.apply_files``: same arguments plus the scheduler,
same ``ApplyReport``. With a scheduler address (argument or ``DASK_SCHEDULER_ADDRESS``) it runs on that
cluster; without one it starts a local cluster sized to this machine and closes it afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from . import dask_backend, stores
from .api import ApplyReport, BankFiles, compute_dtype, volume_of
from .chunking import default_chunks
from .machine import usable_cpus

SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT = "10s"


class ClusterError(RuntimeError):
    """The cluster could not be reached, or lost the workers running a task too many times."""


def apply_stores(
    input_path: str,
    weight_paths: Sequence[str],
    output_path: str,
    *,
    bias_paths: Sequence[str] = (),
    layout: str = "nhwc",
    weights_layout: str = "cf",
    activation: str = "relu",
    threads: int | None = None,
    scheduler: str | None = None,
    chunks: tuple[int, int] | None = None,
    progress: bool = False,
) -> ApplyReport:
    """Convolve a zarr store or .npy file into a zarr store or .npy file (at least one a store) on Dask.

    Blocks keep the input store's chunks along pixels (``chunks`` = (rows, cols) rechunks them, and
    cuts a .npy input; by default a .npy input is cut into bands of ~64 MiB). ``progress`` draws a
    bar on stderr when it is a terminal.
    """
    started = time.perf_counter()
    for path, action in ((input_path, "reading"), (output_path, "writing")):
        if stores.is_store(path):
            stores.require_dask(path, action)
    bank_files = BankFiles.load(weight_paths, bias_paths, weights_layout)
    x = _open_input(input_path, layout, bank_files.filters, chunks)
    volume = volume_of(x.shape, layout, input_path)
    layers = bank_files.layers(activation, volume.channels, compute_dtype(x.dtype), input_path)
    input_shape = x.shape
    if x.ndim == 2:  # one channel: (H, W) becomes (H, W, 1), or (1, H, W) channels-first
        x = x[..., None] if layout == "nhwc" else x[None]
    with dask_client(scheduler, threads) as client:
        result = dask_backend.convolve_layers(x, layers, layout=layout, threads=threads)
        token = dask_backend.stack_token(layers, threads)
        if stores.is_store(output_path):
            stores.write_store(result, output_path, lambda graph: compute(client, graph, progress))
        else:
            with _slab_bar(progress, result.npartitions) as done:
                stores.stream_to_npy(result, output_path, client, done)
        kernel_seconds = max(client.run(_kernel_seconds_since, token).values(), default=0.0)
    return ApplyReport.of(input_shape, volume, layers, time.perf_counter() - started, kernel_seconds)


def _open_input(path: str, layout: str, filters: list[int], chunks: tuple[int, int] | None):
    if not stores.is_store(path):
        return stores.open_npy(path, lambda shape: _block_shape(shape, layout, filters, chunks))
    x = stores.open_store(path)
    return x if chunks is None else x.rechunk(_block_shape(x.shape, layout, filters, chunks))


def _block_shape(shape: tuple[int, ...], layout: str, filters: list[int], chunks: tuple[int, int] | None):
    """One image, ``rows x cols`` pixels and every channel per block, in the array's own axis order."""
    volume = volume_of(shape, layout, "input")
    rows, cols = chunks or default_chunks(volume, filters)
    rows, cols = min(rows, volume.height), min(cols, volume.width)
    if len(shape) == 2:
        return (rows, cols)
    spatial = (volume.channels, rows, cols) if layout == "nchw" else (rows, cols, volume.channels)
    return (1, *spatial) if len(shape) == 4 else spatial


def _kernel_seconds_since(token: str) -> float:
    return dask_backend.kernel_seconds(token)


# ---------------------------------------------------------------------------------------------------
# The cluster


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, threads: int | None = None) -> Iterator:
    """A ``distributed.Client`` on ``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``), or on a local
    cluster of this machine's cores: one single-threaded worker process per ``threads`` cores, so
    worker threads x kernel threads never exceed the cores."""
    from distributed import Client

    address = scheduler or os.environ.get(SCHEDULER_VARIABLE)
    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise ClusterError(f"cannot reach the Dask scheduler at {address} ({_first_line(error)})") from None
        with client:
            yield client
        return
    with local_cluster(threads) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def local_cluster(threads: int | None = None, **options) -> Iterator:
    """A ``LocalCluster`` sized to this machine; ``options`` override its arguments (tests use them)."""
    from distributed import LocalCluster

    cores = usable_cpus()
    kernel_threads = max(1, min(threads or 1, cores))
    settings = {
        "n_workers": max(1, cores // kernel_threads),
        "threads_per_worker": 1,
        "processes": True,
        "memory_limit": "auto",  # the machine's memory shared between the workers
        "dashboard_address": None,
        "silence_logs": logging.ERROR,
        # numba starts a thread per core in every process unless told; only kernel_threads work.
        "env": {"NUMBA_NUM_THREADS": str(kernel_threads)},
    }
    with LocalCluster(**{**settings, **options}) as cluster:
        yield cluster


def compute(client, graph, progress: bool = False):
    """Compute ``graph`` on ``client``, following its tasks with a bar; cluster failures -> ClusterError."""
    from distributed import KilledWorker

    future = client.compute(graph)
    try:
        if progress and sys.stderr.isatty():
            client.sync(progress_bar_class()([future]).listen)
        return future.result()
    except KilledWorker as error:
        raise ClusterError(
            f"the cluster lost the worker running {error.task!r} too many times (a crash or out of memory?); "
            "nothing was written"
        ) from None
    except BaseException:
        future.cancel()
        _wait_for_running_tasks(client, graph)
        raise
    finally:
        future.cancel()


def _wait_for_running_tasks(client, graph, timeout: float = 60.0) -> None:
    """Cancelling does not stop tasks already running: wait for them, so that clean-up after a
    failure is not undone by a block that is still being written."""
    from dask.utils import key_split

    names = {key_split(key) for key in graph.__dask_graph__()}

    def running(dask_worker) -> int:
        return sum(key_split(task.key) in names for task in dask_worker.state.executing)

    deadline = time.monotonic() + timeout
    with contextlib.suppress(Exception):  # a cluster that is gone runs nothing
        while any(client.run(running).values()) and time.monotonic() < deadline:
            time.sleep(0.05)


@functools.cache
def progress_bar_class():
    """``RichProgressBar``, defined on first use so that distributed is imported only then."""
    from distributed.diagnostics.progressbar import ProgressBar

    class RichProgressBar(ProgressBar):
        """Dask's own progress stream (the scheduler's Progress plugin), drawn by rich on stderr."""

        def __init__(self, keys, scheduler=None):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            super().__init__(keys, scheduler, interval="200ms", complete=True)
            columns = (TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self._bar = Progress(*columns, console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("tasks", total=None)
            self._bar.start()

        def _draw_bar(self, remaining, all, **kwargs):
            self._bar.update(self._task, total=all, completed=all - remaining)

        def _draw_stop(self, **kwargs):
            self._bar.stop()

    return RichProgressBar


@contextlib.contextmanager
def _slab_bar(enabled: bool, blocks: int) -> Iterator[Callable[[int], None] | None]:
    """For .npy output, whose slabs are written in order as their futures complete."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("blocks", total=blocks)
        yield lambda count: bar.advance(task, count)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
