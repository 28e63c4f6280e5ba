"""The safetensors reader: what it reads (against the safetensors package and hand-made bytes), and
a hostile file for every check of the header."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from conv1x1_cli.errors import InputError
from conv1x1_cli.sources.safetensors_file import MAX_HEADER_BYTES, SafetensorsFile


def write_file(path, header: dict | bytes, data: bytes = b"") -> str:
    """A safetensors file of this header (a dict, or raw bytes) and data, byte by byte as the format says."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def entry(dtype: str, shape, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def test_reads_what_the_safetensors_package_writes(tmp_path):
    numpy_writer = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {
        "conv.weight": rng.standard_normal((8, 4, 1, 1)).astype(np.float32),
        "conv.bias": rng.standard_normal(8).astype(np.float32),
        "head.weight": rng.standard_normal((3, 5)).astype(np.float64),
        "half": rng.standard_normal((2, 3)).astype(np.float16),
        "steps": np.arange(6, dtype=np.int64),
    }
    path = str(tmp_path / "m.safetensors")
    numpy_writer.save_file(tensors, path, metadata={"format": "np"})
    opened = SafetensorsFile(path)
    assert list(opened.tensors) == list(numpy_writer.load_file(path))
    for name in ("conv.weight", "conv.bias", "head.weight"):
        read = opened.read(name)
        assert read.dtype == tensors[name].dtype and np.array_equal(read, tensors[name])
    assert opened.read("half").dtype == np.float32
    assert np.array_equal(opened.read("half"), tensors["half"].astype(np.float32))
    with pytest.raises(InputError, match=r"'steps' is I64; a bank or bias must be floating point"):
        opened.read("steps")


def test_bfloat16_is_read_as_the_float32_it_rounds(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    values = torch.tensor([[1.0, -2.5, 3.140625], [1e-3, 65504.0, -0.0]])
    path = str(tmp_path / "b.safetensors")
    safetensors_torch.save_file({"w": values.to(torch.bfloat16)}, path)
    expected = values.to(torch.bfloat16).to(torch.float32).numpy()
    read = SafetensorsFile(path).read("w")
    assert read.dtype == np.float32 and np.array_equal(read, expected)


def test_hand_made_file_with_two_tensors(tmp_path):
    data = np.array([1, 2, 3, 4], "<f4").tobytes() + np.array([0.5], "<f8").tobytes()
    header = {"a": entry("F32", (2, 2), 0, 16), "b": entry("F64", (1,), 16, 24), "__metadata__": {"x": "y"}}
    opened = SafetensorsFile(write_file(tmp_path / "h.safetensors", header, data))
    assert opened.read("a").tolist() == [[1, 2], [3, 4]]
    assert opened.read("b").tolist() == [0.5]


HOSTILE = {
    "header longer than the file": (struct.pack("<Q", 1000) + b"{}", r"declares a header of 1000 bytes but"),
    "header over the limit": (struct.pack("<Q", MAX_HEADER_BYTES + 1), r"over the limit of 100000000"),
    "shorter than the length field": (b"\x01\x02", r"is 2 bytes long"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_lengths(tmp_path, case):
    content, message = HOSTILE[case]
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        SafetensorsFile(str(path))


F32_PAIR = np.zeros(2, "<f4").tobytes()
BAD_HEADERS = {
    "not JSON": (b"{not json", b"", r"header is not valid JSON"),
    "not UTF-8": (b'{"\xff": 1}', b"", r"header is not valid JSON"),
    "not an object": (b"[1, 2]", b"", r"header is not a JSON object"),
    "duplicate names": (b'{"a": {}, "a": {}}', b"", r"header names 'a' twice"),
    "unknown dtype": ({"a": entry("F33", (2,), 0, 8)}, F32_PAIR, r"'a': unknown dtype 'F33'"),
    "missing offsets": ({"a": {"dtype": "F32", "shape": [2]}}, F32_PAIR, r"exactly the keys"),
    "extra key": ({"a": {**entry("F32", (2,), 0, 8), "x": 1}}, F32_PAIR, r"exactly the keys"),
    "negative dimension": ({"a": entry("F32", (-2,), 0, 8)}, F32_PAIR, r"shape must be a list of non-negative"),
    "boolean dimension": ({"a": entry("F32", (True, 2), 0, 8)}, F32_PAIR, r"shape must be a list of non-negative"),
    "float offset": ({"a": {**entry("F32", (2,), 0, 8), "data_offsets": [0, 8.0]}}, F32_PAIR, r"data_offsets must"),
    "size differs from shape": ({"a": entry("F32", (3,), 0, 8)}, F32_PAIR, r"needs 12 bytes, its data_offsets give 8"),
    "range beyond the data": (
        {"a": entry("F32", (4,), 0, 16)},
        F32_PAIR,
        r"cover 16 bytes of data but the file holds 8",
    ),
    "overlapping tensors": (
        {"a": entry("F32", (2,), 0, 8), "b": entry("F32", (1,), 4, 8)},
        F32_PAIR,
        r"\[4, 8\) overlaps another tensor",
    ),
    "hole between tensors": (
        {"a": entry("F32", (1,), 0, 4), "b": entry("F32", (1,), 8, 12)},
        np.zeros(3, "<f4").tobytes(),
        r"leaves a hole before it",
    ),
    "bytes after the tensors": (
        {"a": entry("F32", (1,), 0, 4)},
        F32_PAIR,
        r"cover 4 bytes of data but the file holds 8",
    ),
    "metadata not strings": ({"__metadata__": {"n": 1}}, b"", r"__metadata__ must map names to strings"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_hostile_headers_are_refused_before_any_data_is_read(tmp_path, case):
    header, data, message = BAD_HEADERS[case]
    path = write_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(InputError, match=message) as caught:
        SafetensorsFile(path)
    assert str(caught.value).startswith(path + ": ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_the_safetensors_package_refuses_the_same_files(tmp_path, case):
    """Our checks are as strict as the reference reader's: it refuses every file we refuse, except an
    entry with a key the format does not define, which it ignores (and we refuse)."""
    safetensors = pytest.importorskip("safetensors")
    header, data, _ = BAD_HEADERS[case]
    path = write_file(tmp_path / "bad.safetensors", header, data)

    def read_everything():
        with safetensors.safe_open(path, framework="numpy") as opened:
            return [opened.get_tensor(name) for name in opened.keys()]  # noqa: SIM118  (not a dict)

    if case == "extra key":
        assert len(read_everything()) == 1
    else:
        with pytest.raises(safetensors.SafetensorError):
            read_everything()


def test_only_the_tensor_asked_for_is_read(tmp_path, monkeypatch):
    data = np.arange(4, dtype="<f4").tobytes() + np.arange(1000, dtype="<f4").tobytes()
    header = {"small": entry("F32", (4,), 0, 16), "big": entry("F32", (1000,), 16, 4016)}
    opened = SafetensorsFile(write_file(tmp_path / "t.safetensors", header, data))
    counts = []
    real_fromfile = np.fromfile
    monkeypatch.setattr(
        np, "fromfile", lambda *args, **kwargs: counts.append(kwargs["count"]) or real_fromfile(*args, **kwargs)
    )
    assert opened.read("small").tolist() == [0, 1, 2, 3]
    assert counts == [4]


def test_an_unknown_tensor_is_named(tmp_path):
    opened = SafetensorsFile(write_file(tmp_path / "t.safetensors", {"a": entry("F32", (2,), 0, 8)}, F32_PAIR))
    with pytest.raises(InputError, match=r"has no tensor 'b'"):
        opened.read("b")


def test_a_header_integer_too_long_to_convert_is_refused(tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,' + b"9" * 5000 + b"]}}"
    path = write_file(tmp_path / "long.safetensors", header)
    with pytest.raises(InputError, match=r"long\.safetensors: header is not valid JSON \(ValueError\)"):
        SafetensorsFile(path)


def test_what_is_not_a_readable_regular_file_is_refused_in_one_line(tmp_path):
    """A FIFO is refused before it is opened (opening one waits for a writer); a folder and a missing
    file are named too, as the other readers name them."""
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    for name, message in [
        ("pipe.safetensors", "is not a regular file"),
        ("folder.safetensors", "is not a regular file"),
        ("missing.safetensors", "No such file or directory"),
    ]:
        path = str(tmp_path / name)
        with pytest.raises(InputError, match=message) as caught:
            SafetensorsFile(path)
        assert str(caught.value) == f"{path}: {message}"
