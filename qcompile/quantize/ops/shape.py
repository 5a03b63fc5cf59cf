"""Ops that move or clamp values without changing their scale: applied to the integers as they are."""

from tvm.relax import op as R

from .registry import Role, Rule, register


def _same_op(ctx, call, inputs, out, clamp, bias):
    (x,) = inputs
    name = call.op.name
    if name == "relax.reshape":
        return ctx.emit(R.reshape(x.q, call.args[1]))
    if name == "relax.permute_dims":
        return ctx.emit(R.permute_dims(x.q, call.attrs.axes))
    if name == "relax.flatten":
        return ctx.emit(R.flatten(x.q))
    return None


def _clamp(ctx, call, inputs, out, clamp, bias):
    (x,) = inputs
    return ctx.clamp(x, clamp)


register(Rule(ops=("relax.reshape", "relax.permute_dims", "relax.flatten"),
              onnx_types=("Reshape", "Flatten", "Transpose"), role=Role.PASS_THROUGH,
              activations=lambda call: [0], realize=_same_op))
register(Rule(ops=("relax.nn.relu", "relax.clip"), onnx_types=("Relu", "Clip"), role=Role.PASS_THROUGH,
              activations=lambda call: [0], realize=_clamp))
