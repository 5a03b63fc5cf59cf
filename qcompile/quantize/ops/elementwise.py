"""Elementwise arithmetic (Add, Sub, Mul, Div) on 8-bit tensors, in integers.

- Two activations: Add/Sub rescale both to the output's scale and sum them (residual connections); Mul takes the
  product of the centred codes (squeeze-excite gates, x·sigmoid(x) of different tensors). Both with one rounding.
- Two functions of the same 8-bit tensor (x · hardsigmoid(x), x · sigmoid(x)): one lookup table of that tensor
  (`context.Table`), exact to the float expression at 8 bits.
- An activation and a constant: a scalar makes a lookup table (so a chain such as hardsigmoid's
  x/6 + 0.5 → clip composes into one), a tensor a per-channel scale and shift of the codes (`context.Affine`;
  a chain of them, batch norm that no conv absorbs, is one), both requantized to the output's scale.
"""

import operator

import numpy as np

from ...ir import constant_value
from .registry import Role, Rule, register

_FUNCTIONS = {"relax.add": operator.add, "relax.subtract": operator.sub, "relax.multiply": operator.mul,
              "relax.divide": operator.truediv}


def _realize(ctx, call, inputs, out, clamp, bias):
    if out is None:
        return None
    name = call.op.name
    if len(inputs) == 1:
        return _with_constant(ctx, call, inputs[0], out, clamp)
    a, b = inputs
    ta, tb = ctx.table(a), ctx.table(b)
    if ta.source.same_as(tb.source):  # both functions of one tensor's codes
        with np.errstate(all="ignore"):
            return ctx.lookup(ta, _FUNCTIONS[name](ta.real(a.params), tb.real(b.params)), out, clamp)
    if name == "relax.multiply":
        return ctx.rescale_product(a, b, out, clamp)
    if name in ("relax.add", "relax.subtract") and a.shape == b.shape:
        return ctx.rescale_sum(inputs, out, clamp, factors=[1.0, 1.0 if name == "relax.add" else -1.0])
    return None


def _with_constant(ctx, call, x, out, clamp):
    """op(x, c) or op(c, x) for a constant c."""
    constant_first = constant_value(call.args[0]) is not None
    c = constant_value(call.args[0 if constant_first else 1]).astype(np.float64)
    function = _FUNCTIONS[call.op.name]
    affine = ctx.affine(x)
    if c.size == 1 and affine.source is x:  # a function of x's codes alone (x is no rescale's result)
        table = ctx.table(x)
        real = table.real(x.params)
        with np.errstate(all="ignore"):
            value = function(c.item(), real) if constant_first else function(real, c.item())
        return ctx.lookup(table, value, out, clamp)
    affine = affine.then(function, c, constant_first)
    return None if affine is None else ctx.rescale(affine, out, clamp)


register(Rule(
    ops=tuple(_FUNCTIONS),
    onnx_types=("Add", "Sum", "Sub", "Mul", "Div"),
    role=Role.MERGE,
    activations=lambda call: [i for i, arg in enumerate(call.args) if constant_value(arg) is None],
    realize=_realize,
))
