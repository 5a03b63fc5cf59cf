"""SafeTake: every table lookup (Gather → `relax.take`) clamps its indices into the table."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ..ir import op_name, rewrite_main


@expr_functor.mutator
class _Clamp(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.take" or str(call.attrs.mode) != "fast":
            return call
        return relax.op.take(call.args[0], call.args[1], call.attrs.axis, mode="clip")


@tvm.transform.module_pass(opt_level=0, name="qcompile.SafeTake")
class SafeTake:
    """Rewrite `take(table, indices, mode="fast")` as `mode="clip"`.

    TVM's importer emits Gather in "fast" mode, which reads memory at whatever index it is given: an index past
    the table (a token id from another vocabulary) crashes the process, in Python and in the deploy kit's C++
    runner alike. Clamped, it reads the nearest row instead, at the cost of a comparison per index. qcompile's
    Python runtime also rejects such inputs before they run (the sidecar's `index_bounds`); the clamp is what keeps
    every other caller of the library safe.
    """

    def transform_module(self, mod, ctx):
        return rewrite_main(_Clamp(mod), mod)
