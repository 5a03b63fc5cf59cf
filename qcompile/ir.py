"""Small Relax helpers shared by the quantization and lowering passes: recognizing ops, constants and activation
epilogues, and rewriting `main`."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

def op_name(expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def bound_value(mutator, expr):
    """What a variable is bound to in the function `mutator` is visiting, through aliases (`lv1 = lv`,
    `lv1 = metadata[...]`), or the expression itself."""
    while isinstance(expr, relax.Var) and mutator.lookup_binding(expr) is not None:
        expr = mutator.lookup_binding(expr)
    return expr


def out_dtype(call) -> str | None:
    """The output type a call's attributes name (conv2d, matmul, conv2d_transpose), or None where they leave it
    to the input's (`out_dtype=None`, printed "None", "" or "void")."""
    name = str(call.attrs.out_dtype)
    return None if name in ("None", "", "void") else name


def static_shape(expr) -> list[int] | None:
    """The shape of a tensor expression, if every dimension is known at compile time."""
    dims = expr.ty.shape
    return [int(d) for d in dims] if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


def constant_value(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def clamp_of(call) -> tuple[float, float] | None:
    """The [lo, hi] an activation op clamps to (relu, clip), else None."""
    name = op_name(call)
    if name == "relax.nn.relu":
        return 0.0, math.inf
    if name == "relax.clip":
        return float(call.args[1].value), float(call.args[2].value)
    return None


def bias_of(call) -> tuple[relax.Expr, np.ndarray] | None:
    """(other operand, constant) when `call` adds a constant to a tensor, else None."""
    if op_name(call) != "relax.add":
        return None
    a, b = call.args
    for operand, const in ((a, b), (b, a)):
        value = constant_value(const)
        if value is not None and constant_value(operand) is None:
            return operand, value
    return None


def rewrite_main(mutator, mod):
    """Run a PyExprMutator over `main` and return the module it builds."""
    func = mutator.visit_expr(mod["main"])
    mutator.builder_.update_func(mod.get_global_var("main"), func)
    return mutator.builder_.get()
