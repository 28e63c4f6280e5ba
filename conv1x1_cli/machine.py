"""This machine's speed limits for the roofline: compute peak, sgemm rate, memory bandwidth.

``conv1x1 bench`` measures them (see ``bench.py``) and saves them with ``save_limits``; anything
else (``conv1x1 shapes``' roofline column) reads them back with ``load_limits``, which costs one
small JSON read. Before the first bench run, or when the cache cannot be read, ``load_limits``
returns conservative defaults whose ``source`` says so. Imports neither NumPy nor Numba.

>>> limits = MachineLimits(peak_gflops=200.0, sgemm_gflops=150.0, bandwidth_gbs=20.0, threads=2, source="hand")
>>> limits.attainable_gflops(intensity=4.0)  # memory-bound: 4 FLOPs/byte x 20 GB/s
80.0
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from dataclasses import asdict, dataclass, replace

CACHE_FILE = "machine.json"
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

    def attainable_gflops(self, intensity: float) -> float:
        """The roofline: min(peak, intensity x bandwidth), for ``intensity`` FLOPs per byte moved."""
        return min(self.peak_gflops, intensity * self.bandwidth_gbs)


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_limits() -> MachineLimits:
    cores = os.cpu_count() or 1
    return MachineLimits(
        peak_gflops=_DEFAULT_PEAK_PER_CORE * cores,
        sgemm_gflops=_DEFAULT_SGEMM_PER_CORE * cores,
        bandwidth_gbs=_DEFAULT_BANDWIDTH_GBS,
        threads=cores,
        source=DEFAULT_SOURCE,
    )


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
    try:
        stored = json.loads(cache_path().read_text(encoding="utf-8"))
        return _limits_from(stored)
    except (OSError, ValueError, TypeError, KeyError):
        return default_limits()


def _limits_from(stored: dict) -> MachineLimits:
    limits = MachineLimits(
        peak_gflops=float(stored["peak_gflops"]),
        sgemm_gflops=float(stored["sgemm_gflops"]),
        bandwidth_gbs=float(stored["bandwidth_gbs"]),
        threads=int(stored["threads"]),
        source=str(stored["source"]),
    )
    rates = (limits.peak_gflops, limits.sgemm_gflops, limits.bandwidth_gbs)
    if not all(math.isfinite(rate) and rate > 0 for rate in rates) or limits.threads < 1:
        raise ValueError("limits must be positive and finite")
    return limits


def save_limits(limits: MachineLimits) -> None:
    """Write ``limits`` to ``cache_path()`` atomically: a temporary file beside it is renamed into
    place, so a reader sees the old file or the new one, never half of one. Raises OSError if the
    cache directory cannot be written."""
    import tempfile  # only writers pay for it; load_limits stays a plain JSON read

    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(limits.as_dict(), indent=2) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
