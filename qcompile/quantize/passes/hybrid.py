"""HybridQuantize: int8 weights without calibration, for the anchors whose operator family has a hybrid form."""

import tvm
from tvm.relax import PyExprMutator, expr_functor

from .. import ops
from ..ops import RealizeContext, Role
from ...ir import constant_value, op_name, rewrite_main
from .annotate import Exclusions, excluded_calls

MODES = ("int8-weights", "int8-dynamic")


@expr_functor.mutator
class _Hybrid(PyExprMutator):
    def __init__(self, mod, mode, activation_dtype, excluded_calls):
        super().__init__(mod)
        self.ctx = RealizeContext(self.builder_, self.lookup_binding)
        self.mode, self.activation_dtype, self.excluded_calls = mode, activation_dtype, excluded_calls

    def visit_call_(self, op):
        call = super().visit_call_(op)
        rule = ops.lookup(op_name(call) or "")
        if rule is None or rule.role is not Role.ANCHOR or op in self.excluded_calls:
            return call
        realize = rule.weight_only if self.mode == "int8-weights" else rule.dynamic
        operands, weights, activations = rule.operands(call), rule.weights(call), rule.activations(call)
        if realize is None or len(weights) != 1 or len(activations) != 1:
            return call
        weight = constant_value(operands[next(iter(weights))])
        if weight is None:
            return call
        result = realize(self.ctx, call, operands[activations[0]], weight, self.activation_dtype)
        return call if result is None else result


@tvm.transform.module_pass(opt_level=0, name="qcompile.HybridQuantize")
class HybridQuantize:
    """Each anchor with constant weights in one of the hybrid modes, through its rule's form of it:

    int8-weights (MatMul, Gemm): weights int8 per output channel, activations float, the weights converted inside
    the kernel: 4× smaller weights for memory-bound models (LSTMs, transformer encoders, large FC layers);
    int8-dynamic (MatMul, Gemm, Conv): weights int8, activations quantized at run time from their own range,
    integer matmuls and convs (onnxruntime's quantize_dynamic): no calibration data.

    Anchors whose family has no form for the mode (convolutions in int8-weights) and those `exclusions` names stay
    FP32."""

    def __init__(self, mode: str, activation_dtype: str = "uint8", exclusions: Exclusions = Exclusions()):
        if mode not in MODES:
            raise ValueError(f"hybrid mode must be one of {MODES}, not {mode!r}")
        self.mode, self.activation_dtype, self.exclusions = mode, activation_dtype, exclusions

    def transform_module(self, mod, ctx):
        calls = excluded_calls(mod["main"], self.exclusions)
        return rewrite_main(_Hybrid(mod, self.mode, self.activation_dtype, calls), mod)
