"""Hand-written schedules for packed int8 convolutions on x86 VNNI: candidates of tuning's cold re-timing (`pick`).

MetaSchedule's space for these kernels tiles the loops in any order, and within its budget it keeps schedules that
read the weights in an order unrelated to how they are stored (ResNet-50's 3×3 convs step 576 bytes between
consecutive weight vectors). Measured with the weights cold, as they are in the running network where every layer's
weights come back from L3 or memory, those schedules lose up to 30 % (ResNet-50's stage-4 3×3 conv: 0.51 ms with
its weights cached, 0.68-0.80 ms without). Here one output-channel block's weights are read once, in storage order
([oc][ic/4][ky][kx][16][4]), while a register tile of `oc_tile` blocks × `x_tile` pixels of int32 sums (one
vpdpbusd each per 4 input channels) stays in registers; the requantize epilogue then runs on that tile before it
is stored. Output-channel blocks and rows are the parallel loop. A few tile shapes are offered per kernel; `pick`
times them cold beside the search's best schedules and keeps the fastest.
"""

from __future__ import annotations

from .kernels import CONV_BLOCK

OC_TILES = (1, 2, 4)  # output-channel blocks (16 channels each) per register tile
X_TILES = (4, 7, 8, 14)  # output pixels of a row per register tile
MAX_ACCUMULATORS = 28  # of AVX-512's 32 vector registers: the rest hold the weights and the broadcast input
_SPATIAL = 0  # IterVar.DataPar


def candidates(mod) -> list:
    """Schedules (`s_tir.Schedule`) of the kernel `mod["main"]`, one per tile shape that fits it; none if it is
    not a packed int8 conv with an elementwise epilogue."""
    from tvm import s_tir

    shape = _conv_shape(s_tir.Schedule(mod))
    if shape is None:
        return []
    oc_blocks, width = shape
    x_tiles = [x for x in X_TILES if width % x == 0] or [width]  # a narrow output (a classifier's 1×1) whole
    found = []
    for oc_tile in OC_TILES:
        for x_tile in x_tiles:
            if oc_blocks % oc_tile or oc_tile * x_tile > MAX_ACCUMULATORS:
                continue
            sch = s_tir.Schedule(mod)
            try:
                schedule(sch, oc_tile, x_tile)
            except Exception:  # noqa: BLE001 - TVM's error for an epilogue that cannot be fused into the tile
                continue
            found.append(sch)
    return found


def _conv_shape(sch) -> tuple[int, int] | None:
    """(output-channel blocks, output width) of the kernel's packed conv, or None if the kernel is not one."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    if names.count(CONV_BLOCK) != 1:
        return None
    conv = blocks[names.index(CONV_BLOCK)]
    extents = [int(iv.dom.extent) for iv in sch.get(conv).iter_vars]
    if len(extents) != 9 or extents[4] != 16 or extents[8] != 4:  # b, oc, y, x, [16 lanes], ky, kx, ic/4, [4]
        return None
    return extents[1], extents[3]


def schedule(sch, oc_tile: int, x_tile: int) -> None:
    """Schedule the packed conv kernel in `sch` with a register tile of `oc_tile` channel blocks × `x_tile` pixels."""
    from . import intrinsics

    intrinsics.register_vnni()
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    at = names.index(CONV_BLOCK)
    conv, pads, epilogue = blocks[at], blocks[:at], blocks[at + 1:]
    out_shape = list(sch.get(conv).writes[0].source.shape)
    if any(iv.iter_type != _SPATIAL for block in epilogue for iv in sch.get(block).iter_vars) or (
            epilogue and list(sch.get(epilogue[-1]).writes[0].source.shape) != out_shape):
        raise ValueError("the epilogue is not elementwise over the conv's output")
    for pad in pads:  # padded once for all channel blocks, rows in parallel
        loops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    batch, oc, y, x, lane, ky, kx, ic, rc = sch.get_loops(conv)
    oc_outer, oc_inner = sch.split(oc, factors=[None, oc_tile])
    x_outer, x_inner = sch.split(x, factors=[None, x_tile])
    # weights in storage order: ic/4, ky, kx for one channel block
    sch.reorder(batch, oc_outer, y, x_outer, ic, ky, kx, oc_inner, x_inner, lane, rc)
    sums = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(sums, x_outer)
    if epilogue:
        sch.reverse_compute_at(epilogue[-1], x_outer)
        sch.compute_inline(sums)  # the epilogue reads the sums from registers
        sch.vectorize(sch.get_loops(epilogue[-1])[-1])
    else:
        sch.vectorize(sch.get_loops(sums)[-1])
    sch.parallel(sch.fuse(batch, oc_outer, y))
    init = sch.decompose_reduction(conv, ic)
    *_, init_oc, init_x, init_lane = sch.get_loops(init)
    sch.vectorize(init_lane)
    for loop in (init_oc, init_x, oc_inner, x_inner):  # constant indices: LLVM keeps the sums in registers
        sch.unroll(loop)
    sch.tensorize(lane, intrinsics.VNNI_LOCAL)

