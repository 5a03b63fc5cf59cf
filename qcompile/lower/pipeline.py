"""The lowering pipeline, declared as one `tvm.transform.Sequential`: an integer Relax graph → fused TIR kernels,
packed for the target's int8 dot-product instruction, with fixed schedules on the kernels nothing is left to tune
in. This is the form tuning extracts tasks from and records apply to. Run it under the target (`with target:`),
through `qcompile.instrument.apply` for `--debug` timings and IR dumps."""

from __future__ import annotations

import tvm

from ..targets import TargetSpec
from . import intrinsics
from .kernels import PACKINGS


def lower_pipeline(spec: TargetSpec) -> tvm.transform.Pass:
    from tvm import relax

    from .passes.add_operand_boundary import AddOperandBoundary
    from .passes.blocked_epilogue import BlockedEpilogue
    from .passes.conv_transpose_as_conv import ConvTransposeAsConv
    from .passes.drop_repack import DropRepack
    from .passes.elide_code_casts import ElideCodeCasts
    from .passes.exact_float_matmul import ExactFloatMatmul
    from .passes.fast_math import FastMath
    from .passes.matmul_as_conv import MatmulAsConv
    from .passes.pack_conv import PackConv
    from .passes.unfold_row_conv import UnfoldRowConv
    from .passes.unpack_into_consumers import UnpackIntoConsumers

    passes = []
    target = spec.tvm_target()
    intrinsic = intrinsics.for_target(target)
    float_block = intrinsics.float_lanes(target)
    # AMX CPUs have a dot-product instruction too, for the convs whose rows AMX's tiles do not take
    dot = intrinsics.for_target(target, tiles=False) if intrinsic == intrinsics.AMX else None
    if intrinsic is not None or float_block is not None:
        packing = PACKINGS.get(intrinsic)
        lanes = packing and packing.lanes
        # Phase 1: pack integer convs into the blocked layout the dot-product instruction reads (float convs into
        # the one FMA vectors read)
        passes += [
            # a matmul against constant weights as a 1×1 conv, which gets packed (integer ones where the CPU has
            # an int8 dot product, float ones where convs are packed for FMA)
            MatmulAsConv(floats=float_block is not None),
            # an upsampling transposed conv (kernel = stride) as a 1×1 conv and a pixel shuffle
            *([ConvTransposeAsConv()] if float_block is not None else []),
            # a one-row conv over 1-3 channels (a 1-D conv over a raw signal) as its windows and a 1×1 conv
            UnfoldRowConv(),
            # depthwise convs packed on CPUs only: on CUDA dlight's generic rules take them, in NCHW
            PackConv(packing, depthwise_block=lanes if spec.kind == "llvm" else None, float_block=float_block,
                     narrow=PACKINGS.get(dot)),
            BlockedEpilogue(),  # requantize chains, residual adds, concats and max pools into the blocked layout
            DropRepack(),  # an unpack followed by a pack: removed, or one re-blocking kernel
        ]
    # Phase 2: kernel boundaries (after packing, so that add operands are matched in the layout the kernels use)
    passes += [
        AddOperandBoundary(),  # a residual add's widening cast fuses into the add's kernel, not its producer's
        relax.transform.EliminateCommonSubexpr(),  # a block's first conv and its shortcut each packed the input
        UnpackIntoConsumers(),  # an unpack fuses with the reshapes, transposes, pad and pack after it
        ElideCodeCasts(),  # a requantize's code cast back to float in the same kernel: the float itself
    ]
    if spec.kind == "llvm":
        passes.append(ExactFloatMatmul())  # attention's integer Q·Kᵀ and A·V on the float FMA units, exactly
        passes.append(FastMath())  # float exp/erf/tanh/sigmoid/GELU/softmax as vectorizable polynomials
    # Phase 3: TVM's legalization and fusion into TIR kernels
    passes.append(relax.get_pipeline("zero"))
    # Phase 4: fixed schedules for the kernels with nothing to tune (CPUs)
    if spec.kind == "llvm":
        from .cpu_schedule import ScheduleFixed

        passes.append(ScheduleFixed())
    return tvm.transform.Sequential(passes, name="qcompile.lower")
