"""Compile a Relax module for a target and export it as one shared library (cross-linked where needed)."""

from __future__ import annotations

from pathlib import Path

from .errors import QcompileError
from .targets import TargetSpec


def compile_module(mod, spec: TargetSpec):
    """Relax IRModule → relax.Executable, weights embedded."""
    import tvm
    from tvm import relax

    target = spec.tvm_target()
    if spec.kind == "cuda":
        # TVM's GPU codegen needs every kernel bound to threads; dlight's default rules do it.
        from tvm.s_tir import dlight as dl

        with target:
            mod = relax.get_pipeline("zero")(mod)
            mod = dl.ApplyDefaultSchedule(
                _float_matmul_rule(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
            )(mod)
    try:
        return tvm.compile(mod, target=target)
    except Exception as err:  # TVM's compile errors are long; the first line names the problem
        raise QcompileError(f"compilation for '{spec.name}' failed: {str(err).strip().splitlines()[0]}") from None


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
