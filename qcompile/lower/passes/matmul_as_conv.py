"""Matmul as conv: an integer matmul against constant weights becomes a 1×1 conv, which PackConv then packs."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import constant_value, op_name, rewrite_main


@expr_functor.mutator
class _AsConv(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.matmul" or str(call.attrs.out_dtype) != "int32":
            return call
        data, weight = call.args
        kernel = constant_value(weight)
        if (kernel is None or kernel.ndim != 2 or kernel.dtype != np.int8
                or data.ty.ndim != 2 or str(data.ty.dtype) not in ("uint8", "int8")):
            return call
        rows, depth = data.ty.shape
        columns = kernel.shape[1]
        image = self.builder_.emit(R.reshape(data, [rows, depth, 1, 1]))
        filters = relax.const(np.ascontiguousarray(kernel.T).reshape(columns, -1, 1, 1))
        acc = self.builder_.emit(R.nn.conv2d(image, filters, out_dtype="int32"))
        return R.reshape(acc, [rows, columns])


@tvm.transform.module_pass(opt_level=0, name="qcompile.MatmulAsConv")
class MatmulAsConv:
    """Rewrite `matmul(x, W)` (x: [M, K] int8/uint8, W: constant [K, N] int8, int32 result) as
    `reshape(conv2d(reshape(x, [M, K, 1, 1]), Wᵀ as [N, K, 1, 1]), [M, N])`.

    Left as a matmul, a classifier's int8 GEMV (ResNet-50's 2048 → 1000) gets MetaSchedule's generic CPU
    schedule: one thread, no dot-product instruction, and a walk down the weight's columns 1000 bytes apart,
    which in the running network (weights not in cache) took 0.7-0.8 ms, as long as a 3×3 conv of the last
    stage. As a conv it takes the packed path of the model's other convs: weights in the dot-product
    instruction's blocks, read in order, and the tuned, parallel conv schedule."""

    def transform_module(self, mod, ctx):
        return rewrite_main(_AsConv(mod), mod)
