"""The Dask path: dask arrays, zarr stores and .npy files on a real two-process LocalCluster.

One cluster serves the whole module (starting one costs seconds); its workers are separate processes
on loopback with a real memory limit, and the fault tests kill them for real.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import naive
import numpy as np
import pytest

from conv1x1_cli.errors import InputError

WORKER_MEMORY = 450 * 2**20
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------
# The cluster


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("zarr")
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    import cloudpickle

    from conv1x1_cli.cluster.client import local_cluster

    # The workers cannot import this test module: ship its helper functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # A task whose worker dies twice is given up (the default, 3, only makes the fault tests slower).
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        local_cluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", memory_limit=WORKER_MEMORY) as cluster,
    ):
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client

    with Client(cluster) as client:
        yield client


def write_store(path, array, chunks):
    import zarr

    store = zarr.create_array(store=str(path), shape=array.shape, chunks=chunks, dtype=array.dtype, compressors=None)
    store[...] = array
    return str(path)


def assert_close_to_float64(result, reference, pixels, bank, bias=None):
    tolerance = naive.float32_tolerance(pixels, bank, bias)
    assert result.dtype == np.float32
    assert result.shape == reference.shape, f"shape {result.shape}, expected {reference.shape}"
    assert np.all(np.abs(result - reference) <= tolerance)


def leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp") or ".tmp." in name)


def apply_stores(input_path, weight_paths, output_path, **options):
    """The public entry point, with its ApplyOptions given as keywords."""
    from conv1x1_cli import ApplyOptions, apply

    return apply(input_path, weight_paths, output_path, ApplyOptions(**options))


# ---------------------------------------------------------------------------------------------------
# Results


def test_store_of_many_chunks_equals_the_float64_reference(cluster, tmp_path, rng):
    import zarr

    x = rng.standard_normal((4, 64, 48, 16)).astype(np.float32)
    bank, bias = rng.standard_normal((16, 24)).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    source = write_store(tmp_path / "in.zarr", x, (1, 16, 16, 16))  # 48 chunks
    np.save(tmp_path / "w.npy", bank)
    np.save(tmp_path / "b.npy", bias)
    report = apply_stores(
        source,
        [str(tmp_path / "w.npy")],
        str(tmp_path / "out.zarr"),
        bias_paths=[str(tmp_path / "b.npy")],
        scheduler=cluster.scheduler_address,
    )
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert out.chunks == (1, 16, 16, 24)  # the input's chunking along pixels is kept
    assert report.output_shape == (4, 64, 48, 24) and report.cost.total("macs") == 4 * 64 * 48 * 16 * 24
    assert_close_to_float64(out[...], naive.pointwise(x, bank, bias), x, bank, bias)
    assert leftovers(tmp_path) == []


def test_output_chunks_that_are_all_zero_are_written_too(tmp_path, rng):
    """zarr skips a chunk that is all fill value unless told not to, at the price of comparing every
    chunk with it before writing (a third of a big run's time). We write them all: a reader sees the
    same values either way, and every chunk of the output is stored."""
    import zarr

    x = np.abs(rng.standard_normal((32, 16, 8))).astype(np.float32)
    x[:16] *= -1  # with a positive bank, the ReLU of the first half is exactly zero
    bank = np.abs(rng.standard_normal((8, 4))).astype(np.float32)
    source = write_store(tmp_path / "in.zarr", x, (8, 16, 8))
    np.save(tmp_path / "w.npy", bank)
    apply_stores(source, [str(tmp_path / "w.npy")], str(tmp_path / "out.zarr"))
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert out.nchunks == 4 and out.nchunks_initialized == 4
    assert not out[:16].any()
    assert_close_to_float64(out[...], naive.pointwise(x, bank), x, bank)


def test_chain_with_biases_from_store_to_npy(cluster, tmp_path, rng):
    x = rng.standard_normal((70, 50, 12)).astype(np.float32)
    banks = [rng.standard_normal((12, 20)).astype(np.float32), rng.standard_normal((20, 6)).astype(np.float32)]
    biases = [rng.standard_normal(20).astype(np.float32), rng.standard_normal(6).astype(np.float32)]
    source = write_store(tmp_path / "in.zarr", x, (16, 20, 12))  # bands of blocks across W
    paths = []
    for index, array in enumerate([*banks, *biases]):
        paths.append(str(tmp_path / f"{index}.npy"))
        np.save(paths[-1], array)
    apply_stores(
        source,
        paths[:2],
        str(tmp_path / "out.npy"),
        bias_paths=paths[2:],
        activation="none",
        scheduler=cluster.scheduler_address,
    )
    result = np.load(tmp_path / "out.npy")
    assert result.shape == (70, 50, 6) and result.dtype == np.float32
    # Bounded layer by layer: the second layer's rounding, and the first layer's error carried through it.
    naive.assert_chain_close_to_reference(result, x, banks, biases, relu_last=False)


def test_npy_to_zarr_and_back_round_trips_channels_first(cluster, tmp_path, rng):
    import zarr

    x = rng.standard_normal((2, 5, 33, 27)).astype(np.float16)  # (N, C, H, W), computed as float32
    np.save(tmp_path / "x.npy", x)
    identity = np.eye(5, dtype=np.float32)
    np.save(tmp_path / "id.npy", identity)
    options = {"layout": "nchw", "activation": "none", "scheduler": cluster.scheduler_address}
    apply_stores(
        str(tmp_path / "x.npy"), [str(tmp_path / "id.npy")], str(tmp_path / "x.zarr"), chunks=(8, 9), **options
    )
    assert zarr.open_array(str(tmp_path / "x.zarr")).chunks == (1, 5, 8, 9)
    apply_stores(str(tmp_path / "x.zarr"), [str(tmp_path / "id.npy")], str(tmp_path / "back.npy"), **options)
    back = np.load(tmp_path / "back.npy")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, x.astype(np.float32))


def test_one_channel_image_gives_height_width_filters(cluster, tmp_path, rng):
    image = rng.random((37, 29))
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "w.npy", np.array([[2.0, -1.0]]))
    report = apply_stores(
        str(tmp_path / "img.npy"),
        [str(tmp_path / "w.npy")],
        str(tmp_path / "out.zarr"),
        chunks=(10, 10),
        scheduler=cluster.scheduler_address,
    )
    import zarr

    out = zarr.open_array(str(tmp_path / "out.zarr"))[...]
    assert report.output_shape == (37, 29, 2) and out.dtype == np.float64  # float64 stays float64
    np.testing.assert_allclose(out, np.stack([2 * image, np.zeros_like(image)], axis=-1))


def test_dask_array_matches_the_in_memory_api_in_both_layouts(client, rng):
    import dask.array as da

    from conv1x1_cli import conv1x1

    bank = rng.standard_normal((6, 9))
    for layout, shape, chunks in (("nhwc", (3, 20, 16, 6), (1, 7, 16, 6)), ("nchw", (3, 6, 20, 16), (2, 6, 5, 8))):
        x = rng.standard_normal(shape).astype(np.float32)
        lazy = conv1x1_dask(da.from_array(x, chunks=chunks), bank, layout=layout)
        np.testing.assert_array_equal(client.compute(lazy).result(), conv1x1(x, bank, layout=layout))
    integers = da.from_array(np.arange(24, dtype=np.int16).reshape(4, 6), chunks=(2, 6))
    assert conv1x1_dask(integers, bank).dtype == np.float32


def test_split_channel_axis_is_rechunked_with_a_warning(client, rng):
    import dask.array as da

    x = rng.standard_normal((30, 30, 16)).astype(np.float32)
    bank = rng.standard_normal((16, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"channel axis .* is split into 4 chunks"):
        lazy = conv1x1_dask(da.from_array(x, chunks=(10, 30, 4)), bank)
    assert lazy.chunks == ((10, 10, 10), (30,), (4,))
    assert_close_to_float64(client.compute(lazy).result(), naive.pointwise(x, bank), x, bank)


def refuse_to_run(block):
    raise AssertionError("a block was computed")


def test_result_is_lazy_until_computed(client):
    import dask.array as da

    untouchable = da.zeros((40, 40, 3), chunks=(10, 40, 3), dtype=np.float32).map_blocks(
        refuse_to_run, dtype=np.float32
    )
    lazy = conv1x1_dask(untouchable, np.ones((3, 2), np.float32))  # builds the graph, runs nothing
    assert isinstance(lazy, da.Array) and lazy.shape == (40, 40, 2)
    with pytest.raises(AssertionError, match="a block was computed"):
        client.compute(lazy).result()


def test_bad_banks_are_refused_before_any_work(client):
    import dask.array as da

    from conv1x1_cli.errors import InputError as ShapeError

    with pytest.raises(ShapeError, match="expects 4 input channels but the input has 3"):
        conv1x1_dask(da.zeros((4, 4, 3), chunks=2), np.ones((4, 2)))


def conv1x1_dask(*args, **kwargs):
    from conv1x1_cli.cluster.blocks import conv1x1_dask

    return conv1x1_dask(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Faults


def slow_copy(block):
    time.sleep(0.15)
    return block


def fail_on_third_row_band(block, block_info=None):
    if block_info[None]["chunk-location"][0] == 2:
        raise ValueError("disk on fire")
    return block


def die_on_third_row_band(block, block_info=None):
    if block_info[None]["chunk-location"][0] == 2:
        os._exit(1)  # the worker process vanishes, as under the OOM killer
    return block


def store_input(tmp_path, rng, rows=320):
    import dask.array as da

    x = rng.standard_normal((rows, 64, 8)).astype(np.float32)
    source = write_store(tmp_path / "in.zarr", x, (8, 64, 8))
    return x, da.from_zarr(source)


def test_a_worker_killed_mid_run_is_recovered_from(client, tmp_path, rng):
    from conv1x1_cli.cluster import client as runner
    from conv1x1_cli.cluster import stores

    x, source = store_input(tmp_path, rng)  # 40 blocks of 0.15 s on 2 workers: about 3 s
    bank = rng.standard_normal((8, 5)).astype(np.float32)
    lazy = conv1x1_dask(source.map_blocks(slow_copy), bank)
    pids_before = client.run(os.getpid)
    destination = str(tmp_path / "out.zarr")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(stores.write_store, lazy, destination, lambda graph: runner.compute(client, graph))
        deadline = time.monotonic() + 30
        while not glob.glob(str(tmp_path / ".out.zarr.*.tmp/c/*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(next(iter(pids_before.values())), signal.SIGKILL)
        run.result(timeout=120)
    import zarr

    assert_close_to_float64(zarr.open_array(destination)[...], naive.pointwise(x, bank), x, bank)
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != set(pids_before.values())  # one really was replaced
    assert leftovers(tmp_path) == []


def test_a_failing_run_leaves_the_old_store_and_no_temporary(client, tmp_path, rng):
    import zarr

    from conv1x1_cli.cluster import client as runner
    from conv1x1_cli.cluster import stores

    _, source = store_input(tmp_path, rng, rows=64)
    destination = write_store(tmp_path / "out.zarr", np.full((3, 3), 7.0), (3, 3))
    lazy = conv1x1_dask(source.map_blocks(fail_on_third_row_band, dtype=np.float32), np.ones((8, 2), np.float32))
    with pytest.raises(ValueError, match="disk on fire"):
        stores.write_store(lazy, destination, lambda graph: runner.compute(client, graph), overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(destination)[...], np.full((3, 3), 7.0))
    assert leftovers(tmp_path) == []


def test_a_complete_store_is_replaced_only_with_overwrite(cluster, tmp_path, rng):
    import zarr

    destination = write_store(tmp_path / "out.zarr", np.full((3, 3), 7.0), (3, 3))
    np.save(tmp_path / "x.npy", np.ones((4, 4, 2), np.float32))
    np.save(tmp_path / "w.npy", np.full((2, 1), 2.0, np.float32))
    arguments = (str(tmp_path / "x.npy"), [str(tmp_path / "w.npy")], destination)
    with pytest.raises(InputError, match=r"out\.zarr: a zarr store is already there; pass --overwrite to replace it"):
        apply_stores(*arguments, scheduler=cluster.scheduler_address)
    np.testing.assert_array_equal(zarr.open_array(destination)[...], np.full((3, 3), 7.0))
    apply_stores(*arguments, scheduler=cluster.scheduler_address, overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(destination)[...], np.full((4, 4, 1), 4.0))
    assert leftovers(tmp_path) == []


def test_losing_workers_for_good_is_a_clear_error_and_no_store(client, tmp_path, rng):
    from conv1x1_cli.cluster import client as runner
    from conv1x1_cli.cluster import stores

    _, source = store_input(tmp_path, rng, rows=64)
    lazy = conv1x1_dask(source.map_blocks(die_on_third_row_band, dtype=np.float32), np.ones((8, 2), np.float32))
    with pytest.raises(runner.ClusterError, match=r"lost the worker running .* too many times.*nothing was written"):
        stores.write_store(lazy, str(tmp_path / "out.zarr"), lambda graph: runner.compute(client, graph))
    assert not (tmp_path / "out.zarr").exists()
    assert leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)


@pytest.fixture
def lone_worker_cluster(tmp_path_factory):
    """A scheduler and one worker without a nanny, each a process of its own (``dask scheduler`` and
    ``dask worker --no-nanny``): killing the worker loses it for good. Yields (address, worker process)."""
    pytest.importorskip("distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # (the scheduler cannot import this module)
    scheduler_file = tmp_path_factory.mktemp("cluster") / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": {**os.environ, "PYTHONPATH": str(ROOT)}}
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        **quiet,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--no-nanny",
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--dashboard-address",
                ":0",
            ],
            **quiet,
        )
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        yield address, worker
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.kill()
                process.wait()


def test_a_cluster_whose_every_worker_is_gone_fails_in_bounded_time(lone_worker_cluster, tmp_path, rng):
    """The worker is killed mid-run and nothing replaces it: after Dask's no-workers-timeout (3 s here),
    one ClusterError line, and nothing at the destination."""
    import dask

    from conv1x1_cli.cluster import client as runner
    from conv1x1_cli.cluster import stores
    from conv1x1_cli.errors import ClusterError

    address, worker = lone_worker_cluster
    _, source = store_input(tmp_path, rng)  # 40 blocks of 0.15 s on 1 worker: about 6 s
    lazy = conv1x1_dask(source.map_blocks(slow_copy), np.ones((8, 2), np.float32))
    destination = tmp_path / "out.zarr"
    with (
        dask.config.set({"distributed.scheduler.no-workers-timeout": "3s"}),
        runner.dask_client(address) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        run = pool.submit(stores.write_store, lazy, str(destination), lambda graph: runner.compute(client, graph))
        deadline = time.monotonic() + 30
        while not glob.glob(str(tmp_path / ".out.zarr.*.tmp/c/*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.kill()
        killed = time.monotonic()
        with pytest.raises(ClusterError, match=r"^the cluster has had no workers for 3 s; nothing was written$"):
            run.result(timeout=60)
        assert time.monotonic() - killed < 3 + 2 * runner.POLL_SECONDS + 5
    assert not destination.exists()
    assert leftovers(tmp_path) == []


def test_a_cli_run_on_a_cluster_without_workers_is_one_line(lone_worker_cluster, tmp_path):
    address, worker = lone_worker_cluster
    worker.kill()
    worker.wait()
    np.save(tmp_path / "x.npy", np.ones((16, 16, 4), np.float32))
    np.save(tmp_path / "w.npy", np.ones((4, 2), np.float32))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "conv1x1_cli", "apply", "x.npy", "w.npy", "-o", "out.zarr", "--scheduler", address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "2s"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["Error: the cluster has had no workers for 2 s; nothing was written"]
    assert time.monotonic() - started < 60
    assert sorted(os.listdir(tmp_path)) == ["w.npy", "x.npy"]


def test_an_unreachable_scheduler_is_one_line(monkeypatch):
    pytest.importorskip("distributed")
    from conv1x1_cli.cluster import client as runner
    from conv1x1_cli.cluster.client import dask_client
    from conv1x1_cli.errors import ClusterError

    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", "1s")

    with (
        pytest.raises(ClusterError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"),
        dask_client("tcp://127.0.0.1:9"),
    ):
        pass


def test_kernel_time_is_the_runs_own_on_a_long_lived_cluster(cluster, tmp_path, rng):
    """The workers keep their packed stacks (and their kernel clocks) between runs: each report must
    count its own run only. A run of 8x the pixels, then a small one with the same bank: the small one
    must report less kernel time (a clock kept across runs would report more: both runs)."""
    bank = rng.standard_normal((64, 32)).astype(np.float32)
    np.save(tmp_path / "w.npy", bank)
    seconds = {}
    for name, rows in (("big", 1024), ("small", 128)):
        x = rng.standard_normal((rows, 256, 64)).astype(np.float32)
        source = write_store(tmp_path / f"{name}.zarr", x, (64, 256, 64))
        output = str(tmp_path / f"out-{name}.zarr")
        seconds[name] = apply_stores(
            source, [str(tmp_path / "w.npy")], output, scheduler=cluster.scheduler_address
        ).kernel_seconds
    assert 0 < seconds["small"] < seconds["big"], seconds


def test_an_existing_non_store_destination_is_not_replaced(cluster, tmp_path, rng):
    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "notes.txt").write_text("mine")
    np.save(tmp_path / "x.npy", rng.random((4, 4, 2)))
    np.save(tmp_path / "w.npy", np.ones((2, 1)))
    with pytest.raises(InputError, match="exists and is not a zarr store"):
        apply_stores(
            str(tmp_path / "x.npy"),
            [str(tmp_path / "w.npy")],
            str(tmp_path / "out.zarr"),
            scheduler=cluster.scheduler_address,
        )
    assert (tmp_path / "out.zarr" / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------------
# Memory


def worker_memory():
    """(resident now, peak resident since the last reset_peak_memory), in bytes, from /proc."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak_memory():
    """Forget the peak so far (Linux: writing 5 to clear_refs resets VmHWM): a cold Numba cache makes
    the first run compile in every worker, and LLVM's peak must not count as data."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


BIG_ROWS, BIG_WIDTH, BIG_CHANNELS, BIG_BAND = 3200, 2048, 64, 32
BIG_CHUNK_BYTES = BIG_BAND * BIG_WIDTH * BIG_CHANNELS * 4  # 16 MiB


def big_store(tmp_path):
    """A 1.6 GiB store of 100 uncompressed chunks, written band by band (never held whole, here or
    anywhere), its band pattern and a 64 -> 16 bank saved as w.npy."""
    import zarr

    rows, width, channels, band = BIG_ROWS, BIG_WIDTH, BIG_CHANNELS, BIG_BAND
    store = zarr.create_array(
        store=str(tmp_path / "big.zarr"),
        shape=(rows, width, channels),
        chunks=(band, width, channels),
        dtype=np.float32,
        compressors=None,
    )
    pattern = np.linspace(-1, 1, width * channels, dtype=np.float32).reshape(1, width, channels)
    for start in range(0, rows, band):
        store[start : start + band] = pattern * (start // band % 5)
    bank = np.linspace(-1, 1, channels * 16, dtype=np.float32).reshape(channels, 16)
    np.save(tmp_path / "w.npy", bank)
    return store, pattern, bank


def check_big_output(path, pattern, bank):
    import zarr

    out = zarr.open_array(str(path))
    for band_index in (0, 7, 99):
        expected = naive.pointwise(pattern[0] * (band_index % 5), bank)
        assert_close_to_float64(out[band_index * BIG_BAND + 5], expected, pattern[0] * (band_index % 5), bank)


def test_peak_worker_memory_stays_at_a_few_chunks_for_a_store_bigger_than_memory(cluster, client, tmp_path):
    store, pattern, bank = big_store(tmp_path)
    channels, chunk_bytes = BIG_CHANNELS, BIG_CHUNK_BYTES
    assert store.nbytes >= 3 * WORKER_MEMORY
    client.restart()  # fresh workers, whatever the tests before left in their heaps
    client.wait_for_workers(2, timeout=60)
    # A small run first: the kernel, zarr and its codecs loaded in every worker are baseline, not data.
    write_store(tmp_path / "small.zarr", np.ones((8, 64, channels), np.float32), (1, 64, channels))
    small = str(tmp_path / "small.zarr")
    apply_stores(
        small, [str(tmp_path / "w.npy")], str(tmp_path / "small-out.zarr"), scheduler=cluster.scheduler_address
    )
    client.run(reset_peak_memory)
    before = client.run(worker_memory)
    apply_stores(
        str(tmp_path / "big.zarr"),
        [str(tmp_path / "w.npy")],
        str(tmp_path / "out.zarr"),
        scheduler=cluster.scheduler_address,
    )
    after = client.run(worker_memory)
    assert after.keys() == before.keys()  # no worker was restarted for using too much
    for worker, (rss, _) in before.items():
        peak = after[worker][1]
        print(f"{worker}: baseline {rss / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, chunk {chunk_bytes >> 20} MiB")
        # Measured (2 cores): baseline 247 MiB, peak 283 MiB: about 2 chunks over the baseline, for a
        # store of 100 chunks; the bound leaves room for a read-ahead block and allocator slack.
        assert peak <= rss + 8 * chunk_bytes, f"{worker}: peak {peak / 2**20:.0f} MiB, baseline {rss / 2**20:.0f}"
    check_big_output(tmp_path / "out.zarr", pattern, bank)


# Runs a command, then prints its peak resident memory (in kiB: Linux's ru_maxrss), as the kernel
# counted it; the only child of this small process, so the figure is that command's.
PEAK_OF_COMMAND = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def test_a_local_run_holds_a_few_chunks_of_a_store_bigger_than_this_test_allows(tmp_path):
    """No scheduler: the run's threads work in the command's own process, whose peak memory for the
    1.6 GiB store stays within a few chunks of its peak for a store of one small chunk."""
    pytest.importorskip("distributed")
    from conv1x1_cli.costs.roofline import usable_cpus

    _, pattern, bank = big_store(tmp_path)
    write_store(tmp_path / "small.zarr", np.ones((8, 64, BIG_CHANNELS), np.float32), (8, 64, BIG_CHANNELS))
    peaks = {}
    for name in ("small", "big"):
        arguments = [str(tmp_path / f"{name}.zarr"), str(tmp_path / "w.npy"), "-o", str(tmp_path / f"{name}-out.zarr")]
        command = [sys.executable, "-m", "conv1x1_cli", "apply", *arguments, "-q"]
        result = subprocess.run(
            [sys.executable, "-c", PEAK_OF_COMMAND, *command], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        peaks[name] = int(result.stdout) * 1024
    print(f"peak {peaks['big'] / 2**20:.0f} MiB, for one small chunk {peaks['small'] / 2**20:.0f} MiB")
    # Measured (2 cores, so 2 threads): 106-155 MiB over, 3.3-4.8 chunks per thread (a chunk read, its
    # contiguous copy, the output, and freed 16 MiB buffers glibc keeps in each thread's arena), for a
    # store of 100 chunks.
    assert peaks["big"] <= peaks["small"] + 6 * usable_cpus() * BIG_CHUNK_BYTES, peaks
    check_big_output(tmp_path / "big-out.zarr", pattern, bank)


# ---------------------------------------------------------------------------------------------------
# Without the extra


BLOCK_DASK = """
import sys
class NoDask:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dask", "distributed", "zarr"):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, NoDask())
"""


def test_a_store_without_the_extra_names_the_extra_in_one_line(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((2, 2)))
    script = BLOCK_DASK + (
        "from conv1x1_cli import apply\n"
        "from conv1x1_cli.errors import InputError\n"
        "try:\n"
        f"    apply('in.zarr', [{str(tmp_path / 'w.npy')!r}], 'out.npy')\n"
        "except InputError as error:\n"
        "    print(error)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('dask', 'distributed', 'zarr')))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert run.stdout.splitlines() == [
        'in.zarr: reading .zarr stores needs the dask extra: pip install "conv1x1[dask]"',
        "[]",
    ]


# ---------------------------------------------------------------------------------------------------
# The command line


def test_cli_goes_npy_to_zarr_and_back_on_a_given_scheduler(cluster, tmp_path, rng):
    from click.testing import CliRunner

    from conv1x1_cli.cli import main

    x = rng.standard_normal((40, 24, 6)).astype(np.float32)
    banks = [rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)]
    for name, array in (("x.npy", x), ("w1.npy", banks[0]), ("w2.npy", banks[1])):
        np.save(tmp_path / name, array)
    address = ["--scheduler", cluster.scheduler_address]
    runner = CliRunner()
    there = runner.invoke(
        main,
        [
            "apply",
            str(tmp_path / "x.npy"),
            str(tmp_path / "w1.npy"),
            "-o",
            str(tmp_path / "mid.zarr"),
            "--chunks",
            "8x12",
            "-q",
            *address,
        ],
    )
    assert there.exit_code == 0, there.output
    back = runner.invoke(
        main, ["apply", str(tmp_path / "mid.zarr"), str(tmp_path / "w2.npy"), "-o", str(tmp_path / "out.npy"), *address]
    )
    assert back.exit_code == 0, back.output
    assert "MACs" in back.stderr  # the same summary as an in-process run
    naive.assert_chain_close_to_reference(np.load(tmp_path / "out.npy"), x, banks)


def test_cli_without_the_extra_is_one_error_line(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((2, 2)))
    script = BLOCK_DASK + (
        "from conv1x1_cli.cli import run\n"
        f"sys.argv = ['conv1x1', 'apply', 'in.zarr', {str(tmp_path / 'w.npy')!r}, '-o', 'out.npy']\n"
        "run()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'Error: in.zarr: reading .zarr stores needs the dask extra: pip install "conv1x1[dask]"'
    ]


def test_without_a_scheduler_the_run_is_threads_of_this_process(monkeypatch, tmp_path, rng):
    """No second of process start-up, no kernel loaded again in every worker."""
    import distributed

    started = []

    class RecordingCluster(distributed.LocalCluster):
        def __init__(self, **settings):
            started.append(settings["processes"])
            super().__init__(**settings)

    monkeypatch.setattr(distributed, "LocalCluster", RecordingCluster)
    x = rng.standard_normal((64, 32, 6)).astype(np.float32)
    source = write_store(tmp_path / "in.zarr", x, (16, 32, 6))
    bank = rng.standard_normal((6, 2)).astype(np.float32)
    np.save(tmp_path / "w.npy", bank)
    apply_stores(source, [str(tmp_path / "w.npy")], str(tmp_path / "out.npy"))
    assert_close_to_float64(np.load(tmp_path / "out.npy"), naive.pointwise(x, bank), x, bank)
    assert started == [False]


def test_progress_follows_the_tasks_to_the_end(tmp_path, rng):
    """``compute`` tells ``progress`` (done now, total) from Dask's progress plugin while it waits for
    the result (with its watch for a cluster without workers); every task is counted once."""
    from conv1x1_cli.cluster import client as runner
    from conv1x1_cli.cluster import stores

    _, source = store_input(tmp_path, rng, rows=64)  # 8 blocks
    lazy = conv1x1_dask(source.map_blocks(slow_copy), np.ones((8, 2), np.float32))
    calls = []
    with runner.dask_client() as client:
        stores.write_store(
            lazy, str(tmp_path / "out.zarr"), lambda graph: runner.compute(client, graph, lambda *a: calls.append(a))
        )
    totals = {total for _, total in calls}
    assert len(totals) == 1 and sum(done for done, _ in calls) == totals.pop() >= 8
    assert len(calls) >= 2  # (the blocks take 0.15 s each: the bar moved while they ran)
