"""Costs where the older tests left gaps: the ridge point itself, the roofline of each dtype, and byte
sizes at a unit's boundary.

Through the CLI (``conv1x1 shapes``) where it shows them; module-level names used besides:
``conv1x1_cli.costs.roofline.roofline``, ``conv1x1_cli.render.tables.bytes_text`` and
``conv1x1_cli.costs.roofline.MachineLimits`` / ``default_limits``.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conv1x1_cli.cli import main


def shapes_json(*args, env=None):
    result = CliRunner().invoke(main, ["shapes", *map(str, args), "--format", "json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0
    return json.loads(result.output)


def test_a_layer_exactly_at_the_ridge_point_is_compute_bound():
    from conv1x1_cli.costs.roofline import MachineLimits, roofline

    limits = MachineLimits(200.0, 150.0, 20.0, 2, "hand")  # ridge: 200 / 20 = 10 FLOP/B
    assert roofline(1000, 100, limits).intensity == 10.0 and roofline(1000, 100, limits).bound == "compute"
    assert roofline(999, 100, limits).bound == "memory"


def test_byte_sizes_change_unit_at_1024():
    from conv1x1_cli.render.tables import bytes_text

    assert [bytes_text(value) for value in (1023, 1024, 1536, 2**20 - 1, 2**20, 3 * 2**30)] == [
        "1,023 B",
        "1.0 KiB",
        "1.5 KiB",
        "1,024.0 KiB",
        "1.0 MiB",
        "3.0 GiB",
    ]


@pytest.mark.parametrize(("dtype", "share"), [("float16", 1.0), ("float32", 1.0), ("float64", 0.5)])
def test_roofline_peak_halves_for_float64_only(tmp_path, dtype, share):
    """float16 data is computed in float32, so only float64 runs at half the float32 peak."""
    from conv1x1_cli.costs.roofline import default_limits

    data = shapes_json("28x28x192", "--filters", 32, "--dtype", dtype, env={"CONV1X1_CACHE_DIR": str(tmp_path)})
    limits = default_limits()
    assert data["roofline"]["peak_gflops"] == limits.peak_gflops * share
    assert data["roofline"]["ridge_intensity"] == limits.peak_gflops * share / limits.bandwidth_gbs
