"""Unary nonlinearities (sigmoid, tanh, GELU, exp, erf) on 8-bit inputs as a 256-entry lookup table.

An 8-bit input takes 256 values at most, so the whole function, input dequantize and output requantize included,
is a table computed once from the input's and the output's scale and zero point: the result is the float
function's, rounded once to the output's 8 bits (full-integer runtimes do the same). The table is a constant; the
kernel is one byte gather per element, and the tensor stays 8-bit between integer kernels. A function of a
lookup's result is a lookup from the same source codes (`context.Table`): sigmoid(x)·x, hardswish's steps, a
sigmoid after an added constant, each become one table.
"""

import math

import numpy as np

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


def _realize(ctx, call, inputs, out, clamp, bias):
    (x,) = inputs
    if out is None or x.params.per_channel:
        return None
    table = ctx.table(x)  # x may itself be a lookup: the two compose into one
    with np.errstate(over="ignore", invalid="ignore"):
        return ctx.lookup(table, FUNCTIONS[call.op.name](table.real(x.params)), out)


register(Rule(
    ops=tuple(FUNCTIONS),
    onnx_types=("Sigmoid", "Tanh", "Gelu", "Exp", "Erf"),
    role=Role.MERGE,  # its output has a scale of its own, and is quantized only where it is consumed so
    activations=lambda call: [0],
    realize=_realize,
))
