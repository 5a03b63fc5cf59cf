"""The elementwise Relax ops the layout passes move from one layout to another (`MatmulAsConv` onto a conv's
result, `BlockedEpilogue` into the blocked layout): each computes every element from the same element of its
operands, so it gives the same values in any layout its operands share."""

from __future__ import annotations

from tvm.relax import op as R

from ...ir import constant_value, op_name, static_shape

UNARY = {"relax.astype": lambda x, call: R.astype(x, call.attrs.dtype), "relax.floor": lambda x, call: R.floor(x),
         "relax.round": lambda x, call: R.round(x), "relax.abs": lambda x, call: R.abs(x),
         "relax.clip": lambda x, call: R.clip(x, call.args[1], call.args[2]),
         "relax.nn.relu": lambda x, call: R.nn.relu(x),
         # float activations after a float conv or a dequantized matmul (FastMath expands them later)
         "relax.nn.gelu": lambda x, call: R.nn.gelu(x), "relax.sigmoid": lambda x, call: R.sigmoid(x),
         "relax.tanh": lambda x, call: R.tanh(x)}
# quantize and dequantize are elementwise where their scale and zero point are one value (per tensor)
PER_TENSOR = {
    "relax.quantize": lambda x, call: R.quantize(x, call.args[1], call.args[2], axis=int(call.attrs.axis),
                                                 out_dtype=str(call.attrs.out_dtype)),
    "relax.dequantize": lambda x, call: R.dequantize(x, call.args[1], call.args[2], axis=int(call.attrs.axis),
                                                     out_dtype=str(call.attrs.out_dtype)),
}
BINARY = {"relax.add": R.add, "relax.subtract": R.subtract, "relax.multiply": R.multiply, "relax.divide": R.divide,
          "relax.right_shift": R.right_shift, "relax.left_shift": R.left_shift, "relax.maximum": R.maximum,
          "relax.minimum": R.minimum}


def is_lookup(call) -> bool:
    """take(constant 1-D table, index, axis=0): a lookup table (`quantize/ops/lookup_table.py`), elementwise on
    the index."""
    table = constant_value(call.args[0])
    return table is not None and table.ndim == 1 and int(call.attrs.axis) == 0 and static_shape(call) is not None


def lookup(call, index):
    """The same lookup on another index."""
    return R.take(call.args[0], index, axis=0, mode=call.attrs.mode)


def unary(call):
    """`call` rebuilt on another operand (a function of the operand and the call) if it is an elementwise op of
    one tensor, else None."""
    name = op_name(call)
    if name in UNARY:
        return UNARY[name]
    if name in PER_TENSOR and all((v := constant_value(a)) is not None and v.size == 1 for a in call.args[1:3]):
        return PER_TENSOR[name]
    return None
