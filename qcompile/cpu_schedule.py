"""A fixed schedule for CPU kernels with nothing to tune: injective ones (layout packing, requantize chains) and
max pooling in blocked layouts.

MetaSchedule's CPU space for such a kernel holds one or two candidates and vectorizes only loops of at most 64
iterations, so a 112-wide image row stays scalar: on MobileNet the packing and requantize kernels cost several
times the (tensorized) convolutions. Here every injective kernel is fused to one loop, vectorized 64 bytes
wide and run in parallel, except the packed convs' layout kernels, which get a loop nest per tile; the kernels are
marked scheduled, so tuning skips them and builds reuse the rule.
"""

from __future__ import annotations

VECTOR_BYTES = 64  # one AVX-512 register
MAX_VECTOR_LOOP = 256  # longest loop vectorized whole (LLVM splits it into registers)
_SPATIAL = 0  # IterVar.DataPar


def schedule_injective(mod, target):
    """Schedule every unscheduled, purely spatial PrimFunc of `mod` for a CPU target."""
    from tvm.s_tir import dlight as dl

    with target:
        return dl.ApplyDefaultSchedule(_Injective())(mod)


def _rule_base():
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    return CPUScheduleRule


class _Injective(_rule_base()):
    def apply(self, func, target, tunable):
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if _blocked_pool(sch, blocks):
            return sch
        if any(iv.iter_type != _SPATIAL for block in blocks for iv in sch.get(block).iter_vars):
            return None  # a reduction: MetaSchedule's to tune
        for block in blocks[:-1]:
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - a producer that cannot be inlined keeps its own loop nest
                pass
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            loops = sch.get_loops(block)
            if not loops or _layout_change(sch, block, loops):
                continue
            lanes = max(1, VECTOR_BYTES // max(1, _widest_bytes(sch.get(block))))
            if _extent(sch, loops) % lanes:
                # a ragged split would leave a predicate in the vector loop, which LLVM then runs lane by lane
                # (a padded 225×225 image: ~30× slower); the innermost axis, whole, vectorizes without one
                *outer, inner = loops
                if outer:
                    sch.parallel(sch.fuse(*outer))
                if int(sch.get(inner).extent) <= MAX_VECTOR_LOOP:
                    sch.vectorize(inner)
                continue
            outer, inner = sch.split(sch.fuse(*loops), factors=[None, lanes])
            sch.parallel(outer)
            sch.vectorize(inner)
        return sch


def _layout_change(sch, block, loops) -> bool:
    """Schedule a packed conv's layout kernel (NCHW → NCHW4c, NCHW[k]c → NCHW); False if `block` is none.

    Both are transposes of small tiles: one flat vectorized loop computes a division and a remainder per lane and
    gathers bytes one by one (0.3-0.7 ms a kernel on MobileNet, a third of its INT8 time). Here the loops follow
    the tile instead: rows in parallel, the channel lanes and (unpacking) a row segment as long as a channel block
    unrolled, which LLVM compiles to code 3-8× faster (measured per kernel on MobileNet)."""
    from .passes.pack_conv import PACK, UNPACK

    name = sch.get(block).name_hint
    if name == PACK and len(loops) == 5:
        batch, chunk, y, x, lane = loops
    elif name == UNPACK and len(loops) == 4:
        batch, channel, y, x = loops
        block_size = int(sch.get(block).reads[0].source.shape[-1])
        chunk, lane = sch.split(channel, factors=[None, block_size])
        x, segment = sch.split(x, factors=[None, block_size])
        sch.reorder(batch, chunk, y, x, lane, segment)
        sch.unroll(segment)
    else:
        return False
    sch.parallel(sch.fuse(batch, chunk, y))
    sch.unroll(lane)
    return True


def _blocked_pool(sch, blocks) -> bool:
    """Schedule max pooling in a blocked layout (NCHW[k]c, `BlockedEpilogue`), its padding inlined; False if
    `blocks` are not that.

    The window's max runs per vector of k lanes, rows in parallel: nothing is left to tune."""
    *pads, block = blocks
    loops = sch.get_loops(block)
    if (sch.get(block).name_hint != "pool_max" or len(loops) != 7
            or any(sch.get(pad).name_hint != "pad_temp" for pad in pads)):
        return False
    for pad in pads:
        sch.compute_inline(pad)
    batch, chunk, y, x, lane, ry, rx = loops
    sch.reorder(batch, chunk, y, x, ry, rx, lane)
    sch.parallel(sch.fuse(batch, chunk, y))
    sch.decompose_reduction(block, ry)
    # `vectorize` refuses a spatial loop under the window's reduction loops; innermost and contiguous, LLVM's
    # loop vectorizer takes it
    sch.unroll(ry)
    sch.unroll(rx)
    return True


def _extent(sch, loops) -> int:
    extent = 1
    for loop in loops:
        extent *= int(sch.get(loop).extent)
    return extent


def _widest_bytes(block) -> int:
    import tvm

    return max((tvm.DataType(str(r.source.dtype)).bits // 8 for r in [*block.reads, *block.writes]), default=4)
