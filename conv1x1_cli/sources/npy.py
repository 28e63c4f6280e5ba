"""Reading and writing .npy data: files and stdin/stdout, whole or by runs of elements.

Headers are parsed with ``numpy.lib.format`` (never hand-parsed) and pickles are never loaded: object,
structured and complex dtypes are refused before any data is read. Every problem becomes an
``InputError`` whose message names the file, so the CLI can print it as one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass
from math import prod
from typing import BinaryIO, cast

import numpy as np
import numpy.lib.format as npy_format

from ..errors import InputError, first_line
from .atomic import CommittedOnSuccess, is_read_only, open_output, writes_through
from .streams import binary_stdio, reporting_stdout_errors

STDIO = "-"
# A header larger than this is not a plausible array description (NumPy's own default guard).
MAX_HEADER_BYTES = 10_000
ZIP_MAGIC = b"PK\x03\x04"
# Element kinds we compute with: booleans, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"


def display_name(path: str) -> str:
    return "<stdin>" if path == STDIO else path


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


# NumPy parses a header with ast.literal_eval, which CPython 3.11 fails to run in two threads at once
# (python/cpython#106905: "AST constructor recursion depth mismatch"); Dask's threads read headers
# side by side.
HEADER_PARSING = threading.Lock()


def read_header(stream: BinaryIO, name: str) -> NpyHeader:
    """Read and validate the magic string and header, leaving ``stream`` at the first data byte."""
    start = stream.read(len(ZIP_MAGIC))
    if not start:
        raise InputError(f"{name}: file is empty, expected a .npy array")
    if start == ZIP_MAGIC:
        raise InputError(f"{name}: is a .npz archive (a zip of arrays); save one array with numpy.save instead")
    try:
        version = npy_format.read_magic(_Prefixed(start, stream))
        if version not in _VERSIONS:
            known = ", ".join(f"{major}.{minor}" for major, minor in _VERSIONS)
            raise InputError(f"{name}: unsupported .npy format version {version[0]}.{version[1]} (known: {known})")
        reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        with HEADER_PARSING:
            shape, fortran_order, dtype = reader(stream, max_header_size=MAX_HEADER_BYTES)
    except (OSError, InputError):
        raise
    except Exception as error:  # NumPy's parser raises many types for garbage; all mean "not .npy"
        raise InputError(f"{name}: not a valid .npy file ({first_line(error)})") from None
    if version == (3, 0) and dtype.names:
        dtype = _names_from_utf8(dtype)
    _check_dtype(dtype, name)
    if any(size < 0 for size in shape):
        raise InputError(f"{name}: not a valid .npy file (negative size in shape {shape})")
    return NpyHeader(tuple(int(size) for size in shape), dtype, bool(fortran_order))


# Format 2.0 allows headers over 64 KiB; 3.0 is 2.0 with a UTF-8 header (for non-Latin-1 field names).
_VERSIONS = ((1, 0), (2, 0), (3, 0))


def _names_from_utf8(dtype: np.dtype) -> np.dtype:
    """NumPy's public reader decodes a 3.0 header as Latin-1, as 2.0 is: give its field names back
    their UTF-8 text, so that a message about them reads right."""
    with contextlib.suppress(UnicodeError, ValueError, TypeError):
        fields: dict = dict(dtype.fields or {})
        return np.dtype([(name.encode("latin-1").decode("utf-8"), fields[name][0]) for name in dtype.names or ()])
    return dtype


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject:
        raise InputError(f"{name}: holds Python objects (pickled data), which is refused for safety")
    if dtype.names is not None or dtype.subdtype is not None:
        raise InputError(f"{name}: has a structured dtype {dtype}; a plain numeric array is needed")
    if dtype.kind == "c":
        raise InputError(f"{name}: has complex dtype {dtype}; a real-valued array is needed")
    if dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{name}: has non-numeric dtype {dtype}; a numeric array is needed")


class _Prefixed:
    """A read-only stream that replays bytes already consumed, so stdin need not be seekable."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        self._prefix, self._stream = prefix, stream

    def read(self, size: int = -1) -> bytes:
        head, self._prefix = self._prefix[:size], self._prefix[size:]
        return head + self._stream.read(size - len(head))


def raw_bytes(buffer: np.ndarray) -> memoryview:
    """A writable byte view of a C- or Fortran-contiguous array's memory (never a copy)."""
    contiguous = buffer.T if not buffer.flags.c_contiguous else buffer  # Fortran order is C order transposed
    if not contiguous.flags.c_contiguous:
        raise ValueError("buffer must be contiguous")
    return contiguous.reshape(-1).view(np.uint8).data


def read_exact(stream: BinaryIO, buffer: np.ndarray, name: str) -> None:
    """Fill ``buffer`` from ``stream``; a short read means the file was truncated."""
    view = raw_bytes(buffer)
    filled = 0
    while filled < len(view):
        count = cast(io.BufferedIOBase, stream).readinto(view[filled:])  # (every binary stream has it)
        if not count:
            raise InputError(f"{name}: data is truncated ({filled} of {len(view)} bytes present)")
        filled += count


class NpyInput:
    """An opened .npy array: its validated header, and ways to read all of it or chunks of it."""

    def __init__(self, path: str):
        self.path = path
        self.name = display_name(path)
        self._stream = self._open()
        try:
            self.header = read_header(self._stream, self.name)
            self._data_offset = self._stream.tell() if self.seekable else None
            self._check_size()
        except BaseException:
            self.close()
            raise

    def _open(self) -> BinaryIO:
        if self.path == STDIO:
            return binary_stdio(reading=True)
        if os.path.isdir(self.path):
            raise InputError(f"{self.name}: is a directory, not a .npy file")
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            raise InputError(f"{self.name}: no such file") from None
        except OSError as error:
            raise InputError(f"{self.name}: cannot open ({error.strerror})") from None

    @property
    def seekable(self) -> bool:
        return self.path != STDIO and self._stream.seekable()

    @property
    def data_offset(self) -> int:
        """Where the data start in a seekable file."""
        assert self._data_offset is not None, "only a seekable input has a data offset"
        return self._data_offset

    def _check_size(self) -> None:
        """Compare the header's claim with the file's size before reading a byte of data."""
        if not self.seekable:
            return
        present = os.fstat(self._stream.fileno()).st_size - self.data_offset
        if present < self.header.nbytes:
            shape = "x".join(map(str, self.header.shape)) or "scalar"
            raise InputError(
                f"{self.name}: data is truncated: header claims shape {shape} ({self.header.nbytes:,} bytes) "
                f"but only {present:,} bytes follow"
            )

    def read_all(self) -> np.ndarray:
        """The whole array, in its stored dtype and memory order."""
        header = self.header
        if header.nbytes > 0 and not self.seekable:
            _guard_allocation(header, self.name)
        try:
            array = np.empty(header.shape, dtype=header.dtype, order="F" if header.fortran_order else "C")
        except (MemoryError, ValueError):
            raise InputError(f"{self.name}: array of {header.nbytes:,} bytes does not fit in memory") from None
        read_exact(self._stream, array, self.name)
        return array

    def read_at(self, buffer: np.ndarray, element_offset: int) -> None:
        """Fill ``buffer`` with the elements that start ``element_offset`` items into the data."""
        byte_offset = self.data_offset + element_offset * self.header.dtype.itemsize
        view = raw_bytes(buffer)
        filled = 0
        while filled < len(view):
            count = os.preadv(self._stream.fileno(), [view[filled:]], byte_offset + filled)
            if not count:
                raise InputError(f"{self.name}: data is truncated (the file shrank while being read)")
            filled += count

    def close(self) -> None:
        if self.path != STDIO:
            self._stream.close()

    def __enter__(self) -> NpyInput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _guard_allocation(header: NpyHeader, name: str) -> None:
    """Refuse stdin headers whose claimed size could never be read into this machine's memory."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if header.nbytes > physical:
        raise InputError(f"{name}: header claims {header.nbytes:,} bytes of data, more than this machine's memory")


def load_array(path: str) -> np.ndarray:
    """Read a whole .npy file (or stdin for ``-``), validated and without unpickling."""
    with NpyInput(path) as source:
        return source.read_all()


def npy_header_bytes(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The .npy magic string and header (version 1.0) for a C-ordered array."""
    buffer = io.BytesIO()
    header = {"descr": npy_format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    npy_format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


class BinaryOutput(CommittedOnSuccess):
    """A binary output written front to back: a file (atomically, or straight into a device, FIFO or
    stream: see ``atomic``) or stdout (never a terminal). ``what`` names its kind in messages.

    A file replaces its destination only in ``commit()``; ``discard()`` (or leaving the ``with`` block
    by an exception) removes what was written, so a failure never leaves a half-written output or a
    stray temporary behind.
    """

    def __init__(self, path: str, what: str = "binary"):
        self.path, self.what = path, what
        self.name = "<stdout>" if path == STDIO else path
        self._writer: CommittedOnSuccess | None = None
        self._stream = self._open()

    def _open(self) -> BinaryIO:
        if self.path == STDIO:
            return binary_stdio(reading=False)
        if not self.path:
            raise InputError("'': an empty output path; give a file path for the output")
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path) or self.path.endswith("/"):
            raise InputError(f"{self.name}: is a directory; give a file path for the output")
        if not os.path.isdir(os.path.dirname(self.path) or "."):
            raise InputError(f"{self.name}: directory {directory} does not exist")
        try:
            self._writer = open_output(self.path)
        except OSError as error:
            raise InputError(f"{self.name}: {self._cannot(directory)} ({error.strerror})") from None
        stream = self._writer.file
        assert stream is not None  # (a new writer's file is open)
        if stream.isatty():
            self.discard()
            raise InputError(f"{self.name}: refusing to write {self.what} data to a terminal; redirect it")
        return stream

    def _cannot(self, directory: str) -> str:
        try:
            if writes_through(self.path):
                return "cannot open it"
            if is_read_only(self.path):
                return "cannot replace it: it is read-only"
            return f"cannot write in {directory}"
        except OSError:  # (a loop of symbolic links)
            return "cannot open it"

    def write_bytes(self, data) -> None:
        with self._reporting_write_errors():
            self._stream.write(data)

    def write(self, values: np.ndarray) -> None:
        """Append ``values`` (already in the output dtype) in C order."""
        self.write_bytes(np.ascontiguousarray(values).data.cast("B"))

    def commit(self) -> None:
        with self._reporting_write_errors():
            self._stream.flush()
            if self._writer is not None:
                self._writer.commit()
                self._writer = None

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    @contextlib.contextmanager
    def _reporting_write_errors(self):
        """A failed write is one line naming the output; a reader closing the pipe is not an error."""
        if self.path == STDIO:
            with reporting_stdout_errors():
                yield
            return
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as error:
            raise InputError(f"{self.name}: write failed ({error.strerror or error})") from None


class NpyOutput(BinaryOutput):
    """A C-ordered .npy output of ``shape`` and ``dtype``: its header, then ``write`` the values in C order."""

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype):
        super().__init__(path, "binary .npy")
        try:
            self.write_bytes(npy_header_bytes(shape, dtype))
        except BaseException:  # (the with block that would discard it has not begun)
            self.discard()
            raise
