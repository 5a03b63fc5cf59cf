"""ConvTranspose as conv: a transposed conv whose kernel equals its stride becomes a 1×1 conv and a pixel shuffle."""

from __future__ import annotations

import tvm
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import const
from tvm.relax import op as R

from ...ir import (bound_value, constant_value, is_upsampling_transpose, op_name, out_dtype, pixel_shuffle,
                    pointwise_filters, rewrite_main, static_shape)


@expr_functor.mutator
class _AsConv(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.nn.conv2d_transpose" or not is_upsampling_transpose(call):
            return call
        data, weight = call.args
        kernel = constant_value(bound_value(self, weight))
        if kernel is None or static_shape(data) is None:
            return call
        pixels = self.builder_.emit(R.nn.conv2d(data, const(pointwise_filters(kernel)), out_dtype=out_dtype(call)))
        return pixel_shuffle(pixels, kernel.shape[2:])


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
