"""Zarr stores on object storage (``s3://``, ``gs://``, any fsspec URL), written so that a reader never
sees half of one and a killed run never blocks the next.

Object storage renames nothing atomically, so a run writes, under the store's prefix:

1. a marker, ``.conv1x1-incomplete.json`` (who writes, since when);
2. every chunk;
3. ``zarr.json``, the array's metadata, last: before it, no reader sees an array;
4. then it deletes the marker.

A failed run deletes what it wrote. A run killed outright leaves chunks and the marker, and the next
run on that URL recognises its own kind of leftover by the marker and deletes it, with one warning
line. Anything else already there (a complete store, or objects without our marker) is deleted only
with ``overwrite``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import InputError, first_line
from ..sources.atomic import LeftoverRemoved

MARKER = ".conv1x1-incomplete.json"
METADATA = "zarr.json"
# fsspec's protocols whose file system comes from a package of its own: how to install it.
_PROTOCOL_INSTALLS = {
    "s3": 'pip install "conv1x1[s3]"',
    "s3a": 'pip install "conv1x1[s3]"',
    "gs": 'pip install "conv1x1[gcs]"',
    "gcs": 'pip install "conv1x1[gcs]"',
    "az": "pip install adlfs",
    "abfs": "pip install adlfs",
}


def filesystem(url: str, storage_options: dict[str, Any]):
    """(fsspec file system, path inside it) for ``url``; a missing package or a bad option is one line."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except ImportError:
        protocol = url.split("://", 1)[0]
        install = _PROTOCOL_INSTALLS.get(protocol, f"the fsspec implementation of {protocol}://")
        raise InputError(f"{url}: {protocol}:// needs a package: {install}") from None
    except (TypeError, ValueError) as error:  # an option the file system does not take
        raise InputError(f"{url}: bad storage option ({first_line(error)})") from None


@contextlib.contextmanager
def storage_errors(url: str):
    """Turn what object storage raises (denied, no such bucket, unreachable) into one line naming ``url``."""
    try:
        yield
    except (OSError, TypeError) as error:
        raise InputError(storage_message(url, error)) from None


def storage_message(url: str, error: OSError | TypeError) -> str:
    if isinstance(error, TypeError):  # s3fs takes any keyword, and its session refuses it on first use
        return f"{url}: bad storage option ({first_line(error)})"
    if isinstance(error, PermissionError):
        return f"{url}: access denied ({first_line(error)})"
    if isinstance(error, FileNotFoundError):
        return f"{url}: not found ({first_line(error)})"
    return f"{url}: {first_line(error)}"


def write_remote_store(
    result, url: str, compute: Callable[[object], None], create: Callable[[], Any], fs, root: str, overwrite: bool
) -> None:
    """Write Dask array ``result`` to the store at ``url`` (``fs``, ``root``) in the order above.

    ``create()`` creates the zarr array there (writing its ``zarr.json``) and returns it; ``compute(graph)``
    runs the write on the cluster.
    """
    with storage_errors(url):
        _clear_destination(fs, root, url, overwrite)
        marker = f"{root}/{MARKER}"
        fs.pipe_file(marker, _marker_text())
    metadata_key = f"{root}/{METADATA}"
    try:
        with storage_errors(url):
            target = create()
            metadata = fs.cat_file(metadata_key)
            fs.rm_file(metadata_key)  # the array object keeps its metadata in memory, workers included
        compute(target)
        with storage_errors(url):
            fs.pipe_file(metadata_key, metadata)
            fs.rm_file(marker)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_prefix(fs, root)
        raise


def _clear_destination(fs, root: str, url: str, overwrite: bool) -> None:
    """Make way at ``root``: nothing there, or our own leftover (removed with a warning), or with
    ``overwrite`` anything; else one line saying what is there."""
    fs.invalidate_cache()
    if fs.exists(f"{root}/{METADATA}"):
        if not overwrite:
            raise InputError(f"{url}: a zarr store is already there; pass --overwrite to replace it")
        remove_prefix(fs, root)
        return
    if fs.exists(f"{root}/{MARKER}"):
        marker = _read_marker(fs, root)
        if not overwrite and _still_running(marker):
            raise InputError(f"{url}: process {marker['pid']} on this host is writing it (since {marker['started']})")
        objects = remove_prefix(fs, root)
        warnings.warn(
            LeftoverRemoved(
                f"{url}: removed the incomplete output of an earlier run ({objects} objects, "
                f"started {marker.get('started', 'at an unknown time')} on {marker.get('host', 'an unknown host')})"
            ),
            stacklevel=2,
        )
        return
    if fs.find(root):
        if not overwrite:
            raise InputError(f"{url}: holds objects that are not a zarr store; pass --overwrite to replace them")
        remove_prefix(fs, root)


def remove_prefix(fs, root: str) -> int:
    """Delete every object under ``root``, and the folders an S3 server may keep for them; returns
    how many objects there were."""
    fs.invalidate_cache()
    listing = fs.find(root, withdirs=True, detail=True)
    objects = [path for path, info in listing.items() if info["type"] != "directory"]
    if objects:
        fs.rm(objects)
    if hasattr(fs, "call_s3"):
        _remove_s3_folders(fs, root, [path for path, info in listing.items() if info["type"] == "directory"])
    fs.invalidate_cache()
    return len(objects)


def _remove_s3_folders(fs, root: str, folders: list[str]) -> None:
    """SeaweedFS keeps a real directory behind every prefix: emptied, it is still listed (and the
    store looks present) until its ``folder/`` key is deleted, deepest first. On AWS S3 and most
    other servers these keys do not exist, and deleting them is a no-op."""
    bucket, _, _ = root.partition("/")
    keys = {f"{path.partition('/')[2].rstrip('/')}/" for path in [*folders, root]}
    ordered = sorted(keys, key=lambda key: key.count("/"), reverse=True)
    for start in range(0, len(ordered), 1000):  # (at most 1000 keys per request)
        batch = [{"Key": key} for key in ordered[start : start + 1000]]
        fs.call_s3("delete_objects", Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def _marker_text() -> bytes:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    marker = {"writer": "conv1x1", "host": socket.gethostname(), "pid": os.getpid(), "started": started}
    return json.dumps(marker).encode()


def _read_marker(fs, root: str) -> dict[str, Any]:
    try:
        marker = json.loads(fs.cat_file(f"{root}/{MARKER}"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _still_running(marker: dict[str, Any]) -> bool:
    """Whether the marker's run is a process alive on this host (a run elsewhere cannot be asked)."""
    pid = marker.get("pid")
    if marker.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, someone else's
        return True
    return True
