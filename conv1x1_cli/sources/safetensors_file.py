"""safetensors files, read with every check of the format's documentation before any data is trusted.

The format (https://huggingface.co/docs/safetensors): 8 bytes of header length (little-endian u64),
that many bytes of a JSON object mapping tensor names to ``{"dtype", "shape", "data_offsets"}`` (and
an optional ``"__metadata__"`` of strings), then the data, which the offsets index from its start.

The checks, all made on opening, before any tensor is read (the reference reader makes the same;
tests/sources/test_model_files.py has a hostile file for each): the header fits the file and the
reference's 100 MB limit; it is one JSON object of UTF-8 without duplicate names; every entry has
exactly those keys, a known dtype, a shape of non-negative integers, and offsets whose range holds
exactly shape × item size bytes; the ranges lie inside the data, do not overlap, and cover it
without holes (so no other file can hide in it). Then only the tensors asked for are read.

Written here rather than read with the ``safetensors`` package: its NumPy reader has no bfloat16,
the commonest dtype of the files people download, and reading one tensor needs its offsets, which
the package keeps to itself. The tests check that both accept the same files.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit

# Bytes per element of every dtype the format defines (sub-byte float4 types aside, which no
# convolution bank uses: they are refused as unknown).
ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
FLOAT_DTYPES = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the file: dtype, shape and its byte range in the data."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile:
    """A checked safetensors file: ``tensors`` (name → TensorEntry, in the header's order) and
    ``read(name)``. ``name`` is how messages name the file."""

    def __init__(self, path: str, name: str | None = None):
        self.path, self.name = path, name or path
        size, header = self._size_and_header()
        self.data_start = 8 + len(header)
        self.tensors = self._entries(self._json_object(header), size - self.data_start)

    def _size_and_header(self) -> tuple[int, bytes]:
        """The file's size and its header's bytes, their lengths checked."""
        try:
            if not stat.S_ISREG(os.stat(self.path).st_mode):  # (checked first: opening a FIFO waits for a writer)
                raise self.error("is not a regular file")
            with open(self.path, "rb") as stream:
                size = os.fstat(stream.fileno()).st_size
                if size < 8:
                    raise self.error(f"is {size} bytes long; a safetensors file starts with an 8-byte header length")
                header_length = int.from_bytes(stream.read(8), "little")
                if header_length > MAX_HEADER_BYTES:
                    raise self.error(
                        f"declares a header of {header_length} bytes, over the limit of {MAX_HEADER_BYTES}"
                    )
                if 8 + header_length > size:
                    raise self.error(f"declares a header of {header_length} bytes but the file has {size - 8} after it")
                return size, stream.read(header_length)
        except OSError as error:
            raise self.error(error.strerror or "cannot be read") from None

    def error(self, problem: str) -> InputError:
        return InputError(f"{self.name}: {problem}")

    def _json_object(self, header: bytes) -> dict:
        def refuse_duplicates(pairs):
            names = [name for name, _ in pairs]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise self.error(f"header names {repeated[0]!r} twice")
            return dict(pairs)

        try:
            decoded = json.loads(header.decode("utf-8"), object_pairs_hook=refuse_duplicates)
        except InputError:
            raise
        # (ValueError: JSONDecodeError, and integers too long to convert)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise self.error(f"header is not valid JSON ({type(error).__name__})") from None
        if not isinstance(decoded, dict):
            raise self.error("header is not a JSON object")
        return decoded

    def _entries(self, header: dict, data_size: int) -> dict[str, TensorEntry]:
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self.error("__metadata__ must map names to strings")
        entries = {name: self._entry(name, fields) for name, fields in header.items()}
        position = 0  # the ranges, in order, must tile the data exactly: no overlap, no hole
        for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
            if entry.begin != position:
                problem = "overlaps another tensor" if entry.begin < position else "leaves a hole before it"
                raise self.error(f"tensor {name!r}: data range [{entry.begin}, {entry.end}) {problem}")
            position = entry.end
        if position != data_size:
            raise self.error(f"its tensors cover {position} bytes of data but the file holds {data_size}")
        return entries

    def _entry(self, name: str, fields) -> TensorEntry:
        if not isinstance(fields, dict) or set(fields) != _ENTRY_KEYS:
            raise self.error(f"tensor {name!r}: an entry needs exactly the keys dtype, shape and data_offsets")
        dtype, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
        if dtype not in ITEM_BYTES:
            raise self.error(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(size) for size in shape):
            raise self.error(f"tensor {name!r}: shape must be a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(offset) for offset in offsets):
            raise self.error(f"tensor {name!r}: data_offsets must be two non-negative integers")
        begin, end = offsets
        expected = math.prod(shape) * ITEM_BYTES[dtype]
        if end < begin or end - begin != expected:
            raise self.error(
                f"tensor {name!r}: shape {tuple(shape)} of {dtype} needs {expected} bytes, "
                f"its data_offsets give {end - begin}"
            )
        return TensorEntry(dtype, tuple(shape), begin, end)

    def entry(self, tensor: str) -> TensorEntry:
        if tensor not in self.tensors:
            raise self.error(f"has no tensor {tensor!r}")
        return self.tensors[tensor]

    def read(self, tensor: str) -> np.ndarray:
        """The tensor as a NumPy array: float32 and float64 as they are, float16 and bfloat16 in float32."""
        entry = self.entry(tensor)
        if entry.dtype not in FLOAT_DTYPES:
            raise self.error(f"tensor {tensor!r} is {entry.dtype}; a bank or bias must be floating point")
        stored = np.dtype(FLOAT_DTYPES[entry.dtype])
        count = (entry.end - entry.begin) // stored.itemsize
        values = np.fromfile(self.path, dtype=stored, count=count, offset=self.data_start + entry.begin)
        if values.size != count:
            raise self.error(f"tensor {tensor!r}: the file ended before its data")
        if entry.dtype == "BF16":  # bfloat16 is the top half of a float32
            values = (values.astype(np.uint32) << 16).view(np.float32)
        elif entry.dtype == "F16":
            values = values.astype(np.float32)
        return values.astype(values.dtype.newbyteorder("="), copy=False).reshape(entry.shape)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
