"""The machine-limits cache: round trip, defaults, corrupt files, atomic writes, the roofline."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from conv1x1_cli.bench import machine
from conv1x1_cli.bench.machine import cache_path, load_limits, save_limits
from conv1x1_cli.costs import roofline
from conv1x1_cli.costs.roofline import MachineLimits, MemoryLevel

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
        "levels": [],
    }


def test_import_loads_neither_numpy_nor_numba():
    code = "import sys, conv1x1_cli.bench.machine; print(sorted({'numpy', 'numba'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def write_cache_index(folder, name, level, kind, size, shared):
    index = folder / name
    index.mkdir(parents=True)
    for field, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (index / field).write_text(f"{value}\n")


def test_cache_capacities_count_private_caches_per_thread_and_shared_ones_per_group(tmp_path):
    write_cache_index(tmp_path, "index0", 1, "Data", "48K", "0")
    write_cache_index(tmp_path, "index1", 1, "Instruction", "32K", "0")
    write_cache_index(tmp_path, "index2", 2, "Unified", "1024K", "0")
    write_cache_index(tmp_path, "index3", 3, "Unified", "32M", "0-7")
    assert machine.cache_capacities(2, root=str(tmp_path)) == [("L2", 2 << 20), ("L3", 32 << 20)]
    assert machine.cache_capacities(12, root=str(tmp_path)) == [("L2", 12 << 20), ("L3", 64 << 20)]
    assert machine.cache_capacities(2, root=str(tmp_path / "absent")) == []


def test_levels_are_saved_and_loaded(cache_dir):
    levels = (MemoryLevel("L2", 2 << 20, 400.0, 300.0), MemoryLevel("DRAM", None, 50.0, 40.0))
    save_limits(replace(MEASURED, levels=levels))
    assert load_limits().levels == levels
    stored = json.loads((cache_dir / "machine.json").read_text())
    stored["levels"][0]["read_gbs"] = -1.0
    (cache_dir / "machine.json").write_text(json.dumps(stored))
    assert load_limits() == roofline.default_limits()  # a negative bandwidth is a corrupt cache
