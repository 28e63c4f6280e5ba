"""Which SIMD unit the kernel is compiled for: what numba's code generator targets, read once.

numba compiles for the CPU that ``NUMBA_CPU_NAME`` and ``NUMBA_CPU_FEATURES`` name, else for this
machine's.  Rather than guess from names and feature lists (a CPU name alone implies its features;
LLVM may split wide vectors on some CPUs), this module asks LLVM itself: it compiles one 16-lane
fused multiply-add (and a multiply, whose width does not depend on FMA) for numba's exact target
(triple, CPU, features) and reads which registers and instructions come out.  zmm registers mean
AVX-512, ymm AVX or AVX2, anything else 128-bit vectors; ``vfmadd``/``fmla`` mean FMA instructions.
The tile shape (``costs.packing.tile_shape``) follows.

numba's disk cache keys every entry by the same (triple, CPU, features), so a build for one unit is
never loaded for another.
"""

from __future__ import annotations

import functools
import re

from ..costs.packing import AVX2, AVX512, GENERIC, NEON, SimdUnit

_PROBE_IR = """
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
define void @probe(<16 x float>* %a, <16 x float>* %b, <16 x float>* %c) {
  %x = load <16 x float>, <16 x float>* %a
  %y = load <16 x float>, <16 x float>* %b
  %z = load <16 x float>, <16 x float>* %c
  %r = call <16 x float> @llvm.fma.v16f32(<16 x float> %x, <16 x float> %y, <16 x float> %z)
  store <16 x float> %r, <16 x float>* %c
  %m = fmul <16 x float> %x, %y
  store <16 x float> %m, <16 x float>* %b
  ret void
}
"""


def compile_target() -> tuple[str, str, str]:
    """(LLVM triple, CPU name, features) that numba compiles for, as its disk cache keys them."""
    from numba.core.registry import cpu_target

    triple, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    return str(triple), str(cpu), str(features)


@functools.cache
def simd_unit() -> SimdUnit:
    """The SIMD unit of numba's compile target (see the module docstring); computed once per process."""
    return unit_for(*compile_target())


def unit_for(triple: str, cpu: str, features: str = "") -> SimdUnit:
    """The SIMD unit that LLVM compiles for on this target (features '': the CPU's own)."""
    try:
        assembly = probe_assembly(triple, cpu, features)
    except Exception:  # an architecture this LLVM build cannot emit: plain vectors, still correct
        return GENERIC
    return unit_from_assembly(triple, assembly)


def unit_from_assembly(triple: str, assembly: str) -> SimdUnit:
    """The SIMD unit that the probe's assembly for ``triple`` shows."""
    arch = triple.split("-", 1)[0]
    if arch in ("aarch64", "arm64"):
        return NEON if re.search(r"\bfmla\b", assembly) else GENERIC
    if arch not in ("x86_64", "amd64"):
        return GENERIC
    if "zmm" in assembly:  # (AVX-512 implies FMA)
        return AVX512
    if "ymm" in assembly:
        return AVX2 if "vfmadd" in assembly else SimdUnit("avx", 32, 16, fused=False)  # AVX: Sandy Bridge
    return GENERIC  # SSE (FMA implies AVX)


def probe_assembly(triple: str, cpu: str, features: str) -> str:
    """The assembly LLVM emits for the probe (one 16-lane FMA and multiply) on this target."""
    import llvmlite.binding as llvm

    # Every LLVM target costs 7 MB of memory: set up only this machine's (as numba does) unless the
    # triple is another machine's.
    if triple == llvm.get_process_triple():
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
    else:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
    machine = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=2)
    module = llvm.parse_assembly(_PROBE_IR)
    module.triple = triple
    return machine.emit_assembly(module)
