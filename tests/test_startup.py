"""Start-up: what the light commands import, and where the compiled kernel is cached."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import naive
import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "conv1x1_cli"


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["shapes", "28x28x192", "--filters", "32"],
        ["shapes", "28x28x192", "--filters", "32", "--format", "json"],
    ],
)
def test_light_commands_never_import_numba(args):
    code = (
        "import sys\n"
        "from conv1x1_cli.cli import main\n"
        f"main({args!r}, standalone_mode=False)\n"
        "assert 'numba' not in sys.modules, 'numba was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def read_only_mount_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / / 2>/dev/null"], capture_output=True)
    return probe.returncode == 0


CONVOLVE = (
    "import numpy as np\n"
    "from conv1x1_cli import conv1x1\n"
    "print(conv1x1(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)).tolist())\n"
)


@pytest.mark.skipif(not read_only_mount_available(), reason="needs root and unshare to make a read-only mount")
def test_read_only_package_caches_in_the_user_cache_directory(tmp_path):
    site, home = tmp_path / "site", tmp_path / "home"
    shutil.copytree(PACKAGE, site / "conv1x1_cli", ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("NUMBA_", "XDG_"))}
    environment.update(HOME=str(home), PYTHONPATH=str(site), NUMBA_DEBUG_CACHE="1")
    script = f'mount --bind -o ro "{site}" "{site}" && exec "{sys.executable}" -c "$0"'

    def convolve():
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, CONVOLVE],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().endswith("[[3.0, 3.0], [3.0, 3.0]]")
        return result.stdout

    first = convolve()
    assert not list((site / "conv1x1_cli").rglob("*.nbi")), "nothing may be written into the package"
    cached = list((home / ".cache").rglob("*.nbi"))
    assert cached, f"no cache index under {home}/.cache; numba said:\n{first[-2000:]}"
    second = convolve()
    assert "data loaded from" in second and "data saved to" not in second


def test_the_first_apply_compiles_once_and_says_so(tmp_path, samples_dir):
    """On a cold cache the summary says the time went to compiling; the next run loads the cached code.
    So does a run whose few pixels need a kind of tile that the runs before did not."""
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cold-cache")}
    bank = str(samples_dir / "bank_192x32.npy")
    four_pixels = tmp_path / "four_pixels.npy"
    np.save(four_pixels, np.ones((2, 2, 192), np.float32))  # fewer pixels than a tile's 6 rows

    def summary(volume) -> str:
        command = [sys.executable, "-m", "conv1x1_cli", "apply", str(volume), bank, "-o", str(tmp_path / "o.npy")]
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
        assert result.returncode == 0, result.stderr
        return " ".join(result.stderr.split())

    volume = samples_dir / "volume_28x28x192.npy"
    first, second, few, few_again = summary(volume), summary(volume), summary(four_pixels), summary(four_pixels)
    assert "compiling it" in first and "cached for later runs" in first, first
    assert "loading it" in second and "compiling" not in second, second
    assert "compiling it" in few, few
    assert "loading it" in few_again and "compiling" not in few_again, few_again


def test_a_small_first_run_compiles_only_the_one_thread_code(tmp_path, samples_dir):
    """The bundled sample's 0.2 ms of work runs on one thread: on a cold cache its run compiles that
    code alone (1.5 s here), not the worker pool's too (3 s more), which could not save it a millisecond."""
    cache = tmp_path / "cold-cache"
    out = tmp_path / "out.npy"
    command = [sys.executable, "-m", "conv1x1_cli", "apply", str(samples_dir / "volume_28x28x192.npy")]
    command += [str(samples_dir / "bank_192x32.npy"), "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "compiling it" in result.stderr
    compiled = [path.name for path in cache.rglob("*.nbi")]
    assert any("run_alone" in name for name in compiled), compiled
    assert not [name for name in compiled if "serve" in name or "run_pooled" in name or "run_portable" in name]
    volume, bank = np.load(samples_dir / "volume_28x28x192.npy"), np.load(samples_dir / "bank_192x32.npy")
    naive.assert_close_to_reference(np.load(out), volume, bank)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="with one CPU every call runs alone")
def test_a_large_first_run_compiles_only_the_pool_code(tmp_path):
    """A run shared out over the pool does not compile the one-thread code it will not run (0.5 s of
    a 3 s cold start here)."""
    rng = np.random.default_rng(5)
    volume, bank = rng.standard_normal((128, 128, 64), np.float32), rng.standard_normal((64, 64), np.float32)
    np.save(tmp_path / "x.npy", volume)  # 2^26 multiply-adds: shared out when threads are named
    np.save(tmp_path / "w.npy", bank)
    cache, out = tmp_path / "cold-cache", tmp_path / "out.npy"
    command = [sys.executable, "-m", "conv1x1_cli", "apply", str(tmp_path / "x.npy"), str(tmp_path / "w.npy")]
    command += ["-o", str(out), "--threads", "2", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    compiled = [path.name for path in cache.rglob("*.nbi")]
    assert any("run_pooled" in name for name in compiled), compiled
    assert not [name for name in compiled if "run_alone" in name], compiled
    naive.assert_close_to_reference(np.load(out), volume, bank)


@pytest.mark.skipif(not read_only_mount_available(), reason="needs root and unshare to make a read-only mount")
def test_read_only_package_and_home_compile_for_the_run_with_one_warning(tmp_path, samples_dir):
    site, home = tmp_path / "site", tmp_path / "home"
    shutil.copytree(PACKAGE, site / "conv1x1_cli", ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("NUMBA_", "XDG_"))}
    environment.update(HOME=str(home), PYTHONPATH=str(site))
    out = tmp_path / "out.npy"
    command = f'"{sys.executable}" -m conv1x1_cli apply "{samples_dir / "lecture_6x6.npy"}" '
    command += f'"{samples_dir / "times2.npy"}" -o "{out}"'  # (not -q: it silences warnings too)
    script = f'mount --bind -o ro "{site}" "{site}" && mount --bind -o ro "{home}" "{home}" && {command}'
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=environment, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "warning: Numba's cache cannot be written (the package and the user cache directory are read-only): "
        "the kernel is compiled for this run only; set NUMBA_CACHE_DIR to keep it"
    )
    assert [line for line in lines if "warning" in line or "Warning" in line] == lines[:1]
    assert any("MACs" in line for line in lines[1:])  # then the summary, and nothing else of note
    np.testing.assert_array_equal(np.load(out)[..., 0], 2 * np.load(samples_dir / "lecture_6x6.npy"))
    assert not list(home.rglob("*")) and not list((site / "conv1x1_cli").rglob("*.nbi"))
