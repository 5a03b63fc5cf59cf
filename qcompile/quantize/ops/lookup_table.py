"""Unary nonlinearities (sigmoid, tanh, GELU, exp, erf) on 8-bit inputs as a 256-entry lookup table.

An 8-bit input takes 256 values at most, so the whole function, input dequantize and output requantize included,
is a table computed once from the input's and the output's scale and zero point: the result is the float
function's, rounded once to the output's 8 bits (full-integer runtimes do the same). The table is a constant; the
kernel is one byte gather per element, and the tensor stays 8-bit between integer kernels.
"""

import math

import numpy as np
from tvm.relax import op as R

from .registry import Role, Rule, register

_erf = np.vectorize(math.erf)

FUNCTIONS = {
    "relax.sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relax.tanh": np.tanh,
    "relax.nn.gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "relax.nn.gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "relax.exp": np.exp,
    "relax.erf": _erf,
}


def table(function, x_params, out_params) -> np.ndarray:
    """`function` of every input code, requantized to `out_params` (round half up, saturated, as the integer
    kernels' requantize does), indexed by code - the input type's lowest code."""
    codes = np.arange(x_params.qmin, x_params.qmax + 1, dtype=np.float64)
    real = (codes - float(x_params.zero_point)) * float(x_params.scale)
    with np.errstate(over="ignore"):
        y = function(real)
    q = np.floor(y / float(out_params.scale) + 0.5) + float(out_params.zero_point)
    return np.clip(np.nan_to_num(q, posinf=out_params.qmax, neginf=out_params.qmin),
                   out_params.qmin, out_params.qmax).astype(out_params.dtype)


def _realize(ctx, call, inputs, out, clamp, bias):
    (x,) = inputs
    if out is None or x.params.per_channel:
        return None
    lookup = table(FUNCTIONS[call.op.name], x.params, out)
    index = ctx.emit(R.astype(x.q, "int32"))
    if x.params.qmin:  # int8 codes start at -128
        index = ctx.emit(R.subtract(index, ctx.const([x.params.qmin], "int32")))
    # every index is within the table by construction; "clip" keeps TVM from warning that "fast" is unchecked
    return ctx.emit(R.take(ctx.const(lookup, out.dtype), index, axis=0, mode="clip"))


register(Rule(
    ops=tuple(FUNCTIONS),
    onnx_types=("Sigmoid", "Tanh", "Gelu", "Exp", "Erf"),
    role=Role.MERGE,  # its output has a scale of its own, and is quantized only where it is consumed so
    activations=lambda call: [0],
    realize=_realize,
))
