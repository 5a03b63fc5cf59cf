"""Matmul as conv: an integer matmul against constant weights becomes a 1×1 conv, which PackConv then packs."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import bound_value, constant_value, op_name, out_dtype, rewrite_main, static_shape


@expr_functor.mutator
class _AsConv(PyExprMutator):
    def __init__(self, mod, floats: bool):
        super().__init__(mod)
        self.floats = floats

    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.matmul":
            return call
        data, weight = call.args
        kernel, shape = constant_value(bound_value(self, weight)), static_shape(data)
        if kernel is None or kernel.ndim != 2 or shape is None or len(shape) < 2:
            return call
        integer = out_dtype(call) == "int32" and kernel.dtype == np.int8 and str(data.ty.dtype) in ("uint8", "int8")
        real = (self.floats and kernel.dtype == np.float32 and str(data.ty.dtype) == "float32"
                and out_dtype(call) in (None, "float32"))
        if not (integer or real):
            return call
        *lead, depth = shape
        rows, columns = int(np.prod(lead)), kernel.shape[1]
        filters = relax.const(np.ascontiguousarray(kernel.T).reshape(columns, -1, 1, 1))
        acc_dtype = "int32" if integer else "float32"
        if rows == 1:  # a GEMV: one pixel of `depth` channels (the kernels its tuning records were made for)
            image = self.builder_.emit(R.reshape(data, [1, depth, 1, 1]))
            acc = self.builder_.emit(R.nn.conv2d(image, filters, out_dtype=acc_dtype))
            return R.reshape(acc, [*lead, columns])
        # the rows as a 1 × rows image: the weights are then read once per tile of rows, not once per row
        rows_last = self.builder_.emit(R.permute_dims(R.reshape(data, [rows, depth]), [1, 0]))
        image = self.builder_.emit(R.reshape(rows_last, [1, depth, 1, rows]))
        acc = self.builder_.emit(R.nn.conv2d(image, filters, out_dtype=acc_dtype))
        columns_last = self.builder_.emit(R.permute_dims(R.reshape(acc, [columns, rows]), [1, 0]))
        return R.reshape(columns_last, [*lead, columns])


@tvm.transform.module_pass(opt_level=0, name="qcompile.MatmulAsConv")
class MatmulAsConv:
    """Rewrite `matmul(x, W)` (x: [..., M, K] int8/uint8, W: constant [K, N] int8, int32 result; with `floats`,
    float32 x and W too) as a 1×1 conv over a 1 × M image of K channels, and its result back to [..., M, N]:
    `reshape(conv2d(reshape(x, [1, K, 1, 1]), Wᵀ as [N, K, 1, 1]), [1, N])` for one row, with transposes for M.

    Left as a matmul, it gets MetaSchedule's generic CPU schedule (no default schedule, no dot-product
    instruction): a classifier's int8 GEMV (ResNet-50's 2048 → 1000) walked the weight's columns 1000 bytes
    apart, 0.7-0.8 ms in the running network; a transformer's 128 × 256 × 1024 projection took 45 ms. As a conv
    it takes the packed path of the convs: weights in the dot-product instruction's blocks, read in order, the
    default or tuned register-tile schedule; the transposes become the pack and unpack kernels' layout change."""

    def __init__(self, floats: bool = False):
        self.floats = floats

    def transform_module(self, mod, ctx):
        return rewrite_main(_AsConv(mod, self.floats), mod)
