"""conv2d_transpose whose kernel equals its stride (upsampling heads: DBNet's 2×2 stride-2 layers): uint8/int8
activations × int8 per-channel weights → int32, as a 1×1 conv and a pixel shuffle of the 8-bit result.

The windows do not overlap, so output pixel (kh·y + dy, kw·x + dx) of channel o is input pixel (y, x)'s dot
product with tap (dy, dx) of channel o: a 1×1 conv to O·kh·kw channels computes every sum, with no inserted zeros
that the input's zero point would have to stand for (its correction is per channel of the 1×1 conv). Other
transposed convs stay FP32."""

import numpy as np
from tvm.relax import op as R

from .registry import Role, Rule, register


def _upsampling(call) -> bool:
    """Whether the transposed conv's kernel equals its stride (no padding, groups or dilation): the case handled."""
    a = call.attrs
    kernel = [int(d) for d in call.args[1].ty.shape] if call.args[1].ty.ndim == 4 else None
    return (kernel is not None and int(a.groups) == 1 and a.data_layout == "NCHW" and a.kernel_layout == "IOHW"
            and a.out_layout == "NCHW" and [int(s) for s in a.strides] == kernel[2:]
            and not any(int(p) for p in a.padding) and not any(int(p) for p in a.output_padding)
            and all(int(d) == 1 for d in a.dilation))


def _realize(ctx, call, inputs, out, clamp, bias):
    x, w = inputs
    if not w.is_constant or not _upsampling(call):
        return None
    n, _, height, width = x.shape
    in_channels, out_channels, kh, kw = w.value.shape
    taps = kh * kw
    # channel (o, dy, dx) of the 1×1 conv is output pixel (kh·y + dy, kw·x + dx) of channel o
    filters = np.ascontiguousarray(w.value.transpose(1, 2, 3, 0)).reshape(out_channels * taps, in_channels, 1, 1)
    acc = ctx.emit(R.nn.conv2d(x.q, ctx.const(filters, "int8"), out_dtype="int32"))
    w_scale = np.repeat(np.broadcast_to(w.params.scale, (out_channels,)), taps)
    offset = -int(x.params.zero_point) * filters.astype(np.int64).sum(axis=(1, 2, 3))
    bias = None if bias is None else np.repeat(bias.reshape(-1), taps)
    pixels = ctx.finish_anchor(acc, x.params.scale * w_scale, offset, bias, out, clamp, channel_axis=1)
    if pixels is None:
        return None
    blocks = ctx.emit(R.reshape(pixels, [n, out_channels, kh, kw, height, width]))
    shuffled = ctx.emit(R.permute_dims(blocks, [0, 1, 4, 2, 5, 3]))
    return ctx.emit(R.reshape(shuffled, [n, out_channels, height * kh, width * kw]))


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
    activations=lambda call: [0] if _upsampling(call) else [],  # others are not marked: they stay FP32
    weights=lambda call: {1: 1},  # IOHW: per output channel
    realize=_realize,
    mean_shift=_mean_shift,
))
