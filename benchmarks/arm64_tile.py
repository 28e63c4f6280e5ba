"""The kernel's tile for Apple Silicon, on paper: compiled for arm64 here, its inner loop read.

numba compiles only for the machine it runs on, so this takes the LLVM IR numba makes for the NEON
tile (the shape ``costs.packing.tile_shape`` gives NEON: 6 pixels x 16 float32 filters, four
128-bit vectors a row, 24 accumulators of NEON's 32 registers), retargets it to
``arm64-apple-darwin`` and has LLVM compile it for the ``apple-m1`` CPU.  It prints the channel loop
of the tile and checks that it keeps every accumulator in a register: 24 ``fmla`` a channel and no
load or store relative to the stack (a spill).  It does so for both of the tile's loops: the one
most tiles run, and the one a tile runs when it copies its panel as it reads it (two stp of its four
panel vectors and a prefetch more a channel; tiles.compute_chunk).  With ``llvm-mca`` on PATH it also prints what
that tool's apple-m1 model (LLVM's Cyclone model) makes of each loop.

    python benchmarks/arm64_tile.py [--mca llvm-mca-14]

FLOPs per cycle: each channel step is 24 fmla of 4 float32 lanes (192 FLOP).  The M1's performance
cores issue 4 FP/SIMD operations a cycle (all four pipes do 128-bit FMA), 3 loads and 8 instructions:
the loop's 24 fmla need 6 cycles, its 8 loads (2 ldp, 6 broadcasts) under 3 and its 39 instructions
under 5, so it runs at the FMA pipes' 32 FLOP/cycle, the M1 core's float32 peak.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

TRIPLE = "arm64-apple-darwin"
CPU = "apple-m1"


def neon_tile_ir(filters: int = 64) -> str:
    """The optimised LLVM IR of tiles.compute_chunk for the NEON kind of a float32 bank of this
    many filters, as numba makes it on this (x86) machine."""
    os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp())  # numba shows no IR of cached code
    import numpy as np

    from conv1x1_cli.costs.packing import NEON, tile_shape
    from conv1x1_cli.kernel import _Kind, tiles

    rows, width = tile_shape(filters, 4, NEON)
    kind = _Kind(0, np.dtype(np.float32), rows, width, NEON.vector_bytes // 4)
    signature = tiles.chunk_signature(*kind.markers[1:])
    tiles.compute_chunk.compile(signature)
    return tiles.compute_chunk.inspect_llvm(signature)


def _portable_decrement(match: re.Match) -> str:
    value, pointer = match.group(1), match.group(2)
    return (
        f"%decref.old = atomicrmw sub ptr {pointer}, i64 1 acq_rel, align 8\n"
        f"  %decref.zero = icmp eq i64 %decref.old, 1\n  {value} = zext i1 %decref.zero to i8"
    )


def arm64_assembly(ir: str) -> str:
    """ir compiled for arm64-apple-darwin and the apple-m1 CPU."""
    import llvmlite.binding as llvm

    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    machine = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=CPU, features="", opt=3)
    ir = re.sub(r'target datalayout = ".*"', f'target datalayout = "{machine.target_data}"', ir)
    ir = re.sub(r'target triple = ".*"', f'target triple = "{TRIPLE}"', ir)
    # numba's reference counting, optimised for x86, uses one x86 intrinsic: the same in portable IR.
    pattern = r"(%\S+) = tail call i8 @llvm\.x86\.atomic\.sub\.cc\.i64\(ptr nonnull (%\S+), i64 1, i32 4\)"
    ir = re.sub(pattern, _portable_decrement, ir)
    ir = re.sub(r"declare i8 @llvm\.x86\.atomic\.sub\.cc\.i64.*", "", ir)
    module = llvm.parse_assembly(ir)
    module.verify()
    return machine.emit_assembly(module)


def channel_loops(assembly: str) -> list[str]:
    """The basic blocks with the most fmla instructions: the tile's channel loops (full and short tiles)."""
    blocks = re.split(r"\n(?=L?BB\d+_\d+:)", assembly)
    counted = [(len(re.findall(r"\bfmla\b", block)), block) for block in blocks]
    most = max(count for count, _ in counted)
    return [block for count, block in counted if count == most]


def spills(block: str) -> list[str]:
    """The block's instructions that address the stack (sp or the frame pointer x29): spills and reloads."""
    return [line.strip() for line in block.splitlines() if re.search(r"\[(sp|x29)\b", line)]


def mca_summary(block: str, tool: str) -> str:
    """llvm-mca's throughput summary of the loop body (its branch dropped)."""
    body = [line for line in block.splitlines()[1:] if line.strip() and not line.strip().startswith((";", "b."))]
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as source:
        source.write("\n".join(body) + "\n")
    done = subprocess.run(
        [tool, f"-mtriple={TRIPLE}", f"-mcpu={CPU}", "-iterations=400", source.name],
        capture_output=True,
        text=True,
        check=True,
    )
    os.unlink(source.name)
    keys = ("Iterations", "Instructions", "Total Cycles", "Dispatch Width", "IPC", "Block RThroughput")
    return "\n".join(line for line in done.stdout.splitlines() if line.startswith(keys))


def report(loop: str, name: str, mca: str | None) -> bool:
    """Print what the loop does a channel; whether it keeps its accumulators in registers."""
    # (LLVM may unroll the loop over channels: count per channel, 6 x 4 accumulators each)
    passes = max(len(re.findall(r"\bfmla\b", loop)) // 24, 1)
    fmla = len(re.findall(r"\bfmla\b", loop)) // passes
    loads = len(re.findall(r"\b(ldp|ldr|ld1r)\b", loop)) / passes
    stores = len(re.findall(r"\b(stp|str|st1)\b", loop)) / passes
    instructions = [line for line in loop.splitlines()[1:] if line.strip() and not line.strip().startswith(";")]
    print(f"The NEON tile's {name} for {CPU} ({TRIPLE}), {passes} channel(s) a pass:\n{loop}\n")
    print(
        f"{fmla} fmla (x 4 lanes x 2 = {8 * fmla} FLOP), {loads:g} loads, {stores:g} stores, "
        f"{len(instructions) / passes:g} instructions a channel"
    )
    print(f"stack accesses (spills) in the loop: {spills(loop) or 'none'}")
    print(f"at 4 fmla a cycle: {fmla / 4:.0f} cycles a channel, {8 * fmla / (fmla / 4):.0f} FLOP/cycle")
    if mca:
        iterations_cycles = mca_summary(loop, mca)
        print(f"\n{mca} -mcpu={CPU} (LLVM's Cyclone model: 2 vector multiply units):\n{iterations_cycles}\n")
    return bool(fmla) and not spills(loop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mca", default=shutil.which("llvm-mca") or shutil.which("llvm-mca-14"), help="llvm-mca")
    options = parser.parse_args()
    loops = channel_loops(arm64_assembly(neon_tile_ir()))
    # (a tile's two loops: the copying one stores the panel rows it reads; the short tile's have fewer fmla)
    plain = [loop for loop in loops if not re.search(r"\b(stp|str|st1)\b", loop)]
    copying = [loop for loop in loops if re.search(r"\b(stp|str|st1)\b", loop)]
    if not plain or not copying:
        print(f"expected a plain and a copying channel loop, found {len(plain)} and {len(copying)}")
        return 1
    kept = [report(plain[0], "channel loop", options.mca), report(copying[0], "copying channel loop", options.mca)]
    return 0 if all(kept) else 1


if __name__ == "__main__":
    sys.exit(main())
