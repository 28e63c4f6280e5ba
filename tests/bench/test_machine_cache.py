"""The machine-limits cache where the older tests left gaps: a zero rate, and an empty XDG_CACHE_HOME.

Through ``conv1x1 shapes`` (which reads the cache) and ``conv1x1_cli.bench.machine`` (module-level names:
``MachineLimits``, ``default_limits``, ``cache_path``, ``load_limits``).
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from conv1x1_cli.bench import machine
from conv1x1_cli.cli import main
from conv1x1_cli.costs import roofline

MEASURED = roofline.MachineLimits(peak_gflops=230.0, sgemm_gflops=190.0, bandwidth_gbs=29.0, threads=2, source="hand")


@pytest.mark.parametrize("field", ["peak_gflops", "sgemm_gflops", "bandwidth_gbs"])
def test_a_cached_rate_of_zero_falls_back_to_the_defaults(tmp_path, monkeypatch, field):
    """A zero bandwidth would put the ridge point at infinity (and divide by zero): not a usable limit."""
    monkeypatch.setenv("CONV1X1_CACHE_DIR", str(tmp_path))
    (tmp_path / "machine.json").write_text(json.dumps({**MEASURED.as_dict(), field: 0.0}))
    assert machine.load_limits() == roofline.default_limits()
    result = CliRunner().invoke(main, ["shapes", "28x28x192", "--filters", "32", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["roofline"]["source"] == roofline.DEFAULT_SOURCE


def test_an_empty_xdg_cache_home_means_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CONV1X1_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert machine.cache_path() == tmp_path / ".cache" / "conv1x1" / "machine.json"
    assert os.path.isabs(machine.cache_path())
