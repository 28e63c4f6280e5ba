"""conv1x1 show on big, odd and badly asked-for arrays: what a user sees, and the exit status."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

COMMAND = [sys.executable, "-m", "conv1x1_cli"]


def body_rows(text: str) -> list[list[str]]:
    """The cells of each row of the table, index first: the lines between the rule and the blank line."""
    lines = text.splitlines()
    start = next(number for number, line in enumerate(lines) if "───" in line) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def show(*args, columns="100", **kwargs):
    environment = {**os.environ, "COLUMNS": columns, "NO_COLOR": "1"}
    return subprocess.run(
        [*COMMAND, "show", *map(str, args)], capture_output=True, text=True, env=environment, **kwargs
    )


@pytest.fixture
def wide(tmp_path):
    """3000 x 3000 x 4 values of mixed sign and width, as the issue's example."""
    rng = np.random.default_rng(7)
    path = tmp_path / "wide.npy"
    np.save(path, (rng.standard_normal((3000, 3000, 4)) - 0.3).astype(np.float32))
    return path


def test_no_cell_is_cut_short_in_a_wide_preview(wide):
    result = show(wide)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    first_row = body_rows(result.stdout)[0]
    column_step = int(next(re.finditer(r"every (\d+)\w* row and every (\d+)\w* column", result.stdout)).group(2))
    plane = np.load(wide, mmap_mode="r")[..., 0]
    expected = plane[0, ::column_step]
    assert len(first_row) - 1 == len(expected)  # every column of the preview is there, none squeezed out
    np.testing.assert_allclose([float(cell) for cell in first_row[1:]], expected, rtol=1e-3, atol=1e-4)
    assert max(len(line) for line in result.stdout.splitlines()) <= 100


def test_max_rows_is_honoured_whatever_the_width(wide):
    result = show(wide, "--max-rows", "100")
    assert result.returncode == 0, result.stderr
    rows = body_rows(result.stdout)
    assert len(rows) == 100 and [row[0] for row in rows[:3]] == ["0", "30", "60"]  # 3000 rows, every 30th
    assert "every 30th row" in result.stdout


def test_zero_columns_lays_out_for_80(tmp_path, samples_dir):
    result = show(samples_dir / "lecture_6x6.npy", columns="0")
    assert result.returncode == 0 and "min 1 · max 9" in result.stdout


def test_infinities_show_without_a_numpy_warning(tmp_path):
    values = np.zeros((4, 4, 2))
    values[0, 0, 0], values[1, 1, 0] = np.inf, -np.inf
    np.save(tmp_path / "inf.npy", values)
    result = show(tmp_path / "inf.npy")
    assert result.returncode == 0 and result.stderr == ""
    assert "min -inf · max inf · mean nan" in " ".join(result.stdout.split())


def test_the_caption_says_which_slice_of_which_array(samples_dir):
    assert "6×6 of 6×6×32" in show(samples_dir / "volume_6x6x32.npy").stdout
    assert "shape 6×6 " in show(samples_dir / "lecture_6x6.npy").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channel", "32"], "Invalid value for '--channel': 32 is out of range"),
        (["--batch", "5"], "Invalid value for '--batch': 5: "),
    ],
)
def test_out_of_range_options_are_usage_errors(samples_dir, args, message):
    result = show(samples_dir / "volume_6x6x32.npy", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("columns", ["40", "60", "80", "120"])
def test_row_indices_and_cells_are_never_squeezed(tmp_path, samples_dir, columns):
    """The README's first command: the sample volume through its bank, then show. Its values take 1 to
    7 characters; at 80 columns the index column used to be squeezed to '…'."""
    volume, bank = samples_dir / "volume_28x28x192.npy", samples_dir / "bank_192x32.npy"
    applied = subprocess.run([*COMMAND, "apply", volume, bank, "-o", tmp_path / "out.npy", "-q"], capture_output=True)
    assert applied.returncode == 0, applied.stderr
    result = show(tmp_path / "out.npy", columns=columns)
    assert result.returncode == 0 and "…" not in result.stdout
    rows = body_rows(result.stdout)
    step = int(rows[1][0]) - int(rows[0][0])
    assert [int(row[0]) for row in rows] == list(range(0, 28, step))
    assert max(len(line) for line in result.stdout.splitlines()) <= int(columns)


def test_mostly_integers_and_the_extremes_between_the_rows_shown(tmp_path):
    values = np.tile(np.arange(100, dtype=np.float64), (100, 1))[..., None]
    values[3, 3, 0] = -7.5  # skipped by the stride, but the caption's minimum
    np.save(tmp_path / "ints.npy", values)
    result = show(tmp_path / "ints.npy", columns="80")
    assert result.returncode == 0 and "…" not in result.stdout
    assert "min -7.5 · max 99" in " ".join(result.stdout.split())
    assert [int(row[0]) for row in body_rows(result.stdout)][:3] == [0, 5, 10]
