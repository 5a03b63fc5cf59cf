"""matmul (MatMul, Gemm) against a constant 2-D weight: per-output-column int8 weights → int32."""

import numpy as np
from tvm.relax import op as R

from .registry import Role, Rule, register


def _realize(ctx, call, inputs, out, clamp, bias):
    x, w = inputs
    if not w.is_constant or w.value.ndim != 2:
        return None
    acc = ctx.emit(R.matmul(x.q, ctx.const(w.value, "int8"), out_dtype="int32"))
    w_scale = np.broadcast_to(w.params.scale, (w.value.shape[1],))
    offset = -int(x.params.zero_point) * w.value.astype(np.int64).sum(axis=0)
    return ctx.finish_anchor(acc, x.params.scale * w_scale, offset, bias, out, clamp, channel_axis=-1)


def _weights(call):
    weight = call.args[1]
    return {1: 1} if weight.ty.ndim == 2 else {}


def _mean_shift(call, delta, input_mean):
    """E[x·ΔW] per output column from the mean input row."""
    if delta.ndim != 2:
        return None
    return input_mean.reshape(-1, delta.shape[0]).mean(axis=0) @ delta


register(Rule(
    ops=("relax.matmul",),
    onnx_types=("MatMul", "Gemm"),
    role=Role.ANCHOR,
    activations=lambda call: [0] if call.args[1].ty.ndim == 2 else [],
    weights=_weights,
    realize=_realize,
    mean_shift=_mean_shift,
))
