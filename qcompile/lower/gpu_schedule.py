"""A fixed CUDA schedule for packed int8 convolutions: each thread sums four output channels with `__dp4a`.

CUDA kernels cannot be tuned without a GPU to measure them on, and dlight's rules either leave int8 convolutions
on scalar multiply-adds or (its Matmul rule) pick a wmma schedule that TVM 0.27's CUDA code generator rejects. A
conv packed to NCHW4c (`passes/pack_conv.py`, weights [O/4, I/4, H, W, 1, 4, 4]) has, innermost, exactly the
operands of one dp4a: four int8 activations and four int8 weights of one output channel. This rule gives every
thread one output pixel × one block of four output channels: the four int32 sums stay in registers, each step of
the reduction loads four activation bytes once (padding applied there) and issues four dp4a against four
contiguous weight words, and the fused requantize epilogue runs on the registers before the single store.
"""

from __future__ import annotations

from . import intrinsics
from .kernels import CONV_BLOCK

THREADS = 64  # at most this many output pixels (each × 4 channels) per thread block


def _rule_base():
    from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

    return GPUScheduleRule


class Dp4aConv(_rule_base()):
    """dlight rule: schedules a kernel holding a packed s8×s8 conv (and its fused pad and epilogue), else None."""

    def apply(self, func, target, tunable):
        from tvm import s_tir

        if intrinsics.for_target(target) != intrinsics.DP4A:
            return None
        sch = s_tir.Schedule(func)
        blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if CONV_BLOCK not in blocks or any(str(r.source.dtype) != "int8" for r in sch.get(blocks[CONV_BLOCK]).reads):
            return None
        try:
            _schedule(sch)
        except RuntimeError:  # ScheduleError and TVM's InternalError both derive from it
            return None  # a shape this schedule does not cover: the next rules take the kernel
        return sch


def _schedule(sch) -> None:
    from tvm.s_tir.schedule.transform import tile_with_tensor_intrin

    # the 4 bytes of one dp4a split off the input-channel reduction and made a block of their own while the loop
    # nest is whole (MetaSchedule's way; a later blockize cannot divide Relax's int64 iterators)
    conv = sch.blockize(tile_with_tensor_intrin(sch, sch.get_sblock(CONV_BLOCK), intrinsics.DP4A))
    sch.cache_write(conv, 0, "local")
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    position = [sch.get(b).name_hint for b in blocks].index(sch.get(conv).name_hint)
    producers, epilogue = blocks[:position], blocks[position + 1:]
    for block in epilogue[:-1]:  # the write-back of the registers and the requantize chain, into the final store
        sch.compute_inline(block)
    batch, chunk, y, x, channel, *reduction, dot_outer = sch.get_loops(conv)
    sch.reorder(*reduction, channel, dot_outer)
    pixels = sch.fuse(batch, chunk, y, x)
    # a divisor of the pixel count: a ragged split guards the block with a predicate, which tensorize rejects
    extent = int(sch.get(pixels).extent)
    threads = max(d for d in range(1, THREADS + 1) if extent % d == 0)
    block_x, thread_x = sch.split(pixels, factors=[None, threads])
    sch.bind(block_x, "blockIdx.x")
    sch.bind(thread_x, "threadIdx.x")
    store = epilogue[-1]
    sch.reverse_compute_at(store, thread_x)
    sch.unroll(sch.get_loops(store)[-1])
    # the activation bytes one step reads, staged in a register: dp4a's first operand, with the padding applied
    staged = sch.cache_read(conv, [str(r.source.name) for r in sch.get(conv).reads].index(_data_buffer(sch, conv)),
                            "local")
    sch.compute_at(staged, reduction[-1])
    for block in producers:  # the conv's own zero padding
        sch.compute_inline(block)
    sch.vectorize(sch.get_loops(staged)[-1])
    sch.decompose_reduction(conv, reduction[0])
    sch.tensorize(conv, intrinsics.DP4A)
    sch.unroll(channel)


def _data_buffer(sch, conv) -> str:
    """The conv's activation operand: of its two int8 reads, the one that is not the packed weights (7-D)."""
    reads = [r for r in sch.get(conv).reads if str(r.source.dtype) == "int8"]
    return next(str(r.source.name) for r in reads if len(r.source.shape) == 5)
