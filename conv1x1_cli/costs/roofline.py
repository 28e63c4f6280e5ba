"""A machine's limits and the roofline over them: how fast a layer of given FLOPs and bytes can run.

The limits are measured by ``conv1x1 bench`` (``bench/limits.py`` measures, caches and loads them);
until then conservative defaults stand in, labelled as such. Plain arithmetic on floats, no I/O.

>>> limits = MachineLimits(peak_gflops=200.0, sgemm_gflops=150.0, bandwidth_gbs=20.0, threads=2, source="hand")
>>> roofline(flops=80, bytes_moved=20, limits=limits)  # 4 FLOP/B x 20 GB/s = 80 GFLOP/s, below the peak
Roofline(intensity=4.0, attainable_gflops=80.0, bound='memory')
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

DEFAULT_SOURCE = "defaults (run conv1x1 bench to measure)"
# Conservative per-core figures for the defaults: a 2 GHz core with one 256-bit FMA unit does
# 2 GHz x 8 lanes x 2 flops = 32 GFLOP/s; BLAS reaches most of that; one channel of DDR4 ~ 20 GB/s.
_DEFAULT_PEAK_PER_CORE = 32.0
_DEFAULT_SGEMM_PER_CORE = 25.0
_DEFAULT_BANDWIDTH_GBS = 20.0


@dataclass(frozen=True)
class MachineLimits:
    """float32 limits of this machine, all threads: GFLOP/s (1e9 FLOP/s) and GB/s (1e9 bytes/s)."""

    peak_gflops: float  # float32 compute limit used for the roofline (the measured FMA peak, all threads)
    sgemm_gflops: float  # NumPy's measured sgemm rate (reference)
    bandwidth_gbs: float  # measured memory bandwidth (large streaming copy, read + write bytes)
    threads: int
    source: str  # who measured, when, on what CPU; or DEFAULT_SOURCE

    def as_dict(self) -> dict:
        return asdict(self)

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
    attainable_gflops: float  # min(peak, intensity x bandwidth)
    bound: str  # "compute" at or above the ridge point, "memory" below it


def roofline(flops: int, bytes_moved: int, limits: MachineLimits) -> Roofline:
    """The roofline of a layer that does ``flops`` while moving ``bytes_moved``: its arithmetic
    intensity, the speed the machine allows it, min(peak, intensity x bandwidth), and which roof binds.

    >>> roofline(12, 44, MachineLimits(200.0, 150.0, 20.0, 2, "hand")).bound
    'memory'
    """
    intensity = flops / bytes_moved
    attainable = min(limits.peak_gflops, intensity * limits.bandwidth_gbs)
    return Roofline(intensity, attainable, "compute" if intensity >= limits.ridge_intensity else "memory")


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
    MachineLimits(peak_gflops=230.0, sgemm_gflops=190.0, bandwidth_gbs=29.0, threads=2, source='a')
    """
    return replace(
        first,
        peak_gflops=max(first.peak_gflops, second.peak_gflops),
        sgemm_gflops=max(first.sgemm_gflops, second.sgemm_gflops),
        bandwidth_gbs=max(first.bandwidth_gbs, second.bandwidth_gbs),
    )
