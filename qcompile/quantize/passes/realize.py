"""Realize: rewrite dequantize → float op → quantize chains into integer ops with int32 accumulation."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from .. import ops
from ..ops import QInput, RealizeContext, Role
from ..qparams import QuantParams
from ...ir import bias_of, bound_value, clamp_of, constant_value, op_name, readers, rewrite_main


class _Matcher(PyExprMutator):
    """Shared look-ups: what a variable is bound to, and dequantize calls with constant parameters."""

    def __init__(self, mod):
        super().__init__(mod)
        self.ctx = RealizeContext(self.builder_, self.lookup_binding)

    def bound(self, expr):
        return bound_value(self, expr)

    def dequantized(self, expr) -> QInput | None:
        call = self.bound(expr)
        if op_name(call) != "relax.dequantize":
            return None
        params = params_of(call, str(call.args[0].ty.dtype))
        if params is None:
            return None
        q = call.args[0]
        shape = tuple(int(d) for d in q.ty.shape)
        return QInput(q=q, params=params, value=constant_value(q), shape=shape)


    def anchor_inputs(self, call) -> list[QInput] | None:
        """The dequantized data and weight of an anchor, or None if either is not dequantized."""
        inputs = [self.dequantized(a) for a in call.args[:2]]
        return None if any(i is None for i in inputs) else inputs


def params_of(call, dtype) -> QuantParams | None:
    """The constant scale/zero point of a quantize or dequantize call."""
    scale, zero_point = constant_value(call.args[1]), constant_value(call.args[2])
    if scale is None or zero_point is None or dtype not in ("int8", "uint8"):
        return None
    axis = int(call.attrs.axis)
    return QuantParams(scale.astype(np.float32), zero_point.astype(np.int32), str(dtype), axis if scale.ndim else -1)


def _read_once(func) -> set:
    """The quantize bindings whose codes one operation alone reads, through one dequantize."""
    found = readers(func)
    bound = {b.value: b.var for block in func.body.blocks for b in block.bindings}
    once = set()
    for block in func.body.blocks:
        for b in block.bindings:
            users = found.get(b.var, [])
            if (op_name(b.value) == "relax.quantize" and len(users) == 1 and op_name(users[0]) == "relax.dequantize"
                    and len(found.get(bound.get(users[0]), [])) == 1):
                once.add(b.var)
    return once


@expr_functor.mutator
class _RealizeQuantized(_Matcher):
    def __init__(self, mod):
        super().__init__(mod)
        self.once = _read_once(mod["main"])

    def visit_var_binding_(self, binding):
        super().visit_var_binding_(binding)
        if binding.var in self.once:
            self.ctx.read_once(self.visit_expr(binding.var))  # the variable that now holds the codes

    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.quantize":
            return call
        out = params_of(call, str(call.attrs.out_dtype))
        if out is None or out.per_channel:
            return call
        result = self._anchor_chain(call.args[0], out)
        if result is None:
            result = self._single_op(call.args[0], out)
        return call if result is None else result

    def _anchor_chain(self, x, out):
        """quantize(clamp*(bias_add?(anchor(dequantize(q_x), dequantize(q_w)))))"""
        lo, hi, bias = -math.inf, math.inf, None
        node = self.bound(x)
        while clamp_of(node) is not None:
            c_lo, c_hi = clamp_of(node)
            lo, hi = max(lo, c_lo), min(hi, c_hi)
            node = self.bound(node.args[0])
        found = bias_of(node)
        if found is not None:
            node, bias = self.bound(found[0]), found[1]
        rule = ops.lookup(op_name(node) or "")
        if rule is None or rule.role is not Role.ANCHOR:
            return None
        inputs = self.anchor_inputs(node)
        return None if inputs is None else rule.realize(self.ctx, node, inputs, out, (lo, hi), bias)

    def _single_op(self, x, out):
        """quantize(op(dequantize(q), ...)) for a merge or pass-through op, and quantize(dequantize(q))."""
        node = self.bound(x)
        name = op_name(node)
        if name == "relax.dequantize":
            source = self.dequantized(x)
            if source is None or source.params.per_channel:
                return None
            return source.q if source.params.same_as(out) else self.ctx.rescale_sum([source], out, None)
        rule = ops.lookup(name or "")
        if rule is None or rule.role is Role.ANCHOR:
            return None
        operands = rule.operands(node)
        inputs = [self.dequantized(operands[i]) for i in rule.activations(node)]
        if any(i is None or i.params.per_channel for i in inputs):
            return None
        if rule.role is Role.PASS_THROUGH and not inputs[0].params.same_as(out):
            return None
        return rule.realize(self.ctx, node, inputs, out, clamp_of(node), None)


@expr_functor.mutator
class _RealizeFloatOutputAnchors(_Matcher):
    """Anchors whose result is consumed in FP32 (e.g. the classifier before softmax): integer compute, then
    one multiply by the accumulator's scale; the bias and anything after stay FP32."""

    def visit_call_(self, op):
        call = super().visit_call_(op)
        rule = ops.lookup(op_name(call) or "")
        if rule is None or rule.role is not Role.ANCHOR:
            return call
        inputs = self.anchor_inputs(call)
        result = None if inputs is None else rule.realize(self.ctx, call, inputs, None, None, None)
        return call if result is None else result


def _run(mutator_class, mod):
    mod = rewrite_main(mutator_class(mod), mod)
    return relax.transform.DeadCodeElimination(["main"])(relax.transform.CanonicalizeBindings()(mod))


@tvm.transform.module_pass(opt_level=0, name="qcompile.Realize")
class Realize:
    """Integer kernels for every quantize/dequantize pattern an operator rule can realize.

    First the chains that end in a quantize (requantized int8/uint8 outputs), then anchors whose output
    stays FP32. What no rule matches keeps its quantize/dequantize and runs in FP32.
    """

    def transform_module(self, mod, ctx):
        mod = _run(_RealizeQuantized, mod)
        return _run(_RealizeFloatOutputAnchors, mod)
