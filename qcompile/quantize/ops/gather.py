"""take (Gather) from a constant table at run-time indices, an embedding: the table held in int8 with one scale per
row, the rows dequantized as they are read. No integer arithmetic to do, only bytes to save: a text model's
vocabulary table is most of its weights (a BERT-base's 30522 × 768), and onnxruntime's quantizers store it in 8 bits
too. The indices are no activation: nothing about them is quantized."""

import numpy as np
from tvm import te, tirx

from ..qparams import quantize_weight, weight_params
from .registry import Role, Rule, register


# the row read for index i of a table of n rows, as take's modes define it (the importer's Gather: "fast", made
# "clip" by `frontend/safe_take.py`)
_INDEX = {"clip": lambda i, n: tirx.max(tirx.min(i, n - 1), 0), "fast": lambda i, n: i}


# the smallest table held in int8 (values in all; values a row): a small table saves little and may be constants
# read for their exact values (a detector's anchors), an int8 row's one scale costs as much as a few of its values
MIN_VALUES, MIN_ROW = 4096, 8


def _table(call):
    """{0: 0} (the table, its rows along axis 0) for a large float table of rows read along axis 0; else {}."""
    table = call.args[0].ty
    shape = [int(d) for d in table.shape] if table.ndim >= 2 else []
    axis = int(call.attrs.axis) % table.ndim if table.ndim > 0 else 0
    big = bool(shape) and np.prod(shape) >= MIN_VALUES and np.prod(shape[1:]) >= MIN_ROW
    return {0: 0} if big and axis == 0 and str(table.dtype) == "float32" else {}


def _int8_rows(ctx, call, indices, table, activation_dtype):
    """take(T, i) as one kernel reading T_q[i] · s[i]: the int8 row and its scale at the same (clipped) index. One
    kernel, not a take, a cast and a multiply: those would be ops the quantizer walks into (a Mul of two tensors
    it would quantize, the gathered scales among them) where a consumer wants the embedding quantized."""
    if str(call.attrs.mode) not in _INDEX:  # the table itself is one `_table` accepts
        return None
    params = weight_params(table, 0, per_channel=True)
    rows, index = table.shape[0], _INDEX[str(call.attrs.mode)]

    def kernel(codes, scale, ids):
        def value(*i):
            row = index(ids[i[:ids.ndim]], rows)
            return codes[(row, *i[ids.ndim:])].astype("float32") * scale[row]

        return te.compute(tuple(ids.shape) + tuple(codes.shape[1:]), value, name="int8_rows")

    return ctx.builder.call_te(kernel, ctx.const(quantize_weight(table, params), "int8"),
                               ctx.const(params.scale, "float32"), indices, primfunc_name_hint="gather_int8_rows")


register(Rule(
    ops=("relax.take",),
    onnx_types=("Gather",),
    role=Role.TABLE,
    activations=lambda call: [],
    realize=lambda ctx, call, inputs, out, clamp, bias: None,  # nothing to compute in integers
    weights=_table,
    weight_only=_int8_rows,
))
