"""The one way conv1x1 replaces a file or a directory: build the new version under a temporary name
beside it, then rename it into place, so a reader sees the old version or the new one, never half of
one, and a failure (a crash, a full disk, Ctrl-C) leaves the old one and no temporary behind.

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with Replacement(str(folder / "out.txt")) as new:
...     _ = new.file.write(b"done")
>>> (folder / "out.txt").read_bytes(), sorted(path.name for path in folder.iterdir())
(b'done', ['out.txt'])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import BinaryIO


class CommittedOnSuccess:
    """A context manager that ``commit()``s when its block succeeds and ``discard()``s when it raises,
    Ctrl-C included."""

    def commit(self) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class Replacement(CommittedOnSuccess):
    """A new version of ``path`` (a file, or a directory with ``directory=True``) being built at
    ``temp``, beside it. ``commit()`` renames it into place; ``discard()`` removes it. As a context
    manager it commits when the block succeeds and discards when it raises, Ctrl-C included.

    A file is open for writing as ``file`` (binary). Creating the temporary raises ``OSError`` when
    the directory cannot be written.
    """

    def __init__(self, path: str, *, directory: bool = False):
        self.path = path.rstrip("/") if directory else path
        self.directory = directory
        folder = os.path.dirname(os.path.abspath(self.path))
        prefix = f".{os.path.basename(self.path)}."
        self.file: BinaryIO | None = None
        if directory:
            self.temp: str | None = tempfile.mkdtemp(dir=folder, prefix=prefix, suffix=".tmp")
        else:
            handle, self.temp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
            self.file = os.fdopen(handle, "wb")

    def commit(self) -> None:
        """Put the new version in place of the old (or where nothing was). No fsync: the rename is
        atomic for every process, and ext4/xfs order a replacing rename after its data; forcing every
        output to disk made big runs disk-bound (9 s for 1 GiB)."""
        if self.temp is None:
            return
        if self.file is not None:
            self.file.close()
        _give_mode(self.temp, self.path, self.directory)
        if self.directory:
            _rename_directory(self.temp, self.path)
        else:
            os.replace(self.temp, self.path)
        self.temp = None

    def discard(self) -> None:
        """Remove the temporary; the old version, if any, stays as it was."""
        if self.temp is None:
            return
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
        if self.directory:
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
        self.temp = None


def _give_mode(temp: str, path: str, directory: bool) -> None:
    """mkstemp and mkdtemp create 0600 and 0700: give the new version the old one's mode, or the
    mode a plain open() or mkdir() would give."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = (0o777 if directory else 0o666) & ~umask
    os.chmod(temp, mode)


def _rename_directory(temp: str, path: str) -> None:
    """A directory cannot replace another in one rename: the old one steps aside for a moment."""
    if not os.path.lexists(path):
        os.rename(temp, path)
        return
    old = f"{temp}.old"
    os.rename(path, old)
    try:
        os.rename(temp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
