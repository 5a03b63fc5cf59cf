"""The names and block sizes of the kernels the lowering passes emit, which the schedules recognize them by.

The packing passes (`passes/`) name the TIR kernels and compute blocks they create; the CPU and GPU schedules,
the hand-written conv templates and `benchmarks/kernels.py` find those kernels by these names. This module is
the one place both sides read them from.
"""

from __future__ import annotations

from . import intrinsics

PACK = "pack_data"  # kernels that turn NCHW activations into NCHW[k]c
UNPACK = "unpack_output"  # kernels that turn a packed conv's output back into NCHW
CONV_BLOCK = "conv2d_NCHWc_int8"  # the packed conv's compute block, which target schedules look for
FLOAT_CONV_BLOCK = "conv2d_NCHWc_float"  # the packed float conv's
DEPTHWISE_BLOCK = "depthwise_NCHWc_int8"  # the packed depthwise conv's
POOL_BLOCK = "pool_max"  # TOPI's max pooling compute block (scheduled in the blocked layout)
POOL_PAD = "pad_temp"  # TOPI's padding block before it
CONV_PAD = "data_pad"  # the packed convs' own padding block

IC_BLOCK = 4  # bytes one dot-product lane sums: vpdpbusd, sdot and dp4a all take 4
DEPTH = {intrinsics.I8MM: 8}  # where it is not IC_BLOCK: smmla sums 8 bytes into each output
# the most input channels of one pixel an instruction reads, where more than the depth: an AMX tile row (64 bytes)
ROW_CHANNELS = {intrinsics.AMX: 64}

# output channels of a packed block: the int32 outputs one instruction produces (dp4a produces one; 4 keep a
# CUDA thread's weight loads contiguous; smmla 2 × 2, pixels × channels: 8 are four channel pairs; AMX: 4 sum tiles
# of 16, a block as wide as the next conv's input rows)
OUTPUT_LANES = {intrinsics.VNNI: 16, intrinsics.AVX2: 8, intrinsics.ARM_SDOT: 4, intrinsics.DP4A: 4,
                intrinsics.I8MM: 8, intrinsics.AMX: 64}

# how the 4 input channels of one dot product are stored beside the output lanes: [1][k][4] for an instruction
# that sums 4 bytes a lane, [2][k][2] for AVX2's vpmaddwd, which sums pairs (channels 0 and 2, then 1 and 3)
WEIGHT_GROUPS = {intrinsics.AVX2: 2}


def is_kernel(name: str, kind: str) -> bool:
    """Whether a kernel (a PrimFunc's global name, which Relax may number: `pack_data1`) is of `kind`."""
    return name.startswith(kind)


def calls_kernel(expr, kind: str) -> bool:
    """Whether the Relax expression `expr` calls a kernel of `kind` (PACK, UNPACK)."""
    from .. import ir

    return ir.op_name(expr) == "relax.call_tir" and is_kernel(expr.args[0].name_hint, kind)
