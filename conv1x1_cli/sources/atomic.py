"""The one way conv1x1 writes an output, as ``cp`` and ``tee`` do.

- A regular file, or a new path, is replaced atomically: the new version is built under a temporary
  name beside it and renamed into place, so a reader sees the old version or the new one, never half
  of one, and a failure (a crash, a full disk, Ctrl-C, any signal) leaves the old one and no temporary.
  A file this process may not write is refused, as ``cp`` refuses it (a rename would ignore its mode).
- A symbolic link (dangling or not) is followed: its final target is replaced that way, in the
  target's directory, and the link itself survives.
- Anything else (a character or block device such as ``/dev/null``, a FIFO, a socket) and the names
  of streams another process holds (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``) are written
  straight through: they cannot be replaced, and a rename would cut the reader off.

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with Replacement(str(folder / "out.txt")) as new:
...     _ = new.file.write(b"done")
>>> (folder / "out.txt").read_bytes(), sorted(path.name for path in folder.iterdir())
(b'done', ['out.txt'])
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from typing import BinaryIO

# Longest file name most file systems take; the temporary's name must fit in it too.
_NAME_MAX = 255
# What a temporary's name adds to its prefix: eight random characters, then the suffix.
_TEMP_EXTRA = len("XXXXXXXX.tmp")
# Names of streams held open by another process (or this one): written through, never replaced.
_STREAM_NAMES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/")


class CommittedOnSuccess:
    """A context manager that ``commit()``s when its block succeeds and ``discard()``s when it raises,
    Ctrl-C included; a commit that fails (a full disk on the last write) is discarded too."""

    file: BinaryIO | None  # where the output is written (the temporary or the special file); None once closed

    def commit(self) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise


def open_output(path: str) -> CommittedOnSuccess:
    """The writer for an output file at ``path``, by the rules above: a ``Replacement`` of the file
    (or of a symbolic link's final target), or a ``DirectWrite`` into a special file or stream.
    Raises ``OSError`` when it cannot be opened or its directory cannot be written, and for a loop
    of symbolic links."""
    if writes_through(path):
        descriptor = _descriptor_named(path)
        if descriptor is not None and descriptor not in INHERITED_DESCRIPTORS:
            # Not one the caller handed us: that number now belongs to a file of our own (an input).
            raise OSError(errno.EBADF, "not a file descriptor this command was given")
        return DirectWrite(path)
    return Replacement(final_target(path))


def is_read_only(path: str) -> bool:
    """Whether ``path`` is a file this process may not write, which a Replacement refuses as ``cp`` does."""
    return os.path.isfile(path) and not os.access(path, os.W_OK)


def final_target(path: str) -> str:
    """``path``, or the file its chain of symbolic links ends at (which need not exist yet)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def writes_through(path: str) -> bool:
    """Whether output to ``path`` goes straight into it: an existing file that is not a regular one
    (after following links), or the name of a stream such as ``/dev/stdout`` or ``/dev/fd/3``."""
    if path.startswith(_STREAM_NAMES) or _descriptor_named(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:  # nothing there yet (or a dangling link): a new file
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _descriptor_named(path: str) -> int | None:
    """The file descriptor that /dev/stdout, /dev/stderr, /dev/fd/N or /proc/self/fd/N names."""
    named = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}.get(path)
    if named is not None:
        return named
    for prefix in ("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"):
        if path.startswith(prefix) and path[len(prefix) :].isdigit():
            return int(path[len(prefix) :])
    parts = path.split("/")
    if len(parts) == 5 and parts[:2] == ["", "proc"] and parts[3] == "fd" and parts[4].isdigit():
        return int(parts[4])
    return None


def _open_descriptors() -> frozenset[int]:
    try:
        listed = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: try the usual few
        listed = list(range(256))
    return frozenset(fd for fd in listed if _is_open(fd))  # (not the listing's own, closed again)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# The descriptors open when conv1x1 started (imported by the CLI before it opens anything): the only
# ones /dev/fd/N may name as an output.
INHERITED_DESCRIPTORS = _open_descriptors()


class DirectWrite(CommittedOnSuccess):
    """Output written straight into a device, a FIFO, a socket or another process's stream: opened as
    a plain ``open()`` would (a FIFO waits for its reader), closed by ``commit()`` and ``discard()``
    alike, since what reached such a file cannot be taken back."""

    def __init__(self, path: str):
        self.path = path
        self.file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 (closed by commit or discard)

    def commit(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def discard(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None


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
        # (relative, so that a current directory longer than PATH_MAX still works)
        folder = os.path.dirname(self.path) or "."
        if not directory and is_read_only(self.path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), self.path)
        prefix = f".{os.path.basename(self.path)[: _NAME_MAX - _TEMP_EXTRA - 2]}."
        self.file: BinaryIO | None = None
        remove_stale_temporaries(folder, prefix, self.path)
        self.temp: str | None
        self.temp, descriptor = _create_beside(folder, prefix, directory)
        if directory:
            self._lock: int | None = descriptor  # (held open: the lock lasts as long as the descriptor)
        else:
            self._lock = None
            self.file = os.fdopen(descriptor, "wb")  # (closed by commit or discard)

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
        _live.discard(self.temp)
        self.temp = None
        self._unlock()

    def discard(self) -> None:
        """Remove the temporary; the old version, if any, stays as it was."""
        if self.temp is None:
            return
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
        _remove(self.temp)
        self.temp = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
            self._lock = None


# Temporaries created and neither renamed into place nor removed yet. A signal's exception can strike
# between creating one and handing it to the code that would clean it up; remove_leftovers() is the
# last line of defence, called as the command ends.
_live: set[str] = set()


def remove_leftovers() -> None:
    """Remove every temporary still live (only a run that is being stopped has any)."""
    for temp in list(_live):
        _remove(temp)


def _remove(temp: str) -> None:
    if os.path.isdir(temp) and not os.path.islink(temp):
        import shutil  # (imported when needed: every command imports this module at start-up)

        shutil.rmtree(temp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    _live.discard(temp)


def _create_beside(folder: str, prefix: str, directory: bool) -> tuple[str, int]:
    """A new, empty file (mode 0600) or directory (0700) named ``prefix`` + 8 random characters + ``.tmp``
    in ``folder``, by a path relative to it (tempfile would make it absolute, which fails in a current
    directory deeper than PATH_MAX), and a descriptor of it holding its lock (see
    ``remove_stale_temporaries``). Created, locked and recorded as live with signals held, so that no
    signal falls between the steps."""
    for _ in range(100):
        temp = os.path.join(folder, f"{prefix}{os.urandom(4).hex()}.tmp")  # (secrets costs 4 ms to import)
        try:
            with signals_held():
                if directory:
                    os.mkdir(temp, 0o700)
                    descriptor = os.open(temp, os.O_RDONLY)
                else:
                    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                _lock(descriptor)
                _live.add(temp)
            return temp, descriptor
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


# ---------------------------------------------------------------------------------------------------
# Temporaries of killed runs
#
# A run killed with SIGKILL (or by the out-of-memory killer, or a power cut) cannot remove its
# temporary: a store's can be hundreds of MiB. Every temporary is locked (flock) for as long as its run
# lives, and the kernel drops the lock when the process dies however it dies; so the next run on the
# same destination finds the temporaries whose lock is free and removes them, and never one that a run
# still holds. Where locks do not work (some network file systems) nothing is removed.

# A temporary younger than this is left alone even unlocked: it may be one being created (its lock is
# taken a few microseconds after it appears).
_STALE_AFTER_SECONDS = 1.0


class LeftoverRemoved(UserWarning):
    """A temporary left by an earlier run that was killed, found and removed (one line on the CLI)."""


def remove_stale_temporaries(folder: str, prefix: str, path: str) -> list[str]:
    """Remove the temporaries of ``path`` (named ``prefix`` + 8 hex digits + ``.tmp``) that no living
    run holds, with a ``LeftoverRemoved`` warning for each, and the ``.old`` copy a killed directory
    rename left beside a ``path`` that exists again. Returns the names removed."""
    import re
    import time
    import warnings

    pattern = re.compile(re.escape(prefix) + r"[0-9a-f]{8}\.(tmp|old)")
    try:
        names = [name for name in os.listdir(folder) if pattern.fullmatch(name)]
    except OSError:
        return []
    removed = []
    for name in names:
        leftover = os.path.join(folder, name)
        if name.endswith(".old") and not os.path.lexists(path):
            continue  # the killed rename had moved the old version aside: it is all there is
        try:
            if time.time() - os.lstat(leftover).st_mtime < _STALE_AFTER_SECONDS or not _unlocked(leftover):
                continue
            size = _tree_bytes(leftover)
        except OSError:
            continue
        _remove(leftover)
        removed.append(name)
        message = f"{path}: removed {name} ({size / 2**20:.1f} MiB), left by an earlier run that was killed"
        warnings.warn(LeftoverRemoved(message), stacklevel=3)
    return removed


def _lock(descriptor: int) -> None:
    """Take the exclusive lock of a temporary (nothing where the OS has no flock)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return
    with contextlib.suppress(OSError):  # a file system without locks: its leftovers are never removed
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlocked(leftover: str) -> bool:
    """Whether no process holds ``leftover``'s lock (False when that cannot be known)."""
    try:
        import fcntl
    except ImportError:
        return False
    descriptor = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held (BlockingIOError), or no locks on this file system
        return False
    finally:
        os.close(descriptor)
    return True


def _tree_bytes(path: str) -> int:
    if not os.path.isdir(path):
        return os.lstat(path).st_size
    return sum(os.lstat(os.path.join(folder, name)).st_size for folder, _, names in os.walk(path) for name in names)


# Signals held: how deep the held blocks nest, and the handlers waiting for the outermost to end.
_held_depth = 0
_held_handlers: list = []


@contextlib.contextmanager
def signals_held():
    """Let no signal act until the block ends, then let the first that came act (its handler runs then).

    For the few steps that a signal's exception must not split (a temporary created and recorded), and
    for code that cannot be stopped midway (Numba's compiler calls back into Python; an exception
    raised in a callback is dropped). Holding in the OS (pthread_sigmask) is not enough: NumPy's
    BLAS threads do not block signals, so one of them takes the signal and Python runs the handler in
    the main thread anyway. So the handlers the CLI installs go through ``held_or_now``, which records
    the signal while a block is open. Only the main thread holds: Python runs handlers there, and a
    handler run at the end of another thread's block would stop that thread, not the process."""
    global _held_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held_depth += 1
    try:
        yield
    finally:
        _held_depth -= 1
        if _held_depth == 0 and _held_handlers:
            handler, signum = _held_handlers[0]
            _held_handlers.clear()
            handler(signum, None)


def held_or_now(handler):
    """``handler``, as a signal handler that waits for the end of any ``signals_held()`` block."""

    def handle(signum, frame):
        if _held_depth:
            _held_handlers.append((handler, signum))
            return
        handler(signum, frame)

    return handle


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
    import shutil

    old = f"{temp[: -len('.tmp')]}.old"  # as long as the temporary's name, which fits
    os.rename(path, old)
    try:
        os.rename(temp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
