"""Files where the older tests left gaps: the mode of a written output, and an input one byte short.

Through the CLI (``conv1x1 apply`` on Click's runner).
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from conv1x1_cli.cli import main


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def apply(tmp_path, output):
    np.save(tmp_path / "x.npy", np.ones((4, 4, 3), np.float32))
    np.save(tmp_path / "w.npy", np.ones((3, 2), np.float32))
    args = ["apply", str(tmp_path / "x.npy"), str(tmp_path / "w.npy"), "-o", str(output), "-q"]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_a_new_output_gets_the_mode_a_plain_open_would_give(tmp_path, umask_022):
    """The output is written to a private temporary file first; once in place it is 0o666 minus the umask."""
    assert apply(tmp_path, tmp_path / "new.npy").exit_code == 0
    assert stat.S_IMODE(os.stat(tmp_path / "new.npy").st_mode) == 0o644


def test_a_replaced_output_keeps_its_mode(tmp_path, umask_022):
    old = tmp_path / "old.npy"
    old.write_bytes(b"previous contents")
    os.chmod(old, 0o640)
    assert apply(tmp_path, old).exit_code == 0
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o640
    np.testing.assert_array_equal(np.load(old), np.full((4, 4, 2), 3.0, np.float32))


def test_an_input_one_byte_short_is_refused_from_its_header(tmp_path):
    """Checked against the header before any data is read: the message gives both sizes."""
    np.save(tmp_path / "x.npy", np.ones((4, 4, 3), np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[:-1])
    np.save(tmp_path / "w.npy", np.ones((3, 2), np.float32))
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(main, ["apply", str(tmp_path / "x.npy"), str(tmp_path / "w.npy"), "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'x.npy'}: data is truncated: "
        "header claims shape 4x4x3 (192 bytes) but only 191 bytes follow"
    ]
    assert not out.exists()
