"""Pinning every contender to one instruction set, to measure what users' machines get.

Most users' CPUs have no AVX-512.  An AVX-512 host can still run exactly their code: numba compiles
for the CPU that ``NUMBA_CPU_NAME`` and ``NUMBA_CPU_FEATURES`` name, OpenBLAS picks the kernel that
``OPENBLAS_CORETYPE`` names, and PyTorch's ATen, oneDNN and MKL each have a variable that caps the
instructions they use.  Each is read once, when its library loads, so the variables must be set
before NumPy, numba or torch is imported: ``pin`` refuses once they are.

Imports neither NumPy nor numba (llvmlite only, to read this CPU's features).
"""

from __future__ import annotations

import os
import sys

ISAS = ("native", "avx2")

# Features an AVX2-only CPU lacks, by prefix: AVX-512 and its successor AVX10, and AMX tiles.
_BEYOND_AVX2 = ("avx512", "avx10", "amx")


class PinningError(Exception):
    """The instruction set asked for cannot be pinned here (or no longer, in this process)."""


def avx2_features(host_features: str) -> str:
    """This CPU's LLVM feature string with every AVX-512, AVX10 and AMX feature switched off.

    >>> avx2_features("+avx2,+fma,+avx512f,-avx512vl,+amx-tile,+sse4.2")
    '+avx2,+fma,-avx512f,-avx512vl,-amx-tile,+sse4.2'
    """
    features = []
    for feature in filter(None, host_features.split(",")):
        name = feature[1:]
        features.append(f"-{name}" if name.startswith(_BEYOND_AVX2) else feature)
    return ",".join(features)


def isa_environment(isa: str) -> dict[str, str]:
    """The variables that pin numba, OpenBLAS and PyTorch to ``isa`` ('native': none)."""
    if isa == "native":
        return {}
    if isa != "avx2":
        raise PinningError(f"unknown instruction set {isa!r}: choose from {', '.join(ISAS)}")
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features().flatten()
    if "+avx2" not in host.split(",") or "+fma" not in host.split(","):
        raise PinningError("this CPU has no AVX2 and FMA: it cannot run code built for them")
    return {
        "NUMBA_CPU_NAME": "haswell",
        "NUMBA_CPU_FEATURES": avx2_features(host),
        "OPENBLAS_CORETYPE": "Haswell",
        "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels
        "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN (PyTorch's convolutions)
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL (PyTorch's matrix products)
    }


def runs_here(isa: str) -> bool:
    """Whether this CPU can run code built for ``isa``."""
    try:
        isa_environment(isa)
    except PinningError:
        return False
    return True


def pin(isa: str) -> dict[str, str]:
    """Set the variables of ``isa`` in this process; returns them.  Refused once a library that reads
    them is loaded (it would silently keep its own choice)."""
    environment = isa_environment(isa)
    loaded = [name for name in ("numpy", "numba", "torch") if name in sys.modules]
    if environment and loaded:
        raise PinningError(f"--isa must be chosen before {', '.join(loaded)} is loaded")
    os.environ.update(environment)
    return environment
