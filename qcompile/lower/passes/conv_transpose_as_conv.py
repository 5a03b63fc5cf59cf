"""ConvTranspose as conv: a transposed conv whose kernel equals its stride becomes a 1×1 conv and a pixel shuffle."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import const
from tvm.relax import op as R

from ...ir import bound_value, constant_value, op_name, out_dtype, rewrite_main, static_shape


@expr_functor.mutator
class _AsConv(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.nn.conv2d_transpose":
            return call
        data, weight = call.args
        kernel, shape = constant_value(bound_value(self, weight)), static_shape(data)
        a = call.attrs
        if (kernel is None or kernel.ndim != 4 or shape is None or int(a.groups) != 1 or a.data_layout != "NCHW"
                or a.kernel_layout != "IOHW" or a.out_layout != "NCHW"
                or [int(s) for s in a.strides] != list(kernel.shape[2:]) or any(int(p) for p in a.padding)
                or any(int(p) for p in a.output_padding) or any(int(d) != 1 for d in a.dilation)):
            return call
        n, _, height, width = shape
        in_channels, out_channels, kh, kw = kernel.shape
        # output channel (o, dy, dx) of the 1×1 conv is output pixel (kh·y + dy, kw·x + dx) of channel o
        filters = np.ascontiguousarray(kernel.transpose(1, 2, 3, 0)).reshape(out_channels * kh * kw,
                                                                             in_channels, 1, 1)
        pixels = self.builder_.emit(R.nn.conv2d(data, const(filters), out_dtype=out_dtype(call)))
        blocks = self.builder_.emit(R.reshape(pixels, [n, out_channels, kh, kw, height, width]))
        shuffled = self.builder_.emit(R.permute_dims(blocks, [0, 1, 4, 2, 5, 3]))
        return R.reshape(shuffled, [n, out_channels, height * kh, width * kw])


@tvm.transform.module_pass(opt_level=0, name="qcompile.ConvTransposeAsConv")
class ConvTransposeAsConv:
    """Rewrite `conv2d_transpose(x, W)` with a kernel as large as its stride (no padding, no groups: the
    upsampling heads of detectors, DBNet's 2×2 stride-2 layers) as a 1×1 conv to out_channels × kh × kw
    channels followed by a pixel shuffle (reshape, transpose, reshape). The windows do not overlap, so each
    output pixel is one input pixel's dot product with one kernel tap: the same sums. TVM's conv2d_transpose has no
    schedule here (PP-OCRv4's detector: 127 of its 272 ms INT8 in two such layers, left in FP32); the 1×1 conv
    takes the packed path and its default schedule, the shuffle fuses into the unpack kernel."""

    def transform_module(self, mod, ctx):
        return rewrite_main(_AsConv(mod), mod)
