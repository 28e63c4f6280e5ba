"""The micro-kernel: one tile of pixels x one panel of filters, accumulated in registers.

* Micro-kernel.  A tile of ``rows`` pixels x one panel is accumulated over all
  channels (or one block of them, see ``compute_chunk``) in accumulator
  registers shaped for the SIMD unit compiled for (``target.simd_unit``,
  ``costs.packing.tile_shape``): with AVX-512, 6x64 float32 = 24 zmm registers,
  per channel 4 vector loads of the panel row, 6 broadcasts of pixel values
  and 24 FMAs; with AVX2 6x16 = 12 ymm registers of 16; with NEON 6x16 = 24
  of 32 128-bit registers.  The tile is written as
  LLVM IR (``_tile``, ``_TileCode``) with its accumulators as SIMD values, so
  it needs neither of LLVM's vectorisers and compiles the same in every
  function it is inlined into.  The tile shape reaches the compiler through
  the *types* of two marker tuples (``len`` of a tuple type is a constant), so
  one source serves every shape and each shape is its own cached
  specialisation (the vector length too: a third marker) (closures over constants would not do: numba's cache key
  hashes closure cells, and a cell holding a dispatcher hashes differently in
  every process).  Bias (or the block before's partial sums) initialises the
  accumulators; ReLU is applied on the way out of the last block.
* Narrow panels.  A panel narrower than a vector (8 or 4 float32 filters
  with AVX-512) takes 2 or 4 channels per step (``costs.packing.channel_group``):
  the bank is packed with those channels side by side, the tile broadcasts
  that many adjacent pixel values at once, and each filter's lanes are added
  together at the end.  Every multiply-add is a whole vector, and there is one
  broadcast load per group instead of per value (in cache, 8 filters from 93
  to 156 GFLOP/s on one thread).  With AVX2 a panel of exactly one vector
  (5-8 float32 or 1-4 float64 filters) takes two channels per step too, and
  one of half a vector (1-4 float32 filters) four, across two vectors, so
  that each broadcast feeds two multiply-adds (``costs.packing.channel_group``;
  the hyperspectral 200->8 reduction 1.23x faster on a Zen 1 host).
* Panel copies.  Where a panel's rows are a cache line or less (AVX2, NEON, SSE:
  ``copies_panels``) they lie a bank row apart, a few of L1's sets for all of
  them.  When a panel meets a group of pixel tiles in turn, the first of them
  copies its rows of the block as it reads them, one after the other, into the
  thread's room (``copy_room``, ``compute_chunk``), and the others read the
  copy (a tile that copies is a loop of its own: _TileCode.accumulate); ``plan`` takes
  the tiles in groups for such kinds as soon as the bank's block outgrows
  16 KiB.  On a Zen 3 host (AVX2 only) bench's compute-bound layers went from a
  median of 70-73 to 80 % of the FMA peak.
* Prefetching.  Each step of the channel loop asks for its share of the pixel
  rows a few tiles on, about a cache line a step (``_TileCode.prefetch_share``):
  the hyperspectral 512x512x200->8 reduction, which streams its input from
  memory, went from 24 to about 80 GB/s of input.
* Remainders.  Pixels are covered by tiles of ``rows`` and then of ``rows - 1``
  pixels (``tile_counts``): 49 = 4x6 + 5x5, so no row is computed twice.  A
  tile one row shorter runs at almost the same speed per row, while
  recomputing rows costs a tenth of the time of a 7x7 layer.  Pixel counts that no such sum
  reaches (under 20 for 6 rows) shift the last full tile back to end at P
  instead: it recomputes a few rows with identical results.  When P < rows a
  one-row tile is used.  A partial last panel is computed at full width (zero
  padding: in a padded bank, or in the copy of that panel alone that follows the
  bias when the bank is read in place) and stored with masked vector stores.
* Jobs and chunks.  A call is described as a *job* in an int64 array (array
  addresses and shapes, ``describe_job``), so that any thread can run a chunk
  of it (``compute_chunk``): a contiguous run of its (pixel tile, panel) pairs.
  The entry points (``run_alone`` here, the pool's in ``pool.py``) call
  compute_chunk through the address of its compiled code (``call_chunk``).
* Floating point.  Each output is one chain of fused multiply-adds in channel
  order (a narrow panel's: one chain per lane of its group, channels g, g +
  group, ..., the chains then added in order), so the thread count never
  changes a bit of the result; no fast-math flag is used.  A tile over a later
  block of channels picks the chain up from the partial sum that the tile over
  the block before stored in the output (narrow panels never run in blocks).
  ReLU is ``0 if v < 0 else v``, which keeps NaN (like ``np.maximum(v, 0)``
  and PyTorch), and Inf/NaN propagate through FMA.

"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from pathlib import Path
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from ..costs.packing import channel_group
from .target import simd_unit

# The files whose code the cached entry points contain: this one, the pool's, and the packing rule
# (channel_group is compiled into the walk over the pairs).
_COMPILED_SOURCES = (
    Path(__file__),
    Path(__file__).with_name("pool.py"),
    Path(__file__).parent.parent / "costs" / "packing.py",
)


@functools.cache  # (read once: every cached entry point asks)
def _sources_digest() -> str:
    """A digest of every file in _COMPILED_SOURCES."""
    digest = hashlib.sha256()
    for path in _COMPILED_SOURCES:
        # (without source files, in a frozen application, numba cannot cache anyway)
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_with_sources(function=None, *, parallel=False, python_wrapper=True):
    """njit(cache=True, nogil=True), cached under a name that changes whenever one of the files
    compiled into it does (_COMPILED_SOURCES); without a wrapper for calls from Python unless
    ``python_wrapper`` (see helper).

    numba's on-disk cache checks only the source file of the function it caches, but the entry points
    contain code from the others too: after a change to tiles.py alone, pooled calls ran the old
    tiles from the cache, and a change to the packing rule alone would have had the old walk read
    a bank packed the new way.  An upgrade that changes either would do the same to users' caches.
    """
    if function is None:
        return lambda function: cached_with_sources(function, parallel=parallel, python_wrapper=python_wrapper)
    function.__qualname__ = f"{function.__qualname__}_{_sources_digest()}"
    options = {} if python_wrapper else _WITHOUT_WRAPPERS
    return njit(cache=True, nogil=True, parallel=parallel, **options)(function)


# The helpers of the compiled code, each compiled once for its argument types and linked into its
# callers, where LLVM inlines the small ones.  numba's own inlining (inline="always") translated a
# helper's bytecode and copied its IR again at every call: a third of a first run's compiling on a
# Zen 1 host.  They have no wrappers for calls from Python, which no caller needs and which cost
# a first run 0.75 s there.  numba types a literal argument as its own type (Literal[int](0)) and
# compiles a helper again for it, so callers pass np.int64(0) or np.bool_(True) instead.
_WITHOUT_WRAPPERS: dict[str, Any] = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}
helper = njit(nogil=True, **_WITHOUT_WRAPPERS)


# A marker is a tuple of Nones whose length stands for a number: numba types and unboxes every
# element of a tuple argument at every call (a call taking an array and a 16-element tuple: 389 ns;
# with a 5-element one: 250 ns), and a None the least (three markers of 15 Nones in all: 81 ns a
# call, of 15 ints 146 ns).  A width marker has log2(width) - 1 elements (widths are powers of two
# from 4 to 64).


def marker(length: int) -> tuple:
    """A marker of ``length`` elements (its type's length is a compile-time constant)."""
    return (None,) * length


def marker_width(width_marker) -> int:
    """The panel width that a width marker (or its numba type) stands for."""
    return 2 << len(width_marker)


def width_marker_for(width: int) -> tuple:
    """The marker of a panel width (a power of two, at least 4)."""
    assert width >= 4 and width & (width - 1) == 0, width
    return marker(width.bit_length() - 2)


# A lanes marker has log2(lanes) elements: the elements of one SIMD vector of the tile (16 float32
# in a zmm register, 8 in a ymm, 4 in a NEON register).  In the types, like the tile's shape, so that
# a specialisation's code is wholly decided by its argument types.


def marker_lanes(lanes_marker) -> int:
    """The vector length that a lanes marker (or its numba type) stands for."""
    return 1 << len(lanes_marker)


def lanes_marker_for(lanes: int) -> tuple:
    """The marker of a vector length (a power of two)."""
    assert lanes >= 1 and lanes & (lanes - 1) == 0, lanes
    return marker(lanes.bit_length() - 1)


# How far beyond the next pixel tile the pixel rows are prefetched (see compute_chunk). On the
# hyperspectral 512x512x200->8 reduction, 8 KiB ran as fast as 16 KiB and faster than 32 KiB.
_PREFETCH_AHEAD_BYTES = 8192
_CACHE_LINE = 64
# How many channels ahead a tile that copies its panel asks for the panel's rows (into L1).  They
# lie a bank row apart, often in L3 or memory; a tile's channel loop keeps too few of them in
# flight by itself.  7x7x2048->512 (a 4 MiB bank) on two threads, Zen 1, AVX2: 56-59 GFLOP/s
# with the copying tile asking for nothing, 62-71 with 24 to 64 rows ahead (60-63 for the copy of
# its own this replaced); N=32 60-64 against 67-69 (66-67).
_COPY_PREFETCH_ROWS = 32


class _TileCode:
    """Emits the LLVM IR of one tile (rows x width accumulators) into the function being compiled.

    The accumulators are ``rows`` x ``n_vectors`` SIMD values of ``lanes`` elements each, carried
    through the channel loop as phi nodes: SSA values, which LLVM keeps in registers in every
    function the tile is inlined into.  (Written as numba loops over a stack array, the tile's
    edges, bias and ReLU/store, compiled well or through memory depending on the inlining context,
    so its speed changed with unrelated code elsewhere.)

    A panel narrower than a vector takes ``group`` channels per step (``costs.packing.channel_group``):
    each accumulator lane f * group + g sums the products of channels g, g + group, g + 2 group, ...
    for filter f, and the tile adds a filter's lanes together before it activates and stores.  Bias,
    partial sums and outputs are ``out_vector`` values of the panel's width.  A paired panel (one
    AVX2 vector of filters, two channels a step) is laid out the same way across two accumulator
    vectors a row: the first holds its first half of the filters, the second the rest.
    """

    def __init__(self, context, builder, dtype, rows, width, lanes):
        self.context, self.builder = context, builder
        self.element = context.get_value_type(dtype)
        self.itemsize = context.get_abi_sizeof(self.element)
        self.group = channel_group(width, lanes, self.itemsize)
        self.lanes = min(width * self.group, lanes)  # every panel width is a multiple (a narrow one is one vector)
        self.n_vectors = width * self.group // self.lanes
        self.rows, self.width = rows, width
        self.vector = ir.VectorType(self.element, self.lanes)
        self.out_vector = ir.VectorType(self.element, min(width, lanes))
        self.n_out_vectors = width // self.out_vector.count
        self.intp = context.get_value_type(types.intp)
        self.i32 = ir.IntType(32)
        # Pixel rows in registers of their own (see opaque): for tiles of two vectors or fewer in
        # 256-bit registers or narrower, with six rows (with eight, the rows' registers and the loop's
        # own outnumbered x86's 15 and spilled).  AVX-512's tiles are compiled as before: the host
        # this was measured on (Zen 3) cannot run them, so a change to them could not be measured.
        self.pins_rows = rows <= 6 and self.n_vectors <= 2 and self.lanes * self.itemsize <= 32

    # Addresses are byte offsets from an array's data pointer, with the array's own strides.

    def view(self, array_type, value):
        """(data pointer as i8*, shape, strides) of a numba array value."""
        array = self.context.make_array(array_type)(self.context, self.builder, value)
        data = self.builder.bitcast(array.data, ir.IntType(8).as_pointer())
        return data, cgutils.unpack_tuple(self.builder, array.shape), cgutils.unpack_tuple(self.builder, array.strides)

    def address(self, base, *terms):
        """base + the sum of index * stride bytes over the (index, stride) pairs in terms."""
        offset = ir.Constant(self.intp, 0)
        for index, stride in terms:
            offset = self.builder.add(offset, self.builder.mul(index, stride))
        return self.builder.gep(base, [offset], inbounds=True)

    def rows_from(self, first, stride):
        """The tile's row pointers: first, then each stride bytes after the one before.  (Worked out
        from each row's index, they took a multiplication each, 12 a pair in a 6-row tile.)"""
        rows = []  # (none for the empty short tile of a one-row kind, never run)
        for r in range(self.rows):
            rows.append(first if r == 0 else self.builder.gep(rows[-1], [stride], inbounds=True))
        return rows

    def vector_pointer(self, base, v, vector_type):
        """Pointer to the v-th vector_type from base (a panel row, a bias row or an output row)."""
        offset = ir.Constant(self.intp, v * vector_type.count * self.itemsize)
        pointer = self.builder.gep(base, [offset], inbounds=True)
        return self.builder.bitcast(pointer, vector_type.as_pointer())

    def load_vectors(self, base, vector_type, count):
        """count vectors from base (unaligned loads: a bank may be a view)."""
        return [self.builder.load(self.vector_pointer(base, v, vector_type), align=self.itemsize) for v in range(count)]

    def splat(self, scalar, vector_type):
        """A vector_type with scalar in every lane."""
        undefined = ir.Constant(vector_type, None)
        lane0 = self.builder.insert_element(undefined, scalar, self.i32(0))
        zeros = ir.Constant(ir.VectorType(self.i32, vector_type.count), [0] * vector_type.count)
        return self.builder.shuffle_vector(lane0, undefined, zeros)

    def shuffle(self, first, second, lanes):
        """A vector of first's and second's lanes (second's numbered on from first's)."""
        mask = ir.Constant(ir.VectorType(self.i32, len(lanes)), list(lanes))
        return self.builder.shuffle_vector(first, second, mask)

    def intrinsic(self, name, vector_type, return_type, argument_types, name_suffix=""):
        """The LLVM intrinsic llvm.<name> overloaded for vector_type."""
        full_name = f"llvm.{name}.v{vector_type.count}{self.element.intrinsic_name}{name_suffix}"
        function_type = ir.FunctionType(return_type, argument_types)
        return cgutils.get_or_insert_function(self.builder.module, function_type, full_name)

    # The tile: accumulate, activate, store.

    def accumulate(self, initial, pixel_rows, pixel_step, panel, group_step, first_channel, n_channels, ahead, copy_to):
        """The accumulators after channels first_channel .. first_channel + n_channels - 1:
        initial[r][v] + sum over those c of pixel[r, c] * panel[c, v].

        pixel_rows[r] points at pixel r's channel 0 and panel at channel 0's panel row; channel c is
        c * pixel_step bytes on, and its group's panel row (c // group) * group_step.  Each product is
        one fused multiply-add, added in channel order to its lane.  (The loop counts from first_channel
        rather than moving the pointers there: with pointers moved, LLVM kept one register per pixel
        row and spilled two accumulators to the stack, at half the speed.)  first_channel is a whole
        number of groups; when n_channels is not, the last group's missing channels are left out.
        Each step prefetches its share of a tile's bytes from ahead (prefetch_share).

        ``copy_to``, when given (only for panels of one channel a step), is an address or null: if
        not null, each step also stores the panel row it read there, the rows one after the other
        (whole vectors, aligned: see compute_chunk).  That is a loop of its own, taken by the tiles
        that copy: stores in every tile's loop (to a line of scratch) cost the others 6-9 % on a Zen 1
        host.
        """
        builder, intp, group = self.builder, self.intp, self.group
        if self.pins_rows:
            pixel_rows = [self.opaque(row) for row in pixel_rows]
        end = builder.add(first_channel, n_channels)
        if group == 1:
            panel_step, whole_end = group_step, end
        else:
            panel_step = builder.udiv(group_step, intp(group))  # per channel: channels start whole groups
            whole_end = builder.sub(end, builder.srem(n_channels, intp(group)))
        entry = builder.basic_block
        plain = builder.append_basic_block("tile.channel")
        done = builder.append_basic_block("tile.done")
        # (Tested as n_channels >= group rather than first_channel < whole_end: with the latter LLVM
        # unrolled the loop and chained every pixel address through one register, at 0.8x the speed.)
        any_channels = builder.icmp_signed(">=", n_channels, intp(group))
        loops, loop_entry = [(plain, None)], entry
        if copy_to is None:
            builder.cbranch(any_channels, plain, done)
        else:
            copying, loop_entry = (builder.append_basic_block(name) for name in ("tile.copying", "tile.choose"))
            loops.append((copying, copy_to))
            builder.cbranch(any_channels, loop_entry, done)
            builder.position_at_end(loop_entry)
            builder.cbranch(builder.icmp_unsigned("!=", builder.ptrtoint(copy_to, intp), intp(0)), copying, plain)
        ends, row_bytes = [], intp(self.n_vectors * self.lanes * self.itemsize)  # (a copied row's)
        for loop, target in loops:
            builder.position_at_end(loop)
            channel = builder.phi(intp)
            acc = [[builder.phi(self.vector) for _ in range(self.n_vectors)] for _ in range(self.rows)]
            done_channels = builder.sub(channel, first_channel)
            copy_row = None if target is None else builder.gep(target, [builder.mul(done_channels, row_bytes)])
            updated = self.step(acc, pixel_rows, pixel_step, panel, panel_step, channel, None, copy_row)
            self.prefetch_share(ahead, done_channels)
            if target is not None:
                self.prefetch_panel_row(panel, panel_step, channel, whole_end)
            next_channel = builder.add(channel, intp(group))
            builder.cbranch(builder.icmp_signed("<", next_channel, whole_end), loop, done)
            channel.add_incoming(first_channel, loop_entry)
            channel.add_incoming(next_channel, loop)
            for acc_row, initial_row, updated_row in zip(acc, initial, updated, strict=True):
                for phi, start, value in zip(acc_row, initial_row, updated_row, strict=True):
                    phi.add_incoming(start, loop_entry)
                    phi.add_incoming(value, loop)
            ends.append((loop, updated))
        builder.position_at_end(done)
        final = [[builder.phi(self.vector) for _ in range(self.n_vectors)] for _ in range(self.rows)]
        for r in range(self.rows):
            for v in range(self.n_vectors):
                final[r][v].add_incoming(initial[r][v], entry)
                for loop, updated in ends:
                    final[r][v].add_incoming(updated[r][v], loop)
        if group == 1:
            return final
        return self.last_group(final, pixel_rows, pixel_step, panel, panel_step, whole_end, end)

    def opaque(self, pointer):
        """pointer, as a value LLVM cannot relate to any other (an empty inline assembly block that
        returns its input in the same register).

        A tile's pixel rows are one pointer plus r * the row stride; seen as such, LLVM computed each
        row's address in the channel loop from the one before, five dependent additions a step.  With
        12 multiply-adds a step (AVX2's two-vector tile), those made the step 30 instructions, at
        the limit of what a Zen 3 core issues in the 6 cycles its two FMA units take.  As unrelated
        pointers, each row keeps its own register and every load is one instruction (base + channel *
        itemsize): 25 a step, and on Zen 3, one thread, 28x28x192->64 from 83 to 91 % of the FMA peak,
        GoogLeNet 5b (7x7x832->384) from 69 to 78 %."""
        byte_pointer = ir.IntType(8).as_pointer()
        return self.builder.asm(ir.FunctionType(byte_pointer, [byte_pointer]), "", "=r,0", [pointer], False)

    def prefetch_share(self, ahead, done):
        """Ask for this step's share of a tile's worth of bytes from ahead into L2 (prefetcht1; a hint,
        never a fault): after ``done`` channels, the bytes from done * rows * itemsize on, a cache line
        at a time.  Spread over the channel loop, one line per step or so, the requests keep memory
        busy all along: the hardware prefetchers stop at every 4 KiB page, and a tile's rows are short
        streams (800 bytes each on the hyperspectral reduction) that they barely learn.  (Asked for all
        at once at each tile's start, the same lines came 3x slower there.)"""
        builder = self.builder
        offset = builder.mul(done, self.intp(self.rows * self.itemsize))
        for line in range(0, self.rows * self.group * self.itemsize, _CACHE_LINE):
            address = builder.gep(ahead, [builder.add(offset, self.intp(line))])  # (may lie past the pixels)
            self.prefetch(address, locality=2)  # (2 = moderate: L2)

    def prefetch_panel_row(self, panel, panel_step, channel, end):
        """Ask for the panel row _COPY_PREFETCH_ROWS channels on into L1 (a hint, never a fault),
        or for the block's last row near its end (a row past the bank may have no page behind it:
        see compute_chunk)."""
        builder = self.builder
        ahead_channel = builder.add(channel, self.intp(_COPY_PREFETCH_ROWS))
        last = builder.sub(end, self.intp(1))
        ahead_channel = builder.select(builder.icmp_signed("<", ahead_channel, last), ahead_channel, last)
        self.prefetch(self.address(panel, (ahead_channel, panel_step)), locality=3)  # (3 = high: L1)

    def prefetch(self, address, locality):
        """llvm.prefetch of the line at address (i8*) for reading into the data cache."""
        byte_pointer = ir.IntType(8).as_pointer()
        signature_type = ir.FunctionType(ir.VoidType(), [byte_pointer, self.i32, self.i32, self.i32])
        prefetch = self.builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer], signature_type)
        # (address, 0 = read, locality, 1 = data cache)
        self.builder.call(prefetch, [address, self.i32(0), self.i32(locality), self.i32(1)])

    def step(self, acc, pixel_rows, pixel_step, panel, panel_step, channel, n_present, copy_row=None):
        """acc after the group of channels from channel (its panel row channel * panel_step bytes on):
        every channel of it, or the first n_present; the panel row stored at copy_row too, if given
        (a line, aligned)."""
        builder = self.builder
        # Without FMA instructions llvm.fma is a C library call per lane; llvm.fmuladd is then a
        # multiply and an add (rounded in between), and on every unit with FMA the same as llvm.fma.
        fma_name = "fma" if simd_unit().fused else "fmuladd"
        fma = self.intrinsic(fma_name, self.vector, self.vector, [self.vector] * 3)
        panel_row = self.load_vectors(self.address(panel, (channel, panel_step)), self.vector, self.n_vectors)
        if copy_row is not None:
            for v, weights in enumerate(panel_row):
                builder.store(weights, self.vector_pointer(copy_row, v, self.vector), align=self.itemsize * self.lanes)
        updated = []
        for pixel_row, acc_row in zip(pixel_rows, acc, strict=True):
            pixel = self.broadcast_pixels(self.address(pixel_row, (channel, pixel_step)), n_present)
            updated.append(
                [builder.call(fma, [pixel, weights, a]) for weights, a in zip(panel_row, acc_row, strict=True)]
            )
        return updated

    def broadcast_pixels(self, address, n_present):
        """The group's pixel values at address, repeated across a vector (lane l: value l % group); with
        n_present, only the first n_present are read and the others are -0.0."""
        builder, group = self.builder, self.group
        if group == 1:
            value = builder.load(builder.bitcast(address, self.element.as_pointer()), align=self.itemsize)
            return self.splat(value, self.vector)
        group_vector = ir.VectorType(self.element, group)
        pointer = builder.bitcast(address, group_vector.as_pointer())
        if n_present is None:
            values = builder.load(pointer, align=self.itemsize)
        else:
            argument_types = [group_vector.as_pointer(), self.i32, ir.VectorType(ir.IntType(1), group), group_vector]
            masked_load = self.intrinsic("masked.load", group_vector, group_vector, argument_types, name_suffix=".p0")
            present = self.lane_mask(0, n_present, group)
            missing = ir.Constant(group_vector, [-0.0] * group)
            values = builder.call(masked_load, [pointer, self.i32(self.itemsize), present, missing])
        return self.shuffle(values, values, [lane % group for lane in range(self.lanes)])

    def last_group(self, acc, pixel_rows, pixel_step, panel, panel_step, channel, end):
        """acc after the channels from channel to end, fewer than a group (none, often)."""
        builder = self.builder
        n_present = builder.sub(end, channel)
        before = builder.basic_block
        with builder.if_then(builder.icmp_signed(">", n_present, self.intp(0)), likely=False):
            updated = self.step(acc, pixel_rows, pixel_step, panel, panel_step, channel, n_present)
            partial_block = builder.basic_block
        return self.merge(acc, before, updated, partial_block)

    def merge(self, rows, block, other_rows, other_block):
        """Accumulator rows that are rows when control came from block and other_rows when it came
        from other_block (phi nodes, at the start of the block the two paths meet in)."""
        merged = []
        for row, other_row in zip(rows, other_rows, strict=True):
            merged_row = []
            for value, other_value in zip(row, other_row, strict=True):
                phi = self.builder.phi(self.vector)
                phi.add_incoming(value, block)
                phi.add_incoming(other_value, other_block)
                merged_row.append(phi)
            merged.append(merged_row)
        return merged

    def spread(self, out_values):
        """A row's accumulators from its out_vector values (bias or partial sums): a filter's value in
        its group's first lane, -0.0 in the others (x + -0.0 is x for every x, -0.0 included, so those
        lanes change no bit of the sum, not even a zero's sign)."""
        if self.group == 1:
            return out_values
        (values,) = out_values
        zeros = ir.Constant(self.out_vector, [-0.0] * self.width)
        per_vector = self.lanes // self.group  # (filters in one accumulator: all of them, or half when paired)
        group, width = self.group, self.width
        lanes = [
            [v * per_vector + lane // group if lane % group == 0 else width for lane in range(self.lanes)]
            for v in range(self.n_vectors)
        ]
        return [self.shuffle(values, zeros, vector_lanes) for vector_lanes in lanes]

    def gather(self, acc_row):
        """A row's out_vector values from its accumulators: each filter's group lanes added in order."""
        if self.group == 1:
            return acc_row
        per_vector = self.lanes // self.group
        totals = []
        for acc in acc_row:
            total = None
            for g in range(self.group):
                part = self.shuffle(acc, acc, [f * self.group + g for f in range(per_vector)])
                total = part if total is None else self.builder.fadd(total, part)
            totals.append(total)
        if len(totals) == 1:
            return totals
        first, second = totals  # (a paired panel: each vector holds half of its filters)
        return [self.shuffle(first, second, list(range(self.width)))]

    def initial(self, bias, out_rows, n_valid, first_channel):
        """Where each row's accumulators start: the bias when the channels start at 0, else the partial
        sums that the tiles over the channels before left in the output rows (only the first n_valid
        elements are read: masked loads for a partial last panel)."""
        builder = self.builder
        spread_bias = self.spread(bias)
        with builder.if_else(builder.icmp_signed("==", first_channel, self.intp(0)), likely=True) as (first, later):
            with first:
                first_block = builder.basic_block
            with later:
                loaded = [self.spread(self.load_valid(out_row, n_valid)) for out_row in out_rows]
                later_block = builder.basic_block
        return self.merge([spread_bias] * len(loaded), first_block, loaded, later_block)

    def load_valid(self, base, n_valid):
        """The width elements from base as out_vector values, reading only the first n_valid of them
        (masked loads, zeros in the other lanes): a partial last panel's row ends before width."""
        builder, vector = self.builder, self.out_vector
        mask_type = ir.VectorType(ir.IntType(1), vector.count)
        argument_types = [vector.as_pointer(), self.i32, mask_type, vector]
        masked_load = self.intrinsic("masked.load", vector, vector, argument_types, name_suffix=".p0")
        zeros = ir.Constant(vector, [0.0] * vector.count)
        alignment = self.i32(self.itemsize)
        return [
            builder.call(
                masked_load,
                [self.vector_pointer(base, v, vector), alignment, self.lane_mask(v, n_valid, vector.count), zeros],
            )
            for v in range(self.n_out_vectors)
        ]

    def lane_mask(self, v, n_valid, count):
        """Which lanes of the v-th vector of count lanes in a row hold one of its first n_valid elements."""
        valid = self.splat(self.builder.trunc(n_valid, self.i32), ir.VectorType(self.i32, count))
        lane_indices = ir.Constant(ir.VectorType(self.i32, count), [v * count + i for i in range(count)])
        return self.builder.icmp_signed("<", lane_indices, valid)

    def activate(self, values, relu):
        """max(v, floor), with floor 0 when relu holds (ReLU) and -inf otherwise (identity).

        Written ``floor if v < floor else v``: NaN < floor is false, so NaN is kept, like
        np.maximum(v, 0), and -0.0 stays -0.0.  One select per vector, which x86 does in one
        instruction (vmaxps); a ReLU flag and-ed into the comparison took three.
        """
        builder = self.builder
        floor_value = builder.select(relu, ir.Constant(self.element, 0.0), ir.Constant(self.element, float("-inf")))
        floor = self.splat(floor_value, self.out_vector)
        return [[builder.select(builder.fcmp_ordered("<", v, floor), floor, v) for v in row] for row in values]

    def store(self, values, out_rows, n_valid):
        """Store each row of out_vector values at its out_rows pointer: all width elements when
        n_valid >= width, else only the first n_valid (masked stores: a partial last panel)."""
        builder, vector = self.builder, self.out_vector
        with builder.if_else(builder.icmp_signed(">=", n_valid, self.intp(self.width))) as (whole, partial):
            with whole:
                for row, out_row in zip(values, out_rows, strict=True):
                    for v, value in enumerate(row):
                        builder.store(value, self.vector_pointer(out_row, v, vector), align=self.itemsize)
            with partial:
                mask_type = ir.VectorType(ir.IntType(1), vector.count)
                argument_types = [vector, vector.as_pointer(), self.i32, mask_type]
                # (overloaded on the pointer type too: p0, a pointer in address space 0)
                masked_store = self.intrinsic("masked.store", vector, ir.VoidType(), argument_types, name_suffix=".p0")
                for v in range(self.n_out_vectors):
                    mask = self.lane_mask(v, n_valid, vector.count)
                    for row, out_row in zip(values, out_rows, strict=True):
                        builder.call(
                            masked_store,
                            [row[v], self.vector_pointer(out_row, v, vector), self.i32(self.itemsize), mask],
                        )


@intrinsic
def _tile(
    typingctx,
    pixels,
    first_pixel,
    panel,
    panel_bias,
    k,
    out,
    relu,
    channels,
    ahead,
    copy_to,
    row_marker,
    width_marker,
    lanes_marker,
):
    """One tile over one block of channels: for p = first_pixel, r < len(row_marker), j < width (the
    panel's width) with k*width + j < out.shape[1], and (c0, n) = channels, c1 = c0 + n,

        out[p + r, k*width + j] = start + pixels[p + r, c0:c1] @ bank[c0:c1, k*width + j],

    where start is panel_bias[k, j] when c0 is 0 and what the tile of the block before left in out
    otherwise; the activation is applied (ReLU when relu holds) once c1 reaches the last channel.
    ``panel`` is (address, step): panel k's row for channel group q is q * step bytes from address,
    ``width x group`` elements, bank[q * group + g, k * width + j] at j * group + g (in the packed
    bank, or in a copy of the panel's rows: compute_chunk).  The accumulators are vectors of
    marker_lanes(lanes_marker) elements.  ``ahead`` is the address from which the tile prefetches a
    tile's worth of bytes as it goes (_TileCode.prefetch_share).  ``copy_to``: where a tile of a
    kind that copies its panels (copies_panels) stores the panel rows it reads, or 0 (aligned to a
    cache line; _TileCode.accumulate); other kinds ignore it."""
    rows, width, lanes = len(row_marker), marker_width(width_marker), marker_lanes(lanes_marker)
    copies = copies_panels(width, lanes, pixels.dtype.bitwidth // 8)
    signature = types.void(
        pixels, first_pixel, panel, panel_bias, k, out, relu, channels, ahead, copy_to, row_marker, width_marker,
        lanes_marker,
    )  # fmt: skip

    def codegen(context, builder, signature, args):
        code = _TileCode(context, builder, pixels.dtype, rows, width, lanes)
        pixels_value, first_pixel_value, panel_value, bias_value, k_value, out_value, relu_value = args[:7]
        panel_address, panel_step = cgutils.unpack_tuple(builder, panel_value)
        first_channel_value, n_block_value = cgutils.unpack_tuple(builder, args[7])
        ahead = builder.inttoptr(args[8], ir.IntType(8).as_pointer())
        copy_to = builder.inttoptr(args[9], ir.IntType(8).as_pointer()) if copies else None
        pixel_data, pixel_shape, pixel_strides = code.view(pixels, pixels_value)
        bias_data, _, bias_strides = code.view(panel_bias, bias_value)
        out_data, out_shape, out_strides = code.view(out, out_value)

        first_filter = builder.mul(k_value, code.intp(width))
        n_valid = builder.sub(out_shape[1], first_filter)

        out_rows = code.rows_from(
            code.address(out_data, (first_pixel_value, out_strides[0]), (first_filter, out_strides[1])), out_strides[0]
        )
        bias_row = code.address(bias_data, (k_value, bias_strides[0]))
        bias = code.load_vectors(bias_row, code.out_vector, code.n_out_vectors)
        start = code.initial(bias, out_rows, n_valid, first_channel_value)
        pixel_rows = code.rows_from(code.address(pixel_data, (first_pixel_value, pixel_strides[0])), pixel_strides[0])
        panel_row = builder.inttoptr(panel_address, ir.IntType(8).as_pointer())
        sums = code.accumulate(
            start, pixel_rows, pixel_strides[1], panel_row, panel_step, first_channel_value, n_block_value, ahead,
            copy_to,
        )  # fmt: skip
        last_block = builder.icmp_signed(">=", builder.add(first_channel_value, n_block_value), pixel_shape[1])
        totals = [code.gather(row) for row in sums]
        code.store(code.activate(totals, builder.and_(relu_value, last_block)), out_rows, n_valid)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _pointer(typingctx, address, like):
    """The int64 address as a pointer to like's dtype (for numba.carray)."""
    pointer_type = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))

    return pointer_type(address, like), codegen


# A job is published to the workers as int64 fields: array addresses and shapes.
_JOB_PIXELS, _JOB_PANELS, _JOB_BIAS, _JOB_OUT = 0, 1, 2, 3
_JOB_PIXEL_COUNT, _JOB_CHANNELS, _JOB_PANEL_COUNT, _JOB_FILTERS = 4, 5, 6, 7
_JOB_RELU, _JOB_TILE_GROUP, JOB_CHUNKS, _JOB_BLOCK = 8, 9, 10, 11
# Which job this is, counted by a caller that publishes many in one job array (the pool's): a
# thread's copy of a panel (see compute_chunk) is of the bank of the job it was made for.
JOB_NUMBER = 12
# The packed bank's row length in elements (the bank's F when it is read in place), and whether its
# last panel comes from the tail after the packed bias (kernel._panel_tail).
_JOB_PANEL_ROW, _JOB_TAIL = 13, 14
JOB_FIELDS = 16

# A thread's room for the copy of one panel's rows over one block of channels: 768 rows (the
# largest block, kernel._WHOLE_CHANNELS) of a cache line, and a line to align them with.  A block
# of more rows (one pass over the channels of a call whose tiles overlap) is not copied.
_COPY_ROWS = 768
COPY_ROOM_BYTES = (_COPY_ROWS + 1) * _CACHE_LINE


def copies_panels(width, lanes, itemsize):
    """Whether tiles of this panel width read their panel from a copy (compute_chunk): panels of more
    than one vector whose rows are a cache line or less (AVX2's 16 float32 or 8 float64 filters,
    NEON's, SSE's).  Such rows lie a bank row apart, and a bank row of 256 float32 is 16 cache lines,
    so a panel's rows share 4 of L1's 64 sets and evict each other; contiguous, they stay in L1
    while a group of pixel tiles uses them.  AVX-512's panels (256-byte rows) are read in place, as
    before: the host this was measured on (Zen 3) cannot run them."""
    return width > lanes and width * itemsize <= _CACHE_LINE


# An entry point's small arrays (its job, a thread's room for panel copies) live in its stack frame:
# np.empty's code is compiled in every process that compiles a caller of it, 0.25 s of a first run
# on a Zen 1 host.  Compiled into the entry point itself (an intrinsic), not into a helper, whose
# frame would be gone when it returned.


def _stack_array(context, builder, element_type, n_elements: int):
    """The IR of an array of n_elements element_type in the entry block's stack frame."""
    element = context.get_data_type(element_type)
    data = cgutils.alloca_once(builder, element, size=max(n_elements, 1))
    array_type = types.Array(element_type, 1, "C")
    array = context.make_array(array_type)(context, builder)
    intp = context.get_value_type(types.intp)
    itemsize = ir.Constant(intp, context.get_abi_sizeof(element))
    populate_array(array, data, [ir.Constant(intp, n_elements)], [itemsize], itemsize, meminfo=None)
    return array


@intrinsic
def on_stack(typingctx, length):
    """An int64 array of ``length`` (a constant) elements in the stack frame of the function it is
    compiled into, for as long as that function runs."""
    if not isinstance(length, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        return _stack_array(context, builder, types.int64, length.literal_value)._getvalue()

    return types.Array(types.int64, 1, "C")(length), codegen


@intrinsic
def copy_room(typingctx, like):
    """A thread's room for panel copies (COPY_ROOM_BYTES of like's dtype), and what it holds: (job
    number, panel, first channel), -1 each until a copy is made; both in the stack frame of the
    function it is compiled into."""
    room_type, held_type = types.Array(like.dtype, 1, "C"), types.Array(types.int64, 1, "C")

    def codegen(context, builder, signature, args):
        itemsize = context.get_abi_sizeof(context.get_data_type(like.dtype))
        room = _stack_array(context, builder, like.dtype, COPY_ROOM_BYTES // itemsize)
        held = _stack_array(context, builder, types.int64, 3)
        for i in range(3):
            builder.store(ir.Constant(ir.IntType(64), -1), cgutils.gep(builder, held.data, i))
        return context.make_tuple(builder, signature.return_type, [room._getvalue(), held._getvalue()])

    return types.Tuple((room_type, held_type))(like), codegen


def tile_counts(n_pixels, rows):
    """(tiles of ``rows`` pixels, tiles of ``rows - 1`` pixels after them) that cover n_pixels.

    The second count is the fewest short tiles that leave a whole number of long ones. When they
    would need more pixels than there are, there are none, and the last long tile is shifted back.
    """
    short = (rows - n_pixels % rows) % rows if rows > 1 else 0
    if short * (rows - 1) > n_pixels:
        short = 0
    return (n_pixels - short * (rows - 1) + rows - 1) // rows, short


_tile_counts_compiled = helper(tile_counts)


@intrinsic
def kind_numbers(typingctx, width_marker, lanes_marker, like):
    """(panel width, vector lanes, channel group, 1 if tiles copy their panels else 0) of a kind,
    worked out from the markers' types as the kind is compiled: four constants in the compiled code."""
    width, lanes = marker_width(width_marker), marker_lanes(lanes_marker)
    itemsize = like.dtype.bitwidth // 8
    values = (width, lanes, channel_group(width, lanes, itemsize), int(copies_panels(width, lanes, itemsize)))
    return_type = types.UniTuple(types.intp, 4)

    def codegen(context, builder, signature, args):
        return context.make_tuple(builder, return_type, [context.get_constant(types.intp, v) for v in values])

    return return_type(width_marker, lanes_marker, like), codegen


@helper
def _job_arrays(job, width_marker, lanes_marker, like):
    """(pixels, panels, tail, panel_bias, out): the job's arrays, rebuilt from the addresses and shapes
    in ``job`` (describe_job)."""
    width, _, group, _ = kind_numbers(width_marker, lanes_marker, like)
    n_pixels, n_channels = job[_JOB_PIXEL_COUNT], job[_JOB_CHANNELS]
    n_panels = job[_JOB_PANEL_COUNT]
    pixels = numba.carray(_pointer(job[_JOB_PIXELS], like), (n_pixels, n_channels))
    n_group_rows = (n_channels + group - 1) // group
    panels = numba.carray(_pointer(job[_JOB_PANELS], like), (n_group_rows, job[_JOB_PANEL_ROW]))
    panel_bias = numba.carray(_pointer(job[_JOB_BIAS], like), (n_panels, width))
    tail_address = job[_JOB_BIAS] + n_panels * width * like.itemsize  # (see kernel._panel_tail)
    tail = numba.carray(_pointer(tail_address, like), (n_channels if job[_JOB_TAIL] else 0, width))
    out = numba.carray(_pointer(job[_JOB_OUT], like), (n_pixels, job[_JOB_FILTERS]))
    return pixels, panels, tail, panel_bias, out


@cached_with_sources(python_wrapper=False)
def compute_chunk(job, chunk, n_chunks, room, held, row_marker, width_marker, lanes_marker, like):
    """Run chunk ``chunk`` of ``n_chunks`` equal runs of the (pixel tile, panel) pairs of the job in
    ``job``, with this thread's room for panel copies (``copy_room``): pairs start..stop-1,
    ``block`` channels at a time, every pair over the first block of channels, then every pair
    over the next.

    The pairs are ordered in groups of ``tile_group`` pixel tiles: each panel in turn meets every
    tile of a group, then the next group.  One tile to a group is pixel-major order (a pixel tile
    stays in L1 while it meets every panel), all tiles in one group panel-major order (a panel
    stays in L1 or L2 while it meets every pixel tile), and groups in between keep a panel in L1 or
    L2 while the group's pixels stay in L2 (see plan).  Blocks of channels keep the part of the bank
    that the pairs share small enough to stay in L2 while they all use it (see kernel._block).

    When ``copying``, the tiles read their panel from a copy of its rows of the block in the
    thread's ``room``, which the first of them makes as it reads the bank; ``held`` says which job,
    panel and block the room holds, so that the next chunk of this thread that goes on with them
    need not copy them again.

    (One function: compiled as two, LLVM optimised and compiled the walk's code once more in this
    one, and a first run took 0.5 s longer on a Zen 1 host.)
    """
    pixels, panels, tail, panel_bias, out = _job_arrays(job, width_marker, lanes_marker, like)
    relu, tile_group, block = job[_JOB_RELU] != 0, job[_JOB_TILE_GROUP], job[_JOB_BLOCK]
    n_pixels, n_channels = pixels.shape
    rows = len(row_marker)
    short_marker = row_marker[1:]  # the tile one row shorter: its own unrolled code
    n_long, n_short = _tile_counts_compiled(n_pixels, rows)
    n_tiles, n_panels = n_long + n_short, panel_bias.shape[0]
    n_pairs = n_tiles * n_panels
    start, stop = chunk * n_pairs // n_chunks, (chunk + 1) * n_pairs // n_chunks
    if held[0] != job[JOB_NUMBER]:  # (a copy made for another job: its bank may have changed since)
        held[0], held[1], held[2] = job[JOB_NUMBER], -1, -1
    width, _, step_channels, copies = kind_numbers(width_marker, lanes_marker, like)
    copying = (
        copies
        and min(tile_group, n_tiles) > 1  # (a panel meets several tiles in turn)
        and n_panels > 1
        and min(block, n_channels) <= _COPY_ROWS  # (a copying tile's panel rows are one channel each)
        and len(room) * room.itemsize >= COPY_ROOM_BYTES  # (a room that holds them: see copy_room)
    )
    group_size = min(tile_group, n_tiles)
    row_bytes = n_channels * pixels.itemsize
    # Where the panels are, as plain numbers: an array handed to a function at every pair cost a
    # reference count up and down (two calls, and an atomic add each), 15-20 ns a pair on a Zen 1 host.
    panel_bytes = width * step_channels * pixels.itemsize
    bank = (np.int64(panels.ctypes.data), panels.strides[0])
    last = (np.int64(tail.ctypes.data), tail.strides[0])  # (the last panel, when tail has its rows)
    tail_panel = n_panels - 1 if len(tail) else -1
    room_address = np.int64(room.ctypes.data + (-room.ctypes.data) % _CACHE_LINE)
    held_panel, held_channel = held[1], held[2]
    # Prefetches never ask for bytes past the pixels: an address with no page behind it costs a
    # page walk at every request (the TLB keeps no failures), and pixels that end a mapping are
    # common (every fresh heap or mmap top).  784x192->16 ran 1.44x slower, one thread, with its
    # pixels followed by an unmapped page.  A tile prefetches rows x row_bytes from ``ahead``.
    last_ahead = pixels.ctypes.data + max(n_pixels - rows, 0) * row_bytes
    # (one pass even without channels: it writes the bias)
    for first_channel in range(0, max(n_channels, 1), block):
        n_block = min(block, n_channels - first_channel)
        # Walk the pairs with counters: a division per pair costs as much as a
        # whole tile when there are few channels (RGB stem).
        group, pair_in_group = start // (group_size * n_panels), start % (group_size * n_panels)
        tiles_here = min(group_size, n_tiles - group * group_size)  # (the last group may be short)
        k, tile_in_group = pair_in_group // tiles_here, pair_in_group % tiles_here
        for _ in range(stop - start):
            t = group * group_size + tile_in_group
            if k == 0 and group_size < n_tiles and n_block == n_channels:
                # A pixel tile's first pass: as it goes, it asks for the pixels a few tiles on. Few
                # pixels (panel-major order) are in cache already; and with blocks of channels,
                # prefetching the next tiles' part of the rows (all at once) slowed the call. Those
                # tiles ask for their own rows instead, a hint that costs only a load slot.
                ahead = min(pixels.ctypes.data + (t + 1) * rows * row_bytes + _PREFETCH_AHEAD_BYTES, last_ahead)
            else:
                ahead = pixels.ctypes.data + min(t * rows, n_pixels - rows) * row_bytes
            channels = (first_channel, n_block)
            panel = last if k == tail_panel else (bank[0] + k * panel_bytes, bank[1])
            copy_to = np.int64(0)
            if copying:  # (the rows of the block, one after the other in the room)
                if held_panel != k or held_channel != first_channel:
                    # This tile reads the bank's rows and copies them as it goes: a copy loop of
                    # its own before the tiles cost 49x2048->512 about 9 % (Zen 1, AVX2).
                    copy_to = room_address
                    held_panel, held_channel = k, first_channel
                else:
                    panel = (room_address - first_channel * panel_bytes, panel_bytes)
            if t < n_long:
                # (shifted back to end at n_pixels when there are no short tiles:
                # it recomputes a few rows, same values, instead of a scalar remainder loop)
                first_pixel = min(t * rows, n_pixels - rows)
                _tile(
                    pixels, first_pixel, panel, panel_bias, k, out, relu, channels, ahead, copy_to,
                    row_marker, width_marker, lanes_marker,
                )  # fmt: skip
            else:
                first_pixel = n_long * rows + (t - n_long) * (rows - 1)
                _tile(
                    pixels, first_pixel, panel, panel_bias, k, out, relu, channels, ahead, copy_to,
                    short_marker, width_marker, lanes_marker,
                )  # fmt: skip
            tile_in_group += 1
            if tile_in_group == tiles_here:
                tile_in_group = 0
                k += 1
                if k == n_panels:
                    k = 0
                    group += 1
                    tiles_here = min(group_size, n_tiles - group * group_size)
    held[1], held[2] = held_panel, held_channel


def chunk_signature(row_marker, width_marker, lanes_marker, like) -> tuple:
    """The argument types of compute_chunk for the kind of these markers (like: an empty array of its
    dtype), as every caller passes them."""
    markers = (row_marker, width_marker, lanes_marker)
    room_type = numba.typeof(like)  # (a room is an array of the kind's dtype, as like is)
    return (
        types.int64[::1],
        types.int64,
        types.int64,
        room_type,
        types.int64[::1],
        *map(numba.typeof, markers),
        room_type,
    )


def chunk_address(row_marker, width_marker, lanes_marker, like) -> int:
    """The address of compute_chunk's compiled code for the kind of these markers (compiled, or loaded
    from numba's cache, now), for call_chunk."""
    signature = chunk_signature(row_marker, width_marker, lanes_marker, like)
    compute_chunk.compile(signature)
    compiled = compute_chunk.overloads[signature]
    # (the function itself, in numba's calling convention: compute_chunk has no wrapper for Python)
    return compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)


@intrinsic
def call_chunk(typingctx, address, job, chunk, n_chunks, room, held, row_marker, width_marker, lanes_marker, like):
    """compute_chunk(job, chunk, ...) through the address of its compiled code (chunk_address).

    Called by name, compute_chunk's code would be linked into every caller, and LLVM would
    optimise and compile it once more in each (run_alone, run_pooled, serve): 0.2-0.25 s of a first
    run apiece on a Zen 1 host.  Called through its address, it is compiled once."""
    argument_types = (job, types.int64, types.int64, room, held, row_marker, width_marker, lanes_marker, like)

    def codegen(context, builder, signature, args):
        function_type = context.call_conv.get_function_type(types.none, argument_types)
        function = builder.inttoptr(args[0], function_type.as_pointer())
        status, _ = context.call_conv.call_function(builder, function, types.none, argument_types, args[1:])
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(types.int64, *argument_types), codegen


@helper
def describe_job(
    job, pixels, panels, panel_bias, out, relu, tile_group, block, n_chunks, n_panels, width_marker, lanes_marker
):
    """Write the job's array addresses and shapes into ``job``, where any thread can read them."""
    job[_JOB_PIXELS] = pixels.ctypes.data
    job[_JOB_PANELS] = panels.ctypes.data
    job[_JOB_BIAS] = panel_bias.ctypes.data
    job[_JOB_OUT] = out.ctypes.data
    job[_JOB_PIXEL_COUNT], job[_JOB_CHANNELS] = pixels.shape
    job[_JOB_PANEL_COUNT], job[_JOB_FILTERS] = n_panels, out.shape[1]
    job[_JOB_RELU], job[_JOB_TILE_GROUP], job[_JOB_BLOCK] = relu, tile_group, block
    job[JOB_CHUNKS] = n_chunks
    job[_JOB_PANEL_ROW] = panels.shape[1]
    # (the packed bias is followed by the last panel's rows when the bank is read in place: kernel._panel_tail)
    width = kind_numbers(width_marker, lanes_marker, panels)[0]
    job[_JOB_TAIL] = len(panel_bias) > n_panels * width


# Pixel-major pairs take their pixel tiles in groups when the bank's block of channels (its part
# in use) is larger than _BANK_BYTES_IN_L2: each panel then meets a group of tiles, whose pixel rows
# (about _TILE_GROUP_BYTES) stay in L2, before the next panel, so the bank comes from L3 once per
# group rather than once per tile.  Measured on the Zen 5 host, two threads, AVX-512 (GFLOP/s, two
# processes each): 7x7x2048->512 with N=32 from 338-349 to 425-426, 56x56x256->1024 from 383-416
# to 480-494; AVX2: 7x7x2048->512 N=32 from 205-207 to 220-224.  Groups of tiles over a bank that
# fits in L2 cost 28x28x128->512 N=8 a tenth (its pixels come from L2 instead of L1); groups of 64
# or 128 KiB ran alike, 192 and 384 KiB slower.
_BANK_BYTES_IN_L2 = 512 * 1024
_TILE_GROUP_BYTES = 96 * 1024
# Tiles that read their panel from a copy (copies_panels) take the pixel tiles in groups as soon as
# the bank's block outgrows a half of L1, each copied panel meeting a whole group of tiles from L1
# while the group's pixel rows come from L2.  Groups of about 192 KiB of pixel rows did best on a
# Zen 3 host (512 KiB of L2 a core; AVX2, two threads, median of 13 layers: 83.1 % of the FMA peak
# against 79.9 % with 96 KiB and 81.9 % with 320 KiB).
_BANK_BYTES_IN_L1 = 16 * 1024
_COPIED_TILE_GROUP_BYTES = 192 * 1024


@helper
def plan(pixels, panels, out, block, rows, n_panels, copies):
    """(pixel tiles per group, channels per block, number of (pixel tile, panel) pairs) of a job.

    Panel-major (one group of every tile) when the bank outweighs the pixels: each panel then stays
    in cache while it meets every pixel tile.  Otherwise pixel-major, in groups of tiles when the
    bank's block is too large for L2 (see _TILE_GROUP_BYTES), or, when tiles read copies of their
    panels (``copies``: copies_panels), for L1.  ``block`` is the bank's block of
    channels (PackedBank.block), which only tiles that cover the pixels exactly may use: an
    overlapping last tile recomputes rows of the one before, which blocks would add twice.  (Worked
    out here, compiled, rather than in Python before the call: each step of Python is slow when the
    caches are full of the kernel's data.)
    """
    n_pixels, n_channels = pixels.shape
    n_long, n_short = _tile_counts_compiled(n_pixels, rows)
    if n_long * rows + n_short * (rows - 1) != n_pixels:
        block = max(n_channels, 1)
    n_tiles = n_long + n_short
    channels_at_once = max(min(block, n_channels), 1)
    tile_group = 1
    block_bytes = channels_at_once * panels.shape[1] * panels.itemsize  # (a row: every panel's)
    if n_pixels < out.shape[1]:
        tile_group = n_tiles
    elif copies and block_bytes > _BANK_BYTES_IN_L1:
        tile_group = max(_COPIED_TILE_GROUP_BYTES // (rows * channels_at_once * pixels.itemsize), 1)
    elif block_bytes > _BANK_BYTES_IN_L2:
        tile_group = max(_TILE_GROUP_BYTES // (rows * channels_at_once * pixels.itemsize), 1)
    return tile_group, block, n_tiles * n_panels


@intrinsic
def panels_in(typingctx, panels, width_marker, lanes_marker):
    """How many panels a packed bank holds: its rows are every panel's ``width x group`` values side
    by side, and a bank read in place may end in part of a panel.  (The compiled code takes the bank
    and the bias as they are, 2-D and 1-D, and views them as panels itself: a reshape in Python cost
    a tiny call 5 %.  An intrinsic: as a compiled helper it cost a first run 0.04 s.)"""
    width, lanes = marker_width(width_marker), marker_lanes(lanes_marker)
    panel_elements = width * channel_group(width, lanes, panels.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        row_length = cgutils.unpack_tuple(builder, context.make_array(panels)(context, builder, args[0]).shape)[1]
        intp = context.get_value_type(types.intp)
        rounded_up = builder.add(row_length, ir.Constant(intp, panel_elements - 1))
        return builder.udiv(rounded_up, ir.Constant(intp, panel_elements))

    return types.intp(panels, width_marker, lanes_marker), codegen


@intrinsic
def out_overlaps(typingctx, out, pixels, panels, panel_bias):
    """Whether out's bytes overlap those of the pixels, the bank or the bias (each C-contiguous, so
    one range of addresses each), which the tiles read while others write out.

    Asked here rather than with np.may_share_memory before the call: its three calls cost 2.2 us of
    a tiny call with out=, and a check of Python's own (flags.owndata, .base) misses memory shared
    through a foreign buffer (np.frombuffer).  An intrinsic, a few instructions in the entry point:
    as a compiled helper it cost a first run 0.1 s."""

    def codegen(context, builder, signature, args):
        def byte_range(array_type, value):
            array = context.make_array(array_type)(context, builder, value)
            start = builder.ptrtoint(array.data, context.get_value_type(types.intp))
            return start, builder.add(start, builder.mul(array.nitems, array.itemsize))

        start, end = byte_range(out, args[0])
        meets = builder.icmp_unsigned("<", start, end)  # (an empty out meets nothing)
        any_other = cgutils.false_bit
        for array_type, value in zip(signature.args[1:], args[1:], strict=True):
            other_start, other_end = byte_range(array_type, value)
            conditions = (
                builder.icmp_unsigned("<", other_start, other_end),  # (not empty)
                builder.icmp_unsigned("<", other_start, end),
                builder.icmp_unsigned("<", start, other_end),
            )
            any_other = builder.or_(any_other, functools.reduce(builder.and_, conditions))
        return builder.and_(meets, any_other)

    return types.boolean(out, pixels, panels, panel_bias), codegen


@cached_with_sources
def run_alone(pixels, panels, panel_bias, out, relu, block, chunk_code, row_marker, width_marker, lanes_marker, like):
    """A whole job on the calling thread; False, with nothing written, when out shares memory with
    what the tiles read (out_overlaps: the caller goes through a temporary).  (It calls no
    Linux-only function, unlike the pool's code.)"""
    if out_overlaps(out, pixels, panels, panel_bias):
        return False
    job = on_stack(JOB_FIELDS)
    # (the steps that run_pooled and run_portable take too, written out in each: as a helper of
    # its own, calling plan and describe_job, they cost a first run 0.25 s more of compiling)
    n_panels = panels_in(panels, width_marker, lanes_marker)
    copies = kind_numbers(width_marker, lanes_marker, like)[3] != 0
    tile_group, block, _ = plan(pixels, panels, out, block, len(row_marker), n_panels, copies)
    describe_job(job, pixels, panels, panel_bias, out, relu, tile_group, block, 1, n_panels, width_marker, lanes_marker)
    job[JOB_NUMBER] = 0
    room, held = copy_room(like)
    # (chunk 0 of 1: call_chunk casts them to compute_chunk's int64s, so literals compile nothing more)
    call_chunk(chunk_code[0], job, 0, 1, room, held, row_marker, width_marker, lanes_marker, like)
    return True
