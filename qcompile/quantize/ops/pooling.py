"""Pooling: max pooling directly on integers (order is preserved); global average as an int32 sum, requantized."""

import numpy as np
from tvm.relax import op as R

from .registry import Role, Rule, register


def _max_pool(ctx, call, inputs, out, clamp, bias):
    (x,) = inputs
    a = call.attrs
    return ctx.emit(R.nn.max_pool2d(x.q, pool_size=a.pool_size, strides=a.strides, padding=a.padding,
                                    dilation=a.dilation, ceil_mode=a.ceil_mode, layout=a.layout))


def _mean(ctx, call, inputs, out, clamp, bias):
    (x,) = inputs
    if out is None or x.params.per_channel:
        return None
    axes = [int(a) for a in call.attrs.axis]
    count = int(np.prod([x.shape[a] for a in axes]))
    centered = ctx.emit(R.subtract(R.astype(x.q, "int32"), ctx.const(int(x.params.zero_point), "int32")))
    total = ctx.emit(R.sum(centered, axis=axes, keepdims=call.attrs.keepdims))
    return ctx.requantize(total, np.float64(x.params.scale) / (count * np.float64(out.scale)), out, clamp, None)


register(Rule(ops=("relax.nn.max_pool2d",), onnx_types=("MaxPool",), role=Role.PASS_THROUGH,
              activations=lambda call: [0], realize=_max_pool))
register(Rule(ops=("relax.mean",), onnx_types=("GlobalAveragePool", "ReduceMean"), role=Role.MERGE,
              activations=lambda call: [0], realize=_mean))
