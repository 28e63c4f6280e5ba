"""The speed suite behind ``conv1x1 bench``: real pointwise layers, ours against NumPy and PyTorch.

Data only: ``run_bench`` returns a ``BenchReport`` of dataclasses (``as_dict()`` for JSON); it
never prints. The table is ``render``'s job, or ``benchmarks/bench_suite.py``'s.

What is timed, per layer, in one process, side by side: in rounds of one block of calls per
contender (the order rotating each round), each block after a pause of ``SETTLE_SECONDS``:

- ours: ``conv1x1(x, w, threads=threads)`` through the public API, float32, output allocation included;
- ours, portable (where the kernel's own pool runs, Linux): the same call with its work shared out by
  numba's threading layer (``kernel.pool.portable_threading``), as on macOS and Windows;
- NumPy: ``np.maximum(x.reshape(-1, C) @ w, 0)`` at NumPy's default BLAS threads, allocations included;
- PyTorch (when importable): ``torch.relu_(F.conv2d(x, weight))`` with ``x`` in ``channels_last``
  memory format (NumPy's NHWC memory, no copy), torch's default threads, no autograd.

Why blocks after a pause rather than alternating single calls: OpenBLAS's worker threads keep
spinning for about 100 ms after each NumPy call (measured here: our kernel run within 50 ms of a
NumPy matmul ran at 84 GFLOP/s, after 100 ms at 196), and PyTorch's OpenMP workers likewise, so
whoever runs right after another contender shares its cores. The first call of each block (which
wakes the contender's own sleeping threads) is not timed. The block length comes from the fastest of
a few calls of each contender, made the same way (after a pause, the first call untimed).

Medians of repeats, after warm-up; GFLOP/s count ``flops = 2·N·H·W·C·F`` (no bias). The roofline
moves ``(input + output + weights) × 4`` bytes per layer; attainable = min(FMA peak, intensity ×
bandwidth), with the limits measured in the same run, before and after the layers, each at the better
of the two (and saved for ``conv1x1 shapes``); the FMA peak is probed again, briefly, before each
layer, and the level a memory-bound layer streams from is measured again before it, the best of every
probe being the limit (``peak_between_layers``, ``level_between_layers``).

>>> layer = BenchLayer("GoogLeNet 3a 1x1", 1, 28, 28, 192, 64)
>>> layer.flops, layer.bytes_moved
(19267584, 851968)
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..costs.layers import layer_cost
from ..costs.roofline import MachineLimits, MemoryLevel, Roofline, best_levels, best_limits, roofline
from ..costs.volume import Volume
from ..kernel.pool import portable_threading, threading_mode
from .machine import (
    BackgroundLoad,
    MachineInfo,
    describe_machine,
    kernel_threading,
    measure_levels,
    measure_limits,
    save_limits,
    seconds_of,
)


@dataclass(frozen=True)
class BenchLayer:
    """One pointwise layer of the suite: N images of H x W pixels, C channels in, F filters out."""

    name: str
    batch: int
    height: int
    width: int
    channels: int
    filters: int
    dtype: str = "float32"  # the input's and bank's; float64 layers run against float64 NumPy and PyTorch

    @property
    def volume(self) -> Volume:
        return Volume(self.batch, self.height, self.width, self.channels, batched=self.batch > 1)

    @property
    def spec(self) -> str:
        batch = f"{self.batch}x" if self.batch > 1 else ""
        dtype = "" if self.dtype == "float32" else f" {self.dtype}"
        return f"{batch}{self.height}x{self.width}x{self.channels}→{self.filters}{dtype}"

    @property
    def flops(self) -> int:
        """2·N·H·W·C·F: a multiply and an add per MAC; the suite runs without bias."""
        return layer_cost(self.volume, self.filters, bias=False).flops

    @property
    def bytes_moved(self) -> int:
        """Input + output + weights in the layer's dtype, each read or written once."""
        cost = layer_cost(self.volume, self.filters, bias=False, dtype=self.dtype)
        return cost.input_bytes + cost.output_bytes + cost.weight_bytes

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (arithmetic intensity)."""
        return self.flops / self.bytes_moved

    @property
    def output_bytes(self) -> int:
        return layer_cost(self.volume, self.filters, bias=False, dtype=self.dtype).output_bytes

    def roofline(self, limits: MachineLimits) -> Roofline:
        """Where this layer sits on the roofline of a machine with these limits (cache-aware when they
        have levels: its working set of input, output and weights, called again and again)."""
        return roofline(self.flops, self.bytes_moved, limits.for_dtype(self.dtype), written_bytes=self.output_bytes)


SUITE: tuple[BenchLayer, ...] = (
    BenchLayer("GoogLeNet 3a 1x1", 1, 28, 28, 192, 64),
    BenchLayer("GoogLeNet 3a 5x5 reduce", 1, 28, 28, 192, 16),
    BenchLayer("GoogLeNet 4a 1x1", 1, 14, 14, 480, 192),
    BenchLayer("GoogLeNet 5b 1x1", 1, 7, 7, 832, 384),
    BenchLayer("ResNet-50 conv2 expand", 1, 56, 56, 64, 256),
    BenchLayer("ResNet-50 conv2 reduce", 1, 56, 56, 256, 64),
    BenchLayer("ResNet-50 conv3 reduce", 1, 28, 28, 512, 128),
    BenchLayer("ResNet-50 conv4 reduce", 1, 14, 14, 1024, 256),
    BenchLayer("ResNet-50 conv4 expand", 1, 14, 14, 256, 1024),
    BenchLayer("ResNet-50 conv5 reduce", 1, 7, 7, 2048, 512),
    BenchLayer("MobileNet pw 2", 1, 112, 112, 32, 64),
    BenchLayer("MobileNet pw 8", 1, 14, 14, 512, 512),
    # 1000 float32 filters end in part of a panel with AVX-512, AVX2 and NEON (kernel._panel_tail).
    BenchLayer("SqueezeNet conv10", 1, 13, 13, 512, 1000),
    BenchLayer("RGB stem", 1, 224, 224, 3, 64),
    BenchLayer("hyperspectral 200→8", 1, 512, 512, 200, 8),
    BenchLayer("ResNet-50 conv2 reduce N=8", 8, 56, 56, 256, 64),
    BenchLayer("GoogLeNet 3a 1x1 N=32", 32, 28, 28, 192, 64),
    BenchLayer("ResNet-50 conv5 reduce N=32", 32, 7, 7, 2048, 512),
    # float64, against NumPy's dgemm and PyTorch's float64 conv2d: half the float32 peak.
    BenchLayer("GoogLeNet 3a 1x1", 1, 28, 28, 192, 64, "float64"),
    BenchLayer("GoogLeNet 4a 1x1", 1, 14, 14, 480, 192, "float64"),
    BenchLayer("ResNet-50 conv2 reduce", 1, 56, 56, 256, 64, "float64"),
    BenchLayer("ResNet-50 conv4 reduce", 1, 14, 14, 1024, 256, "float64"),
    BenchLayer("MobileNet pw 8", 1, 14, 14, 512, 512, "float64"),
)
QUICK_NAMES = ("GoogLeNet 3a 1x1", "ResNet-50 conv2 reduce", "ResNet-50 conv5 reduce")


def quick_layers() -> list[BenchLayer]:
    """The layers ``--quick`` runs: those of QUICK_NAMES, in float32 only."""
    return [layer for layer in SUITE if layer.name in QUICK_NAMES and layer.dtype == "float32"]


# Calls per contender whose fastest sizes the blocks.
ESTIMATE_CALLS = 5
# Long enough for OpenBLAS's spinning workers (and OpenMP's) to park after the previous contender.
SETTLE_SECONDS = 0.15


@dataclass(frozen=True)
class Timing:
    """How long the repeats should run: about ``target_seconds`` per contender, at least ``min_repeats``,
    spread over ``rounds`` blocks."""

    target_seconds: float = 0.3
    layer_budget_seconds: float = 1.5  # cap on the time spent in calls for one layer, all contenders
    min_repeats: int = 6
    warmups: int = 2
    rounds: int = 3

    def repeats(self, call_seconds: Sequence[float]) -> int:
        fastest, together = min(call_seconds), sum(call_seconds)
        wanted = math.ceil(self.target_seconds / max(fastest, 1e-7))
        affordable = math.ceil(self.layer_budget_seconds / max(together, 1e-7))
        return max(self.min_repeats, min(wanted, affordable))


FULL_TIMING = Timing()
QUICK_TIMING = Timing(target_seconds=0.05, layer_budget_seconds=0.3, min_repeats=4, warmups=1, rounds=2)


@dataclass(frozen=True)
class LayerResult:
    """Median seconds per call of each contender on one layer, and what they mean."""

    layer: BenchLayer
    repeats: int
    ours_seconds: float
    numpy_seconds: float
    torch_seconds: float | None
    portable_seconds: float | None  # ours on numba's threading layer (None where that is ours already)
    verified: bool  # ours agrees with NumPy within float32 rounding bounds
    max_error_ratio: float  # largest |ours - NumPy| / its rounding bound (<= 1 when verified)
    roofline: Roofline
    peak_gflops: float
    other_cpu_percent: float | None = None  # CPU the rest of the machine used while this layer ran

    def gflops(self, seconds: float | None) -> float | None:
        return None if seconds is None else self.layer.flops / seconds / 1e9

    @property
    def ours_gflops(self) -> float:
        return self.layer.flops / self.ours_seconds / 1e9

    @property
    def numpy_gflops(self) -> float:
        return self.layer.flops / self.numpy_seconds / 1e9

    @property
    def torch_gflops(self) -> float | None:
        return self.gflops(self.torch_seconds)

    @property
    def portable_gflops(self) -> float | None:
        return self.gflops(self.portable_seconds)

    @property
    def portable_vs_ours(self) -> float | None:
        """The portable path's speed over the pool's (< 1: the pool is faster)."""
        return None if self.portable_seconds is None else self.ours_seconds / self.portable_seconds

    @property
    def vs_numpy(self) -> float:
        """Our speed over NumPy's (> 1: we are faster)."""
        return self.numpy_seconds / self.ours_seconds

    @property
    def vs_torch(self) -> float | None:
        return None if self.torch_seconds is None else self.torch_seconds / self.ours_seconds

    @property
    def vs_best(self) -> float:
        """Our speed over the faster of NumPy and PyTorch."""
        others = [seconds for seconds in (self.numpy_seconds, self.torch_seconds) if seconds is not None]
        return min(others) / self.ours_seconds

    @property
    def percent_of_attainable(self) -> float:
        return 100 * self.ours_gflops / self.roofline.attainable_gflops

    @property
    def percent_of_peak(self) -> float:
        return 100 * self.ours_gflops / self.peak_gflops

    def as_dict(self) -> dict:
        return {
            **asdict(self.layer),
            "spec": self.layer.spec,
            "flops": self.layer.flops,
            "bytes_moved": self.layer.bytes_moved,
            "repeats": self.repeats,
            "ours_seconds": self.ours_seconds,
            "numpy_seconds": self.numpy_seconds,
            "torch_seconds": self.torch_seconds,
            "portable_seconds": self.portable_seconds,
            "ours_gflops": self.ours_gflops,
            "numpy_gflops": self.numpy_gflops,
            "torch_gflops": self.torch_gflops,
            "portable_gflops": self.portable_gflops,
            "portable_vs_ours": self.portable_vs_ours,
            "vs_numpy": self.vs_numpy,
            "vs_torch": self.vs_torch,
            "verified": self.verified,
            "max_error_ratio": self.max_error_ratio,
            **asdict(self.roofline),
            "ours_microseconds": self.ours_seconds * 1e6,
            "roof_microseconds": self.layer.flops / self.roofline.attainable_gflops / 1e3,
            "percent_of_attainable": self.percent_of_attainable,
            "percent_of_peak": self.percent_of_peak,
            "other_cpu_percent": self.other_cpu_percent,
        }


@dataclass(frozen=True)
class Summary:
    median_vs_numpy: float
    min_vs_numpy: float
    median_vs_torch: float | None
    min_vs_torch: float | None
    worst_layer: str  # lowest speed against the faster of NumPy and PyTorch
    worst_vs_best: float
    median_percent_of_peak_compute_bound: float | None
    median_portable_vs_ours: float | None  # numba's threading layer over our pool, where both ran
    mismatches: list[str]
    # The float64 layers apart (the figures above are the float32 layers'): None when none ran.
    float64_median_vs_numpy: float | None = None
    float64_median_percent_of_peak: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchReport:
    machine: MachineInfo
    limits: MachineLimits
    limits_saved: bool
    threads: int | None
    rows: list[LayerResult]
    summary: Summary
    seconds: float
    other_cpu_percent: float | None = None  # CPU other processes used during the whole run

    def as_dict(self) -> dict:
        return {
            "flops": "2*N*H*W*C*F per layer (no bias); GFLOP/s = 1e9 FLOP/s; medians of repeats",
            "machine": self.machine.as_dict(),
            "limits": self.limits.as_dict(),
            "limits_saved": self.limits_saved,
            "threads": self.threads,
            "layers": [row.as_dict() for row in self.rows],
            "summary": self.summary.as_dict(),
            "seconds": self.seconds,
            "other_cpu_percent": self.other_cpu_percent,
        }


Progress = Callable[[int, int, str], None]  # (steps done since the last call, steps in all, what is measured now)


def run_bench(
    quick: bool = False,
    threads: int | None = None,
    torch: bool = True,
    progress: Progress | None = None,
    *,
    layers: Sequence[BenchLayer] | None = None,
    save: bool = True,
    pinned: dict[str, str] | None = None,
) -> BenchReport:
    """Measure the machine's limits, then every layer of the suite (``layers`` overrides it);
    with ``save`` the limits go to the cache for ``conv1x1 shapes`` when measured on all cores.

    ``pinned``: the variables that ``bench.isa.pin`` set before the libraries loaded, to be reported;
    limits measured so (an AVX2 peak, say) are not this machine's, and are never saved."""
    started = time.perf_counter()
    background = BackgroundLoad()
    if layers is None:
        layers = quick_layers() if quick else list(SUITE)
    timing = QUICK_TIMING if quick else FULL_TIMING
    steps = len(layers) + 2
    report_progress = progress or (lambda done_now, total, what: None)

    machine = describe_machine(torch, pinned or {})
    torch_module = _import_torch() if torch else None

    report_progress(0, steps, "machine limits")
    first, first_load = _limits_and_load(threads, quick)
    rows = []
    peaks: list[float] = []
    levels_again: list[MemoryLevel] = []  # (the levels of memory-bound layers, measured right before them)
    for index, layer in enumerate(layers):
        report_progress(1, steps, layer.name)
        if not quick:
            peaks.append(peak_between_layers(threads))
            levels_again.extend(level_between_layers(layer, first, threads))
        rows.append(measure_layer(layer, first, threads, torch_module, timing, seed=index))
    report_progress(1, steps, "machine limits again")
    second, second_load = _limits_and_load(threads, quick)
    limits = best_limits(first, second)
    limits = replace(
        limits, peak_gflops=max([limits.peak_gflops, *peaks]), levels=best_levels(limits.levels, levels_again)
    )
    disturbed = limits_disturbed(first, second, max(first_load, second_load))
    rows = [
        replace(row, roofline=row.layer.roofline(limits), peak_gflops=limits.for_dtype(row.layer.dtype).peak_gflops)
        for row in rows
    ]
    report_progress(1, steps, "done")
    machine = replace(machine, threading=kernel_threading())  # (numba names its layer once it has run)

    limits_saved = False
    if disturbed:
        machine.warnings.append(f"the machine limits were not saved: {disturbed}")
    elif save and not pinned and (threads is None or threads >= (os.cpu_count() or 1)):
        try:
            save_limits(limits)
            limits_saved = True
        except OSError as error:
            machine.warnings.append(f"could not save the machine limits: {error}")
    other = background.percent()
    if other is not None and other > 10:
        machine.warnings.append(f"other processes used {other:.0f}% of the CPU during the run: timings are disturbed")
    seconds = time.perf_counter() - started
    return BenchReport(machine, limits, limits_saved, threads, rows, summarize(rows), seconds, other)


# Limits are saved only from an undisturbed measurement: one run with a test suite on the other core
# measured an FMA peak of 116 GFLOP/s instead of 234, which `shapes` then used for its verdicts.
DISTURBING_CPU_PERCENT = 10.0  # other processes' share of all cores while the limits were measured
LIMITS_AGREE_WITHIN = 0.10  # the peaks measured before and after the layers, relative to the better


def peak_between_layers(threads: int | None) -> float:
    """The FMA peak, probed briefly (about 0.1 s) before a layer.

    A shared host's clock moves with its other tenants' load: on a Zen 1 guest one run probed 79
    GFLOP/s before and after the layers while a layer in between ran at 81.5 (103 % of its roof), and
    other runs of the same hour probed 88-94.  Noise only ever lowers a probe, so the best of many,
    spread over the run, is the nearest to the peak that the layers met."""
    from ..kernel import probe

    return probe.fma_peak_gflops(threads, seconds=0.05)


def level_between_layers(layer: BenchLayer, limits: MachineLimits, threads: int | None) -> tuple[MemoryLevel, ...]:
    """The bandwidths of the level a memory-bound layer streams from, measured again right before it
    (none for a compute-bound one), for the same reason as peak_between_layers: the RGB stem once
    wrote its output at 14.9 GB/s where the probes before and after the layers measured 13.4 (111 %
    of its roof); memory moves with the other tenants' load as the clock does."""
    roof = layer.roofline(limits)
    if roof.bound != "memory" or not limits.levels:
        return ()
    return measure_levels(threads or limits.threads, only=roof.level)


def _limits_and_load(threads: int | None, quick: bool) -> tuple[MachineLimits, float]:
    """The limits, and how much of the CPU other processes used while they were measured (%)."""
    load = BackgroundLoad()
    limits = measure_limits(threads, quick)
    return limits, load.percent() or 0.0


def limits_disturbed(first: MachineLimits, second: MachineLimits, other_cpu_percent: float) -> str | None:
    """Why the limits measured before and after the layers cannot be trusted, or None.

    >>> a = MachineLimits(230.0, 190.0, 29.0, 2, "a")
    >>> limits_disturbed(a, replace(a, peak_gflops=116.0), 0.0)
    'the FMA peak measured before and after the layers differs by 50% (230 and 116 GFLOP/s)'
    >>> limits_disturbed(a, a, 35.0)
    'other processes used 35% of the CPU while they were measured'
    >>> limits_disturbed(a, replace(a, peak_gflops=225.0), 3.0) is None
    True
    """
    if other_cpu_percent > DISTURBING_CPU_PERCENT:
        return f"other processes used {other_cpu_percent:.0f}% of the CPU while they were measured"
    better = max(first.peak_gflops, second.peak_gflops)
    spread = abs(first.peak_gflops - second.peak_gflops) / better
    if spread > LIMITS_AGREE_WITHIN:
        return (
            f"the FMA peak measured before and after the layers differs by {100 * spread:.0f}% "
            f"({first.peak_gflops:.0f} and {second.peak_gflops:.0f} GFLOP/s)"
        )
    return None


# --------------------------------------------------------------------------
# One layer
# --------------------------------------------------------------------------


def measure_layer(
    layer: BenchLayer,
    limits: MachineLimits,
    threads: int | None = None,
    torch_module=None,
    timing: Timing = FULL_TIMING,
    seed: int = 0,
) -> LayerResult:
    """Time ours, NumPy (and PyTorch) on ``layer`` side by side; verify ours against NumPy once."""
    from ..api import conv1x1

    pixels, bank = layer_data(layer, seed)
    background = BackgroundLoad()
    contenders = {
        "ours": lambda: conv1x1(pixels, bank, threads=threads),
        "numpy": lambda: np.maximum(pixels.reshape(-1, layer.channels) @ bank, 0),
    }
    if torch_module is not None:
        contenders["torch"] = _torch_contender(torch_module, pixels, bank)
    if threading_mode() == "pool":

        def portable() -> object:
            with portable_threading():
                return conv1x1(pixels, bank, threads=threads)

        contenders["portable"] = portable

    verified, error_ratio = verify(contenders["ours"](), contenders["numpy"](), pixels, bank)
    medians, repeats = _block_medians(contenders, timing)
    return LayerResult(
        layer=layer,
        repeats=repeats,
        ours_seconds=medians["ours"],
        numpy_seconds=medians["numpy"],
        torch_seconds=medians.get("torch"),
        portable_seconds=medians.get("portable"),
        verified=verified,
        max_error_ratio=error_ratio,
        roofline=layer.roofline(limits),
        peak_gflops=limits.for_dtype(layer.dtype).peak_gflops,
        other_cpu_percent=background.percent(),
    )


def layer_data(layer: BenchLayer, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NHWC input in [-1, 1) and a (C, F) bank scaled so outputs stay near 1, in the layer's dtype."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(layer.dtype)
    shape = (layer.batch, layer.height, layer.width, layer.channels)
    pixels = rng.random(shape, dtype)
    pixels *= 2
    pixels -= 1
    bank = (rng.random((layer.channels, layer.filters), dtype) - 0.5) * dtype.type(2 / math.sqrt(layer.channels))
    return pixels, bank


def verify(ours: np.ndarray, reference: np.ndarray, pixels: np.ndarray, bank: np.ndarray) -> tuple[bool, float]:
    """Whether ours matches the reference within the rounding of their dtype, and the worst error / bound.

    Each output is a C-term dot product; both sides may round it differently, each within
    C·eps·Σ|x_c·w_c| ≤ C·eps·‖x‖·‖w‖ (Cauchy-Schwarz). A wrong term shows up far above that."""
    ours = ours.reshape(reference.shape)
    channels = bank.shape[0]
    dtype = bank.dtype
    eps = float(np.finfo(dtype).eps)
    pixel_norms = np.linalg.norm(pixels.reshape(-1, channels), axis=1).astype(dtype)
    filter_norms = np.linalg.norm(bank, axis=0).astype(dtype)
    bound = dtype.type(2 * channels * eps) * np.outer(pixel_norms, filter_norms) + dtype.type(1e-30)
    error = np.abs(ours - reference)
    if not np.array_equal(np.isnan(ours), np.isnan(reference)):
        return False, math.inf
    ratio = float(np.nanmax(error / bound)) if error.size else 0.0
    return ratio <= 1.0, ratio


def _torch_contender(torch_module, pixels: np.ndarray, bank: np.ndarray) -> Callable[[], object]:
    functional = torch_module.nn.functional
    # NHWC memory seen as an NCHW tensor: exactly torch's channels_last format, no copy.
    images = torch_module.from_numpy(pixels).permute(0, 3, 1, 2)
    images = images.contiguous(memory_format=torch_module.channels_last)  # a no-op, as intended
    weight = torch_module.from_numpy(np.ascontiguousarray(bank.T)).reshape(bank.shape[1], bank.shape[0], 1, 1)

    def run() -> object:
        with torch_module.inference_mode():
            return torch_module.relu_(functional.conv2d(images, weight))

    return run


def _block_medians(
    contenders: dict[str, Callable[[], object]], timing: Timing, settle: float = SETTLE_SECONDS
) -> tuple[dict[str, float], int]:
    """Median seconds per call of each contender, timed in settled blocks (see the module docstring)."""
    names = list(contenders)
    for _ in range(timing.warmups):
        for name in names:
            contenders[name]()
    # The fastest of a few calls, timed as the blocks are: sized from one call made right after another
    # contender's (torch's took 10-20 ms instead of 0.2 while OpenBLAS's workers still spun), the first
    # layers' blocks were cut to a handful of calls.
    estimate = [min(_settled_block(contenders[name], settle, ESTIMATE_CALLS)) for name in names]
    per_block = math.ceil(timing.repeats(estimate) / timing.rounds)
    samples: dict[str, list[float]] = {name: [] for name in names}
    collecting = gc.isenabled()
    gc.disable()  # a collection landing inside one contender's call would be charged to it
    try:
        for round_index in range(timing.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name] += _settled_block(contenders[name], settle, per_block)
    finally:
        if collecting:
            gc.enable()
    return {name: statistics.median(times) for name, times in samples.items()}, per_block * timing.rounds


def _settled_block(call: Callable[[], object], settle: float, calls: int) -> list[float]:
    """Seconds of ``calls`` calls in a row, after a pause and one untimed call that wakes the
    contender's own threads (see the module docstring)."""
    time.sleep(settle)
    call()
    return [seconds_of(call) for _ in range(calls)]


def _import_torch():
    try:
        import torch as torch_module
    except ImportError:
        return None
    return torch_module


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------


def summarize(rows: Sequence[LayerResult]) -> Summary:
    """The headline figures over the float32 layers (all layers when none is), and the float64 ones apart."""
    doubles = [row for row in rows if row.layer.dtype == "float64"]
    singles = [row for row in rows if row.layer.dtype != "float64"] or list(rows)
    vs_numpy = [row.vs_numpy for row in singles]
    vs_torch = [row.vs_torch for row in singles if row.vs_torch is not None]
    worst = min(singles, key=lambda row: row.vs_best)
    compute_bound = [row.percent_of_peak for row in singles if row.roofline.bound == "compute"]
    portable = [row.portable_vs_ours for row in rows if row.portable_vs_ours is not None]
    return Summary(
        median_vs_numpy=statistics.median(vs_numpy),
        min_vs_numpy=min(vs_numpy),
        median_vs_torch=statistics.median(vs_torch) if vs_torch else None,
        min_vs_torch=min(vs_torch) if vs_torch else None,
        worst_layer=worst.layer.name,
        worst_vs_best=worst.vs_best,
        median_percent_of_peak_compute_bound=statistics.median(compute_bound) if compute_bound else None,
        median_portable_vs_ours=statistics.median(portable) if portable else None,
        mismatches=[row.layer.spec for row in rows if not row.verified],
        float64_median_vs_numpy=statistics.median(row.vs_numpy for row in doubles) if doubles else None,
        float64_median_percent_of_peak=statistics.median(row.percent_of_peak for row in doubles) if doubles else None,
    )
