"""Unpack into consumers: an unpack kernel fuses with the layout kernels after it (reshapes, transposes, pad, pack)."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ...ir import op_name, readers, rewrite_main
from ..kernels import PACK, PAD, UNPACK, calls_kernel

# consumers that read each value once, in one branch: fused into a concat or a resize, the unpack and the
# requantize chain before it would be computed for every output element of every branch or every upsampled pixel
# (PP-OCRv4 det's FPN: 3 → 13 ms a kernel)
LAYOUT_OPS = ("relax.reshape", "relax.permute_dims", "relax.nn.pad")


@expr_functor.mutator
class _Unalias(PyExprMutator):
    def __init__(self, mod, users: dict):
        super().__init__(mod)
        self.users = users  # variable → the values that read it (`ir.readers`)

    def visit_var_binding_(self, binding):
        source = binding.value
        # (a dataflow block's output keeps its binding: the unpack's variable is not visible after the block)
        if (isinstance(source, relax.Var) and isinstance(binding.var, relax.DataflowVar)
                and calls_kernel(self.lookup_binding(source), UNPACK) and self.users.get(binding.var)
                and all(op_name(v) in LAYOUT_OPS or calls_kernel(v, PACK) or calls_kernel(v, PAD)
                        for v in self.users[binding.var])):
            self.set_var_remap(binding.var, self.visit_expr(source))
            return
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="qcompile.UnpackIntoConsumers")
class UnpackIntoConsumers:
    """Remove the variable-to-variable bindings (`lv1 = lv`) through which an unpack kernel's result reaches only
    layout changes: reshapes and transposes (a projection's result as a sequence's rows or attention's heads), a
    pad and the next conv's pack.

    The packing passes leave such aliases, and FuseOps takes an alias as an opaque node: the unpack stayed a kernel
    of its own, writing NCHW for the next kernel (a projection's head transpose, a pad and pack for the next conv)
    to read again. Without the alias they fuse: one pass over the data (`cpu_schedule._lane_run` reads a blocked
    result into rows 8 lanes at a time)."""

    def transform_module(self, mod, ctx):
        return rewrite_main(_Unalias(mod, readers(mod["main"])), mod)
