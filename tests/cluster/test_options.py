"""The storage options and codecs of `apply`: parsed before any work, refused in one line when wrong,
and found in the store that is written."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from conv1x1_cli.cli import main
from conv1x1_cli.cli.options import storage_options
from conv1x1_cli.cluster.codecs import check_codec
from conv1x1_cli.errors import ArgumentError


def test_values_read_as_json_when_they_parse_and_dotted_keys_nest():
    pairs = ["anon=true", "retries=3", "profile=dev", "client_kwargs.region_name=eu-west-1", "token=null", "e=a=b"]
    assert storage_options(pairs) == {
        "anon": True,
        "retries": 3,
        "profile": "dev",
        "client_kwargs": {"region_name": "eu-west-1"},
        "token": None,
        "e": "a=b",
    }
    assert storage_options(['secret="0123"']) == {"secret": "0123"}  # quoted: a string, not a number


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["anon"], "'anon' is not KEY=VALUE"),
        (["=1"], "'=1' is not KEY=VALUE"),
        (["a=1", "a.b=2"], "a.b: a is given both a value and keys"),
        (["a.b=1", "a=2"], "a: is given both a value and keys"),
    ],
)
def test_bad_pairs_are_refused(pairs, message):
    with pytest.raises(ArgumentError, match=f"^{message}$"):
        storage_options(pairs)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gzip", "unknown codec 'gzip'; choose one of zstd, lz4, none"),
        ("none:3", "'none:3': none takes no level"),
        ("zstd:fast", "'zstd:fast': zstd's level is a whole number from -7 to 22"),
        ("lz4:10", "'lz4:10': lz4's level is a whole number from 0 to 9"),
    ],
)
def test_bad_codecs_are_refused(spec, message):
    with pytest.raises(ArgumentError, match=f"^{message}$"):
        check_codec(spec)


def run(arguments, folder):
    np.save(folder / "x.npy", np.arange(24, dtype=np.float32).reshape(2, 4, 3))
    np.save(folder / "w.npy", np.ones((3, 2), np.float32))
    return CliRunner().invoke(main, ["apply", str(folder / "x.npy"), str(folder / "w.npy"), *arguments])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-o", "out.npy", "--codec", "lz4"], "Invalid value for '--codec': a codec only applies to zarr stores"),
        (["-o", "out.zarr", "--codec", "brotli"], "Invalid value for '--codec': unknown codec 'brotli'"),
        (["-o", "out.npy", "--storage-option", "anon=true"], "Invalid value for '--storage-option': storage options"),
        (["-o", "out.zarr", "--storage-option", "anon"], "Invalid value for '--storage-option': 'anon' is not"),
        (["-o", "out.zarr", "--storage-option", "anon=true"], "storage options are only for URLs"),
    ],
)
def test_the_cli_refuses_them_as_usage_errors_before_any_work(tmp_path, arguments, message):
    arguments = [str(tmp_path / argument) if argument.startswith("out.") else argument for argument in arguments]
    result = run(arguments, tmp_path)
    assert result.exit_code == 2
    assert message in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["w.npy", "x.npy"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, {"name": "zstd", "configuration": {"level": 1, "checksum": False}}),
        ("zstd:0", {"name": "zstd", "configuration": {"level": 0, "checksum": False}}),
        ("lz4", "blosc"),
        ("none", None),
    ],
)
def test_the_store_written_uses_the_codec_asked_for(tmp_path, spec, expected):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("distributed")
    result = run(["-o", str(tmp_path / "out.zarr"), "-q", *(["--codec", spec] if spec else [])], tmp_path)
    assert result.exit_code == 0, result.output
    array = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    compressors = list(array.metadata.to_dict()["codecs"][1:])  # (the first turns values into bytes)
    if expected is None:
        assert compressors == []
    elif expected == "blosc":
        assert compressors[0]["name"] == "blosc"
        assert compressors[0]["configuration"]["cname"] == "lz4"
        assert compressors[0]["configuration"]["shuffle"] == "noshuffle"
    else:
        assert compressors == [expected]
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    np.testing.assert_array_equal(array[...], x.astype(np.float64) @ np.ones((3, 2)))
