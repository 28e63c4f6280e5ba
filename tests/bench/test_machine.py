"""The machine-limits cache: round trip, defaults, corrupt files, atomic writes, the roofline."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from conv1x1_cli.bench.machine import cache_path, load_limits, save_limits
from conv1x1_cli.costs import roofline
from conv1x1_cli.costs.roofline import MachineLimits

MEASURED = MachineLimits(
    peak_gflops=412.5, sgemm_gflops=301.25, bandwidth_gbs=18.5, threads=2, source="measured by a test on a CPU"
)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_variable_overrides_xdg(cache_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path() == cache_dir / "machine.json"


def test_xdg_cache_home_is_used_without_override(monkeypatch, tmp_path):
    monkeypatch.delenv("CONV1X1_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path() == tmp_path / "xdg" / "conv1x1" / "machine.json"


def test_home_cache_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("CONV1X1_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path() == tmp_path / "home" / ".cache" / "conv1x1" / "machine.json"


def test_save_then_load_returns_the_same_limits_and_says_where_they_were_saved(cache_dir):
    save_limits(MEASURED)
    loaded = load_limits()
    assert replace(loaded, source=MEASURED.source) == MEASURED
    assert loaded.source == f"{MEASURED.source} (saved in {cache_dir / 'machine.json'})"
    assert loaded.measured
    assert json.loads((cache_dir / "machine.json").read_text())["peak_gflops"] == 412.5


def test_save_leaves_no_temporary_file_and_replaces_old_limits(cache_dir):
    save_limits(MEASURED)
    newer = MachineLimits(500.0, 400.0, 30.0, 4, "measured again")
    save_limits(newer)
    assert replace(load_limits(), source=newer.source) == newer
    assert [path.name for path in cache_dir.iterdir()] == ["machine.json"]


def test_never_measured_gives_labelled_defaults():
    limits = load_limits()
    assert limits.source == roofline.DEFAULT_SOURCE
    assert not limits.measured
    assert limits.peak_gflops > 0 and limits.bandwidth_gbs > 0 and limits.threads >= 1


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[1, 2, 3]",
        json.dumps({"peak_gflops": 100.0}),  # fields missing
        json.dumps({**MEASURED.as_dict(), "peak_gflops": -1.0}),
        json.dumps({**MEASURED.as_dict(), "bandwidth_gbs": "fast"}),
        json.dumps({**MEASURED.as_dict(), "threads": 0}),
    ],
)
def test_corrupt_cache_falls_back_to_defaults(cache_dir, content):
    cache_dir.mkdir()
    (cache_dir / "machine.json").write_text(content)
    assert load_limits() == roofline.default_limits()


def test_unreadable_cache_falls_back_to_defaults(cache_dir):
    (cache_dir / "machine.json").mkdir(parents=True)  # a directory where the file should be
    assert load_limits() == roofline.default_limits()


def test_as_dict_has_exactly_the_interface_fields():
    assert MEASURED.as_dict() == {
        "peak_gflops": 412.5,
        "sgemm_gflops": 301.25,
        "bandwidth_gbs": 18.5,
        "threads": 2,
        "source": "measured by a test on a CPU",
    }


def test_import_loads_neither_numpy_nor_numba():
    code = "import sys, conv1x1_cli.bench.machine; print(sorted({'numpy', 'numba'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
