"""Exact float matmul: an integer product of two activations computed with float multiply-adds, exactly."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import bound_value, constant_value, op_name, out_dtype, rewrite_main, static_shape

EXACT = 2 ** 24  # float32 holds every integer up to this exactly


@expr_functor.mutator
class _Exact(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.matmul" or out_dtype(call) != "int32":
            return call
        a, b = call.args
        ranges = [self._range(x) for x in (a, b)]
        shape = static_shape(a)
        if None in ranges or shape is None:
            return call
        largest = [max(abs(lo), abs(hi)) for lo, hi in ranges]
        if shape[-1] * largest[0] * largest[1] >= EXACT:
            return call
        product = R.matmul(R.astype(a, "float32"), R.astype(b, "float32"), out_dtype="float32")
        return R.astype(self.builder_.emit(product), "int32")

    def _range(self, expr):
        """(smallest, largest) value of an integer activation made from 8-bit codes: a widened code, less a
        constant zero point; None for anything else (a constant weight, a sum of unknown size)."""
        value = bound_value(self, expr)
        name = op_name(value)
        if name == "relax.astype" and str(value.args[0].ty.dtype) in ("uint8", "int8"):
            info = np.iinfo(str(value.args[0].ty.dtype))
            return int(info.min), int(info.max)
        if name == "relax.subtract":
            inner, offset = self._range(value.args[0]), constant_value(value.args[1])
            if inner is not None and offset is not None and offset.size:
                return inner[0] - int(offset.max()), inner[1] - int(offset.min())
        return None


@tvm.transform.module_pass(opt_level=0, name="qcompile.ExactFloatMatmul")
class ExactFloatMatmul:
    """Rewrite an int32 matmul of two activations made from 8-bit codes (attention's Q·Kᵀ and A·V: the codes less
    their zero points, as int16) as a float32 matmul of the same values, cast back to int32, where every partial
    sum stays below 2^24 (depth × the operands' largest magnitudes): then each product and sum is an integer that
    float32 holds exactly, and the result is the integer one, bit for bit.

    Such a matmul has no packed dot-product kernel (its right operand is no constant to pack); the matmul template
    runs it on vectors of 32-bit lanes, where a CPU multiplies integers at a fraction of its float multiply-add
    rate (AVX2: `vpmulld` + `vpaddd` for 8 products, where one FMA does them in float)."""

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_Exact(mod), mod)
        return relax.transform.DeadCodeElimination(["main"])(mod)
