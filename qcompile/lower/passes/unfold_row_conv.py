"""Unfold a one-row conv over a few input channels into its windows, read by a 1×1 conv."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import bound_value, constant_value, op_name, out_dtype, rewrite_main, static_shape

FEW_CHANNELS = 4  # fewer input channels than one int8 dot-product group (4 bytes)


@expr_functor.mutator
class _Unfold(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.nn.conv2d":
            return call
        data, weight = call.args
        attrs = call.attrs
        kernel, shape = constant_value(bound_value(self, weight)), static_shape(data)
        if (kernel is None or shape is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                or int(attrs.groups) != 1 or any(int(p) for p in attrs.padding)):
            return call
        (batch, channels, height, width), (out_channels, _, kh, kw) = shape, kernel.shape
        if height != 1 or kh != 1 or kw == 1 or channels >= FEW_CHANNELS:
            return call
        stride, dilation = int(attrs.strides[1]), int(attrs.dilation[1])
        out_width = (width - (kw - 1) * dilation - 1) // stride + 1
        # windows[j, k]: the input pixel that tap k of output pixel j reads
        windows = np.arange(out_width)[:, None] * stride + np.arange(kw)[None, :] * dilation
        # [N, C, 1, W', K]; "clip" only so that TVM does not warn about "fast" (the indices are in range)
        taps = self.builder_.emit(R.take(data, relax.const(windows.astype(np.int64)), axis=3, mode="clip"))
        channels_first = self.builder_.emit(R.permute_dims(taps, [0, 1, 4, 2, 3]))  # [N, C, K, 1, W']
        unfolded = self.builder_.emit(R.reshape(channels_first, [batch, channels * kw, 1, out_width]))
        filters = relax.const(np.ascontiguousarray(kernel.reshape(out_channels, channels * kw, 1, 1)))
        return R.nn.conv2d(unfolded, filters, out_dtype=out_dtype(call))


@tvm.transform.module_pass(opt_level=0, name="qcompile.UnfoldRowConv")
class UnfoldRowConv:
    """Rewrite a conv over a one-row image with fewer than 4 input channels and a kernel wider than one pixel (a
    1-D conv over a raw signal: an STFT as a conv, an audio model's first layer), without padding, as a gather of
    its windows (`take` with constant indices: [N, C, 1, W', K]) laid out as C·K channels of one row, and a 1×1
    conv with the same weights reshaped to [O, C·K, 1, 1].

    Packed as it is, such a conv pads its one channel to a whole block (the int8 dot product reads 4 channels)
    and walks a kernel hundreds of taps wide one tap at a time (Silero VAD's STFT: 258 filters of 256 taps,
    1.7 ms of its 2.8 ms in INT8, 3 of 4.4 ms in FP32); as a 1×1 conv its taps are the channels the packed
    kernels are fast on. The sums are the same products; the gather fuses into the pack kernel."""

    def transform_module(self, mod, ctx):
        return rewrite_main(_Unfold(mod), mod)
