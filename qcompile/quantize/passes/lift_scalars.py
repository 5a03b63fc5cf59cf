"""Lift scalars: give the integer kernels their scalar constants (scales, zero points, bounds) as tensors."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, topi
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import constant_value, op_name, rewrite_main

_QDQ = ("relax.quantize", "relax.dequantize")
_ELEMENTWISE = ("relax.add", "relax.subtract", "relax.multiply", "relax.right_shift", "relax.left_shift",
                "relax.maximum", "relax.minimum")


def _one_element(value, dtype) -> relax.Constant:
    return relax.const(np.asarray([value]).astype(dtype), dtype)


def _is_integer(expr) -> bool:
    return isinstance(expr.ty, relax.TensorType) and str(expr.ty.dtype).startswith(("int", "uint"))


@expr_functor.mutator
class _Lift(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        name = op_name(call)
        if name in _QDQ or name in _ELEMENTWISE and any(_is_integer(a) for a in call.args):
            args = [_one_element(v, str(a.ty.dtype)) if (v := constant_value(a)) is not None and v.ndim == 0 else a
                    for a in call.args]
            if all(a is b for a, b in zip(args, call.args)):
                return call
            return relax.Call(call.op, args, call.attrs, call.ty_args)
        if name == "relax.clip" and _is_integer(call):
            x, lo, hi = call.args
            dtype = str(call.ty.dtype)
            return R.minimum(R.maximum(x, _one_element(int(lo.value), dtype)), _one_element(int(hi.value), dtype))
        if name == "relax.nn.pad" and _is_integer(call) and call.attrs.pad_mode == "constant":
            return self._pad(call)
        return call

    def _pad(self, call):
        value = float(call.attrs.pad_value)
        if value == 0:
            return call
        widths = [int(w) for w in call.attrs.pad_width]
        fill = _one_element(value, str(call.ty.dtype))
        return self.builder_.emit_te(
            lambda data, fill: topi.nn.pad(data, widths[::2], widths[1::2], pad_value=fill(0)),
            call.args[0], fill, primfunc_name_hint="pad")


@tvm.transform.module_pass(opt_level=0, name="qcompile.LiftScalars")
class LiftScalars:
    """Rewrite the scalar constants of integer arithmetic (requantize multipliers and shifts, zero points, clip
    bounds, a zero point used as padding, quantize/dequantize parameters) into one-element tensors.

    Legalization inlines a 0-d constant into its kernel as a literal, and these values come from the calibration:
    the kernels, and the workloads tuning records are keyed by, would then differ from one calibration to the
    next, and records tuned with one calibration set would not apply to a build calibrated on another. As
    tensors they are kernel parameters; reading one value costs nothing next to the kernel's loop.
    """

    def transform_module(self, mod, ctx):
        return rewrite_main(_Lift(mod), mod)
