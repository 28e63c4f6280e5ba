"""The machine the speed suite runs on: what it is, what it can do, and the limits cached for later.

- ``measure_limits``: its FMA peak (the kernel's probe), NumPy's sgemm rate and its memory bandwidth,
  measured now; ``save_limits`` caches them and ``load_limits`` reads them back for ``conv1x1 shapes``'
  roofline (one small JSON read; conservative defaults until ``conv1x1 bench`` has run, or when the
  cache cannot be read);
- ``describe_machine``: CPU, versions and BLAS, with warnings about what distorts timings;
- ``BackgroundLoad``: how busy the rest of the machine was meanwhile.

NumPy and Numba are imported only by the functions that measure, so ``load_limits`` costs nothing.
"""

from __future__ import annotations

import datetime
import importlib.util
import itertools
import json
import math
import os
import pathlib
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from ..costs.roofline import MachineLimits, MemoryLevel, default_limits
from ..sources.atomic import Replacement

CACHE_FILE = "machine.json"
ITEMSIZE = 4  # float32 throughout
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class MachineInfo:
    """What the numbers were measured on; ``warnings`` name conditions that distort them."""

    cpu: str
    logical_cores: int
    python: str
    numpy: str
    numba: str
    torch: str | None
    blas: list[dict]  # NumPy's BLAS as threadpoolctl reports it: internal_api, architecture, num_threads, ...
    openblas_overrides: dict[str, str]  # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when set
    load_average: float | None  # 1-minute load average when the run started
    simd: str  # the SIMD unit our kernel is compiled for, and numba's target CPU
    threading: str  # how our calls are shared among threads
    pinned: dict[str, str] = field(default_factory=dict)  # bench --isa's variables (bench.isa)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def describe_machine(torch: bool = True, pinned: dict[str, str] | None = None) -> MachineInfo:
    pinned = pinned or {}
    torch_version = _version("torch") if torch and importlib.util.find_spec("torch") is not None else None
    overrides = {name: os.environ[name] for name in OPENBLAS_OVERRIDES if name in os.environ}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cores = os.cpu_count() or 1
    info = MachineInfo(
        cpu=cpu_model(),
        logical_cores=cores,
        python=platform.python_version(),
        numpy=_version("numpy") or "unknown",
        numba=_version("numba") or "unknown",
        torch=torch_version,
        blas=numpy_blas(),
        openblas_overrides=overrides,
        load_average=load,
        simd=kernel_target(),
        threading=kernel_threading(),
        pinned=pinned,
    )
    if overrides and not pinned:
        settings = ", ".join(f"{name}={value}" for name, value in overrides.items())
        info.warnings.append(
            f"{settings} is set: it forces an older OpenBLAS kernel and makes NumPy look slow; "
            "rerun with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
        )
    if load is not None and load > 0.5 * cores:
        info.warnings.append(f"load average {load:.1f} on {cores} logical cores: other work may distort the timings")
    return info


def kernel_target() -> str:
    """'avx2: 16 x 256-bit registers, FMA (numba target haswell)': what our kernel is compiled for."""
    from ..kernel.target import compile_target, simd_unit

    return f"{simd_unit().describe()} (numba target {compile_target()[1]})"


def kernel_threading() -> str:
    """How our calls use the cores: 'our pool, 2 threads; portable: numba's omp layer', say."""
    import numba

    from ..kernel.pool import default_threads, threading_mode

    try:
        layer = f"numba's {numba.threading_layer()} layer"
    except ValueError:  # (no parallel code has run yet: numba has not chosen)
        layer = "numba's threading layer"
    if threading_mode() == "pool":
        return f"our pool, {default_threads()} threads; portable: {layer}"
    return f"{layer}, {default_threads()} threads"


def _version(package: str) -> str | None:
    """An installed package's version, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def numpy_blas() -> list[dict]:
    """NumPy's BLAS libraries as threadpoolctl sees them (empty when threadpoolctl is missing)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "architecture", "num_threads", "version", "threading_layer", "filepath")
    return [
        {key: entry.get(key) for key in keys}
        for entry in threadpool_info()
        if entry.get("user_api") == "blas" and "torch" not in str(entry.get("filepath", ""))
    ]


def measure_limits(threads: int | None = None, quick: bool = False) -> MachineLimits:
    """Measure the FMA peak (Numba), NumPy's sgemm rate and the memory bandwidth, now."""
    from ..kernel import probe

    peak = probe.fma_peak_gflops(threads, seconds=0.1 if quick else 0.5)
    used = threads or probe.available_threads()
    date = datetime.date.today().isoformat()
    return MachineLimits(
        peak_gflops=peak,
        sgemm_gflops=sgemm_gflops(768 if quick else 2048),
        bandwidth_gbs=bandwidth_gbs(used, 64 if quick else 256),
        threads=used,
        source=f"measured {date} by conv1x1 bench on {cpu_model()}, {used} threads",
        levels=measure_levels(used, quick),
    )


def measure_levels(threads: int, quick: bool = False, only: str | None = None) -> tuple[MemoryLevel, ...]:
    """Read and write bandwidths of all threads in each cache level this system reports (each thread
    sweeping half of its share of the level, so that it stays there) and in memory (four times the
    last level, at least 256 MiB); with ``only``, of that level alone."""
    from ..kernel.streams import stream_gbs

    seconds = 0.02 if quick else 0.15
    capacities = cache_capacities(threads)
    largest = max([capacity for _, capacity in capacities] + [64 << 20])
    memory_share = (64 << 20 if quick else max(256 << 20, 4 * largest)) // threads
    shares = [(name, capacity, capacity // threads // 2) for name, capacity in capacities]
    levels = []
    for name, capacity, share in [*shares, ("DRAM", None, memory_share)]:
        if only is None or name == only:
            read, write = (stream_gbs(kind, share, threads, seconds) for kind in ("read", "write"))
            levels.append(MemoryLevel(name, capacity, read, write))
    return tuple(levels)


def cache_capacities(threads: int, root: str = "/sys/devices/system/cpu/cpu0/cache") -> list[tuple[str, int]]:
    """(name, bytes) of the data caches from L2 up, for ``threads`` threads together: a private cache
    counts once per thread, a shared one once per group of CPUs sharing it (Linux's sysfs; empty
    elsewhere, where the roofline falls back to one bandwidth for every layer)."""
    found = []
    for index in sorted(pathlib.Path(root).glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _size_bytes((index / "size").read_text().strip())
            sharing = len(_cpu_list((index / "shared_cpu_list").read_text().strip()))
        except (OSError, ValueError):
            continue
        if level >= 2 and kind in ("Unified", "Data"):
            found.append((f"L{level}", size * max(1, -(-threads // max(1, sharing)))))
    return sorted(found)


def _size_bytes(text: str) -> int:
    """``1024K``, ``32M`` or a plain number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def _cpu_list(text: str) -> list[int]:
    """``0-3,8`` as [0, 1, 2, 3, 8]."""
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-N rate of NumPy's float32 ``size``-square matrix product, at its default threads."""
    import numpy as np

    rng = np.random.default_rng(0)
    left, right = rng.random((size, size), np.float32), rng.random((size, size), np.float32)
    product = np.empty((size, size), np.float32)
    np.matmul(left, right, out=product)
    best = min(seconds_of(lambda: np.matmul(left, right, out=product)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def bandwidth_gbs(threads: int = 1, mebibytes: int = 256, repeats: int = 5) -> float:
    """Best-of-N streaming copy between two ``mebibytes`` arrays, counting bytes read + written.

    The copy is split into ``threads`` slices copied at once (NumPy releases the GIL), since one
    core alone rarely saturates memory. Write-allocate traffic is not counted."""
    import numpy as np

    count = mebibytes * 2**20 // ITEMSIZE
    source, target = np.ones(count, np.float32), np.zeros(count, np.float32)
    bounds = [count * part // threads for part in range(threads + 1)]
    slices = [slice(start, stop) for start, stop in itertools.pairwise(bounds)]

    def copy_slice(part: slice) -> None:
        np.copyto(target[part], source[part])

    with ThreadPoolExecutor(max_workers=threads) as pool:

        def copy_all() -> None:
            list(pool.map(copy_slice, slices))

        copy_all()
        best = min(seconds_of(copy_all) for _ in range(repeats))
    return 2 * count * ITEMSIZE / best / 1e9


class BackgroundLoad:
    """How much CPU the rest of the machine used since creation, as a % of all cores (Linux only):
    busy time from /proc/stat minus this process's own CPU time."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                ticks = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        busy = (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # fields past steal double-count guests
        own = sum(os.times()[:2])
        return time.perf_counter(), busy, own

    def percent(self) -> float | None:
        now = self._sample()
        if self._start is None or now is None:
            return None
        wall = now[0] - self._start[0]
        other = (now[1] - self._start[1]) - (now[2] - self._start[2])
        return max(0.0, 100 * other / (wall * (os.cpu_count() or 1))) if wall > 0 else None


def cache_path() -> pathlib.Path:
    """``$CONV1X1_CACHE_DIR/machine.json`` if set, else ``$XDG_CACHE_HOME/conv1x1/machine.json``
    (``~/.cache/conv1x1/machine.json`` when XDG_CACHE_HOME is unset or empty)."""
    override = os.environ.get("CONV1X1_CACHE_DIR")
    if override:
        return pathlib.Path(override) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "conv1x1" / CACHE_FILE


def load_limits() -> MachineLimits:
    """The limits the last ``conv1x1 bench`` saved, or ``default_limits()`` when there are none
    or the cache is unreadable, corrupt or from another version (never raises)."""
    path = cache_path()
    try:
        limits = _limits_from(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return default_limits()
    return replace(limits, source=f"{limits.source} (saved in {path})")


def _limits_from(stored: dict) -> MachineLimits:
    levels = tuple(
        MemoryLevel(
            str(level["name"]),
            None if level["capacity_bytes"] is None else int(level["capacity_bytes"]),
            float(level["read_gbs"]),
            float(level["write_gbs"]),
        )
        for level in stored.get("levels", ())  # (limits saved before there were levels have none)
    )
    limits = MachineLimits(
        peak_gflops=float(stored["peak_gflops"]),
        sgemm_gflops=float(stored["sgemm_gflops"]),
        bandwidth_gbs=float(stored["bandwidth_gbs"]),
        threads=int(stored["threads"]),
        source=str(stored["source"]),
        levels=levels,
    )
    rates: tuple[float, ...] = (limits.peak_gflops, limits.sgemm_gflops, limits.bandwidth_gbs)
    rates += tuple(rate for level in levels for rate in (level.read_gbs, level.write_gbs))
    if not all(math.isfinite(rate) and rate > 0 for rate in rates) or limits.threads < 1:
        raise ValueError("limits must be positive and finite")
    return limits


def save_limits(limits: MachineLimits) -> None:
    """Write ``limits`` to ``cache_path()`` atomically (a reader sees the old file or the new one,
    never half of one) and durably. Raises OSError if the cache directory cannot be written."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with Replacement(str(path)) as new:
        new.file.write((json.dumps(limits.as_dict(), indent=2) + "\n").encode("utf-8"))
        new.file.flush()
        os.fsync(new.file.fileno())


def seconds_of(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started
