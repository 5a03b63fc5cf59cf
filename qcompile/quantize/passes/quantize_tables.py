"""QuantizeTables: constant tables read at run-time indices (embeddings) held in int8, in every int8 precision."""

import tvm
from tvm.relax import PyExprMutator, expr_functor

from .. import ops
from ..ops import RealizeContext, Role
from ...ir import constant_value, op_name, rewrite_main
from .annotate import Exclusions, excluded_calls


@expr_functor.mutator
class _Tables(PyExprMutator):
    def __init__(self, mod, excluded_calls):
        super().__init__(mod)
        self.ctx, self.excluded_calls = RealizeContext(self.builder_), excluded_calls

    def visit_call_(self, op):
        call = super().visit_call_(op)
        rule = ops.lookup(op_name(call) or "")
        if rule is None or rule.role is not Role.TABLE or op in self.excluded_calls:
            return call
        tables = rule.weights(call)
        if len(tables) != 1:
            return call
        index = next(iter(tables))
        table = constant_value(rule.operands(call)[index])
        if table is None:
            return call
        others = [x for i, x in enumerate(rule.operands(call)) if i != index]
        result = rule.weight_only(self.ctx, call, *others, table, "int8")
        return call if result is None else result


@tvm.transform.module_pass(opt_level=0, name="qcompile.QuantizeTables")
class QuantizeTables:
    """Each lookup in a constant float table (Gather → take: a text model's token embedding) rewritten through its
    rule's int8 form: the table stored in int8 with a scale per row, a read row converted back to float where it is
    gathered. The table is weights, not an activation, so this needs no calibration and runs before annotation (the
    calibrated graph then computes what the library will) and in the hybrid modes alike. Its output stays float:
    what consumes it (a position add, a layer norm) is quantized, or not, by its own rule. Tables that
    `exclusions` names (`--exclude-nodes Gather`) stay FP32."""

    def __init__(self, exclusions: Exclusions = Exclusions()):
        self.exclusions = exclusions

    def transform_module(self, mod, ctx):
        return rewrite_main(_Tables(mod, excluded_calls(mod["main"], self.exclusions)), mod)
