"""Drop repacks: a blocked tensor unpacked to NCHW only to be packed again is used as is, or re-blocked directly."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ...ir import rewrite_main
from ..kernels import PACK, calls_kernel
from .pack_conv import to_blocked, unpack, unpacked


@expr_functor.mutator
class _Drop(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        source = unpacked(self, call.args[1].fields[0]) if calls_kernel(call, PACK) else None
        if source is None:
            return call
        (blocked, channels), block = source, int(call.ty.shape[-1])
        if int(blocked.ty.shape[-1]) == block and channels % block == 0:
            return blocked
        # other blocks, or a partial last block whose padding lanes (the epilogue's values of zero sums) the pack
        # must zero again: unpack and pack in one kernel, with no NCHW copy between
        return self.builder_.emit_te(lambda x: to_blocked(unpack(x, channels), block), blocked,
                                     primfunc_name_hint=PACK)


@tvm.transform.module_pass(opt_level=0, name="qcompile.DropRepack")
class DropRepack:
    """Rewrite `pack(unpack(x))` as `x` when the pack makes the blocks `x` already has and the channels fill them,
    and as one re-blocking kernel otherwise.

    After `BlockedEpilogue`, a packed conv whose result feeds a packed depthwise conv of the same block size ends in
    an unpack that the depthwise conv's pack undoes, and so does one feeding a conv whose input channels fill
    such blocks: both layout kernels go, and the activation stays blocked. An NCHW16c result of channels that do
    not fill 16-blocks, feeding a conv's NCHW4c input, is re-blocked without the NCHW copy between."""

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_Drop(mod), mod)
        return relax.transform.DeadCodeElimination(["main"])(mod)
