"""InsertQDQ: replace the markers with quantize/dequantize pairs holding the calibrated parameters."""

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ..qparams import QuantParams, quantize_weight, weight_params
from ...ir import constant_value, rewrite_main
from ..markers import QUANT_POINT, marker


def qdq_args(params: QuantParams):
    return relax.const(params.scale, "float32"), relax.const(params.zero_point, "int32")


@expr_functor.mutator
class _ToQDQ(PyExprMutator):
    def __init__(self, mod, params, per_channel, keep_markers):
        super().__init__(mod)
        self.params, self.per_channel, self.keep_markers = params, per_channel, keep_markers

    def visit_call_(self, op):
        call = super().visit_call_(op)
        found = marker(call)
        if found is None:
            return call
        kind, args = found
        if kind == QUANT_POINT:
            p = self.params[int(args[1])]
            q = self.builder_.emit(relax.op.quantize(args[0], *qdq_args(p), out_dtype=p.dtype))
            fake = relax.op.dequantize(q, *qdq_args(p))
            if self.keep_markers:
                return relax.op.call_pure_packed(QUANT_POINT, self.builder_.emit(fake), *args[1:], ty_args=[call.ty])
            return fake
        weight = constant_value(args[0])
        p = weight_params(weight, int(args[1]), self.per_channel)
        return relax.op.dequantize(relax.const(quantize_weight(weight, p), "int8"), *qdq_args(p), axis=p.axis)


@tvm.transform.module_pass(opt_level=0, name="qcompile.InsertQDQ")
class InsertQDQ:
    """Markers → explicit quantize/dequantize: the fake-quantized FP32 graph (what --simulate compiles),
    and the input realize turns into integer ops. Weights become int8 constants, per channel by default.
    With keep_markers, each fake-quantized value stays marked, for measuring the error at every point."""

    def __init__(self, params: dict[int, QuantParams], per_channel: bool = True, keep_markers: bool = False):
        self.params, self.per_channel, self.keep_markers = params, per_channel, keep_markers

    def transform_module(self, mod, ctx):
        return rewrite_main(_ToQDQ(mod, self.params, self.per_channel, self.keep_markers), mod)
