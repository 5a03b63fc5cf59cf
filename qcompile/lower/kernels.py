"""The names and block sizes of the kernels the lowering passes emit, which the schedules recognize them by.

The packing passes (`passes/`) name the TIR kernels and compute blocks they create; the CPU and GPU schedules,
the hand-written conv templates and `benchmarks/kernels.py` find those kernels by these names. This module is
the one place both sides read them from.
"""

from __future__ import annotations

import dataclasses

from . import intrinsics

PACK = "pack_data"  # kernels that turn NCHW activations into NCHW[k]c
UNPACK = "unpack_output"  # kernels that turn a packed conv's output back into NCHW
PAD = "pad"  # an integer pad filling with the zero point (the name quantize's LiftScalars gives it)
CONV_BLOCK = "conv2d_NCHWc_int8"  # the packed conv's compute block, which target schedules look for
FLOAT_CONV_BLOCK = "conv2d_NCHWc_float"  # the packed float conv's
DEPTHWISE_BLOCK = "depthwise_NCHWc_int8"  # the packed depthwise conv's
POOL_BLOCK = "pool_max"  # TOPI's max pooling compute block (scheduled in the blocked layout)
POOL_PAD = "pad_temp"  # TOPI's padding block before it
CONV_PAD = "data_pad"  # the packed convs' own padding block
WIDEN = "data_widened"  # AVX2's packed convs' input as 16 bits, before the padding
WIDE_WEIGHTS = "weight_widened"  # AVX2's packed convs' small weights as 16 bits

IC_BLOCK = 4  # bytes one dot-product lane sums: vpdpbusd, sdot and dp4a all take 4


@dataclasses.dataclass(frozen=True)
class Packing:
    """How the int8 convs of one kernel class are packed (`passes/pack_conv.py`): the layout its instruction
    reads as it is."""

    lanes: int  # output channels of a block: the int32 sums one instruction produces, or a multiple
    depth: int = IC_BLOCK  # input channels each output lane sums per instruction
    # how a lane's `depth` channels are stored beside the lanes: [1][k][4] for an instruction that sums 4 bytes
    # a lane, [2][k][2] for AVX2's vpmaddwd, which sums pairs of 16-bit operands (channels 0 and 1, then 2 and
    # 3): its conv widens the input to 16 bits once
    weight_groups: int = 1
    row: int | None = None  # the most input channels of one pixel an instruction reads, where more than the depth
    # weights (stored int8) widened to 16 bits in the kernel before its reduction where they take at most this
    # many bytes (0: never): no widening instruction in the inner loop, twice the bytes to read there
    wide_weights_up_to: int = 0

    def widens_weights(self, weight_bytes: int) -> bool:
        return weight_bytes <= self.wide_weights_up_to


PACKINGS = {
    intrinsics.VNNI: Packing(16),
    # widened weights measured faster on AMD Zen 3 (512 KB L2) up to 64 KB of int8 weights (the tile costs of
    # conv_templates fitted with this limit), slower from 512 KB (benchmarks/RESULTS.md)
    intrinsics.AVX2: Packing(8, weight_groups=2, wide_weights_up_to=64 * 1024),
    intrinsics.ARM_SDOT: Packing(4),
    intrinsics.DP4A: Packing(4),  # dp4a produces one sum; 4 keep a CUDA thread's weight loads contiguous
    intrinsics.I8MM: Packing(8, depth=8),  # smmla: 2 × 2 sums (pixels × channels) of 8 products; 8 are 4 pairs
    # AMX: 4 sum tiles of 16 lanes, a block as wide as the next conv's input rows (a tile row: 64 bytes)
    intrinsics.AMX: Packing(64, row=64),
}


def is_kernel(name: str, kind: str) -> bool:
    """Whether a kernel (a PrimFunc's global name, which Relax may number: `pack_data1`) is of `kind`."""
    return name.startswith(kind)


def calls_kernel(expr, kind: str) -> bool:
    """Whether the Relax expression `expr` calls a kernel of `kind` (PACK, UNPACK)."""
    from .. import ir

    return ir.op_name(expr) == "relax.call_tir" and is_kernel(expr.args[0].name_hint, kind)
