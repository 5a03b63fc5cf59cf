"""RequantizeWeights: in an imported QDQ model, give anchors whose input is dequantized int8 weights again."""

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from .. import ops
from ..ops import Role
from ..qparams import quantize_weight, weight_params
from ...ir import constant_value, op_name, rewrite_main
from .insert_qdq import qdq_args


@expr_functor.mutator
class _Requantize(PyExprMutator):
    def __init__(self, mod, per_channel):
        super().__init__(mod)
        self.per_channel = per_channel

    def visit_call_(self, op):
        call = super().visit_call_(op)
        rule = ops.lookup(op_name(call) or "")
        if rule is None or rule.role is not Role.ANCHOR:
            return call
        data = self.lookup_binding(call.args[0]) if isinstance(call.args[0], relax.Var) else None
        if op_name(data) != "relax.dequantize":
            return call
        args = list(call.args)
        for index, axis in rule.weights(call).items():
            weight = constant_value(args[index])
            if weight is None:
                return call
            p = weight_params(weight, axis, self.per_channel)
            args[index] = self.builder_.emit(relax.op.dequantize(
                relax.const(quantize_weight(weight, p), "int8"), *qdq_args(p), axis=p.axis))
        return relax.Call(call.op, args, call.attrs, call.ty_args)


@tvm.transform.module_pass(opt_level=0, name="qcompile.RequantizeWeights")
class RequantizeWeights:
    """TVM's importer folds DequantizeLinear of constant weights into FP32 constants. The values are exactly
    ORT's int8 grid (symmetric, scale = max|w| / 127), so quantizing them again per channel gives back the
    same integers, and realize sees the quantize/dequantize pattern it turns into integer kernels."""

    def __init__(self, per_channel: bool = True):
        self.per_channel = per_channel

    def transform_module(self, mod, ctx):
        return rewrite_main(_Requantize(mod, self.per_channel), mod)
