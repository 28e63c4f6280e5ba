"""Standard streams and the environment as a Unix tool must treat them: closed streams, full devices,
encodings that lack a character, terminals, a stdin named twice, thread settings, shell completion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

COMMAND = [sys.executable, "-m", "conv1x1_cli"]
# Shells complete the installed command by its name (python -m has another, which they never complete).
INSTALLED = str(Path(sys.executable).with_name("conv1x1"))
TABLE_COMMANDS = [
    ["shapes", "28x28x192", "--filters", "32"],
    ["bottleneck", "28x28x192", "-r", "16", "-k", "5", "-f", "32"],
    ["inception", "28x28x192", "64", "96", "128", "16", "32", "32"],
]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, **kwargs)


def one_error_line(result, *fragments) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr.decode()
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    return lines[0]


def lecture(samples_dir):
    return [samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy"]


def closed(fd: int):
    """A preexec_fn that closes one of the child's standard descriptors (``<&-``, ``>&-``, ``2>&-``)."""
    return lambda: os.close(fd)


def test_closed_stdin_is_one_line(samples_dir, tmp_path):
    result = run("apply", "-", samples_dir / "times2.npy", "-o", tmp_path / "o.npy", preexec_fn=closed(0))
    one_error_line(result, "<stdin>", "standard input is closed")
    one_error_line(run("show", "-", preexec_fn=closed(0)), "<stdin>", "standard input is closed")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", [["apply", "{x}", "{w}", "-o", "-", "-q"], *TABLE_COMMANDS, ["show", "{x}"]])
def test_closed_stdout_is_one_line(samples_dir, args):
    x, w = lecture(samples_dir)
    result = run(*(arg.format(x=x, w=w) for arg in args), preexec_fn=closed(1))
    one_error_line(result, "<stdout>", "standard output is closed")


def test_closed_stderr_does_not_fail_a_good_run(samples_dir, tmp_path):
    result = run("apply", *lecture(samples_dir), "-o", tmp_path / "o.npy", preexec_fn=closed(2))
    assert result.returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy")[..., 0], 2 * np.load(lecture(samples_dir)[0]))


@pytest.mark.parametrize("args", [*TABLE_COMMANDS, ["show", "{x}"], ["apply", "{x}", "{w}", "-o", "-", "-q"]])
def test_a_full_device_on_stdout_is_one_line_and_exit_1(samples_dir, args):
    x, w = lecture(samples_dir)
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*COMMAND, *(arg.format(x=x, w=w) for arg in args)], stdout=full, stderr=subprocess.PIPE
        )
    assert result.returncode == 1
    one_error_line(result, "<stdout>", "No space left on device")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize("args", [*TABLE_COMMANDS, ["show", "{x}"]])
def test_streams_that_lack_a_character_get_plain_stand_ins(samples_dir, encoding, args):
    x, _ = lecture(samples_dir)
    environment = {**os.environ, "PYTHONIOENCODING": encoding}
    result = run(*(arg.format(x=x) for arg in args), env=environment)
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode(encoding)
    assert "Traceback" not in result.stderr.decode()
    if args[0] in ("shapes", "bottleneck", "inception"):
        assert ("28x28x192" if encoding == "ascii" else "28×28×192") in text  # latin-1 has '×', ASCII does not


def test_stdin_from_a_terminal_is_refused_rather_than_waited_on(samples_dir, tmp_path):
    import pty

    leader, follower = pty.openpty()
    try:
        result = run("apply", "-", samples_dir / "times2.npy", "-o", tmp_path / "o.npy", stdin=follower, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    one_error_line(result, "<stdin>", "terminal")


def test_stdin_can_be_read_only_once(samples_dir, tmp_path):
    data = (samples_dir / "lecture_6x6.npy").read_bytes()
    result = run("apply", "-", "-", "-o", tmp_path / "o.npy", input=data)
    one_error_line(result, "'-' (standard input) is named 2 times; it can be read only once")


@pytest.mark.parametrize("option", [["--codec", "lz4"], ["--chunks", "4x4"], ["--storage-option", "anon=true"]])
def test_a_store_option_on_a_npy_run_is_refused_before_the_progress_bar_shows(samples_dir, tmp_path, option):
    """On a terminal the bar would flash, then the usage error: the check comes before the bar."""
    import pty

    leader, follower = pty.openpty()
    try:
        process = subprocess.run(
            [*COMMAND, "apply", *map(str, lecture(samples_dir)), "-o", str(tmp_path / "o.npy"), *option],
            stdout=subprocess.DEVNULL, stderr=follower, timeout=120,
        )  # fmt: skip
        os.close(follower)
        shown = b""
        while chunk := _read_or_nothing(leader):
            shown += chunk
    finally:
        os.close(leader)
    text = shown.decode()
    assert process.returncode == 2, text
    assert f"Invalid value for '{option[0]}'" in text and "only appl" in text, text
    assert "convolving" not in text  # the bar's label


def _read_or_nothing(descriptor: int) -> bytes:
    try:
        return os.read(descriptor, 4096)
    except OSError:  # EIO: the other end of the terminal is closed and everything was read
        return b""


def test_more_biases_than_banks_is_a_usage_error_naming_the_option(samples_dir, tmp_path):
    bias = tmp_path / "b.npy"
    np.save(bias, np.zeros(1, np.float32))
    result = run("apply", *lecture(samples_dir), "--bias", bias, "--bias", bias, "-o", tmp_path / "o.npy")
    assert result.returncode == 2
    assert "Invalid value for '--bias': given 2 times for 1 bank: at most one per bank" in result.stderr.decode()


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_thread_setting_is_one_line(samples_dir, tmp_path, value):
    environment = {**os.environ, "NUMBA_NUM_THREADS": value}
    result = run("apply", *lecture(samples_dir), "-o", tmp_path / "o.npy", env=environment)
    one_error_line(result, f"NUMBA_NUM_THREADS={value!r}", "at least 1")


@pytest.mark.parametrize("address", ["not a url", "tcp://", "http://127.0.0.1:1"])
def test_a_scheduler_address_of_no_known_form_is_one_line(samples_dir, tmp_path, address):
    pytest.importorskip("distributed")
    result = run("apply", *lecture(samples_dir), "-o", tmp_path / "o.npy", "--scheduler", address, timeout=120)
    one_error_line(result, "cannot reach the Dask scheduler")


def test_the_upstream_stage_of_a_closed_pipe_exits_141(tmp_path, rng):
    volume = tmp_path / "x.npy"
    np.save(volume, rng.standard_normal((512, 512, 64)).astype(np.float32))
    np.save(tmp_path / "w.npy", np.eye(64, dtype=np.float32))
    producer = subprocess.Popen(
        [*COMMAND, "apply", volume, tmp_path / "w.npy", "-o", "-", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert producer.stdout.read(100).startswith(b"\x93NUMPY")
    producer.stdout.close()
    stderr = producer.stderr.read()
    assert producer.wait(timeout=60) == 128 + signal.SIGPIPE and stderr == b""
    shapes = subprocess.run(
        f"{sys.executable} -m conv1x1_cli shapes 28x28x192 --filters 96,48,10 --format json | head -c 10",
        shell=True,
        capture_output=True,
        executable="/bin/bash",
    )
    assert shapes.stdout == b'{\n  "input' and shapes.stderr == b""


@pytest.mark.parametrize(
    ("shell", "marker"), [("bash", "complete -o"), ("zsh", "#compdef conv1x1"), ("fish", "complete")]
)
def test_shell_completion_scripts_are_produced(shell, marker):
    result = subprocess.run(
        [INSTALLED], env={**os.environ, "_CONV1X1_COMPLETE": f"{shell}_source"}, capture_output=True, text=True
    )
    assert result.returncode == 0 and marker in result.stdout and "_conv1x1_completion" in result.stdout


def test_completion_completes_command_names():
    environment = {**os.environ, "_CONV1X1_COMPLETE": "bash_complete", "COMP_WORDS": "conv1x1 sha", "COMP_CWORD": "1"}
    result = subprocess.run([INSTALLED], env=environment, capture_output=True, text=True)
    assert result.stdout.split() == ["plain,shapes"]
