"""Realize: rewrite dequantize → float op → quantize chains into integer ops with int32 accumulation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from .. import ops
from ..ops import Role
from ..qparams import QuantParams
from .common import bias_of, bound_value, clamp_of, constant_value, op_name, rewrite_main


@dataclasses.dataclass(frozen=True)
class QInput:
    """A quantized operand: its integers (a Relax expression), their parameters, and the values if constant."""

    q: relax.Expr
    params: QuantParams
    value: np.ndarray | None
    shape: tuple

    @property
    def is_constant(self) -> bool:
        return self.value is not None


class RealizeContext:
    """What operator rules use to emit integer code: the builder plus the shared requantize arithmetic."""

    def __init__(self, builder):
        self.builder = builder

    def emit(self, expr):
        return self.builder.emit(expr)

    @staticmethod
    def const(value, dtype):
        return relax.const(np.asarray(value).astype(dtype), dtype)

    def finish_anchor(self, acc, in_scale, offset, bias, out, clamp, channel_axis):
        """int32 accumulator (per-channel real scale `in_scale`) → requantized output, or FP32 if `out` is None.

        `offset` (per channel, in accumulator units) carries the input zero point's correction; a constant
        bias joins it, rounded to the accumulator's scale, so both cost one int32 add.
        """
        ndim = len(acc.ty.shape)
        channels = in_scale.size
        in_scale = np.asarray(in_scale, np.float64)
        offset = np.asarray(offset, np.int64)
        if bias is not None:
            if bias.size != channels:
                return None
            offset = offset + np.round(bias.reshape(-1).astype(np.float64) / in_scale).astype(np.int64)
        if np.abs(offset).max(initial=0) >= 2**31:
            return None  # the bias does not fit the int32 accumulator: the layer stays FP32
        shape = [1] * ndim
        shape[channel_axis] = channels
        if np.any(offset):
            acc = self.emit(R.add(acc, self.const(offset.reshape(shape), "int32")))
        if out is None:
            real = self.emit(R.astype(acc, "float32"))
            return self.emit(R.multiply(real, self.const(in_scale.reshape(shape), "float32")))
        return self.requantize(acc, in_scale / np.float64(out.scale), out, clamp, shape)

    def requantize(self, acc, multiplier, out: QuantParams, clamp, shape):
        """round(acc · multiplier) + zero point, saturated, in float32 (see `qparams.requantize`)."""
        multiplier = np.asarray(multiplier, np.float32)
        multiplier = multiplier.reshape(shape) if shape is not None else multiplier.reshape(1)
        real = self.emit(R.astype(acc, "float32"))
        scaled = self.emit(R.multiply(real, self.const(multiplier, "float32")))
        return self._round_and_saturate(scaled, 0.0, out, clamp)

    def rescale_sum(self, inputs: list[QInput], out: QuantParams, clamp):
        """Σ s_i (q_i - z_i) requantized to `out` as round(Σ m_i q_i - Σ m_i z_i) + z_out, m_i = s_i / s_out, in
        float32 with a single rounding; the inputs' zero points fold into one constant."""
        total = None
        offset = 0.0
        for i in inputs:
            m = float(np.float64(i.params.scale) / np.float64(out.scale))
            term = R.multiply(R.astype(i.q, "float32"), self.const([m], "float32"))
            total = term if total is None else R.add(total, term)
            offset -= m * float(i.params.zero_point)
        return self._round_and_saturate(self.emit(total), offset, out, clamp)

    def clamp(self, q, params: QuantParams, clamp):
        lo, hi = _clamp_bounds(params, clamp)
        return self.emit(R.clip(q, lo, hi))

    def _round_and_saturate(self, scaled, offset: float, out: QuantParams, clamp):
        """floor(scaled + offset + 0.5) (round half up) + `out`'s zero point, saturated to its range narrowed by
        `clamp`. The zero point is added after rounding, exactly, as onnxruntime does: added before, a value
        within float32's step at 255 (2**-16) of a half would round the other way."""
        lo, hi = _clamp_bounds(out, clamp)
        rounded = R.floor(R.add(scaled, self.const([offset + 0.5], "float32")))
        if int(out.zero_point):
            rounded = R.add(rounded, self.const([float(out.zero_point)], "float32"))
        rounded = self.emit(rounded)
        # saturated before the cast, which is undefined out of range; bounds as tensors, like `LiftScalars`'s
        saturated = R.minimum(R.maximum(rounded, self.const([lo], "float32")), self.const([hi], "float32"))
        return self.emit(R.astype(saturated, out.dtype))


def _clamp_bounds(params: QuantParams, clamp) -> tuple[int, int]:
    """The integer range: the type's, narrowed by a fused ReLU/Clip's bounds mapped through the scale."""
    lo, hi = params.qmin, params.qmax
    if clamp is not None:
        z, s = int(params.zero_point), float(params.scale)
        if math.isfinite(clamp[0]):
            lo = max(lo, min(hi, round(clamp[0] / s) + z))
        if math.isfinite(clamp[1]):
            hi = min(hi, max(lo, round(clamp[1] / s) + z))
    return lo, hi


class _Matcher(PyExprMutator):
    """Shared look-ups: what a variable is bound to, and dequantize calls with constant parameters."""

    def __init__(self, mod):
        super().__init__(mod)
        self.ctx = RealizeContext(self.builder_)

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


@expr_functor.mutator
class _RealizeQuantized(_Matcher):
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
        args = node.args[0].fields if name == "relax.concat" else node.args
        inputs = [self.dequantized(args[i]) for i in rule.activations(node)]
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
