"""The ``dask.distributed`` cluster a run goes to: connecting to one or starting a local one, computing
a graph on it while reporting progress, and turning its failures into one-line ``ClusterError``s."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator

from ..costs.roofline import usable_cpus
from ..errors import ClusterError, first_line

SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT = "10s"
# A run on a cluster left with no workers fails after this long (unless Dask's config says otherwise).
NO_WORKERS_SECONDS = 30.0
# How often a waiting run checks that the cluster still has workers.
POLL_SECONDS = 1.0
# How long a finished run waits for the progress of its last tasks to arrive.
PROGRESS_DRAIN_SECONDS = 10.0
Progress = Callable[[int, int], None]  # (tasks done since the last call, tasks in all)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, threads: int | None = None) -> Iterator:
    """A ``distributed.Client`` on ``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``), or on a local
    cluster of threads of this process, one per core (``local_cluster``): they start in milliseconds
    where worker processes take a second and load the kernel each, and nothing is pickled between
    them (on 2 cores, the 4096x4096x64 store ran in 12.5 s on threads, 19.3 s on two processes)."""
    from distributed import Client

    address = scheduler or os.environ.get(SCHEDULER_VARIABLE)
    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except Exception as error:  # OSError, TimeoutError, and ValueError for an address of no known form
            raise ClusterError(f"cannot reach the Dask scheduler at {address} ({first_line(error)})") from None
        with client:
            yield client
        return
    with local_cluster(threads, in_process=True) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def local_cluster(threads: int | None = None, *, in_process: bool = False, **options) -> Iterator:
    """A ``LocalCluster`` sized to this machine, so that worker threads x kernel threads never exceed
    the cores: one single-threaded worker process per ``threads`` cores, or with ``in_process`` one
    worker in this process with a thread per ``threads`` cores (it starts in milliseconds where
    processes take about a second). ``options`` override its arguments (tests use them)."""
    from distributed import LocalCluster

    cores = usable_cpus()
    kernel_threads = max(1, min(threads or 1, cores))
    workers = max(1, cores // kernel_threads)
    settings = {
        "n_workers": 1 if in_process else workers,
        "threads_per_worker": workers if in_process else 1,
        "processes": not in_process,
        "memory_limit": "auto",  # the machine's memory shared between the workers
        "dashboard_address": ":0",  # a free port: the default, 8787, warns when another cluster has it
        "silence_logs": logging.ERROR,
    }
    if not in_process:  # numba starts a thread per core in every process unless told; only kernel_threads work
        settings["env"] = {"NUMBA_NUM_THREADS": str(kernel_threads)}
    with LocalCluster(**{**settings, **options}) as cluster:
        yield cluster


def compute(client, graph, progress: Progress | None = None):
    """Compute ``graph`` on ``client``, telling ``progress`` of its tasks; cluster failures -> ClusterError."""
    future = client.compute(graph)
    try:
        listening = None
        if progress:  # listened to in the client's event loop, while ``result`` watches the cluster here
            listener = progress_listener_class()([future], progress)
            listening = asyncio.run_coroutine_threadsafe(listener.listen(), client.loop.asyncio_loop)
        value = result(client, future)
        if listening is not None:  # the last tasks' progress, already on its way (a bar short of 100 % is no failure)
            with contextlib.suppress(TimeoutError):
                listening.result(timeout=PROGRESS_DRAIN_SECONDS)
        return value
    except BaseException:
        future.cancel()
        _wait_for_running_tasks(client, graph)
        raise
    finally:
        future.cancel()


def result(client, future):
    """``future.result()``, with the cluster's failures as one ``ClusterError`` line: a task that
    killed its workers too often, a scheduler gone, or no worker at all for ``no_workers_timeout()``
    seconds (every worker lost, and none coming back)."""
    from distributed import KilledWorker

    timeout = no_workers_timeout()
    workerless_since: float | None = None
    while True:
        try:
            return future.result(timeout=POLL_SECONDS)
        except KilledWorker as error:
            raise ClusterError(
                f"the cluster lost the worker running {error.task!r} too many times (a crash or out of memory?); "
                "nothing was written"
            ) from None
        except TimeoutError:
            pass
        except (OSError, asyncio.CancelledError) as error:
            if client.status != "running" or future.cancelled():
                raise ClusterError(f"lost the Dask scheduler ({first_line(error)}); nothing was written") from None
            raise
        try:
            workers = len(client.nthreads())
        except OSError as error:
            raise ClusterError(f"lost the Dask scheduler ({first_line(error)}); nothing was written") from None
        now = time.monotonic()
        workerless_since = None if workers else (workerless_since or now)
        if workerless_since is not None and now - workerless_since >= timeout:
            raise ClusterError(f"the cluster has had no workers for {timeout:g} s; nothing was written")


def no_workers_timeout() -> float:
    """Seconds a run waits on a cluster with no workers: Dask's ``distributed.scheduler.no-workers-timeout``
    when set, else ``NO_WORKERS_SECONDS``."""
    import dask.config
    from dask.utils import parse_timedelta

    configured = dask.config.get("distributed.scheduler.no-workers-timeout", None)
    return NO_WORKERS_SECONDS if configured is None else float(parse_timedelta(configured, default="s"))


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
def progress_listener_class():
    """``ProgressListener``, defined on first use so that distributed is imported only then."""
    from distributed.diagnostics.progressbar import ProgressBar

    class ProgressListener(ProgressBar):
        """Dask's own progress stream (the scheduler's Progress plugin) passed on as (done now, total).

        ``_draw_bar`` is the hook every progress bar of distributed's own overrides (text, widget):
        the stream has no public one."""

        def __init__(self, keys, progress: Progress, scheduler=None):
            super().__init__(keys, scheduler, interval="200ms", complete=True)
            self._progress, self._done = progress, 0

        def _draw_bar(self, remaining, all, **kwargs):
            done = all - remaining
            self._progress(done - self._done, all)
            self._done = done

    return ProgressListener
