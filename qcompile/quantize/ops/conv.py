"""conv2d (plain, grouped, depthwise): uint8/int8 activations × int8 per-channel weights → int32; and its dynamic
form, the activations quantized at run time from their own range."""

import numpy as np
from tvm.relax import op as R

from ...ir import clamp_of, op_name
from ..qparams import DYNAMIC_RANGE_FLOOR, INT_RANGES, QuantParams, quantize_weight, weight_params
from .context import QInput
from .registry import Role, Rule, lookup, register


def _nchw(call) -> bool:
    return call.attrs.data_layout == "NCHW" and call.attrs.kernel_layout == "OIHW"


def _realize(ctx, call, inputs, out, clamp, bias):
    x, w = inputs
    attrs = call.attrs
    if not _nchw(call) or not w.is_constant:
        return None
    data, padding = x.q, [int(p) for p in attrs.padding]
    if any(padding) and int(x.params.zero_point) != 0:
        # the zero point represents real 0: pad with it, not with integer 0
        top, left, bottom, right = padding
        data = ctx.emit(R.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(x.params.zero_point)))
        padding = [0, 0, 0, 0]
    acc = ctx.emit(R.nn.conv2d(data, ctx.const(w.value, "int8"), strides=attrs.strides, padding=padding,
                               dilation=attrs.dilation, groups=attrs.groups, out_dtype="int32"))
    w_scale = np.broadcast_to(w.params.scale, (w.value.shape[0],))
    # Σ (q_x - z_x)·q_w = conv(q_x, q_w) - z_x·Σ q_w ; the bias joins the accumulator in its scale
    offset = -int(x.params.zero_point) * w.value.astype(np.int64).sum(axis=(1, 2, 3))
    return ctx.finish_anchor(acc, x.params.scale * w_scale, offset, bias, out, clamp, channel_axis=1)


def _dynamic(ctx, call, x, weight, activation_dtype):
    """Each sample's input quantized at run time from its own largest magnitude m: an input known to be
    non-negative (after a ReLU or a clip at 0) in [0, m] with zero point 0 (255 steps in uint8), any other
    symmetrically in [-m, m] (uint8: zero point 128); the static form's integer conv, then the run-time scale.
    Zero points fixed at compile time, unlike onnxruntime's DynamicQuantizeLinear's: one reduction (m), and the
    padding and each channel's zero-point share are constants, so the conv and its epilogue are one kernel."""
    if not _nchw(call) or weight.ndim != 4 or str(x.ty.dtype) != "float32" or x.ty.ndim != 4:
        return None
    lo, hi = INT_RANGES[activation_dtype]
    zero_point = 0 if lo < 0 or _non_negative(ctx, x) else (hi + 1) // 2
    steps = hi - zero_point  # codes above the zero point: 255 or 127
    amax = ctx.emit(R.max(R.abs(x), axis=[1, 2, 3], keepdims=True))
    scale = ctx.emit(R.divide(R.maximum(amax, ctx.const([DYNAMIC_RANGE_FLOOR], "float32")),
                              ctx.const([float(steps)], "float32")))
    # x / scale rounded half up, as the static kernels round: floor and a multiply by the reciprocal vectorize
    # (round() is a library call a lane; division is slow); within ±steps by the choice of scale
    q = R.floor(R.add(R.multiply(x, ctx.emit(R.divide(ctx.const([1.0], "float32"), scale))),
                      ctx.const([0.5 + zero_point], "float32")))
    codes = QInput(ctx.emit(R.astype(q, activation_dtype)),
                   QuantParams(np.float32(1.0), np.int32(zero_point), activation_dtype), None, tuple(x.ty.shape))
    params = weight_params(weight, 0, per_channel=True)
    w = QInput(None, params, quantize_weight(weight, params), weight.shape)
    real = _realize(ctx, call, [codes, w], None, None, None)  # in units of the input's scale
    return ctx.emit(R.multiply(real, scale))


def _non_negative(ctx, x) -> bool:
    """Whether `x` is a ReLU's or a clip at 0's result, through ops that keep their input's values (reshape, max
    pool, resize: the registry's pass-through ops)."""
    call = ctx.producer(x)
    bounds = clamp_of(call)
    if bounds is not None:
        return bounds[0] >= 0 or _non_negative(ctx, call.args[0])
    rule = lookup(op_name(call) or "")
    return rule is not None and rule.role is Role.PASS_THROUGH and _non_negative(ctx, call.args[0])


def _mean_shift(call, delta, input_mean):
    """E[conv(x, ΔW)] per output channel from the input's per-channel mean (borders ignored); groups read their
    own input channels."""
    if input_mean.ndim != 4:
        return None
    channel_mean = input_mean.mean(axis=(0, 2, 3))
    groups = int(call.attrs.groups)
    per_group = delta.shape[1]
    out_per_group = delta.shape[0] // groups
    means = channel_mean.reshape(groups, per_group)
    grouped = delta.reshape(groups, out_per_group, per_group, -1).sum(axis=3)
    return np.einsum("goc,gc->go", grouped, means).reshape(-1)


register(Rule(
    ops=("relax.nn.conv2d",),
    onnx_types=("Conv",),
    role=Role.ANCHOR,
    activations=lambda call: [0],
    weights=lambda call: {1: 0},
    realize=_realize,
    mean_shift=_mean_shift,
    dynamic=_dynamic,
))
