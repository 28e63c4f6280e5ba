"""A machine's limits and the roofline over them: how fast a layer of given FLOPs and bytes can run.

The limits are measured by ``conv1x1 bench`` (``bench/limits.py`` measures, caches and loads them);
until then conservative defaults stand in, labelled as such. Plain arithmetic on floats, no I/O.

>>> limits = MachineLimits(peak_gflops=200.0, sgemm_gflops=150.0, bandwidth_gbs=20.0, threads=2, source="hand")
>>> roofline(flops=80, bytes_moved=20, limits=limits).attainable_gflops  # 4 FLOP/B x 20 GB/s, below the peak
80.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

DEFAULT_SOURCE = "defaults (run conv1x1 bench to measure)"
# Conservative per-core figures for the defaults: a 2 GHz core with one 256-bit FMA unit does
# 2 GHz x 8 lanes x 2 flops = 32 GFLOP/s; BLAS reaches most of that; one channel of DDR4 ~ 20 GB/s.
_DEFAULT_PEAK_PER_CORE = 32.0
_DEFAULT_SGEMM_PER_CORE = 25.0
_DEFAULT_BANDWIDTH_GBS = 20.0


@dataclass(frozen=True)
class MemoryLevel:
    """One level a layer's data can stream from: its capacity (None for memory) and the bandwidths all
    threads measured reading from it and writing into it (GB/s, 1e9 bytes/s)."""

    name: str  # "L2", "L3", "DRAM"
    capacity_bytes: int | None  # for all threads together: per-core caches times the threads
    read_gbs: float
    write_gbs: float


@dataclass(frozen=True)
class MachineLimits:
    """float32 limits of this machine, all threads: GFLOP/s (1e9 FLOP/s) and GB/s (1e9 bytes/s)."""

    peak_gflops: float  # float32 compute limit used for the roofline (the measured FMA peak, all threads)
    sgemm_gflops: float  # NumPy's measured sgemm rate (reference)
    bandwidth_gbs: float  # measured memory bandwidth (large streaming copy, read + write bytes)
    threads: int
    source: str  # who measured, when, on what CPU; or DEFAULT_SOURCE
    levels: tuple[MemoryLevel, ...] = ()  # caches then memory, smallest first; empty: bandwidth_gbs alone

    def as_dict(self) -> dict:
        data = asdict(self)
        data["levels"] = list(data["levels"])  # (as JSON has it)
        return data

    @property
    def measured(self) -> bool:
        return self.source != DEFAULT_SOURCE

    @property
    def ridge_intensity(self) -> float:
        """FLOPs per byte above which a layer is compute-bound (the roofline's ridge point)."""
        return self.peak_gflops / self.bandwidth_gbs

    def for_dtype(self, dtype: str) -> MachineLimits:
        """The limits for computing in ``dtype``: float64 fills half as many vector lanes per FMA, so
        its peak (and sgemm rate) is half of float32's; float16 data is computed in float32.

        >>> MachineLimits(200.0, 150.0, 20.0, 2, "hand").for_dtype("float64").peak_gflops
        100.0
        """
        if dtype != "float64":
            return self
        return replace(
            self,
            peak_gflops=self.peak_gflops / 2,
            sgemm_gflops=self.sgemm_gflops / 2,
            source=f"{self.source}; float64 at half the float32 peak",
        )


@dataclass(frozen=True)
class Roofline:
    """Where a layer sits on a machine's roofline."""

    intensity: float  # FLOPs per byte moved
    attainable_gflops: float  # min(peak, what the level its data streams from allows)
    bound: str  # "compute" where the peak binds, "memory" where the bandwidth does
    level: str = "DRAM"  # where its working set was judged to live: "L2", "L3" or "DRAM"
    working_set: int = 0  # bytes: input + output + weights


def roofline(flops: int, bytes_moved: int, limits: MachineLimits, written_bytes: int = 0) -> Roofline:
    """The roofline of a layer that does ``flops`` while moving ``bytes_moved`` (of which it writes
    ``written_bytes``, its output, and reads the rest): its arithmetic intensity, the speed the machine
    allows it, and which roof binds.

    With measured cache levels the roof is cache-aware: the working set (every byte moved: a layer
    called again and again keeps them all) lives in the smallest level that holds it (``level_of``), and the layer
    can go no faster than that level lets it read its reads and write its writes:
    min(peak, flops / max(reads / read bandwidth, writes / write bandwidth)). Without levels (limits
    from an older bench, or the defaults), the one streaming bandwidth serves every layer.

    >>> roofline(12, 44, MachineLimits(200.0, 150.0, 20.0, 2, "hand")).bound
    'memory'
    >>> levels = (MemoryLevel("L2", 2_000_000, 400.0, 300.0), MemoryLevel("DRAM", None, 50.0, 40.0))
    >>> limits = MachineLimits(200.0, 150.0, 45.0, 2, "hand", levels)
    >>> roofline(1_000_000, 1_000_000, limits, written_bytes=500_000)   # in L2: 0.5 MB written at 300
    Roofline(intensity=1.0, attainable_gflops=200.0, bound='compute', level='L2', working_set=1000000)
    >>> round(roofline(4_000_000, 4_000_000, limits, written_bytes=1_000_000).attainable_gflops, 3)  # 3 MB read at 50
    66.667
    """
    intensity = flops / bytes_moved
    if not limits.levels:
        attainable = min(limits.peak_gflops, intensity * limits.bandwidth_gbs)
        bound = "compute" if intensity >= limits.ridge_intensity else "memory"
        return Roofline(intensity, attainable, bound, "DRAM", bytes_moved)
    level = level_of(bytes_moved, limits.levels)
    reads = bytes_moved - written_bytes
    seconds = max(reads / (level.read_gbs * 1e9), written_bytes / (level.write_gbs * 1e9))
    streaming = flops / seconds / 1e9 if seconds > 0 else math.inf
    attainable = min(limits.peak_gflops, streaming)
    return Roofline(intensity, attainable, "compute" if streaming >= limits.peak_gflops else "memory",
                    level.name, bytes_moved)  # fmt: skip


def level_of(working_set: int, levels: tuple[MemoryLevel, ...]) -> MemoryLevel:
    """The smallest level that holds ``working_set`` bytes in half of it (memory holds everything): a
    cache shares its capacity with everything else the program touches, and bench measured each
    level's bandwidths on buffers of half its capacity.

    >>> levels = (MemoryLevel("L2", 2 << 20, 400.0, 300.0), MemoryLevel("L3", 32 << 20, 200.0, 180.0),
    ...           MemoryLevel("DRAM", None, 50.0, 40.0))
    >>> [level_of(size, levels).name for size in (900_000, 1_100_000, 14_000_000, 17_000_000)]
    ['L2', 'L3', 'L3', 'DRAM']
    """
    for level in levels:
        if level.capacity_bytes is None or 2 * working_set <= level.capacity_bytes:
            return level
    return levels[-1]


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask where the system has one): the
    threads that limits are measured on, and that the kernel and a local cluster are sized to."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_limits() -> MachineLimits:
    """Conservative stand-ins for a machine nobody has measured, labelled ``DEFAULT_SOURCE``."""
    cores = os.cpu_count() or 1
    return MachineLimits(
        peak_gflops=_DEFAULT_PEAK_PER_CORE * cores,
        sgemm_gflops=_DEFAULT_SGEMM_PER_CORE * cores,
        bandwidth_gbs=_DEFAULT_BANDWIDTH_GBS,
        threads=cores,
        source=DEFAULT_SOURCE,
    )


def best_limits(first: MachineLimits, second: MachineLimits) -> MachineLimits:
    """Each limit at the better of two measurements, made before and after the layers.

    Noise on a shared host only ever lowers a limit: one run measured an FMA peak of 116 GFLOP/s,
    half of the 228-232 measured before and after it, and every layer seemed above the peak.

    >>> best_limits(MachineLimits(116.0, 190.0, 28.0, 2, "a"), MachineLimits(230.0, 185.0, 29.0, 2, "b"))
    MachineLimits(peak_gflops=230.0, sgemm_gflops=190.0, bandwidth_gbs=29.0, threads=2, source='a', levels=())
    """
    levels = first.levels
    if [level.name for level in first.levels] == [level.name for level in second.levels]:
        levels = best_levels(first.levels, second.levels)
    return replace(
        first,
        peak_gflops=max(first.peak_gflops, second.peak_gflops),
        sgemm_gflops=max(first.sgemm_gflops, second.sgemm_gflops),
        bandwidth_gbs=max(first.bandwidth_gbs, second.bandwidth_gbs),
        levels=levels,
    )


def best_levels(levels: tuple[MemoryLevel, ...], others: Sequence[MemoryLevel]) -> tuple[MemoryLevel, ...]:
    """``levels``, each read and write bandwidth at the best of its own and those measured again of the
    same level in ``others`` (which may hold some levels only, or one several times).

    >>> dram = MemoryLevel("DRAM", None, 27.0, 13.0)
    >>> best_levels((dram,), [replace(dram, write_gbs=15.0), replace(dram, read_gbs=26.0)])
    (MemoryLevel(name='DRAM', capacity_bytes=None, read_gbs=27.0, write_gbs=15.0),)
    """
    best = []
    for level in levels:
        again = [other for other in others if other.name == level.name]
        best.append(
            replace(
                level,
                read_gbs=max([level.read_gbs, *(other.read_gbs for other in again)]),
                write_gbs=max([level.write_gbs, *(other.write_gbs for other in again)]),
            )
        )
    return tuple(best)
