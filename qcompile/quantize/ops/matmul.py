"""matmul (MatMul, Gemm) against a constant 2-D weight: per-output-column int8 weights → int32; and its hybrid
forms, int8 weights with float activations (weight-only) or activations quantized per row at run time (dynamic)."""

import numpy as np
from tvm import te
from tvm.relax import op as R

from ..qparams import DYNAMIC_RANGE_FLOOR, quantize_weight, weight_params
from .registry import Role, Rule, register


def _realize(ctx, call, inputs, out, clamp, bias):
    x, w = inputs
    if not w.is_constant:
        return _realize_activations(ctx, x, w, out, clamp, bias)
    if w.value.ndim != 2:
        return None
    acc = ctx.emit(R.matmul(x.q, ctx.const(w.value, "int8"), out_dtype="int32"))
    w_scale = np.broadcast_to(w.params.scale, (w.value.shape[1],))
    offset = -int(x.params.zero_point) * w.value.astype(np.int64).sum(axis=0)
    return ctx.finish_anchor(acc, x.params.scale * w_scale, offset, bias, out, clamp, channel_axis=-1)


def _realize_activations(ctx, a, b, out, clamp, bias):
    """Two quantized activations (attention's Q·Kᵀ and A·V): (q_a - z_a)·(q_b - z_b) in 16-bit integers summed
    in int32, then requantized with the product of the two (per-tensor) scales."""
    if a.params.per_channel or b.params.per_channel:
        return None

    def centred(i):  # q - z fits int16 (-255 … 255), whose pairwise multiply-add CPUs have (AVX2's vpmaddwd)
        wide = ctx.emit(R.astype(i.q, "int16"))
        if not int(i.params.zero_point):
            return wide
        return ctx.emit(R.subtract(wide, ctx.const([int(i.params.zero_point)], "int16")))

    acc = ctx.emit(R.matmul(centred(a), centred(b), out_dtype="int32"))
    scale = np.asarray([np.float64(a.params.scale) * np.float64(b.params.scale)])
    return ctx.finish_anchor(acc, scale, np.zeros(1, np.int64), bias, out, clamp, channel_axis=-1)


def _activations(call):
    """The data, and the second operand too when it is not a constant: an activation×activation product is
    quantized on both sides; a constant of another rank than 2 (a batched weight) leaves the matmul in FP32."""
    from tvm.ir.expr import GenericConst

    if not isinstance(call.args[1], GenericConst):
        return [0, 1]
    return [0] if call.args[1].ty.ndim == 2 else []


def _weights(call):
    weight = call.args[1]
    return {1: 1} if weight.ty.ndim == 2 else {}


def _mean_shift(call, delta, input_mean):
    """E[x·ΔW] per output column from the mean input row."""
    if delta.ndim != 2:
        return None
    return input_mean.reshape(-1, delta.shape[0]).mean(axis=0) @ delta


def _int8_weight(weight: np.ndarray):
    """The weight [K, N] in int8 with one scale per output column."""
    params = weight_params(weight, 1, per_channel=True)
    return quantize_weight(weight, params), np.broadcast_to(params.scale, (weight.shape[1],)).astype(np.float32)


def _weight_only(ctx, call, x, weight, activation_dtype):
    """x · (W_q · s) computed as (x · float(W_q)) · s in one kernel: the int8 weights are what the library holds
    and reads; the conversion happens in the kernel's inner loop."""
    if weight.ndim != 2 or str(x.ty.dtype) != "float32":
        return None
    w_q, scale = _int8_weight(weight)

    def kernel(data, w, s):
        k = te.reduce_axis((0, w.shape[0]), name="k")
        out_shape = list(data.shape[:-1]) + [w.shape[1]]
        acc = te.compute(out_shape, lambda *i: te.sum(data[(*i[:-1], k)] * w[k, i[-1]].astype("float32"), axis=k),
                         name="weight_only_matmul")
        return te.compute(out_shape, lambda *i: acc[i] * s[i[-1]], name="column_scale")

    return ctx.builder.emit_te(kernel, x, ctx.const(w_q, "int8"), ctx.const(scale, "float32"))


def _dynamic(ctx, call, x, weight, activation_dtype):
    """Each row of x quantized at run time with its own scale (largest magnitude / 127, symmetric; uint8 codes
    take zero point 128 so that x86's u8×s8 dot product applies), an int8 matmul into int32, then both scales."""
    if weight.ndim != 2 or str(x.ty.dtype) != "float32" or x.ty.ndim < 2:
        return None
    w_q, w_scale = _int8_weight(weight)
    depth, columns = w_q.shape
    amax = ctx.emit(R.max(R.abs(x), axis=[-1], keepdims=True))
    row_scale = ctx.emit(R.divide(R.maximum(amax, ctx.const([DYNAMIC_RANGE_FLOOR], "float32")),
                                  ctx.const([127.0], "float32")))
    q = R.clip(R.round(R.divide(x, row_scale)), -127, 127)
    zero_point = 128 if activation_dtype == "uint8" else 0
    if zero_point:
        q = R.add(q, ctx.const([float(zero_point)], "float32"))
    q = ctx.emit(R.astype(q, activation_dtype))
    leading = [int(d) for d in list(x.ty.shape)[:-1]]
    rows = int(np.prod(leading))
    acc = ctx.emit(R.matmul(ctx.emit(R.reshape(q, [rows, depth])), ctx.const(w_q, "int8"), out_dtype="int32"))
    if zero_point:
        offset = -zero_point * w_q.astype(np.int64).sum(axis=0)
        acc = ctx.emit(R.add(acc, ctx.const(offset.reshape(1, columns), "int32")))
    real = ctx.emit(R.reshape(R.astype(acc, "float32"), leading + [columns]))
    return ctx.emit(R.multiply(R.multiply(real, row_scale), ctx.const(w_scale, "float32")))


register(Rule(
    ops=("relax.matmul",),
    onnx_types=("MatMul", "Gemm"),
    role=Role.ANCHOR,
    activations=_activations,
    weights=_weights,
    realize=_realize,
    mean_shift=_mean_shift,
    weight_only=_weight_only,
    dynamic=_dynamic,
))
