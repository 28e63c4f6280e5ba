"""The one atomic writer: the old version or the new one, never half of one, and no temporary left."""

from __future__ import annotations

import os
import stat

import pytest

from conv1x1_cli.sources.atomic import Replacement


def names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_a_new_file_appears_complete_with_the_mode_open_would_give(tmp_path):
    umask = os.umask(0o022)
    try:
        with Replacement(str(tmp_path / "out.npy")) as new:
            new.file.write(b"complete")
            assert names(tmp_path) != ["out.npy"]  # still under its temporary name
    finally:
        os.umask(umask)
    assert (tmp_path / "out.npy").read_bytes() == b"complete"
    assert stat.S_IMODE((tmp_path / "out.npy").stat().st_mode) == 0o644
    assert names(tmp_path) == ["out.npy"]


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")
    target.chmod(0o600)
    with Replacement(str(target)) as new:
        new.file.write(b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_file_this_process_may_not_write_is_refused_and_kept(tmp_path, monkeypatch):
    """As cp refuses a read-only file (root may write it, there as here: os.access says so)."""
    path = tmp_path / "out.npy"
    path.write_bytes(b"old")
    path.chmod(0o444)
    monkeypatch.setattr(os, "access", lambda name, mode: not (name == str(path) and mode == os.W_OK))
    with pytest.raises(PermissionError):
        Replacement(str(path))
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


def test_a_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), Replacement(str(target)) as new:
        new.file.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and names(tmp_path) == ["out.npy"]


def test_a_directory_replaces_the_old_one_whole(tmp_path):
    old = tmp_path / "out.zarr"
    old.mkdir()
    (old / "stale").write_text("old chunk")
    with Replacement(str(old) + "/", directory=True) as new:
        (tmp_path / new.temp / "zarr.json").write_text("{}")
    assert names(old) == ["zarr.json"] and names(tmp_path) == ["out.zarr"]


def test_a_failed_directory_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), Replacement(str(tmp_path / "out.zarr"), directory=True) as new:
        (tmp_path / new.temp / "chunk").write_text("half")
        raise RuntimeError("worker lost")
    assert names(tmp_path) == []


def test_an_unwritable_directory_raises_before_anything_is_written(tmp_path):
    with pytest.raises(OSError):
        Replacement(str(tmp_path / "missing" / "out.npy"))


def test_a_held_signal_acts_when_the_outermost_block_ends():
    from conv1x1_cli.sources.atomic import held_or_now, signals_held

    ran = []
    handler = held_or_now(lambda signum, frame: ran.append(signum))
    with signals_held():
        with signals_held():
            handler(15, None)
            handler(1, None)  # a second signal while one waits: the first one acts
        assert ran == []
    assert ran == [15]
    handler(2, None)  # no block open: at once
    assert ran == [15, 2]


def test_other_threads_do_not_hold_the_main_threads_signals():
    import threading

    from conv1x1_cli.sources.atomic import held_or_now, signals_held

    ran, inside = [], threading.Event()
    handler = held_or_now(lambda signum, frame: ran.append(signum))
    release = threading.Event()

    def hold():
        with signals_held():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    inside.wait(10)
    handler(15, None)  # as Python would run it, in the main thread: at once, not at the end of the other's block
    assert ran == [15]
    release.set()
    worker.join(10)
    assert ran == [15]


def test_a_store_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real.zarr").mkdir()
    (tmp_path / "real.zarr" / "old").write_text("old")
    (tmp_path / "link.zarr").symlink_to("real.zarr")
    from conv1x1_cli.sources.atomic import final_target

    with Replacement(final_target(str(tmp_path / "link.zarr")), directory=True) as new:
        (tmp_path / new.temp / "zarr.json").write_text("{}")
    assert (tmp_path / "link.zarr").is_symlink()
    assert names(tmp_path / "real.zarr") == ["zarr.json"] and names(tmp_path) == ["link.zarr", "real.zarr"]


def test_a_directory_of_the_longest_name_is_replaced(tmp_path):
    name = "s" * 250 + ".zarr"
    for _ in range(2):  # new, then replacing the old one (which steps aside under a name that fits)
        with Replacement(str(tmp_path / name), directory=True) as new:
            (tmp_path / new.temp / "zarr.json").write_text("{}")
    assert names(tmp_path) == [name]


# ---------------------------------------------------------------------------------------------------
# Temporaries of runs killed with SIGKILL

# A child that starts replacing PATH (a file, or a directory with DIRECTORY), writes into its
# temporary, says so on stdout, then waits to be killed.
HOLDER = """
import os, sys
from conv1x1_cli.sources.atomic import Replacement
path, directory = sys.argv[1], sys.argv[2] == "directory"
new = Replacement(path, directory=directory)
if directory:
    with open(os.path.join(new.temp, "chunk"), "wb") as chunk:
        chunk.write(bytes(3 * 2**20))
else:
    new.file.write(bytes(3 * 2**20))
    new.file.flush()
print(new.temp, flush=True)
sys.stdin.read()
"""


def start_holder(path, directory=False):
    """A live run replacing ``path`` and the absolute path of its temporary."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "directory" if directory else "file"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=path.parent,
    )
    temp = path.parent / os.path.basename(child.stdout.readline().strip())
    return child, temp


def killed_run_leftover(path, directory=False):
    """The temporary of a run on ``path`` killed with SIGKILL, made older than a run being created."""
    child, temp = start_holder(path, directory)
    child.kill()
    child.wait()
    old = os.stat(temp).st_mtime - 5
    os.utime(temp, (old, old))
    return temp


@pytest.mark.parametrize("directory", [False, True], ids=["file", "store"])
def test_the_next_run_removes_what_a_killed_run_left_and_says_so(tmp_path, directory):
    from conv1x1_cli.sources.atomic import LeftoverRemoved

    target = tmp_path / ("out.zarr" if directory else "out.npy")
    leftover = killed_run_leftover(target, directory)
    assert leftover.exists()
    message = rf"out\.\w+: removed {leftover.name} \(3\.0 MiB\), left by an earlier run that was killed"
    with pytest.warns(LeftoverRemoved, match=message):
        new = Replacement(str(target), directory=directory)
    new.discard()
    assert names(tmp_path) == []


@pytest.mark.parametrize("directory", [False, True], ids=["file", "store"])
def test_a_temporary_of_a_run_still_alive_is_left_alone(tmp_path, directory):
    import warnings

    target = tmp_path / ("out.zarr" if directory else "out.npy")
    child, temp = start_holder(target, directory)
    try:
        old = os.stat(temp).st_mtime - 5
        os.utime(temp, (old, old))  # old enough: only its lock keeps it
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Replacement(str(target), directory=directory) as new:
                if not directory:
                    new.file.write(b"mine")
        assert temp.exists()
    finally:
        child.kill()
        child.wait()
    assert sorted(names(tmp_path)) == sorted([target.name, temp.name])


def test_other_destinations_temporaries_and_a_moved_aside_old_version_stay(tmp_path):
    """Only the temporaries of the same destination go; and a directory's ``.old`` (the old version,
    moved aside by a rename that was killed) stays while the destination does not exist."""
    other = killed_run_leftover(tmp_path / "other.npy")
    aside = tmp_path / ".out.zarr.0123abcd.old"
    aside.mkdir()
    os.utime(aside, (1, 1))
    Replacement(str(tmp_path / "out.zarr"), directory=True).discard()
    assert names(tmp_path) == sorted([other.name, aside.name])
    (tmp_path / "out.zarr").mkdir()  # the destination is back: the old copy is a leftover now
    with pytest.warns(UserWarning, match="removed .out.zarr.0123abcd.old"):
        Replacement(str(tmp_path / "out.zarr"), directory=True).discard()
    assert names(tmp_path) == sorted([other.name, "out.zarr"])
