"""Blocked epilogue: run the ops after a packed conv (elementwise, concat, max pool) in its blocked layout."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor
from tvm.relax import op as R

from ...ir import bound_value, constant_value, op_name, rewrite_main, static_shape
from ..kernels import UNPACK
from .elementwise import BINARY, is_lookup, lookup, unary
from .pack_conv import unpack, unpacked

@expr_functor.mutator
class _Sink(PyExprMutator):
    def visit_call_(self, op):
        call = super().visit_call_(op)
        name = op_name(call)
        if name == "relax.concat":
            return self._concat(call)
        if name == "relax.nn.max_pool2d":
            return self._max_pool(call)
        if name == "relax.max":
            return self._channel_max(call)
        if name == "relax.image.resize2d":
            return self._resize(call)
        rebuild = unary(call)
        if rebuild is not None:
            packed = self._packed(call.args[0])
            if packed is None:
                return call
            return self._unpack(self.builder_.emit(rebuild(packed[0], call)), packed[1])
        if name == "relax.take" and is_lookup(call):  # an 8-bit function's table, elementwise on the index
            packed = self._packed(call.args[1])
            if packed is None:
                return call
            looked_up = self.builder_.emit(lookup(call, packed[0]))
            return self._unpack(looked_up, packed[1])
        if name not in BINARY:
            return call
        operands = [self._operand(a, call.args) for a in call.args[:2]]
        if any(o is None for o in operands) or not any(isinstance(a, tuple) for a in operands):
            return call
        channels = next(a[1] for a in operands if isinstance(a, tuple))
        if any(isinstance(a, tuple) and a[1] != channels for a in operands):
            return call
        blocked = [a[0] if isinstance(a, tuple) else a for a in operands]
        return self._unpack(self.builder_.emit(BINARY[name](*blocked)), channels)

    def _concat(self, call):
        """Channel concat of unpacked tensors whose channels fill their blocks: a concat of the blocks."""
        parts = [self._packed(a) for a in call.args[0].fields]
        if int(call.attrs.axis) != 1 or any(p is None for p in parts):
            return call
        block = int(parts[0][0].ty.shape[-1])
        if any(int(blocked.ty.shape[-1]) != block or channels % block for blocked, channels in parts):
            return call
        joined = self.builder_.emit(R.concat([blocked for blocked, _ in parts], axis=1))
        return self._unpack(joined, sum(channels for _, channels in parts))

    def _max_pool(self, call):
        """Max pooling of an unpacked tensor: the same pooling over each lane of the blocks."""
        packed = self._packed(call.args[0])
        a = call.attrs
        if packed is None or a.layout != "NCHW" or a.out_layout != "NCHW":
            return call
        blocked, channels = packed
        layout = f"NCHW{int(blocked.ty.shape[-1])}c"
        pooled = self.builder_.emit(R.nn.max_pool2d(blocked, pool_size=a.pool_size, strides=a.strides,
                                                    padding=a.padding, dilation=a.dilation, ceil_mode=a.ceil_mode,
                                                    layout=layout, out_layout=layout))
        return self._unpack(pooled, channels)

    def _resize(self, call):
        """A resize of an unpacked tensor over its height and width: the same resize of each lane of the blocks
        (a feature pyramid's upsampling, between packed convs)."""
        packed = self._packed(call.args[0])
        a = call.attrs
        if packed is None or a.layout != "NCHW":
            return call
        blocked, channels = packed
        dtype = str(a.out_dtype)  # "None" where the resize keeps its input's type
        resized = self.builder_.emit(R.image.resize2d(
            blocked, call.args[1], roi=[float(v) for v in a.roi], layout=f"NCHW{int(blocked.ty.shape[-1])}c",
            method=a.method, coordinate_transformation_mode=a.coordinate_transformation_mode,
            rounding_method=a.rounding_method, cubic_alpha=float(a.cubic_alpha), cubic_exclude=int(a.cubic_exclude),
            extrapolation_value=float(a.extrapolation_value),
            out_dtype=None if dtype in ("", "void", "None") else dtype))
        return self._unpack(resized, channels)

    def _channel_max(self, call):
        """The maximum across the channels (and the pixels) of an unpacked tensor whose channels fill their blocks
        or which is a magnitude (int8-dynamic's range of a conv's output, per row or per sample): the maximum over
        the blocks and their lanes (and pixels), with no unpack."""
        packed = self._packed(call.args[0])
        axes = call.attrs.axis
        axes = None if axes is None else [int(a) for a in axes]
        if packed is None or axes not in ([1], [1, 2, 3]) or not call.attrs.keepdims:
            return call
        blocked, channels = packed
        magnitude = op_name(bound_value(self, blocked)) == "relax.abs"  # ≥ 0: the padding lanes' 0 is no maximum
        if int(blocked.ty.shape[1]) * int(blocked.ty.shape[-1]) != channels and not magnitude:
            return call
        return R.reshape(self.builder_.emit(R.max(blocked, axis=[*axes, 4], keepdims=True)), static_shape(call))

    def _operand(self, arg, args):
        """(blocked tensor, channels) for an unpacked one, a constant packed to match, a tensor the same for every
        channel ([1, 1, H, W]: dynamic quantization's row scales) with a unit block axis, or None: not movable."""
        packed = self._packed(arg)
        if packed is not None:
            return packed
        value = constant_value(arg)
        other = next((self._packed(a) for a in args[:2] if a is not arg and self._packed(a) is not None), None)
        if other is None:
            return None
        if value is None:
            shape = static_shape(arg)
            if shape is None or len(shape) != 4 or shape[:2] != [1, 1]:
                return None
            return self.builder_.emit(R.reshape(arg, [*shape, 1]))
        return _pack_constant(value, other[0], other[1])

    def _packed(self, expr):
        return unpacked(self, expr)

    def _unpack(self, blocked, channels):
        return self.builder_.emit_te(unpack, blocked, channels, primfunc_name_hint=UNPACK)


def _pack_constant(value: np.ndarray, blocked, channels: int):
    """A one-element constant stays one (a kernel parameter, see `LiftScalars`); a per-channel [1, C, 1, 1] one
    becomes [1, C/k, 1, 1, k], zero-padded to the blocks."""
    if value.size == 1:
        return relax.const(value.reshape(1), str(value.dtype))
    if value.size != channels or value.ndim != 4 or value.shape[1] != channels:
        return None
    _, chunks, _, _, block = (int(d) for d in blocked.ty.shape)
    padded = np.zeros(chunks * block, value.dtype)
    padded[:channels] = value.reshape(-1)
    return relax.const(padded.reshape(1, chunks, 1, 1, block), str(value.dtype))


@tvm.transform.module_pass(opt_level=0, name="qcompile.BlockedEpilogue")
class BlockedEpilogue:
    """Rewrite `op(unpack(acc), c)` as `unpack(op(acc, pack(c)))` for elementwise ops (add, multiply, shifts, floor,
    casts, clip, float activations, per-tensor quantize and dequantize around a float conv, 8-bit lookup tables)
    with scalar or per-channel constants or tensors the same for every channel (per-row scales), repeatedly: a
    packed conv's requantize chain then runs in the blocked layout, where FuseOps fuses it into the conv as its
    epilogue, and one unpack of the final 8-bit result is left instead of an int32 unpack and a separate
    requantize kernel.

    Channel concats of such results (channels filling their blocks), max pooling and resizes run blocked too, so
    that an activation stays blocked from one packed conv to the next (`DropRepack` then removes the unpack →
    pack); so does a maximum across the channels (int8-dynamic's row range), over the blocks and their lanes."""

    def transform_module(self, mod, ctx):
        mod = rewrite_main(_Sink(mod), mod)
        return relax.transform.DeadCodeElimination(["main"])(mod)
