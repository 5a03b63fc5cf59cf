"""Pack integer convolutions into the blocked layout the CPU's int8 dot-product instruction reads, and float ones
into the layout its FMA vectors read."""

from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.relax import PyExprMutator, expr_functor

from ...ir import bound_value, constant_value, op_name, out_dtype, rewrite_main
from ..kernels import (CONV_BLOCK, CONV_PAD, DEPTHWISE_BLOCK, FLOAT_CONV_BLOCK, IC_BLOCK, PACK, UNPACK,
                       WIDE_WEIGHTS, WIDEN, Packing, calls_kernel)


@expr_functor.mutator
class _Pack(PyExprMutator):
    def __init__(self, mod, config: "PackConv"):
        super().__init__(mod)
        self.config = config

    def visit_call_(self, op):
        call = super().visit_call_(op)
        if op_name(call) != "relax.nn.conv2d":
            return call
        data, weight = call.args
        attrs = call.attrs
        kernel = constant_value(bound_value(self, weight))  # calibration's graph binds weights to variables
        if (kernel is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                or attrs.out_layout != "NCHW"):
            return call
        integer = out_dtype(call) == "int32" and str(data.ty.dtype) in ("uint8", "int8") and kernel.dtype == np.int8
        real = str(data.ty.dtype) == "float32" and kernel.dtype == np.float32 and out_dtype(call) in (None, "float32")
        config = self.config
        packing = config.packing
        out_block, depthwise_block = ((packing and packing.lanes, config.depthwise_block) if integer
                                      else (config.float_block, config.float_block) if real else (None, None))
        if out_block is None:
            return call
        out_channels, groups = kernel.shape[0], int(attrs.groups)
        window = [int(s) for s in attrs.strides], [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation]
        if groups == 1:
            if integer and config.narrow and not _tiles_rows(data, kernel, *window):
                packing = config.narrow
                out_block = packing.lanes
            block = (input_block(kernel.shape[1], out_block, packing.depth, packing.row) if integer
                     else input_block(kernel.shape[1], out_block))
            packed = self.builder_.emit_te(to_blocked, data, block, primfunc_name_hint=PACK)
            if integer:
                weights = relax.const(pack_kernel(kernel, packing))
                conv = functools.partial(_conv_blocked, wide_weights=packing.widens_weights(kernel.size))
                acc = self.builder_.emit_te(conv, packed, weights, *window, primfunc_name_hint=CONV_BLOCK)
            else:
                weights = relax.const(pack_float_kernel(kernel, out_block, block))
                acc = self.builder_.emit_te(_float_conv_blocked, packed, weights, *window,
                                            primfunc_name_hint=FLOAT_CONV_BLOCK)
        elif depthwise_block and groups == out_channels == int(data.ty.shape[1]) and kernel.shape[1] == 1:
            packed = self.builder_.emit_te(to_blocked, data, depthwise_block, primfunc_name_hint=PACK)
            weights = relax.const(pack_depthwise_kernel(kernel, depthwise_block))
            acc = self.builder_.emit_te(_depthwise_blocked, packed, weights, *window,
                                        primfunc_name_hint=DEPTHWISE_BLOCK)
        else:
            return call
        return self.builder_.emit_te(unpack, acc, out_channels, primfunc_name_hint=UNPACK)


def _out_size(size, padding, kernel, stride, dilation):
    """Output pixels along one axis of `size` input pixels, `padding` added in all."""
    return (size + padding - (kernel - 1) * dilation - 1) // stride + 1


def _tiles_rows(data, kernel, strides, padding, dilation) -> bool:
    """Whether AMX's tiles hold more than one pixel of the conv's output rows."""
    from ..amx import row_tiles

    width = _out_size(int(data.ty.shape[3]), padding[1] + padding[3], kernel.shape[3], strides[1], dilation[1])
    return row_tiles(width)[0] > 1


def input_block(in_channels: int, oc_block: int, depth: int = IC_BLOCK, row: int | None = None) -> int:
    """Channels per block of a packed conv's input: the convs' output block where the channels fill such blocks,
    so that one conv's blocked output is the next one's input as it is (no re-blocking kernel between them),
    else the `depth` channels one dot-product lane sums; with `row` (the most channels of a pixel one instruction
    reads: AMX's tile rows), the largest multiple of `depth` up to `row` that divides the channels (rounded up
    to `depth`), so that an instruction reads as many as it can."""
    if row:
        padded = _round_up(in_channels, depth)
        return max(b for b in range(depth, row + 1, depth) if padded % b == 0)
    return oc_block if in_channels % oc_block == 0 and oc_block % depth == 0 else depth


def pack_kernel(kernel: np.ndarray, packing: Packing) -> np.ndarray:
    """OIHW int8 → [O/k, I/d, H, W, g, k, d/g], zero-padded (k: the packing's lanes, d: its depth, g: its weight
    groups): one dot-product operand per (o, i) block, the d input channels each output lane sums (4; i8mm's
    smmla: 8) in g sets of adjacent channels: with 2, channels 0 and 1, then 2 and 3."""
    oc_block, groups, depth = packing.lanes, packing.weight_groups, packing.depth
    out_channels, in_channels, kh, kw = kernel.shape
    padded = np.zeros((_round_up(out_channels, oc_block), _round_up(in_channels, depth), kh, kw), np.int8)
    padded[:out_channels, :in_channels] = kernel
    o, i = padded.shape[0] // oc_block, padded.shape[1] // depth
    per = depth // groups
    blocked = padded.reshape(o, oc_block, i, groups, per, kh, kw).transpose(0, 2, 5, 6, 3, 1, 4)
    return np.ascontiguousarray(blocked)


def pack_float_kernel(kernel: np.ndarray, oc_block: int, in_block: int) -> np.ndarray:
    """OIHW float → [O/oc_block, I (rounded up to in_block), H, W, oc_block], zero-padded: one vector of output
    channels per input channel and kernel position."""
    out_channels, in_channels, kh, kw = kernel.shape
    padded = np.zeros((_round_up(out_channels, oc_block), _round_up(in_channels, in_block), kh, kw), kernel.dtype)
    padded[:out_channels, :in_channels] = kernel
    blocked = padded.reshape(-1, oc_block, padded.shape[1], kh, kw).transpose(0, 2, 3, 4, 1)
    return np.ascontiguousarray(blocked)


def pack_depthwise_kernel(kernel: np.ndarray, block: int) -> np.ndarray:
    """[C, 1, H, W] → [C/block, H, W, block], zero-padded: the weights of `block` channels side by side."""
    channels, _, kh, kw = kernel.shape
    padded = np.zeros((_round_up(channels, block), kh, kw), kernel.dtype)
    padded[:channels] = kernel[:, 0]
    return np.ascontiguousarray(padded.reshape(-1, block, kh, kw).transpose(0, 2, 3, 1))


def to_blocked(data, block):
    """NCHW → NCHW[block]c, channels zero-padded to a multiple of `block` (zero weights meet them)."""
    n, c, h, w = data.shape
    blocks = (int(c) + block - 1) // block
    return te.compute(
        (n, blocks, h, w, block),
        lambda b, cb, y, x, ci: tvm.tirx.if_then_else(
            cb * block + ci < c, data[b, cb * block + ci, y, x], tvm.tirx.const(0, data.dtype)),
        name=PACK)


def _window(data, kernel_hw, strides, padding, dilation):
    """The blocked input zero-padded as `padding` says, the output's height and width, and an index function:
    (output y, output x, kernel row, kernel column) → (input y, input x)."""
    _, _, height, width, _ = data.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_hw, strides, dilation
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, (0, 0, top, left, 0), (0, 0, bottom, right, 0), name=CONV_PAD)
    out_h = _out_size(height, top + bottom, kh, sh, dh)
    out_w = _out_size(width, left + right, kw, sw, dw)
    return data, out_h, out_w, lambda y, x, ry, rx: (y * sh + ry * dh, x * sw + rx * dw)


def _conv_blocked(data, kernel, strides, padding, dilation, wide_weights=False):
    """TOPI's conv2d_NCHWc_int8 compute, without its `schedule_rule` tag (MetaSchedule has no rule of that name
    on CPUs and warns once per candidate batch, while its generic rules, with the intrinsic, do the work), and
    with an input in blocks of any multiple of the depth (4 channels; i8mm: 8): the reduction runs over groups of
    `depth` input channels whichever block holds them, so the loop nest, and the tensorized inner block, are
    those of NCHW[depth]c. With `wide_weights`, the weights are widened to 16 bits (AVX2's pairs) first."""
    n = data.shape[0]
    oc_chunks, ic_chunks, kh, kw, weight_groups, oc_block, per = kernel.shape
    depth = int(weight_groups) * int(per)
    groups = int(data.shape[-1]) // depth  # groups of `depth` input channels in one block of the input
    if int(weight_groups) > 1:  # 16-bit pairs (AVX2's vpmaddwd): the input widened once, not at every use
        narrow = data
        data = te.compute(narrow.shape, lambda *i: narrow(*i).astype("int16"), name=WIDEN)
    if wide_weights:
        stored = kernel
        kernel = te.compute(stored.shape, lambda *i: stored(*i).astype("int16"), name=WIDE_WEIGHTS)
    data, out_h, out_w, at = _window(data, (kh, kw), strides, padding, dilation)
    ic, ry, rx = te.reduce_axis((0, ic_chunks), "ic"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    if int(weight_groups) > 1:  # the 4 channels in sets of adjacent ones (AVX2's pairs): one reduction axis each
        rg, rc = te.reduce_axis((0, weight_groups), "rg"), te.reduce_axis((0, per), "rc")
        return te.compute(
            (n, oc_chunks, out_h, out_w, oc_block),
            lambda b, oc, y, x, ob: te.sum(
                data[b, ic // groups, *at(y, x, ry, rx), ic % groups * depth + rg * per + rc]
                .astype("int32")
                * kernel[oc, ic, ry, rx, rg, ob, rc].astype("int32"),
                axis=[ry, rx, ic, rg, rc]),
            name=CONV_BLOCK)
    rc = te.reduce_axis((0, depth), "rc")
    return te.compute(
        (n, oc_chunks, out_h, out_w, oc_block),
        lambda b, oc, y, x, ob: te.sum(
            data[b, ic // groups, *at(y, x, ry, rx), ic % groups * depth + rc].astype("int32")
            * kernel[oc, ic, ry, rx, 0, ob, rc].astype("int32"),
            axis=[ry, rx, ic, rc]),
        name=CONV_BLOCK)


def _float_conv_blocked(data, kernel, strides, padding, dilation):
    """Float conv on NCHW[k]c with weights [O/k, I, H, W, k]: per input channel and kernel position, one input
    value times one vector of k output channels' weights, summed into k lanes (one FMA)."""
    n = data.shape[0]
    oc_chunks, in_channels, kh, kw, oc_block = kernel.shape
    block = int(data.shape[-1])
    data, out_h, out_w, at = _window(data, (kh, kw), strides, padding, dilation)
    ic, ry, rx = te.reduce_axis((0, in_channels), "ic"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, oc_chunks, out_h, out_w, oc_block),
        lambda b, oc, y, x, ob: te.sum(
            data[b, ic // block, *at(y, x, ry, rx), ic % block] * kernel[oc, ic, ry, rx, ob], axis=[ic, ry, rx]),
        name=FLOAT_CONV_BLOCK)


def _depthwise_blocked(data, kernel, strides, padding, dilation):
    """Depthwise conv on NCHW[k]c: each output lane sums its own channel's window, so the k lanes of a block
    are one vector of sums, int32 or float (in NCHW the only vector axis is a row, 7 pixels on a 7×7 map)."""
    n = data.shape[0]
    chunks, kh, kw, block = kernel.shape
    acc = "int32" if "int" in str(data.dtype) else str(data.dtype)
    data, out_h, out_w, at = _window(data, (kh, kw), strides, padding, dilation)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, chunks, out_h, out_w, block),
        lambda b, c, y, x, k: te.sum(
            data[b, c, *at(y, x, ry, rx), k].astype(acc) * kernel[c, ry, rx, k].astype(acc), axis=[ry, rx]),
        name=DEPTHWISE_BLOCK)


def unpack(acc, channels):
    """NCHW[k]c → NCHW, dropping the padding channels."""
    n, _, h, w, block = acc.shape
    return te.compute((n, channels, h, w), lambda b, c, y, x: acc[b, c // block, y, x, c % block],
                      name=UNPACK)


def unpacked(mutator: PyExprMutator, expr):
    """(the blocked tensor, NCHW channel count) if `expr` is an unpack kernel's output, else None."""
    expr = bound_value(mutator, expr)
    if not calls_kernel(expr, UNPACK):
        return None
    return expr.args[1].fields[0], int(expr.ty.shape[1])


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@tvm.transform.module_pass(opt_level=0, name="qcompile.PackConv")
class PackConv:
    """Rewrite each integer conv2d (int8/uint8 × constant int8 weights → int32, not grouped) as a blocked conv in
    the layout of the kernel class's `packing` (`kernels.PACKINGS`): weights [O/k, I/d, H, W, 1, k, d], k output
    channels per block (16 for VNNI, 8 for AVX2 and i8mm, 4 for sdot, 64 for AMX), d input channels an output lane
    sums per instruction (4; i8mm's smmla 8; AVX2's [O/k, I/4, H, W, 2, k, 2]), and its output in
    NCHW[k]c. In that layout the innermost block is exactly the tensor intrinsic's operands, so the conv can be
    tensorized (the default template, MetaSchedule); plain NCHW cannot be tensorized. The input is NCHW[k]c too
    where the channels fill k-blocks (each d bytes of a block are one dot-product operand), so that a conv's
    output feeds the next conv without a re-blocking kernel; else NCHW[d]c. With a `row` (AMX: 64), the input
    blocks are as wide as an instruction reads of one pixel: up to that many channels; then the `narrow` packing
    (the CPU's dot-product instruction's) takes the convs whose output rows AMX's tiles do not hold two pixels of
    (a classifier's 1×1 output).

    With `depthwise_block`, depthwise convs become NCHW[k]c convs too (k = `depthwise_block`, one vector of
    int32 sums); other grouped convs stay. With `float_block`, float convs (constant weights) and depthwise convs
    are packed the same way with k = `float_block` (the float lanes of a vector register): the layout in which
    one FMA adds one input value times k output channels' weights. Either kind may be None (left as it is)."""

    def __init__(self, packing: Packing | None, depthwise_block: int | None = None, float_block: int | None = None,
                 narrow: Packing | None = None):
        self.packing, self.depthwise_block, self.float_block = packing, depthwise_block, float_block
        self.narrow = narrow

    def transform_module(self, mod, ctx):
        return rewrite_main(_Pack(mod, self), mod)
