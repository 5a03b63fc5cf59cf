"""The markers `Annotate` puts on tensors to quantize, which the later quantization passes read."""

from __future__ import annotations

from ..ir import op_name

QUANT_POINT = "qcompile.quant_point"  # marks an activation to quantize: (x, id, label)
WEIGHT_POINT = "qcompile.weight_point"  # marks a constant weight to quantize: (w, axis)


def marker(expr) -> tuple[str, list] | None:
    """(kind, arguments) for a quant/weight point marker, else None."""
    if op_name(expr) != "relax.call_pure_packed":
        return None
    func = expr.args[0]
    name = getattr(func, "global_symbol", None)
    if name not in (QUANT_POINT, WEIGHT_POINT):
        return None
    return str(name), list(expr.args[1:])
