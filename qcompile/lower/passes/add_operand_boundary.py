"""Add operand boundary: an integer add's later operands cross kernels as 8-bit values, not as widened terms."""

from __future__ import annotations

import tvm
from tvm import relax, te, topi
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import bound_value, op_name, rewrite_main

WIDEN = "widen"  # name of the cast kernels this pass makes
_BROADCAST = 1  # tvm's OpPatternKind kBroadcast


@expr_functor.mutator
class _Boundary(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.add":
            return call
        term = bound_value(self, call.args[1])
        if op_name(term) != "relax.multiply":
            return call
        cast = bound_value(self, term.args[0])
        if op_name(cast) != "relax.astype" or str(cast.args[0].ty.dtype) not in ("uint8", "int8"):
            return call
        widened = self.builder_.emit(self._widen(cast.args[0], cast.ty))
        return R.add(call.args[0], self.builder_.emit(R.multiply(widened, term.args[1])))

    def _widen(self, narrow, wide_type):
        data = te.placeholder(list(narrow.ty.shape.values), str(narrow.ty.dtype))
        kernel = te.create_prim_func([data, topi.cast(data, str(wide_type.dtype))], index_dtype_override="int64")
        # as legalized casts are (int64 indices, no global symbol), so that the fused kernels are the same
        # workloads as with `astype`; add_func returns the kernel already added when an equal one is there
        kernel = kernel.without_attr("global_symbol").with_attr("op_pattern", _BROADCAST)
        kernel = self.builder_.add_func(kernel, WIDEN)
        return relax.call_tir(kernel, [narrow], wide_type)


@tvm.transform.module_pass(opt_level=0, name="qcompile.AddOperandBoundary")
class AddOperandBoundary:
    """Rewrite the widening cast that starts the rescale of an integer add's second operand,
    `add(t, multiply(astype(q8, float32), m))`, as a cast kernel that FuseOps sees as a broadcast.

    FuseOps fuses a conv's output only through elementwise ops. Left as `astype`, the rescale of a residual
    add's second operand (ResNet's projection shortcut) fuses into the conv that produced it, which then writes
    the widened float32 term, 4 bytes per value, for the add's kernel to read back; the first operand's conv takes
    the add as its epilogue. Marked a broadcast, the cast stops the producer's fusion at its 8-bit output and
    still fuses forward into the add's kernel, so that one byte per value crosses between the two kernels."""

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_Boundary(mod), mod)
        return relax.transform.DeadCodeElimination(["main"])(mod)
