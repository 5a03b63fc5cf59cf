"""CorrectBias: remove the mean output shift that rounding an anchor's weights causes, through its bias."""

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ...ir import bias_of, constant_value, op_name, rewrite_main
from .. import ops
from ..markers import QUANT_POINT, WEIGHT_POINT, marker
from ..ops import Role
from ..qparams import quantize_weight, weight_params


def _mean_shift(rule, call, weight, axis, per_channel, input_mean) -> np.ndarray | None:
    """E[op(x, W_q - W)] per output channel, as the anchor's rule computes it from the input's mean, or None."""
    if rule.mean_shift is None:
        return None
    params = weight_params(weight, axis, per_channel)
    delta = params.dequantize(quantize_weight(weight, params)) - weight
    return rule.mean_shift(call, delta, input_mean)


@expr_functor.mutator
class _Correct(PyExprMutator):
    def __init__(self, mod, means, per_channel):
        super().__init__(mod)
        self.means, self.per_channel = means, per_channel

    def visit_call_(self, op):
        call = super().visit_call_(op)
        found = bias_of(call)
        if found is None:
            return call
        anchor = self.lookup_binding(found[0]) if isinstance(found[0], relax.Var) else None
        rule = ops.lookup(op_name(anchor) or "") if anchor is not None else None
        if rule is None or rule.role is not Role.ANCHOR:
            return call
        x_marker, w_marker = (self.lookup_binding(a) if isinstance(a, relax.Var) else None for a in anchor.args[:2])
        x_found, w_found = marker(x_marker), marker(w_marker)
        if not (x_found and w_found and x_found[0] == QUANT_POINT and w_found[0] == WEIGHT_POINT):
            return call
        weight = constant_value(w_found[1][0])
        shift = _mean_shift(rule, anchor, weight, int(w_found[1][1]), self.per_channel, self.means[x_found[1][2].value])
        bias = found[1]
        if shift is None or shift.size != bias.size:
            return call
        corrected = (bias - shift.reshape(bias.shape)).astype(bias.dtype)
        return relax.op.add(found[0], relax.const(corrected, str(bias.dtype)))


@tvm.transform.module_pass(opt_level=0, name="qcompile.CorrectBias")
class CorrectBias:
    """Rounding weights to int8 shifts each output channel's mean by (W_q - W)·E[x]; subtracting that from
    the bias (Nagel et al., 2019, "Data-Free Quantization", empirical bias correction) undoes the shift.

    `means` maps each marked tensor's label to the mean of its FP32 value over the calibration samples.
    """

    def __init__(self, means: dict, per_channel: bool = True):
        self.means, self.per_channel = means, per_channel

    def transform_module(self, mod, ctx):
        return rewrite_main(_Correct(mod, self.means, self.per_channel), mod)
