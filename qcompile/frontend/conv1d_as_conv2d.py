"""Conv1dAsConv2d: a 1-D conv, and the elementwise ops after it, as a 2-D conv over a one-row image."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ..ir import alias_root, bound_value, constant_value, op_name, out_dtype, rewrite_main, static_shape

ROW_AXIS = 2  # the one-row image's height: [N, C, L] is viewed as [N, C, 1, L]

# elementwise ops that give the same values in either view: their first operand is the tensor, the rest attributes
UNARY = frozenset(f"relax.{name}" for name in (
    "nn.relu", "nn.gelu", "nn.gelu_tanh", "nn.silu", "sigmoid", "tanh", "sqrt", "rsqrt", "exp", "log", "erf",
    "abs", "negative", "clip", "astype", "square",
))
BINARY = frozenset(f"relax.{name}" for name in (
    "add", "subtract", "multiply", "divide", "power", "maximum", "minimum",
))


@expr_functor.mutator
class _AsConv2d(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.rows = {}  # a [N, C, L] result → the same values as [N, C, 1, L]
        self.norms = {}  # a batch norm over a [N, C, L] result → the same batch norm over its [N, C, 1, L] view

    def visit_call_(self, op):
        call = super().visit_call_(op)
        name = op_name(call)
        if name == "relax.nn.conv1d":
            return self._conv(call)
        if name == "relax.expand_dims" and [int(a) for a in call.attrs.axis] == [ROW_AXIS]:
            row = self._row(call.args[0])
            return call if row is None else row
        if name in UNARY:
            row = self._row(call.args[0])
            if row is None:
                return call
            return self._squeezed(relax.Call(call.op, [row, *call.args[1:]], call.attrs, call.ty_args))
        if name in BINARY:
            return self._binary(call)
        if name == "relax.strided_slice":
            return self._slice(call)
        if name == "relax.nn.batch_norm" and int(call.attrs.axis) == 1:
            row = self._row(call.args[0])
            if row is not None:  # over channels in either view: then folded into the conv by Prepare
                result = self.builder_.emit(call)
                self.norms[result] = self.builder_.emit(relax.Call(call.op, [row, *call.args[1:]], call.attrs,
                                                                   call.ty_args))
                return result
        return call

    def visit_tuple_getitem_(self, op):
        item = super().visit_tuple_getitem_(op)
        norm = self.norms.get(alias_root(self.lookup_binding, item.tuple_value))
        if norm is None or item.index != 0:
            return item
        return self._squeezed(relax.TupleGetItem(norm, 0))

    def _conv(self, call):
        attrs = call.attrs
        data, weight = call.args
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCW", "OIW", "NCW") or weight.ty.ndim != 3:
            return call
        image = self._row(data)
        if image is None:
            image = self.builder_.emit(R.expand_dims(data, [ROW_AXIS]))
        (left, right), (stride,), (dilation,) = ([int(p) for p in attrs.padding], [int(s) for s in attrs.strides],
                                                 [int(d) for d in attrs.dilation])
        kernel = constant_value(bound_value(self, weight))
        filters = (relax.const(kernel[:, :, None, :]) if kernel is not None
                   else self.builder_.emit(R.expand_dims(weight, [ROW_AXIS])))
        conv = R.nn.conv2d(image, filters, strides=(1, stride), padding=(0, left, 0, right),
                           dilation=(1, dilation), groups=int(attrs.groups), out_dtype=out_dtype(call))
        return self._squeezed(conv)

    def _binary(self, call):
        operands = [self._row(a) for a in call.args]
        if all(o is None for o in operands) or call.ty.ndim != 3:
            return call
        lifted = []
        for operand, row in zip(call.args, operands):
            if row is None:
                row = _lifted(operand)
                if row is None:
                    return call
                if row is not operand and constant_value(row) is None:
                    row = self.builder_.emit(row)
            lifted.append(row)
        return self._squeezed(relax.Call(call.op, lifted, call.attrs, call.ty_args))

    def _slice(self, call):
        row = self._row(call.args[0])
        if row is None or not all(isinstance(a, relax.Tuple) for a in call.args[1:]):
            return call
        axes, begin, end, *strides = ([int(v) for v in a.fields] for a in call.args[1:])
        moved = [a % 3 + (a % 3 >= ROW_AXIS) for a in axes]
        return self._squeezed(R.strided_slice(row, moved, begin, end, *strides,
                                              assume_inbound=bool(call.attrs.assume_inbound)))

    def _squeezed(self, four_d):
        """Emit `four_d` and return its values in the [N, C, L] view the rest of the graph reads."""
        row = self.builder_.emit(four_d)
        result = self.builder_.emit(R.squeeze(row, [ROW_AXIS]))
        self.rows[result] = row
        return result

    def _row(self, expr):
        return self.rows.get(alias_root(self.lookup_binding, expr))


def _lifted(operand):
    """The other operand of a binary op on a [N, C, L] result, broadcast the same way against [N, C, 1, L]: a
    scalar as it is, any other static shape right-aligned to three axes with the row axis inserted; None when its
    shape is not static or has more than three axes."""
    shape = static_shape(operand)
    if shape is None or len(shape) > 3:
        return None
    if all(d == 1 for d in shape):
        return operand
    shape = [1] * (3 - len(shape)) + shape
    shape = shape[:ROW_AXIS] + [1] + shape[ROW_AXIS:]
    value = constant_value(operand)
    return relax.const(value.reshape(shape)) if value is not None else R.reshape(operand, shape)


@tvm.transform.module_pass(opt_level=0, name="qcompile.Conv1dAsConv2d")
class Conv1dAsConv2d:
    """Rewrite `conv1d(x, W)` ([N, C, L], NCW/OIW) as `squeeze(conv2d(expand_dims(x, 2), expand_dims(W, 2)), 2)`,
    with stride, padding and dilation on the width, and carry the elementwise ops, channel slices and batch
    norms after it (bias add, relu, a magnitude's power/add/sqrt) into the [N, C, 1, L] view, so that the next conv1d reads it
    without the squeeze and expand_dims in between.

    Every later stage knows conv2d: the quantizer's conv rule, the packed layouts and their default schedules,
    tuning; TVM's conv1d has none of them and ran as a scalar loop nest (Silero VAD: 38 of its 41 ms in FP32,
    in float inside the INT8 build). The windows and sums are the same; only the shapes change."""

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_AsConv2d(mod), mod)
        return relax.transform.DeadCodeElimination(["main"])(relax.transform.CanonicalizeBindings()(mod))
