"""Stores at URLs, on fsspec's in-memory file system (``memory://``): the order of the writes, a killed
run's leftover reclaimed, what belongs to others kept, ``--overwrite``. The graphs run in this process
(``memory://`` is not shared with worker processes); tests/cluster/test_s3.py runs the same against a
real S3 server and a cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("dask")

from conv1x1_cli.cluster import remote, stores
from conv1x1_cli.errors import ArgumentError, InputError
from conv1x1_cli.sources.atomic import LeftoverRemoved


@pytest.fixture
def memory_fs():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def lazy_ones(shape=(8, 6, 3), chunks=(4, 6, 3)):
    import dask.array as da

    return da.ones(shape, chunks=chunks, dtype=np.float32) * 2


def in_process(graph):
    graph.compute(scheduler="sync")


def objects(fs):
    return sorted(path.removeprefix("/out.zarr/") for path in fs.find("/out.zarr"))


def test_metadata_is_written_last_and_the_marker_is_gone_at_the_end(memory_fs):
    seen_during_compute = []

    def watching(graph):
        seen_during_compute.append(objects(memory_fs))
        in_process(graph)

    stores.write_store(lazy_ones(), "memory://out.zarr", watching)
    assert seen_during_compute == [[remote.MARKER]]  # no zarr.json while chunks are being written
    assert objects(memory_fs) == ["c/0/0/0", "c/1/0/0", "zarr.json"]
    import zarr

    np.testing.assert_array_equal(zarr.open_array("memory://out.zarr")[...], np.full((8, 6, 3), 2.0))


def test_a_failed_run_leaves_nothing(memory_fs):
    def failing(graph):
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        stores.write_store(lazy_ones(), "memory://out.zarr", failing)
    assert memory_fs.find("/out.zarr") == []


def killed_run_leftover(fs, started="2026-12-06T10:00:00+00:00", host="elsewhere", pid=1):
    """What a run killed midway leaves: our marker and some chunks, no zarr.json."""
    marker = {"writer": "conv1x1", "host": host, "pid": pid, "started": started}
    fs.pipe_file("/out.zarr/" + remote.MARKER, json.dumps(marker).encode())
    fs.pipe_file("/out.zarr/c/0/0/0", b"partial")


def test_the_leftover_of_a_killed_run_is_reclaimed_with_one_warning(memory_fs):
    killed_run_leftover(memory_fs)
    message = (
        r"^memory://out\.zarr: removed the incomplete output of an earlier run "
        r"\(2 objects, started 2026-12-06T10:00:00\+00:00 on elsewhere\)$"
    )
    with pytest.warns(LeftoverRemoved, match=message):
        stores.write_store(lazy_ones(), "memory://out.zarr", in_process)
    assert objects(memory_fs) == ["c/0/0/0", "c/1/0/0", "zarr.json"]
    assert memory_fs.cat_file("/out.zarr/c/0/0/0") != b"partial"


def test_a_run_still_writing_on_this_host_is_not_reclaimed(memory_fs):
    import os
    import socket
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed_run_leftover(memory_fs, host=socket.gethostname(), pid=writer.pid)
        with pytest.raises(InputError, match=rf"process {writer.pid} on this host is writing it"):
            stores.write_store(lazy_ones(), "memory://out.zarr", in_process)
        assert memory_fs.cat_file("/out.zarr/c/0/0/0") == b"partial"
    finally:
        writer.kill()
        writer.wait()
    assert os.getpid() != writer.pid


@pytest.mark.parametrize(
    ("existing", "message"),
    [
        ({"zarr.json": b"{}", "c/0": b"x"}, "a zarr store is already there; pass --overwrite to replace it"),
        ({"notes.txt": b"mine"}, "holds objects that are not a zarr store; pass --overwrite to replace them"),
    ],
    ids=["complete store", "someone else's objects"],
)
def test_what_others_own_is_kept_unless_overwrite(memory_fs, existing, message):
    for key, value in existing.items():
        memory_fs.pipe_file(f"/out.zarr/{key}", value)
    with pytest.raises(InputError, match=rf"^memory://out\.zarr: {message}$"):
        stores.write_store(lazy_ones(), "memory://out.zarr", in_process)
    assert objects(memory_fs) == sorted(existing)
    stores.write_store(lazy_ones(), "memory://out.zarr", in_process, overwrite=True)
    assert objects(memory_fs) == ["c/0/0/0", "c/1/0/0", "zarr.json"]


def test_storage_options_are_refused_for_local_paths(tmp_path):
    with pytest.raises(ArgumentError, match="storage options are only for URLs"):
        stores.write_store(lazy_ones(), str(tmp_path / "out.zarr"), in_process, storage_options={"anon": True})
    with pytest.raises(ArgumentError, match="storage options are only for URLs"):
        stores.open_store(str(tmp_path / "in.zarr"), {"anon": True})
    assert list(tmp_path.iterdir()) == []


def test_a_protocol_whose_package_is_missing_names_it(monkeypatch):
    import fsspec

    def missing(*args, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(InputError, match=r'^s3://b/x\.zarr: s3:// needs a package: pip install "conv1x1\[s3\]"$'):
        remote.filesystem("s3://b/x.zarr", {})


@pytest.mark.parametrize("side", ["input", "output"])
def test_an_option_the_file_system_refuses_is_one_line(side):
    """s3fs takes any keyword and hands it to its session, which refuses it on first use (no network)."""
    pytest.importorskip("s3fs")
    options = {"endpoint_url": "http://127.0.0.1:9", "no_such_option": 1}
    with pytest.raises(InputError, match=r"^s3://b/x\.zarr: bad storage option \(.*no_such_option"):
        if side == "input":
            stores.open_store("s3://b/x.zarr", options)
        else:
            stores.write_store(lazy_ones(), "s3://b/x.zarr", in_process, storage_options=options)
