"""conv2d (plain, grouped, depthwise): uint8/int8 activations × int8 per-channel weights → int32."""

import numpy as np
from tvm.relax import op as R

from .registry import Role, Rule, register


def _realize(ctx, call, inputs, out, clamp, bias):
    x, w = inputs
    attrs = call.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or not w.is_constant:
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
))
