"""Pipelines, signals, limits and hostile input: real processes wherever the process behaviour matters."""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import naive
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conv1x1_cli.costs import parse_spec
from conv1x1_cli.errors import ArgumentError, InputError
from conv1x1_cli.sources.npy import NpyInput, read_header

COMMAND = [sys.executable, "-m", "conv1x1_cli"]


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, **kwargs)


def save(directory, name, array):
    path = directory / name
    np.save(path, array)
    return path


VOLUME_SHAPE = (128, 128, 1024)


@pytest.fixture
def volume(tmp_path, rng):
    """A run that lasts a second or more on 2 cores with little I/O: 64 MiB through sixteen
    1024 -> 1024 layers (about 550 GFLOP), so a signal can land in the middle of it.  (Eight layers
    took 0.6 s on a Zen 5 host: on a busy machine the run then ended now and then before the test
    sent its signal.)  Returns the apply arguments: the input and the sixteen banks."""
    x = save(tmp_path, "x.npy", rng.standard_normal(VOLUME_SHAPE).astype(np.float32))
    w = save(tmp_path, "w.npy", (rng.standard_normal((1024, 1024)) / 32).astype(np.float32))
    return [str(x)] + [str(w)] * 16


def leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def assert_one_error_line(result, *fragments):
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr.decode()
    for fragment in fragments:
        assert fragment in lines[0]
    assert b"Traceback" not in result.stderr


# --- pipelines -------------------------------------------------------------------------------------------


def test_three_stage_pipeline_from_cat(tmp_path, rng):
    x = rng.standard_normal((9, 7, 5)).astype(np.float32)
    banks = [rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal((6, 2)).astype(np.float32)]
    paths = [save(tmp_path, name, array) for name, array in (("x.npy", x), ("w1.npy", banks[0]), ("w2.npy", banks[1]))]
    out = tmp_path / "out.npy"
    script = (
        f"cat {paths[0]} | {sys.executable} -m conv1x1_cli apply - {paths[1]} -o - -q | "
        f"{sys.executable} -m conv1x1_cli apply - {paths[2]} -o {out} -q"
    )
    result = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(out), naive.chain(x, banks), rtol=1e-5, atol=1e-5)


def test_reader_closing_the_pipe_early_is_quiet(volume):
    producer = subprocess.Popen(
        [*COMMAND, "apply", *volume, "-o", "-", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    head = producer.stdout.read(100)
    producer.stdout.close()
    stderr = producer.stderr.read()
    producer.wait(timeout=60)
    assert head.startswith(b"\x93NUMPY")
    assert stderr == b"", stderr  # no traceback, no "Exception ignored" noise


def test_stdout_to_a_terminal_is_refused_and_binary_never_sprays(tmp_path, samples_dir):
    import pty

    leader, follower = pty.openpty()
    result = subprocess.run(
        [*COMMAND, "apply", str(samples_dir / "lecture_6x6.npy"), str(samples_dir / "times2.npy"), "-o", "-"],
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    os.close(leader)
    assert result.returncode == 1 and b"terminal" in result.stderr


def test_no_color_and_piped_stderr_have_no_escape_codes(samples_dir, tmp_path):
    result = cli(
        "apply",
        samples_dir / "lecture_6x6.npy",
        samples_dir / "times2.npy",
        "-o",
        tmp_path / "o.npy",
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": ""},
    )
    assert result.returncode == 0 and b"\x1b[" not in result.stderr and b"MACs" in result.stderr
    shown = cli("show", samples_dir / "lecture_6x6.npy", env={**os.environ, "NO_COLOR": "1"})
    assert b"\x1b[" not in shown.stdout


# --- signals and limits ----------------------------------------------------------------------------------


def wait_for_the_temporary(directory, process, timeout: float = 60.0) -> None:
    """Until the run has opened its temporary output, that is, has loaded its inputs and begun to convolve."""
    deadline = time.monotonic() + timeout
    while not leftovers(directory):
        assert process.poll() is None, "the run ended before it opened its output"
        assert time.monotonic() < deadline, "the run never opened its output"
        time.sleep(0.005)


@pytest.mark.parametrize("moment", ["starting", "convolving"])
def test_ctrl_c_exits_130_and_leaves_nothing(volume, tmp_path, moment):
    out = tmp_path / "out.npy"
    process = subprocess.Popen([*COMMAND, "apply", *volume, "-o", str(out), "-q"], stderr=subprocess.PIPE)
    if moment == "starting":
        time.sleep(0.5)  # importing, loading the inputs
    else:
        wait_for_the_temporary(tmp_path, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    # 130 from our handler; a signal in the interpreter's last moments kills it outright, which the shell
    # also reports as 130. Either way: no traceback, no temporary, and no partial output.
    assert process.returncode in (130, -signal.SIGINT)
    assert b"Traceback" not in stderr
    assert leftovers(tmp_path) == []
    if out.exists():  # only when the signal came after the atomic rename: then the output is whole
        assert np.load(out).shape == VOLUME_SHAPE


def test_ctrl_c_ignored_by_the_parent_stays_ignored(volume, tmp_path):
    """Started with SIGINT ignored (nohup, `cmd &` in a script), the run keeps ignoring it and finishes."""
    out = tmp_path / "out.npy"
    process = subprocess.Popen(
        [*COMMAND, "apply", *volume, "-o", str(out), "-q"],
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(1.0)
    if process.poll() is not None:
        pytest.skip("the run finished before the signal could be sent")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    assert np.load(out).shape == VOLUME_SHAPE and leftovers(tmp_path) == []


def test_sigterm_cleans_up_too(volume, tmp_path):
    out = tmp_path / "out.npy"
    process = subprocess.Popen([*COMMAND, "apply", *volume, "-o", str(out), "-q"], stderr=subprocess.PIPE)
    wait_for_the_temporary(tmp_path, process)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    # 143 from our handler; a signal before it is installed (Python still importing) kills outright,
    # which the shell also reports as 143. Either way: no traceback, no temporary, no output.
    assert process.returncode in (143, -signal.SIGTERM) and b"Traceback" not in stderr
    assert leftovers(tmp_path) == []
    if out.exists():  # only when the signal came after the atomic rename: then the output is whole
        assert np.load(out).shape == VOLUME_SHAPE


@pytest.mark.parametrize("delay", [1.5, 3.0])
@pytest.mark.parametrize(("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_the_first_compile_is_clean(volume, tmp_path, stop, status, delay):
    """On a cold cache the first seconds go to Numba's compiler: a signal there must end just as cleanly.
    It used to be lost in about one run in six (its exception raised, and dropped, in a callback of the
    compiler): the run then finished with status 0. Held, it acts when the compile is over."""
    out = tmp_path / "out.npy"
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cold-cache")}
    # Start-up takes ~0.8 s and the cold compile seconds more: 1.5 s lands in the compile, 3 s in it or
    # in the volume's work after it. The summary (no -q) tells a lost signal from a run that was over.
    process = subprocess.Popen([*COMMAND, "apply", *volume, "-o", str(out)], stderr=subprocess.PIPE, env=environment)
    time.sleep(delay)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:  # lost, unless the whole run was over before the signal was sent
        took = re.search(r"time\s+([\d,.]+) ms", stderr.decode())
        assert took and float(took.group(1).replace(",", "")) / 1000 < delay - 0.2, "the signal was lost"
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode in (status, -stop), stderr.decode()
    assert b"Traceback" not in stderr, stderr.decode()
    assert not out.exists() and leftovers(tmp_path) == []


def test_file_size_limit_keeps_the_old_file_and_no_temporary(volume, tmp_path):
    out = save(tmp_path, "out.npy", np.arange(5))
    limit = 1_000_000

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [*COMMAND, "apply", *volume, "-o", str(out), "-q"], capture_output=True, preexec_fn=small_files
    )
    assert_one_error_line(result, str(out), "File too large")
    np.testing.assert_array_equal(np.load(out), np.arange(5))
    assert leftovers(tmp_path) == []


def test_full_device_on_stdout_is_a_clean_error(samples_dir):
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [
                *COMMAND,
                "apply",
                str(samples_dir / "volume_6x6x32.npy"),
                str(samples_dir / "bank_32x8.npy"),
                "-o",
                "-",
                "-q",
            ],
            stdout=full,
            stderr=subprocess.PIPE,
        )
    assert_one_error_line(result, "<stdout>", "No space left on device")


# --- output safety ---------------------------------------------------------------------------------------


def test_output_may_be_the_input_file(tmp_path, rng):
    x = rng.standard_normal((20, 30, 4)).astype(np.float32)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    path = save(tmp_path, "x.npy", x)
    assert cli("apply", path, save(tmp_path, "w.npy", w), "-o", path, "-q").returncode == 0
    np.testing.assert_allclose(np.load(path), naive.pointwise(x, w), rtol=1e-5, atol=1e-5)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("target", "message"), [("missing/out.npy", "does not exist"), (".", "is a directory")])
def test_bad_output_paths(samples_dir, tmp_path, target, message):
    result = cli("apply", samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy", "-o", tmp_path / target)
    assert_one_error_line(result, message)


def lecture_run(samples_dir, output, **kwargs):
    """apply on the lecture's 6x6 image with its times-2 filter, to ``output``."""
    return cli("apply", samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy", "-o", output, "-q", **kwargs)


def lecture_output_bytes(samples_dir, tmp_path):
    """What apply writes for the lecture's example, byte for byte (through -o -)."""
    result = cli("apply", samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy", "-o", "-", "-q")
    assert result.returncode == 0
    np.testing.assert_array_equal(
        np.load(io.BytesIO(result.stdout))[..., 0], 2 * np.load(samples_dir / "lecture_6x6.npy")
    )
    return result.stdout


def test_a_character_device_stays_a_device(samples_dir, tmp_path):
    device = tmp_path / "mynull"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # another /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs root (CAP_MKNOD)")
    assert lecture_run(samples_dir, device).returncode == 0
    assert stat.S_ISCHR(device.stat().st_mode) and leftovers(tmp_path) == []


def test_dev_stdout_reaches_the_pipe_and_survives(samples_dir, tmp_path):
    expected = lecture_output_bytes(samples_dir, tmp_path)
    result = lecture_run(samples_dir, "/dev/stdout")
    assert result.returncode == 0 and result.stdout == expected
    assert os.path.islink("/dev/stdout") or os.path.exists("/dev/stdout")


def test_dev_fd_of_a_process_substitution_is_written_through(samples_dir, tmp_path):
    expected = lecture_output_bytes(samples_dir, tmp_path)
    read_end, write_end = os.pipe()
    with open(os.dup(read_end), "rb") as reader:
        process = subprocess.Popen(
            [
                *COMMAND,
                "apply",
                samples_dir / "lecture_6x6.npy",
                samples_dir / "times2.npy",
                "-o",
                f"/dev/fd/{write_end}",
                "-q",
            ],
            pass_fds=(write_end,),
            stderr=subprocess.PIPE,
        )
        os.close(write_end)
        os.close(read_end)
        received = reader.read()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert received == expected


def test_a_fifo_gets_the_data_and_stays_a_fifo(samples_dir, tmp_path):
    import threading

    expected = lecture_output_bytes(samples_dir, tmp_path)
    fifo = tmp_path / "myfifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = lecture_run(samples_dir, fifo, timeout=60)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert received == [expected] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("dangling", [False, True], ids=["to a file", "dangling"])
def test_a_symlink_survives_and_its_target_is_replaced(samples_dir, tmp_path, dangling):
    expected = lecture_output_bytes(samples_dir, tmp_path)
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "target.npy"
    if not dangling:
        target.write_bytes(b"old")
    link = tmp_path / "link.npy"
    link.symlink_to(target)
    assert lecture_run(samples_dir, link).returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == expected
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "data") == []


@pytest.mark.parametrize(("target", "message"), [("newout.npy/", "is a directory"), ("", "empty output path")])
def test_paths_that_cannot_be_files_leave_nothing(samples_dir, tmp_path, target, message):
    result = lecture_run(samples_dir, target, cwd=tmp_path)
    assert_one_error_line(result, message)
    assert sorted(os.listdir(tmp_path)) == [] and leftovers(tmp_path.parent) == []


def test_a_name_of_the_longest_length_is_written(samples_dir, tmp_path):
    name = "o" * 251 + ".npy"  # 255 characters, the most a file name may have
    assert lecture_run(samples_dir, tmp_path / name).returncode == 0
    assert os.listdir(tmp_path) == [name]


LONG_CWD = """
import os, sys
for _ in range(24):  # 24 x 200 characters: far past PATH_MAX (4096), reachable only step by step
    name = "d" * 199
    os.makedirs(name, exist_ok=True)
    os.chdir(name)
if sys.argv[1] == "run":
    os.execv(sys.executable, [sys.executable, "-m", "conv1x1_cli", "apply", *sys.argv[2:4], "-o", "out.npy", "-q"])
print(os.path.getsize("out.npy"), sorted(os.listdir(".")))
"""


def test_a_current_directory_longer_than_path_max_works(samples_dir, tmp_path):
    inputs = [str(samples_dir / "lecture_6x6.npy"), str(samples_dir / "times2.npy")]
    run = subprocess.run([sys.executable, "-c", LONG_CWD, "run", *inputs], cwd=tmp_path, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()
    check = subprocess.run([sys.executable, "-c", LONG_CWD, "check"], cwd=tmp_path, capture_output=True, text=True)
    size = len(lecture_output_bytes(samples_dir, tmp_path))
    assert check.stdout.split(" ", 1) == [str(size), "['out.npy']\n"]


def tmpfs_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not tmpfs_available(), reason="needs root and unshare to mount a small tmpfs")
def test_a_full_file_system_leaves_no_temporary(samples_dir, tmp_path):
    """A 1 MiB tmpfs, too small for the output: the right message, and nothing left in it."""
    mount = tmp_path / "small"
    mount.mkdir()
    volume = save(tmp_path, "x.npy", np.ones((256, 256, 8), np.float32))
    bank = save(tmp_path, "w.npy", np.ones((8, 8), np.float32))
    script = (
        f'mount -t tmpfs -o size=1m tmpfs "{mount}" && '
        f'"{sys.executable}" -m conv1x1_cli apply "{volume}" "{bank}" -o "{mount}/out.npy" -q; '
        f'echo "status $?"; ls -A "{mount}"'
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert "No space left on device" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout.splitlines() == ["status 1"]


@pytest.mark.parametrize("stop", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGQUIT])
def test_every_terminating_signal_cleans_up(volume, tmp_path, stop):
    out = tmp_path / "out.npy"
    process = subprocess.Popen([*COMMAND, "apply", *volume, "-o", str(out), "-q"], stderr=subprocess.PIPE)
    wait_for_the_temporary(tmp_path, process)  # the kernel is working on the output now
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (128 + stop, -stop), stderr.decode()
    assert b"Traceback" not in stderr and stderr.decode().strip() == signal.strsignal(stop)
    assert leftovers(tmp_path) == [] and not out.exists()


# --- bad input -------------------------------------------------------------------------------------------


def hostile_inputs(directory):
    """(description, bytes or array, expected fragment of the message)."""
    header = io.BytesIO()
    np.save(header, np.zeros((4, 4, 3), np.float32))
    truncated = header.getvalue()[:-10]
    enormous = io.BytesIO()
    np.lib.format.write_array_header_1_0(enormous, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6, 3)})
    zipped = io.BytesIO()
    np.savez(zipped, x=np.zeros(3))
    return [
        ("text", b"just some text\n", "not a valid .npy file"),
        ("empty", b"", "file is empty"),
        ("truncated", truncated, "truncated"),
        ("enormous", enormous.getvalue() + b"\0" * 64, "header claims"),
        ("npz", zipped.getvalue(), ".npz archive"),
        ("object", np.array([1, "a"], dtype=object), "Python objects"),
        ("structured", np.zeros(4, dtype=[("a", "<f4")]), "structured dtype"),
        ("complex", np.zeros((2, 2, 3), np.complex128), "complex dtype"),
        ("six dimensions", np.zeros((1, 1, 1, 1, 1, 3), np.float32), "6-D"),
        ("one dimension", np.zeros(3, np.float32), "1-D"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_hostile_inputs_from_files_and_stdin(tmp_path, samples_dir, case):
    _, content, fragment = hostile_inputs(tmp_path)[case]
    path = tmp_path / "bad.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content, allow_pickle=True)
    weights = save(tmp_path, "w.npy", np.ones((3, 2), np.float32))
    out = tmp_path / "out.npy"
    from_file = cli("apply", path, weights, "-o", out)
    assert_one_error_line(from_file, str(path), fragment)
    from_stdin = cli("apply", "-", weights, "-o", out, input=path.read_bytes())
    assert_one_error_line(from_stdin, "<stdin>", fragment)
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("bank", "fragment"),
    [
        (np.ones((2, 3, 3, 3)), "3x3 spatial kernel"),
        (np.ones((3,)), "must be 2-D"),
        (np.ones((1, 3, 2)), "3-D"),
        (np.ones((3, 0)), "is empty"),
    ],
)
def test_bad_banks(tmp_path, samples_dir, bank, fragment):
    x = save(tmp_path, "x.npy", np.ones((4, 4, 3), np.float32))
    w = save(tmp_path, "w.npy", bank)
    assert_one_error_line(cli("apply", x, w, "-o", tmp_path / "o.npy"), str(w), fragment)


def test_bias_of_wrong_length_names_the_file(tmp_path):
    x = save(tmp_path, "x.npy", np.ones((4, 4, 3), np.float32))
    w = save(tmp_path, "w.npy", np.ones((3, 2), np.float32))
    b = save(tmp_path, "b.npy", np.ones(5, np.float32))
    assert_one_error_line(cli("apply", x, w, "--bias", b, "-o", tmp_path / "o.npy"), str(b), "shape (2,)")


def test_empty_stdin(tmp_path, samples_dir):
    result = cli("apply", "-", samples_dir / "times2.npy", "-o", tmp_path / "o.npy", input=b"")
    assert_one_error_line(result, "<stdin>", "empty")


def test_every_readable_kind_of_file_is_read(tmp_path, rng):
    """Big-endian, Fortran order, integer images and float16 all compute correctly."""
    w = rng.standard_normal((3, 2)).astype(np.float32)
    weights = save(tmp_path, "w.npy", w)
    for index, x in enumerate(
        [
            rng.standard_normal((5, 6, 3)).astype(">f4"),
            np.asfortranarray(rng.standard_normal((5, 6, 3)).astype(np.float32)),
            rng.integers(0, 255, (5, 6, 3)).astype(np.uint8),
            rng.standard_normal((5, 6, 3)).astype(np.float16),
        ]
    ):
        out = tmp_path / f"o{index}.npy"
        assert cli("apply", save(tmp_path, f"x{index}.npy", x), weights, "-o", out, "-q").returncode == 0
        result = np.load(out)
        assert result.dtype == np.float32
        np.testing.assert_allclose(result, naive.pointwise(x.astype(np.float32), w), rtol=1e-5, atol=1e-4)


def test_nan_and_inf_survive_the_command_line(tmp_path):
    x = np.array([[[np.nan, 1.0], [np.inf, -1.0], [-np.inf, 0.0]]], np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    out = tmp_path / "o.npy"
    assert cli("apply", save(tmp_path, "x.npy", x), save(tmp_path, "w.npy", w), "-o", out, "-q").returncode == 0
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, on purpose
        expected = np.maximum(x.astype(np.float64) @ w, 0).astype(np.float32)
    np.testing.assert_array_equal(np.load(out), expected)


# --- concurrency -----------------------------------------------------------------------------------------


def test_simultaneous_runs_on_a_cold_cache(tmp_path, rng):
    x = rng.standard_normal((30, 40, 12)).astype(np.float32)
    w = rng.standard_normal((12, 20)).astype(np.float32)
    inputs = save(tmp_path, "x.npy", x), save(tmp_path, "w.npy", w)
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cold-cache")}
    processes = [
        subprocess.Popen(
            [*COMMAND, "apply", *map(str, inputs), "-o", str(tmp_path / f"o{index}.npy"), "-q"],
            stderr=subprocess.PIPE,
            env=environment,
        )
        for index in range(4)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr.decode()
    for index in range(4):
        np.testing.assert_allclose(np.load(tmp_path / f"o{index}.npy"), naive.pointwise(x, w), rtol=1e-5, atol=1e-5)
    assert any((tmp_path / "cold-cache").rglob("*.nbi"))


# --- property-based: the SPEC parser and the .npy reader ------------------------------------------------

sizes = st.integers(1, 10**30)


@given(st.lists(sizes, min_size=3, max_size=4), st.sampled_from(["x", "X", "×", " x "]))
def test_spec_parser_round_trips(values, separator):
    volume = parse_spec(separator.join(map(str, values)))
    assert volume.shape() == tuple(values)
    assert volume.pixels == (values[0] if len(values) == 4 else 1) * values[-3] * values[-2]


@given(st.text(max_size=40))
def test_spec_parser_never_crashes(text):
    try:
        volume = parse_spec(text)
    except ArgumentError:
        return
    assert all(size >= 1 for size in volume.shape()) and len(volume.shape()) in (3, 4)


valid_npy = st.builds(
    lambda shape, dtype, fortran: np.zeros(shape, dtype=dtype, order="F" if fortran else "C"),
    st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
    st.sampled_from(["<f4", ">f8", "<i2", "|u1", "<f2", "|b1"]),
    st.booleans(),
)


def npy_of(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=300),
        valid_npy.map(npy_of),
        st.tuples(valid_npy.map(npy_of), st.integers(0, 400), st.binary(max_size=8)).map(
            lambda parts: parts[0][: parts[1]] + parts[2]
        ),
    )
)
def test_npy_reader_reads_or_fails_cleanly_on_any_bytes(tmp_path, data):
    path = tmp_path / "fuzz.npy"
    path.write_bytes(data)
    try:
        with NpyInput(str(path)) as source:
            array = source.read_all()
    except InputError:
        return
    expected = np.load(io.BytesIO(data), allow_pickle=False)  # what we read, NumPy reads the same
    assert array.dtype == expected.dtype and array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)


@given(st.binary(max_size=200))
def test_header_parser_on_streams_fails_only_with_input_error(data):
    with contextlib.suppress(InputError):
        read_header(io.BytesIO(data), "<stdin>")


LOST_INTERRUPT = """
import ctypes, os, signal, sys, time
from conv1x1_cli import cli

class HalfBuilt:  # like llvmlite's objects whose construction an interruption cut short
    def __del__(self):
        raise AttributeError("'PipelineTuningOptions' object has no attribute '_as_parameter_'")

def compile_like_numba(*args, **kwargs):
    if sys.argv[1] == "interrupted":
        # llvmlite calls back into Python while Numba compiles: a Ctrl-C there is raised in the
        # callback, where Python can only print it, and the compiler then fails with its own error.
        @ctypes.CFUNCTYPE(None)
        def callback():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        callback()
    HalfBuilt()  # dropped at once: its __del__ error can only be printed
    if sys.argv[1] == "interrupted":
        raise RuntimeError("no compiled object yet for <Library 'compute_chunk'>")
    return 0

cli.main.main = compile_like_numba
cli.run()
"""


def test_ctrl_c_lost_inside_a_library_callback_still_exits_as_interrupted():
    """The signal arrives, its KeyboardInterrupt is dropped by ctypes, a half-built library object fails
    in its __del__, and the library fails: exit 130, one line."""
    result = subprocess.run(
        [sys.executable, "-c", LOST_INTERRUPT, "interrupted"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert result.stderr == "Interrupted\n"


def test_without_a_signal_errors_python_can_only_print_are_still_printed():
    result = subprocess.run([sys.executable, "-c", LOST_INTERRUPT, "quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" in result.stderr and "PipelineTuningOptions" in result.stderr


def test_a_descriptor_the_caller_did_not_give_is_refused_and_the_input_kept(samples_dir, tmp_path):
    victim = tmp_path / "victim.npy"
    shutil.copy(samples_dir / "volume_6x6x32.npy", victim)
    before = victim.read_bytes()
    for target in ("/dev/fd/3", "/proc/self/fd/3"):  # 3 is the input's own descriptor by then
        result = cli("apply", victim, samples_dir / "bank_32x8.npy", "-o", target, "-q")
        assert_one_error_line(result, target, "not a file descriptor this command was given")
        assert victim.read_bytes() == before


def test_a_loop_of_symlinks_is_an_error_and_stays_a_loop(samples_dir, tmp_path):
    (tmp_path / "loopa").symlink_to("loopb")
    (tmp_path / "loopb").symlink_to("loopa")
    result = lecture_run(samples_dir, tmp_path / "loopa")
    assert_one_error_line(result, "Too many levels of symbolic links")
    assert (tmp_path / "loopa").is_symlink() and sorted(os.listdir(tmp_path)) == ["loopa", "loopb"]


def test_dev_stdout_on_a_terminal_is_refused(samples_dir):
    import pty

    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [*COMMAND, "apply", *lecture(samples_dir), "-o", "/dev/stdout", "-q"],
            stdout=follower,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 1 and b"terminal" in result.stderr


def lecture(samples_dir):
    return [samples_dir / "lecture_6x6.npy", samples_dir / "times2.npy"]


@pytest.mark.parametrize("args", [["shapes", "28x28x192", "--filters", "32"], ["show", "{lecture}"]])
def test_table_commands_exit_141_when_the_reader_is_gone(samples_dir, args):
    words = [arg.format(lecture=samples_dir / "lecture_6x6.npy") for arg in args]
    script = f"{sys.executable} -m conv1x1_cli {' '.join(words)} | true; echo ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.stdout.split() == ["141"] and result.stderr == ""
