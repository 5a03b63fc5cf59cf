"""conv2d_transpose whose kernel equals its stride (upsampling heads: DBNet's 2×2 stride-2 layers): uint8/int8
activations × int8 per-channel weights → int32, as a 1×1 conv and a pixel shuffle of the 8-bit result
(`ir.is_upsampling_transpose`).

With no overlapping windows there are no inserted zeros that the input's zero point would have to stand for: its
correction is per channel of the 1×1 conv. Other transposed convs stay FP32."""

import numpy as np
from tvm.relax import op as R

from ...ir import is_upsampling_transpose, pixel_shuffle, pointwise_filters
from .registry import Role, Rule, register


def _realize(ctx, call, inputs, out, clamp, bias):
    x, w = inputs
    if not w.is_constant or not is_upsampling_transpose(call):
        return None
    out_channels, kh, kw = w.value.shape[1:]
    taps = kh * kw
    filters = pointwise_filters(w.value)
    acc = ctx.emit(R.nn.conv2d(x.q, ctx.const(filters, "int8"), out_dtype="int32"))
    w_scale = np.tile(np.broadcast_to(w.params.scale, (out_channels,)), taps)  # channel (dy, dx, o): o's
    offset = -int(x.params.zero_point) * filters.astype(np.int64).sum(axis=(1, 2, 3))
    bias = None if bias is None else np.tile(bias.reshape(-1), taps)
    pixels = ctx.finish_anchor(acc, x.params.scale * w_scale, offset, bias, out, clamp, channel_axis=1)
    return None if pixels is None else ctx.emit(pixel_shuffle(pixels, (kh, kw)))


def _mean_shift(call, delta, input_mean):
    """E[conv_transpose(x, ΔW)] per output channel: every tap (dy, dx) makes an equal share of the output pixels,
    each the input's channel means through that tap's weight error."""
    if input_mean.ndim != 4:
        return None
    channel_mean = input_mean.mean(axis=(0, 2, 3))
    return np.einsum("c,co->o", channel_mean, delta.mean(axis=(2, 3)))


register(Rule(
    ops=("relax.nn.conv2d_transpose",),
    onnx_types=("ConvTranspose",),
    role=Role.ANCHOR,
    activations=lambda call: [0] if is_upsampling_transpose(call) else [],  # others are not marked: stay FP32
    weights=lambda call: {1: 1},  # IOHW: per output channel
    realize=_realize,
    mean_shift=_mean_shift,
))
