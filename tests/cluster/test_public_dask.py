"""The Dask path where the older tests left gaps: ``conv1x1(dask_array)`` through the package's public
``conv1x1`` (the older tests call ``dask_backend`` directly), and the ``DASK_SCHEDULER_ADDRESS``
environment variable of ``apply``.

Module-level names used besides the public ones: ``conv1x1_cli.cluster.client.CONNECT_TIMEOUT`` (shortened to
1 s so that an unreachable scheduler fails fast) and ``cluster.SCHEDULER_VARIABLE`` (only to check it
is the documented name).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

import naive
import numpy as np
import pytest
from click.testing import CliRunner

import conv1x1_cli
from conv1x1_cli.cli import main


def refuse_to_run(block):
    raise AssertionError("a block was computed")


@pytest.mark.parametrize(
    ("layout", "shape", "chunks"),
    [("nhwc", (3, 20, 16, 6), (1, 7, 16, 6)), ("nchw", (3, 6, 20, 16), (2, 6, 5, 8))],
)
def test_public_conv1x1_of_a_dask_array_is_a_lazy_dask_array_of_the_right_values(rng, layout, shape, chunks):
    da = pytest.importorskip("dask.array")
    x = rng.standard_normal(shape).astype(np.float32)
    bank = rng.standard_normal((6, 9)).astype(np.float32)
    bias = rng.standard_normal(9).astype(np.float32)
    lazy = conv1x1_cli.conv1x1(da.from_array(x, chunks=chunks), bank, bias, layout=layout)
    assert isinstance(lazy, da.Array)
    expected_shape = (3, 20, 16, 9) if layout == "nhwc" else (3, 9, 20, 16)
    assert lazy.shape == expected_shape and lazy.dtype == np.float32
    result = lazy.compute(scheduler="synchronous")
    channels_last = np.moveaxis(result, 1, -1) if layout == "nchw" else result
    pixels = np.moveaxis(x, 1, -1) if layout == "nchw" else x
    naive.assert_close_to_reference(channels_last, pixels, bank, bias)


def test_public_conv1x1_of_a_dask_array_computes_nothing_until_asked(rng):
    da = pytest.importorskip("dask.array")
    untouchable = da.zeros((40, 40, 3), chunks=(10, 40, 3), dtype=np.float64).map_blocks(
        refuse_to_run, dtype=np.float64
    )
    lazy = conv1x1_cli.conv1x1(untouchable, [np.ones((3, 4)), np.ones((4, 2))])  # a chain, float64
    assert isinstance(lazy, da.Array) and lazy.shape == (40, 40, 2) and lazy.dtype == np.float64
    assert lazy.chunks == ((10, 10, 10, 10), (40,), (2,))
    with pytest.raises(AssertionError, match="a block was computed"):
        lazy.compute(scheduler="synchronous")


def test_public_conv1x1_of_a_float64_dask_chain_keeps_float64_precision(rng):
    da = pytest.importorskip("dask.array")
    x = rng.standard_normal((12, 10, 5))
    banks = [rng.standard_normal((5, 7)), rng.standard_normal((7, 3))]
    biases = [rng.standard_normal(7), rng.standard_normal(3)]
    lazy = conv1x1_cli.conv1x1(da.from_array(x, chunks=(4, 5, 5)), banks, biases, activation="none")
    result = lazy.compute(scheduler="synchronous")
    assert result.dtype == np.float64
    naive.assert_chain_close_to_reference(result, x, banks, biases, relu_last=False)


def apply_args(tmp_path, rng):
    x = rng.standard_normal((12, 10, 4)).astype(np.float32)
    bank = rng.standard_normal((4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", bank)
    return x, bank, ["apply", str(tmp_path / "x.npy"), str(tmp_path / "w.npy"), "-q"]


def test_apply_uses_dask_scheduler_address_from_the_environment(monkeypatch, tmp_path, rng):
    """With the variable set, a store run goes to that scheduler: here an unreachable one, so the run
    must fail with the one-line error naming it (instead of quietly starting a local cluster)."""
    pytest.importorskip("distributed")
    pytest.importorskip("zarr")
    from conv1x1_cli.cluster import client as cluster

    assert cluster.SCHEDULER_VARIABLE == "DASK_SCHEDULER_ADDRESS"
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    _, _, args = apply_args(tmp_path, rng)
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out.zarr")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert not (tmp_path / "out.zarr").exists()


def test_apply_runs_on_the_scheduler_named_by_the_environment(monkeypatch, tmp_path, rng):
    """A cluster started here (in this process, one worker thread) and named only by the variable: the run
    gives the right values, and that cluster's scheduler is the one that ran its tasks."""
    pytest.importorskip("zarr")
    distributed = pytest.importorskip("distributed")
    import zarr

    x, bank, args = apply_args(tmp_path, rng)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0", protocol="tcp://", host="127.0.0.1"
    ) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out.zarr"), "--chunks", "4x10"])
        assert result.exit_code == 0, result.output
        prefixes = set(cluster.scheduler.task_prefixes)  # every kind of task this scheduler has run
    assert prefixes, "the run did not use the scheduler named by DASK_SCHEDULER_ADDRESS"
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    naive.assert_close_to_reference(out, x, bank)


def test_a_regular_file_named_like_a_store_says_so(tmp_path, samples_dir):
    pytest.importorskip("zarr")
    (tmp_path / "fake.zarr").write_text("not a store")
    result = CliRunner().invoke(
        main, ["apply", str(tmp_path / "fake.zarr"), str(samples_dir / "times2.npy"), "-o", str(tmp_path / "o.npy")]
    )
    assert result.exit_code == 1
    assert "fake.zarr: is a file; a zarr store is a directory" in result.output


def test_a_store_chunked_across_channels_warns_in_one_line_and_quiet_is_silent(tmp_path):
    zarr = pytest.importorskip("zarr")
    store = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=(8, 8, 6), chunks=(8, 8, 3), dtype="f4")
    store[...] = 1.0
    np.save(tmp_path / "w.npy", np.ones((6, 2), np.float32))
    for quiet in ([], ["-q"]):
        result = subprocess.run(
            [sys.executable, "-m", "conv1x1_cli", "apply", "x.zarr", "w.npy", "-o", "o.npy", *quiet],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.full((8, 8, 2), 6.0, np.float32))
        if quiet:
            assert result.stderr == ""  # quiet means quiet, warnings included
            continue
        warnings = [line for line in result.stderr.splitlines() if "channel axis" in line]
        assert len(warnings) == 1 and warnings[0].startswith("warning: the channel axis (axis 2, 6 channels) is split")
        assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_quiet_is_silent_when_another_cluster_holds_the_dashboard_port(tmp_path):
    """distributed's default dashboard port, 8787, taken (by a socket here, by another cluster in
    life): no "Port 8787 is already in use" warning, with or without -q."""
    import socket

    zarr = pytest.importorskip("zarr")
    store = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=(8, 8, 2), chunks=(4, 8, 2), dtype="f4")
    store[...] = 1.0
    np.save(tmp_path / "w.npy", np.ones((2, 1), np.float32))
    holder = socket.socket()
    try:
        with contextlib.suppress(OSError):  # (already taken: all the better)
            holder.bind(("", 8787))
            holder.listen()
        for quiet in ([], ["-q"]):
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "conv1x1_cli",
                    "apply",
                    "x.zarr",
                    "w.npy",
                    "-o",
                    "o.zarr",
                    "--overwrite",
                    *quiet,
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stderr
            assert "8787" not in result.stderr and "already in use" not in result.stderr
            assert (result.stderr == "") == bool(quiet), result.stderr
    finally:
        holder.close()
