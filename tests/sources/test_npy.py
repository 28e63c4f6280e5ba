"""Reading and writing .npy: validation, stdin-style streams, atomic outputs."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from conv1x1_cli.errors import InputError
from conv1x1_cli.sources.npy import NpyInput, NpyOutput, load_array, npy_header_bytes, read_header


def save(path, array):
    np.save(path, array, allow_pickle=True)
    return str(path)


@pytest.mark.parametrize(
    "array", [np.arange(12, dtype=">f4").reshape(3, 4), np.asfortranarray(np.eye(3, 5)), np.arange(6, dtype=np.uint8)]
)
def test_round_trip_keeps_values_order_and_dtype(tmp_path, array):
    loaded = load_array(save(tmp_path / "a.npy", array))
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.npy: no such file"):
        load_array(str(tmp_path / "nope.npy"))


def test_not_a_npy_file(tmp_path):
    path = tmp_path / "text.npy"
    path.write_text("hello, this is text")
    with pytest.raises(InputError, match=r"text\.npy: not a valid \.npy file"):
        load_array(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.npy: file is empty"):
        load_array(str(path))


def test_truncated_data_is_caught_from_the_header(tmp_path):
    path = save(tmp_path / "t.npy", np.zeros((100, 100), np.float32))
    os.truncate(path, os.path.getsize(path) - 8)
    with pytest.raises(InputError, match="data is truncated"):
        NpyInput(path)


def test_truncated_stream_is_caught_while_reading():
    data = npy_header_bytes((10, 10), np.dtype(np.float32)) + b"\0" * 100
    stream = io.BytesIO(data)
    header = read_header(stream, "<stdin>")
    assert header.shape == (10, 10)
    from conv1x1_cli.sources.npy import read_exact

    with pytest.raises(InputError, match="truncated"):
        read_exact(stream, np.empty(header.shape, header.dtype), "<stdin>")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([{"a": 1}], dtype=object), "Python objects"),
        (np.zeros(3, dtype=[("x", "f4"), ("y", "i4")]), "structured dtype"),
        (np.zeros(3, dtype=np.complex64), "complex dtype"),
        (np.array(["a", "b"]), "non-numeric dtype"),
    ],
)
def test_unsupported_dtypes_are_refused_before_reading_data(tmp_path, array, message):
    with pytest.raises(InputError, match=message):
        load_array(save(tmp_path / "bad.npy", array))


def test_pickles_are_never_loaded(tmp_path):
    """An object array whose unpickling would create a file: refusing must not run it."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = save(tmp_path / "evil.npy", np.array([Exploit()], dtype=object))
    with pytest.raises(InputError, match="Python objects"):
        load_array(path)
    assert not marker.exists()


def test_npz_archives_get_their_own_message(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(InputError, match=r"\.npz archive"):
        load_array(str(path))


def test_output_is_written_atomically(tmp_path):
    path = str(tmp_path / "out.npy")
    with NpyOutput(path, (2, 3), np.dtype(np.float32)) as output:
        output.write(np.ones((1, 3), np.float32))
        assert not os.path.exists(path)  # nothing visible until commit
        output.write(np.full((1, 3), 2, np.float32))
    np.testing.assert_array_equal(np.load(path), [[1, 1, 1], [2, 2, 2]])
    assert os.listdir(tmp_path) == ["out.npy"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.npy"
    np.save(path, np.arange(3))
    with pytest.raises(RuntimeError), NpyOutput(str(path), (2,), np.dtype(np.float32)) as output:
        output.write(np.ones(1, np.float32))
        raise RuntimeError("crash mid-write")
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert os.listdir(tmp_path) == ["out.npy"]


def test_output_in_missing_directory_or_on_a_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        NpyOutput(str(tmp_path / "no" / "out.npy"), (1,), np.dtype(np.float32))
    with pytest.raises(InputError, match="is a directory"):
        NpyOutput(str(tmp_path), (1,), np.dtype(np.float32))


def test_an_unknown_format_version_is_named(tmp_path):
    path = tmp_path / "v9.npy"
    np.save(path, np.zeros(3, np.float32))
    data = bytearray(path.read_bytes())
    data[6:8] = bytes([9, 0])  # the version bytes after the magic string
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"v9\.npy: unsupported \.npy format version 9\.0 \(known: 1\.0, 2\.0, 3\.0\)"):
        load_array(str(path))


def test_a_version_3_header_keeps_its_utf8_field_names(tmp_path):
    path = tmp_path / "v3.npy"
    with open(path, "wb") as stream:
        np.lib.format.write_array(stream, np.zeros(2, dtype=[("größe", "<f4")]), version=(3, 0))
    with pytest.raises(InputError, match=r"structured dtype \[\('größe', '<f4'\)\]"):
        load_array(str(path))
