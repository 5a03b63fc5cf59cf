"""Elide code casts: an 8-bit code cast back to float32 within one kernel is the float it was made from."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ...ir import bound_value, constant_value, op_name, readers, rewrite_main

_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
_ROUNDINGS = ("relax.floor", "relax.round")
# the ops FuseOps fuses into the kernel of the op before them: reading the float there costs no memory
_ELEMENTWISE = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.floor", "relax.round",
                "relax.maximum", "relax.minimum", "relax.clip", "relax.astype", "relax.nn.relu")


@expr_functor.mutator
class _Elide(PyExprMutator):
    def __init__(self, mod, users):
        super().__init__(mod)
        self.users = users

    def visit_var_binding_(self, binding):
        value = binding.value
        if (op_name(value) == "relax.astype" and str(value.ty.dtype) == "float32"
                and all(op_name(u) in _ELEMENTWISE for u in self.users.get(binding.var, ()))):
            source = self._exact_source(value.args[0])
            if source is not None:
                self.set_var_remap(binding.var, self.visit_expr(source))
                return
        super().visit_var_binding_(binding)

    def _exact_source(self, code):
        """The float32 tensor `code` was cast from, if it held integers within the code type's range, and the cast
        is the code's only use; else None."""
        if not isinstance(code, relax.DataflowVar) or len(self.users.get(code, ())) != 1:
            return None
        narrow = self.lookup_binding(code)
        if op_name(narrow) != "relax.astype" or str(narrow.ty.dtype) not in _RANGES:
            return None
        source = narrow.args[0]
        if str(source.ty.dtype) != "float32" or not _integral_within(self, source, _RANGES[str(narrow.ty.dtype)]):
            return None
        return source


def _integral_within(mutator, expr, bounds) -> bool:
    """Whether `expr` is min(max(r, lo), hi) (either order) of a rounded r, with integer bounds within `bounds`."""
    outer = bound_value(mutator, expr)
    if op_name(outer) not in ("relax.minimum", "relax.maximum"):
        return False
    inner = bound_value(mutator, outer.args[0])
    if {op_name(outer), op_name(inner)} != {"relax.minimum", "relax.maximum"}:
        return False
    limits = [constant_value(bound_value(mutator, c.args[1])) for c in (outer, inner)]
    if any(v is None or v.size != 1 or v.item() != np.round(v.item()) for v in limits):
        return False
    if not all(bounds[0] <= v.item() <= bounds[1] for v in limits):
        return False
    return _rounded(mutator, inner.args[0])


def _rounded(mutator, expr) -> bool:
    """Whether `expr` is integer-valued: a floor or round, or one plus an integer constant (a zero point)."""
    value = bound_value(mutator, expr)
    if op_name(value) in _ROUNDINGS:
        return True
    if op_name(value) == "relax.add":
        constant = constant_value(bound_value(mutator, value.args[1]))
        return (constant is not None and constant.size == 1 and constant.item() == np.round(constant.item())
                and _rounded(mutator, value.args[0]))
    return False


@tvm.transform.module_pass(opt_level=0, name="qcompile.ElideCodeCasts")
class ElideCodeCasts:
    """Rewrite `astype(astype(c, uint8|int8), float32)` as `c` where c is a saturated, rounded float (a requantize's
    result: integers within the code type's range), the 8-bit code is read by that cast alone and the float is
    read by elementwise ops only, so that both casts sit in one kernel: the value is the same, and AVX2 spends
    several instructions on each conversion between float vectors and bytes. A requantize followed by another
    rescale (a residual add after its conv, a feature pyramid's chains of them) then converts once. Codes that
    cross kernels stay 8-bit."""

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_Elide(mod, readers(mod["main"])), mod)
        return relax.transform.DeadCodeElimination(["main"])(mod)
