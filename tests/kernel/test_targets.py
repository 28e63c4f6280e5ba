"""The kernel on the machines users have: the SIMD unit read from what LLVM compiles, numba's cache
kept apart per unit, and the kernel's own tests run again compiled for an AVX2-only CPU, for plain
128-bit vectors without FMA, and on numba's portable threads.

The runs in other configurations are subprocesses (numba reads its target, and the kernel its
threading, once per process); each runs tests/kernel/test_kernel.py, or a part of it, as CI's second
and third passes over the kernel.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from naive import assert_close_to_reference

from conv1x1_cli import kernel
from conv1x1_cli.bench.isa import isa_environment, runs_here
from conv1x1_cli.costs.packing import tile_shape
from conv1x1_cli.errors import ArgumentError
from conv1x1_cli.kernel.target import compile_target, simd_unit, unit_for

ROOT = Path(__file__).resolve().parents[2]
KERNEL_TESTS = Path(__file__).with_name("test_kernel.py")
X86 = "x86_64-unknown-linux-gnu"


needs_avx2 = pytest.mark.skipif(not runs_here("avx2"), reason="this CPU cannot run AVX2 code")


def run(code_or_args, env_changes, timeout=900):
    """A fresh interpreter (python -c code, or python -m pytest args) with env_changes in its environment."""
    env = {**os.environ, **env_changes}
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def run_kernel_tests(env_changes, *selection):
    done = run(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(KERNEL_TESTS), *selection], env_changes)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    return done.stdout


# --- which unit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("triple", "cpu", "features", "unit"),
    [
        (X86, "skylake-avx512", "", "avx512"),
        (X86, "znver4", "", "avx512"),
        (X86, "haswell", "", "avx2"),
        (X86, "znver4", "+avx2,+fma,-avx512f", "avx2"),  # the features, not the name, decide
        (X86, "sandybridge", "", "avx"),  # 256-bit vectors, no FMA
        (X86, "x86-64", "", "generic"),  # SSE2
        ("arm64-apple-darwin", "apple-m1", "", "neon"),
        ("aarch64-unknown-linux-gnu", "generic", "", "neon"),
        ("powerpc64le-unknown-linux-gnu", "pwr9", "", "generic"),  # no rule of its own: plain vectors
    ],
)
def test_the_unit_is_what_llvm_compiles_for_the_target(triple, cpu, features, unit):
    assert unit_for(triple, cpu, features).name == unit


def test_this_process_packs_for_the_unit_numba_compiles_for():
    assert simd_unit() == unit_for(*compile_target())
    for filters in (3, 8, 40, 200):
        packed = kernel.pack_bank(np.ones((8, filters), np.float32), None)
        assert (packed.rows, packed.width) == tile_shape(filters, 4, simd_unit())


# --- numba's cache, one entry per unit --------------------------------------------------------------------

CACHE_PROBE = """
import numpy as np
from conv1x1_cli import kernel
from conv1x1_cli.kernel.target import simd_unit
x = (np.arange(12 * 40, dtype=np.float32).reshape(12, 40) % 7) / 3
w = np.ones((40, 24), np.float32) / 7
out = np.empty((12, 24), np.float32)
kernel.apply_packed(x, kernel.pack_bank(w, None), out, True, threads=1)
error = np.abs(out - np.maximum(x.astype(np.float64) @ w.astype(np.float64), 0)).max()
print(simd_unit().name, kernel.compilations(), error < 1e-5)
"""


@needs_avx2
def test_numbas_cache_never_hands_one_units_build_to_another(tmp_path):
    """Builds for this CPU and for an AVX2-only one share a cache directory: each run after the first of
    its kind loads its own entry (compiles nothing), and the first AVX2 run compiles rather than load
    the native build (numba keys its cache by target CPU and features)."""
    cache = {"NUMBA_CACHE_DIR": str(tmp_path)}
    avx2 = {**cache, **isa_environment("avx2")}
    runs = [("native", cache), ("avx2", avx2), ("avx2", avx2), ("native", cache)]
    seen = []
    for name, env in runs:
        done = run(CACHE_PROBE, env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        unit, compiled, right = done.stdout.split()
        seen.append((name, unit, int(compiled) > 0, right))
    native_unit = simd_unit().name
    assert seen == [
        ("native", native_unit, True, "True"),
        ("avx2", "avx2", True, "True"),
        ("avx2", "avx2", False, "True"),
        ("native", native_unit, False, "True"),
    ]


# --- the kernel's tests, compiled for other units ----------------------------------------------------------


@needs_avx2
def test_the_kernel_tests_pass_compiled_for_an_avx2_only_cpu():
    env = isa_environment("avx2")
    done = run("from conv1x1_cli.kernel.target import simd_unit; print(simd_unit().name)", env)
    assert done.stdout.split() == ["avx2"], done.stderr[-3000:]
    run_kernel_tests(env)


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="numba's generic CPU has FMA off x86 (NEON)"
)
def test_the_kernel_is_right_with_plain_vectors_and_no_fma():
    """numba's 'generic' x86-64 CPU: 128-bit vectors, each product rounded before it is added
    (llvm.fmuladd); results still within the float64 reference's bounds, the same bits whatever the
    thread count, NaN and Inf as NumPy has them."""
    env = {"NUMBA_CPU_NAME": "generic"}
    done = run("from conv1x1_cli.kernel.target import simd_unit; u = simd_unit(); print(u.name, u.fused)", env)
    assert done.stdout.split() == ["generic", "False"], done.stderr[-3000:]
    run_kernel_tests(env, "-k", "any_shape or single_bit or nan_and_inf or channel_blocks")


# --- threads on every OS ------------------------------------------------------------------------------------


def test_the_kernel_tests_pass_on_numbas_portable_threads():
    output = run_kernel_tests({"CONV1X1_THREADING": "portable"})
    assert "skipped" in output  # the pool's own tests: there is no pool


PORTABLE_SHARE = """
import os, time
import numba
import numpy as np
from conv1x1_cli import kernel
x = np.random.default_rng(0).standard_normal((6000, 512), dtype=np.float32)
w = np.random.default_rng(1).standard_normal((512, 512), dtype=np.float32)
packed = kernel.pack_bank(w, None)
out = np.empty((6000, 512), np.float32)
kernel.apply_packed(x, packed, out, True)  # compiles
best = 0.0
for _ in range(5):
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(5):
        kernel.apply_packed(x, packed, out, True)
    best = max(best, (time.process_time() - cpu) / (time.perf_counter() - wall))
pool = kernel.worker_pool()
error = np.abs(out - np.maximum(x.astype(np.float64) @ w, 0)).max()
numba.set_num_threads(1)  # the caller's own setting, for its own parallel code: capping ours, left as it is
kernel.apply_packed(x, packed, out, True)
print(pool.mode, pool.n_workers, pool.portable_launched, kernel.default_threads(), round(best, 2), error < 1e-3,
      numba.get_num_threads())
"""


def test_portable_threads_share_a_call_among_the_cores():
    """With CONV1X1_THREADING=portable a call runs on numba's threads: the CPU time of a large call is
    well above its wall time (one thread's would equal it), the result is right, and the calling
    thread's numba thread count is as it was."""
    done = run(PORTABLE_SHARE, {"CONV1X1_THREADING": "portable"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    mode, workers, launched, threads, busy_cores, right, callers_threads = done.stdout.split()
    assert (mode, workers, launched, right, callers_threads) == ("portable", "0", "True", "True", "1")
    if int(threads) < 2:
        pytest.skip("one CPU: nothing to share")
    assert float(busy_cores) > 1.3, f"{busy_cores} cores busy on average during the calls"


def test_an_unknown_threading_mode_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("CONV1X1_THREADING", "fibres")
    with pytest.raises(ArgumentError, match="CONV1X1_THREADING must be 'pool' or 'portable', not 'fibres'"):
        kernel.pool.threading_mode()


def test_the_cli_names_an_unknown_threading_mode_in_one_line(samples_dir, tmp_path):
    done = run(
        ["-m", "conv1x1_cli", "apply", str(samples_dir / "volume_28x28x192.npy"), str(samples_dir / "bank_192x32.npy"),
         "-o", str(tmp_path / "out.npy")],
        {"CONV1X1_THREADING": "fibres"},
        timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["Error: CONV1X1_THREADING must be 'pool' or 'portable', not 'fibres'"]
    assert not (tmp_path / "out.npy").exists()


def test_portable_threading_within_a_block_then_the_pool_again(rng):
    """bench times both paths in one process: portable_threading() swaps the pool out for its block only."""
    x = rng.standard_normal((4000, 64)).astype(np.float32)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    packed = kernel.pack_bank(w, None)
    before = kernel.worker_pool()
    out = np.empty((4000, 48), np.float32)
    with kernel.pool.portable_threading():
        assert kernel.worker_pool().mode == "portable"
        kernel.apply_packed(x, packed, out, True)
        assert kernel.worker_pool().portable_launched
    assert_close_to_reference(out, x, w, None, True)
    assert kernel.worker_pool() is before


# --- Apple Silicon, on paper ----------------------------------------------------------------------------------


def test_the_neon_tile_keeps_its_accumulators_in_registers_on_apple_silicon(tmp_path):
    """benchmarks/arm64_tile.py compiles the NEON tile for arm64-apple-darwin (apple-m1): both of its
    channel loops (the plain one and the one that copies the panel as it reads it) have 24 fmla
    (6 pixels x 4 vectors) and touch the stack nowhere (no spilled accumulator)."""
    done = run([str(ROOT / "benchmarks" / "arm64_tile.py")], {"NUMBA_CACHE_DIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("24 fmla (x 4 lanes x 2 = 192 FLOP)") == 2
    assert done.stdout.count("stack accesses (spills) in the loop: none") == 2
    assert "0 stores" in done.stdout and "2 stores" in done.stdout
