"""Drop repacks: a blocked tensor unpacked to NCHW only to be packed again is used as is, or re-blocked directly."""

from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.relax import PyExprMutator, expr_functor

from .common import op_name, rewrite_main
from .pack_conv import PACK, UNPACK


@expr_functor.mutator
class _Drop(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        if not self._calls(call, PACK):
            return call
        source = self._bound(call.args[1].fields[0])
        if not self._calls(source, UNPACK):
            return call
        blocked = source.args[1].fields[0]
        block, channels = int(call.ty.shape[-1]), int(source.ty.shape[1])
        if int(blocked.ty.shape[-1]) == block and channels % block == 0:
            return blocked
        # other blocks, or a partial last block whose padding lanes (the epilogue's values of zero sums) the pack
        # must zero again
        return self.builder_.emit_te(_reblock, blocked, channels, block, primfunc_name_hint=PACK)

    def _bound(self, expr):
        while isinstance(expr, relax.Var) and self.lookup_binding(expr) is not None:
            expr = self.lookup_binding(expr)
        return expr

    @staticmethod
    def _calls(expr, kernel: str) -> bool:
        return op_name(expr) == "relax.call_tir" and expr.args[0].name_hint.startswith(kernel)


def _reblock(blocked, channels: int, block: int):
    """NCHW[k]c → NCHW[block]c in one pass: channel c is lane c % k of block c // k; padding lanes are zeros."""
    n, _, h, w, k = blocked.shape
    return te.compute(
        (n, (channels + block - 1) // block, h, w, block),
        lambda b, cb, y, x, ci: tvm.tirx.if_then_else(
            cb * block + ci < channels, blocked[b, (cb * block + ci) // k, y, x, (cb * block + ci) % k],
            tvm.tirx.const(0, blocked.dtype)),
        name=PACK)


@tvm.transform.module_pass(opt_level=0, name="qcompile.DropRepack")
class DropRepack:
    """Rewrite `pack(unpack(x))` as `x` when the pack makes the blocks `x` already has and the channels fill them,
    and as one re-blocking kernel otherwise.

    After `BlockedEpilogue`, a packed conv whose result feeds a packed depthwise conv of the same block size ends in
    an unpack that the depthwise conv's pack undoes: both layout kernels go, and the activation stays blocked. A
    depthwise conv's NCHW16c result feeding a conv's NCHW4c input is re-blocked without the NCHW copy between."""

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_Drop(mod), mod)
        return relax.transform.DeadCodeElimination(["main"])(mod)
