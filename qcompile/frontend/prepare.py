"""Prepare: fold batch norm and constants, turn the importer's Clip kernels and Dropout into plain Relax ops."""

import math

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ..ir import constant_value, op_name, rewrite_main


@expr_functor.mutator
class _Canonicalize(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) == "relax.call_tir":
            clip = self._clip_kernel(call)
            return call if clip is None else clip
        return call

    def visit_tuple_getitem_(self, op):
        item = super().visit_tuple_getitem_(op)
        source = item.tuple_value
        if isinstance(source, relax.Var):
            source = self.lookup_binding(source)
        if op_name(source) == "relax.nn.dropout" and item.index == 0:
            return source.args[0]  # inference: dropout is the identity
        return item

    def _clip_kernel(self, call):
        """ONNX Clip is imported as call_tir(maximum|minimum, (x, scalar)); R.clip says the same to later passes."""
        func, args = call.args[0], call.args[1]
        name = getattr(func, "name_hint", "")
        if not (name.startswith("maximum") or name.startswith("minimum")) or len(args.fields) != 2:
            return None
        x, bound = args.fields
        value = constant_value(bound)
        if value is None or value.size != 1:
            return None
        value = float(value.reshape(()))
        if name.startswith("maximum"):
            return relax.op.clip(x, value, math.inf)
        return relax.op.clip(x, -math.inf, value)


@tvm.transform.module_pass(opt_level=0, name="qcompile.Prepare")
class Prepare:
    """Canonical FP32 graph for the quantizer: BN folded, constants folded, Clip/Dropout as plain ops."""

    def transform_module(self, mod, ctx):
        mod = relax.transform.FoldBatchnormToConv2D()(mod)
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.transform.FoldConstant()(mod)
        mod = rewrite_main(_Canonicalize(mod), mod)
        mod = relax.transform.FoldConstant()(mod)
        mod = relax.transform.CanonicalizeBindings()(mod)
        return relax.transform.DeadCodeElimination(["main"])(mod)
