"""Compile a Relax module for a target and export it as one shared library (cross-linked where needed)."""

from __future__ import annotations

from pathlib import Path

from .. import instrument
from ..errors import QcompileError
from ..progress import SILENT, Reporter
from ..targets import TargetSpec


def compile_kernels(mod, spec: TargetSpec):
    """A module from `lower_kernels` (tuned kernels marked scheduled) → relax.Executable, weights embedded."""
    import tvm

    target = spec.tvm_target()
    mod = schedule_defaults(mod, spec)
    if spec.kind == "cuda":
        # TVM's GPU codegen needs every kernel bound to threads; packed int8 convs get the dp4a schedule, the
        # rest dlight's default rules (tuned kernels are kept).
        from tvm.s_tir import dlight as dl

        from .gpu_schedule import Dp4aConv

        with target:
            mod = dl.ApplyDefaultSchedule(
                Dp4aConv(), _float_matmul_rule(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                dl.gpu.Fallback()
            )(mod)
    try:
        return tvm.compile(mod, target=target)
    except Exception as err:  # TVM's compile errors are long; the first line names the problem
        lines = str(err).strip().splitlines()
        if not lines:  # TVM says nothing: an interrupt inside its C++ code, or a crash of its own
            raise
        raise QcompileError(f"compilation for '{spec.name}' failed: {lines[0]}") from None


def for_host(mod):
    """`mod` lowered and compiled for this CPU with the default schedules (no tuning records): what calibration
    and accuracy control run (integer kernels compute the same integers on every target)."""
    from .. import targets
    from . import intrinsics

    spec = targets.resolve("x86")
    if intrinsics.for_target(spec.tvm_target()) == intrinsics.AMX:
        targets.request_amx_permission()  # its AMX kernels run here
    return compile_kernels(lower_kernels(mod, spec), spec)


def schedule_defaults(mod, spec: TargetSpec):
    """Give the kernels no tuning record covers their default schedules (CPUs: packed convs get the hand-written
    template with the register tile `conv_templates.register_tile` picks; matmuls of two activations
    `matmul_template`'s)."""
    if spec.kind != "llvm":
        return mod
    from tvm.s_tir import dlight as dl

    from .conv_templates import DefaultConv
    from .matmul_template import DefaultMatmul

    with spec.tvm_target():
        return dl.ApplyDefaultSchedule(DefaultConv(), DefaultMatmul())(mod)


def lower_kernels(mod, spec: TargetSpec, reporter: Reporter = SILENT):
    """Relax graph → graph of fused TIR kernels (`pipeline.lower_pipeline`)."""
    from .pipeline import lower_pipeline

    with spec.tvm_target():
        return instrument.apply(lower_pipeline(spec), mod, reporter)


def _float_matmul_rule():
    from tvm.s_tir import dlight as dl

    class FloatMatmul(dl.gpu.Matmul):
        """dlight's Matmul rule, kept off integer kernels: for int8 it picks a wmma tensor-core schedule that
        TVM 0.27's CUDA code generator rejects ("fragment_info_" check); those fall through to the next rules."""

        def apply(self, func, target, tunable):
            from tvm import s_tir

            sch = s_tir.Schedule(func)
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
            if any(str(r.source.dtype) in ("int8", "uint8") for b in blocks for r in sch.get(b).reads):
                return None
            return super().apply(func, target, tunable)

    return FloatMatmul()


def export_library(executable, spec: TargetSpec, path: Path) -> None:
    """Write the executable as a shared library at `path` (which must end in .so)."""
    spec.check_toolchain()
    if spec.is_cross:
        executable.export_library(str(path), cc=spec.cc)
    else:
        executable.export_library(str(path))
