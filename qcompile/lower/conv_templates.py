"""Hand-written schedules for packed convolutions on CPUs (int8 on x86 VNNI, AVX2 without it, or ARM sdot; float
on FMA vectors): the default schedule of every packed conv that no tuning record covers, and candidates of
tuning's cold re-timing (`pick`).

One output-channel block's weights are read once, in storage order ([oc][ic/4][ky][kx][k lanes × 4 channels];
float: [oc][ic][ky][kx][k lanes]), while a register tile of `oc_tile` blocks × `x_tile` pixels of sums (one
dot-product instruction each per 4 input channels, one FMA per channel) stays in registers; the epilogue
(requantize, bias, activation) then runs on that tile before it is stored.
Output-channel blocks and rows are the parallel loop. MetaSchedule's space for these kernels tiles the loops in
any order, and within its budget it keeps schedules that read the weights in an order unrelated to how they are
stored, which lose up to 30 % with the weights cold, as they are in the running network (benchmarks/RESULTS.md).

The default tile (`register_tile`) comes from a small cost model per kernel class (`RegisterFile`): the tile that
fits the vector registers and issues the fewest instructions per sum; tuning offers every tile that fits
(`candidates`) and times them cold beside its own.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import intrinsics
from .kernels import CONV_BLOCK, FLOAT_CONV_BLOCK, IC_BLOCK, WIDE_WEIGHTS

X_TILES = (2, 4, 7, 8, 14)  # output pixels of a row per register tile tuning offers
_SPATIAL = 0  # IterVar.DataPar


@dataclasses.dataclass(frozen=True)
class RegisterFile:
    """The register tiles of one packed conv kernel class on a CPU, and what they cost: a tile of `oc_tiles`
    blocks × x pixels holds at most `max_sums` sums (more spill), and each step of the reduction issues
    `per_block` instructions a channel block (its weights), `per_pixel` a pixel (its broadcast input) and
    `per_sum` a sum."""

    block: str  # the conv's compute block (kernels.CONV_BLOCK, kernels.FLOAT_CONV_BLOCK)
    lanes: int  # output channels of a block
    intrinsic: str | None  # the int8 dot product; None: float lanes, vectorized (one FMA a step)
    tensorize: str | None  # the intrinsic's variant summing into registers (a local buffer)
    oc_tiles: tuple[int, ...]
    max_sums: int
    min_sums: int  # independent sums that hide the latency of an accumulating instruction
    per_block: float
    per_pixel: float
    per_sum: float
    depth: int = IC_BLOCK  # input channels each output sums per instruction
    weight_dtype: str = "int8"  # the packed weights' (AVX2's may be stored widened)
    # a matrix multiply (smmla: 2 × 2 sums of `depth` products) instead of a dot product per lane: the pixels of
    # one instruction (2, or 1: the single-pixel form), its output channels being 2 of a block's lanes
    matrix_pixels: int = 0
    # the most bytes of weights a tile may read over its reduction (0: no limit): a tile whose weights stay in L1
    # reads them from there at every pixel; past it, from L2 at every pixel, at `streamed_block` more instructions
    # a block and step (None: such a tile only where none fits, as for AVX2's widened weights, which every
    # multiply reads from memory)
    tile_weight_bytes: int = 0
    streamed_block: float | None = None

    def fits(self, oc_tile: int, x_tile: int) -> bool:
        pixels = max(1, self.matrix_pixels)
        return oc_tile in self.oc_tiles and oc_tile * x_tile <= self.max_sums and x_tile % pixels == 0

    def weights_fit(self, oc_tile: int, reduction: int) -> bool:
        """Whether the weights of `oc_tile` blocks over a reduction of `reduction` products a sum stay in L1."""
        size = np.dtype(self.weight_dtype).itemsize
        return not self.tile_weight_bytes or oc_tile * self.lanes * reduction * size <= self.tile_weight_bytes

    def cost(self, oc_tile: int, x_tile: int, reduction: int = 0) -> float:
        """Instructions issued per sum and reduction step, for a reduction of `reduction` products a sum."""
        sums = oc_tile * x_tile
        per_block = self.per_block + (0 if self.weights_fit(oc_tile, reduction) else self.streamed_block or 0)
        return (oc_tile * per_block + x_tile * self.per_pixel + sums * self.per_sum) / sums

    def default_schedule(self, mod):
        return default_schedule(mod, self)

    def candidates(self, mod):
        return candidates(mod, self)


REGISTER_FILES = {
    # vpdpbusd takes one operand from memory, so a block's weights or a pixel's broadcast input waits in a
    # register beside the sums; tiles of more than 16 sums lost up to 2.7× to smaller ones on Zen 4 and Ice Lake
    # (benchmarks/tiles.py, RESULTS.md), and eight sums hide its latency. Weights that overflow a 32 KB L1 come
    # from L2 at every pixel: on Zen 5, ResNet-50's 14-pixel rows ran up to 1.5× faster as 2 blocks × 7 pixels
    # than as 4 × 2 where 4 blocks' weights overflowed
    intrinsics.VNNI: RegisterFile(CONV_BLOCK, 16, intrinsics.VNNI, intrinsics.VNNI_LOCAL, oc_tiles=(1, 2, 4),
                                  max_sums=16, min_sums=8, per_block=0, per_pixel=1, per_sum=1,
                                  tile_weight_bytes=32 * 1024, streamed_block=1),
    # vpmaddwd on 16-bit operands: a block's weights widened as loaded (2 × vpmovsxbw), a pixel's two channel
    # pairs broadcast from the widened input; a sum takes 2 × (vpmaddwd, vpaddd). The costs are fitted to the
    # fastest tiles of MobileNet's and SqueezeNet's convs (AMD Zen 3, benchmarks/RESULTS.md): tiles of up to 10
    # sums, widening a block costing as much as two sums
    intrinsics.AVX2: RegisterFile(CONV_BLOCK, 8, intrinsics.AVX2, intrinsics.AVX2, oc_tiles=(1, 2, 3, 4, 5, 6, 7, 8),
                                  max_sums=10, min_sums=1, per_block=2, per_pixel=3, per_sum=1),
    # small weights widened in the kernel first: read by vpmaddwd from memory, one load a sum and channel pair, so
    # the tile is bound by loads and spans output-channel blocks (each broadcast input pair serving all of them);
    # the fitted costs pick a column of blocks over one pixel or a few; a column whose weights overflow Zen 3's
    # 32 KB L1 streams them from L2 at every pixel (ResNet-50's 64 → 64 3×3 convs at 56²: 4 blocks × 1 pixel
    # 2.63 ms, 2 × 2 1.70 ms, timed alone)
    intrinsics.AVX2_W16: RegisterFile(CONV_BLOCK, 8, intrinsics.AVX2_W16, intrinsics.AVX2_W16,
                                      oc_tiles=(1, 2, 3, 4, 5, 6, 7, 8), max_sums=6, min_sums=1, per_block=0,
                                      per_pixel=0.5, per_sum=1, weight_dtype="int16", tile_weight_bytes=32 * 1024),
    # sdot (64-bit ARM, NEON's 32 registers): a block's weights one register, a pixel's 4 bytes one dup; it
    # accumulates in place (latency 3-4, two a cycle on Cortex-A76/Neoverse). Not timed on a board yet: the
    # same model as VNNI's, with the registers NEON has
    intrinsics.ARM_SDOT: RegisterFile(CONV_BLOCK, 4, intrinsics.ARM_SDOT, intrinsics.ARM_SDOT_LOCAL,
                                      oc_tiles=(1, 2, 3, 4, 6, 8), max_sums=24, min_sums=8, per_block=1,
                                      per_pixel=1, per_sum=1),
    # smmla (ARM i8mm): a "sum" here is a block of 8 channels at one pixel, two registers of 2 × 2 sums; per
    # reduction step a block's weights are 4 loads (one per channel pair), a pixel pair's input one load, and a
    # sum takes 2 smmla. Twelve sums (24 registers) at most; 4 (8 independent smmla) hide its latency. Not timed
    # on a board yet: qemu checks the integers only
    intrinsics.I8MM: RegisterFile(CONV_BLOCK, 8, intrinsics.I8MM, intrinsics.I8MM, oc_tiles=(1, 2, 3, 4, 6),
                                  max_sums=12, min_sums=4, per_block=4, per_pixel=0.5, per_sum=2, depth=8,
                                  matrix_pixels=2),
    # the single-pixel form (strided convs, odd rows): 4 smmla a sum, each half used; its input dup'ed
    intrinsics.I8MM_SINGLE: RegisterFile(CONV_BLOCK, 8, intrinsics.I8MM_SINGLE, intrinsics.I8MM_SINGLE,
                                         oc_tiles=(1, 2, 3, 4, 6), max_sums=6, min_sums=2, per_block=4,
                                         per_pixel=2, per_sum=4, depth=8, matrix_pixels=1),
}
# a kernel class with other forms: i8mm's single-pixel fallback, AVX2's widened weights
_FORMS = {intrinsics.I8MM: (intrinsics.I8MM, intrinsics.I8MM_SINGLE), intrinsics.AVX2: (intrinsics.AVX2,
                                                                                         intrinsics.AVX2_W16)}

# float convs by FMA lanes (8: AVX2, 16: AVX-512): a broadcast input times a weight vector, into a sum. Measured
# on AVX2 (AMD Zen 3, MobileNet's and SqueezeNet's convs): tiles of 7-8 sums ran at up to 90 % of the FMA peak,
# 12 or more at half of it, and on a 7-pixel row one block × 7 pixels beat 8 blocks × 1; half the registers
# hold sums, and a weight vector costs more than a broadcast input
FLOAT_FILES = {
    lanes: RegisterFile(FLOAT_CONV_BLOCK, lanes, None, None, oc_tiles=(1, 2, 3, 4, 5, 6, 8),
                        max_sums=registers // 2, min_sums=4, per_block=2, per_pixel=1, per_sum=1)
    for lanes, registers in ((8, 16), (16, 32), (4, 32))  # AVX2, AVX-512, NEON
}


def register_files(target) -> list:
    """The packed conv kernel classes `target` has templates for (`RegisterFile`s, or AMX's `amx.KernelClass`:
    each has `default_schedule(mod)` and `candidates(mod)`): its int8 instruction's, its float lanes'."""
    from . import amx

    intrinsic = intrinsics.for_target(target)
    dot = intrinsics.for_target(target, tiles=False)  # on AMX CPUs, for the convs AMX's tiles do not take
    files = [amx.KernelClass() if intrinsic == intrinsics.AMX else None,
             *(REGISTER_FILES.get(form) for form in _FORMS.get(dot, (dot,))),
             FLOAT_FILES.get(intrinsics.float_lanes(target))]
    return [f for f in files if f is not None]


def default_schedule(mod, file: RegisterFile):
    """The schedule (`s_tir.Schedule`) of the kernel `mod["main"]` with the default register tile; None if it is
    not a conv of `file`'s class with an elementwise epilogue."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    shape = conv_shape(sch, file)  # reads the kernel only
    if shape is None:
        return None
    try:
        oc_blocks, width, reduction = shape
        schedule(sch, *register_tile(oc_blocks, width, file, reduction), file)
    except Exception:  # noqa: BLE001 - TVM's error for an epilogue that cannot be fused into the tile
        return None
    return sch


def fitting_tiles(oc_blocks: int, width: int, file: RegisterFile) -> list[tuple[int, int]]:
    """Every (oc_tile, x_tile) that fits `file`'s registers and divides the conv's channel blocks and output row."""
    return [(oc, x) for oc in file.oc_tiles if oc_blocks % oc == 0 for x in range(1, width + 1)
            if width % x == 0 and file.fits(oc, x)]


def register_tile(oc_blocks: int, width: int, file: RegisterFile, reduction: int = 0) -> tuple[int, int]:
    """(oc_tile, x_tile): of the tiles that fit in the registers (and, for a file without a `streamed_block`
    cost, whose weights over a reduction of `reduction` products a sum fit its `tile_weight_bytes`, where some
    do), with x_tile a divisor of the output row (a ragged tile would need a predicate in the vector loop) and
    enough sums to hide the instruction's latency (or the most there are), the one issuing fewest instructions
    per sum."""
    tiles = fitting_tiles(oc_blocks, width, file)
    if file.streamed_block is None:
        tiles = [t for t in tiles if file.weights_fit(t[0], reduction)] or tiles
    enough = min(file.min_sums, max(oc * x for oc, x in tiles))
    return min((t for t in tiles if t[0] * t[1] >= enough),
               key=lambda t: (file.cost(*t, reduction), -t[0] * t[1]))


def candidates(mod, file: RegisterFile) -> list:
    """Schedules (`s_tir.Schedule`) of the kernel `mod["main"]`, one per tile shape of `X_TILES` × the register
    file's `oc_tiles` that fits it; none if it is not a conv of `file`'s class with an elementwise epilogue."""
    from tvm import s_tir

    shape = conv_shape(s_tir.Schedule(mod), file)
    if shape is None:
        return []
    oc_blocks, width, _ = shape
    x_tiles = [x for x in X_TILES if width % x == 0] or [width]  # a narrow output (a classifier's 1×1) whole
    found = []
    for oc_tile in file.oc_tiles:
        for x_tile in x_tiles:
            if oc_blocks % oc_tile or not file.fits(oc_tile, x_tile):
                continue
            sch = s_tir.Schedule(mod)
            try:
                schedule(sch, oc_tile, x_tile, file)
            except Exception:  # noqa: BLE001 - TVM's error for an epilogue that cannot be fused into the tile
                continue
            found.append(sch)
    return found


def conv_shape(sch, file: RegisterFile) -> tuple[int, int, int] | None:
    """(output-channel blocks, output width, products a sum: kernel taps × input channels) of the kernel's packed
    conv, or None if the kernel is not one of `file`'s class."""
    import math

    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    if names.count(file.block) != 1:
        return None
    conv = blocks[names.index(file.block)]
    # int8: b, oc, y, x, [k lanes], ky, kx, ic/4, [4 channels, in one or two loops]; float: b, oc, y, x, [k], ic,
    # ky, kx
    extents = [int(iv.dom.extent) for iv in sch.get(conv).iter_vars]
    if len(extents) < 8 or extents[4] != file.lanes or (file.intrinsic and math.prod(extents[8:]) != file.depth):
        return None
    weights = sch.get(conv).reads[-1].source  # the conv's last operand: its packed (maybe widened) weights
    if file.intrinsic and str(weights.dtype) != file.weight_dtype:
        return None
    return extents[1], extents[3], math.prod(extents[5:])


def schedule(sch, oc_tile: int, x_tile: int, file: RegisterFile) -> None:
    """Schedule the packed conv kernel in `sch` with a register tile of `oc_tile` channel blocks × `x_tile` pixels."""
    if file.intrinsic:
        intrinsics.register(file.intrinsic)
    conv, epilogue = split_kernel(sch, file.block)
    batch, oc, y, x, lane, *reduction = sch.get_loops(conv)
    if file.intrinsic:
        ky, kx, ic, *channels = reduction
    else:
        (ic, ky, kx), channels = reduction, []
    oc_outer, oc_inner = sch.split(oc, factors=[None, oc_tile])
    x_outer, x_inner = sch.split(x, factors=[None, x_tile])
    # weights in storage order: ic/4, ky, kx for one channel block
    sch.reorder(batch, oc_outer, y, x_outer, ic, ky, kx, oc_inner, x_inner, lane, *channels)
    sums_at(sch, conv, epilogue, x_outer)
    sch.parallel(sch.fuse(batch, oc_outer, y))
    if not file.tensorize:
        sch.vectorize(lane)  # while the block still has its init: after, it is no reduction block TVM vectorizes
    init = sch.decompose_reduction(conv, ic)
    *_, init_oc, init_x, init_lane = sch.get_loops(init)
    sch.vectorize(init_lane)
    unrolled = [init_oc, init_x, oc_inner, x_inner]  # constant indices: LLVM keeps the sums in registers
    if file.matrix_pixels:  # the instruction's block: (pixels, 2 channels) of one pair of lanes
        lane_pair, lane = sch.split(lane, factors=[None, 2])
        pixel_group, pixels = sch.split(x_inner, factors=[None, file.matrix_pixels])
        sch.reorder(pixel_group, lane_pair, pixels, lane)
        unrolled[3:] = [pixel_group, lane_pair]
        if file.matrix_pixels > 1:
            lane = pixels  # tensorized from the pixel loop down
    for loop in unrolled:
        sch.unroll(loop)
    if file.tensorize:
        sch.tensorize(lane, file.tensorize)


def split_kernel(sch, block: str):
    """(the conv block, the epilogue's last block or None) of the packed conv kernel in `sch` whose compute block
    is named `block`: the padding (or widening) before it scheduled (once for all channel blocks, rows in
    parallel; a widening inlined into the padding; widened weights vectorized), the epilogue's other blocks
    inlined. ValueError if the epilogue is not elementwise over the conv's output."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    at = names.index(block)
    conv, epilogue = blocks[at], blocks[at + 1:]
    pads = [b for b, name in zip(blocks[:at], names) if name != WIDE_WEIGHTS]
    for weights in (b for b, name in zip(blocks[:at], names) if name == WIDE_WEIGHTS):
        loops = sch.get_loops(weights)
        sch.parallel(loops[0])
        sch.vectorize(sch.fuse(*loops[-3:]))  # a [2][k][2] operand
    out_shape = list(sch.get(conv).writes[0].source.shape)
    if any(iv.iter_type != _SPATIAL for b in epilogue for iv in sch.get(b).iter_vars) or (
            epilogue and list(sch.get(epilogue[-1]).writes[0].source.shape) != out_shape):
        raise ValueError("the epilogue is not elementwise over the conv's output")
    for before in pads[:-1]:
        sch.compute_inline(before)
    for pad in pads[-1:]:
        loops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
    for b in epilogue[:-1]:
        sch.compute_inline(b)
    return conv, (epilogue[-1] if epilogue else None)


def sums_at(sch, conv, epilogue, loop) -> None:
    """The conv's sums in a local buffer (registers) under `loop`, the epilogue computed from them there and
    vectorized."""
    sums = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(sums, loop)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, loop)
        sch.compute_inline(sums)  # the epilogue reads the sums from registers
        sch.vectorize(sch.get_loops(epilogue)[-1])
    else:
        sch.vectorize(sch.get_loops(sums)[-1])


def _rule_base():
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    return CPUScheduleRule


class DefaultConv(_rule_base()):
    """dlight rule: the default schedule of a packed conv (`default_schedule`) under the current target."""

    def apply(self, func, target, tunable):
        import tvm

        mod = tvm.IRModule({"main": func})
        return next((sch for file in register_files(target) if (sch := file.default_schedule(mod)) is not None),
                    None)
