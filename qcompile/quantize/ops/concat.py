"""Concat: every input requantized to the output's scale (a plain cast where the scales already agree)."""

from tvm import relax
from tvm.relax import op as R

from .registry import Role, Rule, register


def _realize(ctx, call, inputs, out, clamp, bias):
    if out is None or any(i.is_constant for i in inputs):
        return None
    parts = [i.q if i.params.same_as(out) else ctx.rescale_sum([i], out, None) for i in inputs]
    return ctx.emit(R.concat(parts, axis=call.attrs.axis))


def _operands(call) -> list:
    return list(call.args[0].fields)  # concat takes its tensors as one tuple


def _with_operands(call, operands):
    return relax.Call(call.op, [relax.Tuple(operands)], call.attrs, call.ty_args)


register(Rule(
    ops=("relax.concat",),
    onnx_types=("Concat",),
    role=Role.MERGE,
    activations=lambda call: list(range(len(call.args[0].fields))),
    realize=_realize,
    operands=_operands,
    with_operands=_with_operands,
    shares_output=True,
))
