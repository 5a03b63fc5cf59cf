"""Matmul as conv: an integer matmul against constant weights becomes a 1×1 conv, which PackConv then packs."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import alias_root, bound_value, constant_value, op_name, out_dtype, rewrite_main, static_shape
from .elementwise import BINARY, is_lookup, lookup, unary


@expr_functor.mutator
class _AsConv(PyExprMutator):
    def __init__(self, mod, floats: bool):
        super().__init__(mod)
        self.floats = floats
        self.views = {}  # a result in the matmul's shape → (the same values in the conv's layout, rows, columns)

    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.matmul":
            sunk = self._sink(call)
            return call if sunk is None else sunk
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
        previous = self._viewed(data)
        if previous is not None and previous[1:] == (rows, depth):  # another matmul's result: its conv layout
            image = previous[0]
        elif rows == 1:  # a GEMV: one pixel of `depth` channels (the kernels its tuning records were made for)
            image = self.builder_.emit(R.reshape(data, [1, depth, 1, 1]))
        else:  # the rows as a 1 × rows image: the weights are then read once per tile of rows, not once per row
            rows_last = self.builder_.emit(R.permute_dims(R.reshape(data, [rows, depth]), [1, 0]))
            image = self.builder_.emit(R.reshape(rows_last, [1, depth, 1, rows]))
        acc = self.builder_.emit(R.nn.conv2d(image, filters, out_dtype=acc_dtype))
        return self._view(acc, rows, columns, [*lead, columns])

    def _view(self, acc, rows: int, columns: int, shape: list):
        """`acc` ([1, columns, 1, rows], the conv's layout) as the matmul's result of `shape`."""
        rows_first = acc if rows == 1 else self.builder_.emit(R.permute_dims(R.reshape(acc, [columns, rows]), [1, 0]))
        result = self.builder_.emit(R.reshape(rows_first, shape))
        self.views[result] = (acc, rows, columns)
        return result

    def _sink(self, call):
        """An elementwise op on a matmul's result (its requantize or dequantize epilogue), with a scalar, a
        per-column constant or a per-row tensor (dynamic quantization's row scales) as its other operand: the
        same op in the conv's layout, before the transposes, where `BlockedEpilogue` then fuses it into the conv."""
        name = op_name(call)
        if name == "relax.take" and is_lookup(call):  # an 8-bit function's table: elementwise on the index
            viewed = self._viewed(call.args[1])
            if viewed is None:
                return None
            looked_up = self.builder_.emit(lookup(call, viewed[0]))
            return self._view(looked_up, *viewed[1:], static_shape(call))
        if name == "relax.max" and _over_last_axis(call):  # a row's largest value: dynamic quantization's range
            viewed = self._viewed(call.args[0])
            if viewed is None:
                return None
            row_max = self.builder_.emit(R.max(viewed[0], axis=[1], keepdims=True))  # [1, 1, 1, rows]
            return R.reshape(row_max, static_shape(call))  # one value a row, in row order either way
        rebuild = unary(call)
        shape = static_shape(call) if rebuild or name in BINARY or name == "relax.reshape" else None
        if shape is None:
            return None
        operands = list(call.args[:1] if rebuild or name == "relax.reshape" else call.args[:2])
        viewed = [self._viewed(a) for a in operands]
        if sum(v is not None for v in viewed) != 1:
            return None
        conv_layout, rows, columns = next(v for v in viewed if v is not None)
        if shape[-1] != columns or int(np.prod(shape)) != rows * columns:
            return None
        if name == "relax.reshape":  # another view of the same values (the rows regrouped)
            return self._view(conv_layout, rows, columns, shape)
        if rebuild:
            return self._view(self.builder_.emit(rebuild(conv_layout, call)), rows, columns, shape)
        moved = [v[0] if v is not None else self._in_conv_layout(a, rows, columns, len(shape))
                 for a, v in zip(operands, viewed)]
        if any(m is None for m in moved):
            return None
        return self._view(self.builder_.emit(BINARY[name](*moved)), rows, columns, shape)

    def _viewed(self, expr):
        """(the conv-layout tensor, rows, columns) if `expr` is a matmul result `_view` made, else None."""
        return self.views.get(alias_root(self.lookup_binding, expr))

    def _in_conv_layout(self, operand, rows: int, columns: int, ndim: int):
        """The other operand of a sunk op in the conv's layout: a scalar as it is, a per-column constant as
        [1, columns, 1, 1], a per-row tensor ([..., rows..., 1]) as [1, 1, 1, rows]; None otherwise."""
        value = constant_value(operand)
        if value is not None:
            if value.size == 1:
                return operand
            if value.size == columns and value.shape[-1] == columns:
                return relax.const(value.reshape(1, columns, 1, 1))
            return None
        shape = static_shape(operand)
        if shape is None or len(shape) != ndim or shape[-1] != 1 or int(np.prod(shape)) != rows:
            return None
        return self.builder_.emit(R.reshape(operand, [1, 1, 1, rows]))


def _over_last_axis(call) -> bool:
    """A reduction over the last axis only, keeping it (one value a row)."""
    ndim = call.args[0].ty.ndim
    axes = [int(a) % ndim for a in call.attrs.axis] if call.attrs.axis is not None else None
    return axes == [ndim - 1] and bool(call.attrs.keepdims) and static_shape(call) is not None


@tvm.transform.module_pass(opt_level=0, name="qcompile.MatmulAsConv")
class MatmulAsConv:
    """Rewrite `matmul(x, W)` (x: [..., M, K] int8/uint8, W: constant [K, N] int8, int32 result; with `floats`,
    float32 x and W too) as a 1×1 conv over a 1 × M image of K channels, and its result back to [..., M, N]:
    `reshape(conv2d(reshape(x, [1, K, 1, 1]), Wᵀ as [N, K, 1, 1]), [1, N])` for one row, with transposes for M.

    Left as a matmul, it gets MetaSchedule's generic CPU schedule (no default schedule, no dot-product
    instruction): a classifier's int8 GEMV (ResNet-50's 2048 → 1000) walked the weight's columns 1000 bytes
    apart, 0.7-0.8 ms in the running network; a transformer's 128 × 256 × 1024 projection took 45 ms. As a conv
    it takes the packed path of the convs: weights in the dot-product instruction's blocks, read in order, the
    default or tuned register-tile schedule; the transposes become the pack and unpack kernels' layout change.

    The elementwise ops after it (requantize, dequantize with per-row scales, a float activation, an 8-bit lookup
    table) are moved before the transposes, onto the conv's result, where `BlockedEpilogue` and FuseOps make them
    the conv's epilogue: left after the transposes they ran as a separate kernel over the whole float result
    (BERT-like int8-dynamic: 2 ms of 13). A matmul whose input is such a result (a feed-forward block's second
    layer, also through int8-dynamic's quantization by rows, whose row maxima are taken over the conv layout's
    channels) reads it in the conv layout as it is: no transposes back and forth between the two."""

    def __init__(self, floats: bool = False):
        self.floats = floats

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_AsConv(mod, self.floats), mod)
        # the views each sunk op replaced, and the aliases of the ones it emitted
        return relax.transform.DeadCodeElimination(["main"])(relax.transform.CanonicalizeBindings()(mod))
