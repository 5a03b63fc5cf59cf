"""The hand-written packed-conv schedules (the default of every packed conv, and tuning's first candidates): every
tile shape computes the conv's integers (numpy reference) with its epilogue, on vpdpbusd (VNNI) and on vpmaddwd
(AVX2); the default register tile follows the register file."""

import dataclasses

import numpy as np
import pytest
import tvm
from tvm import te

from qcompile.lower import conv_templates, intrinsics
from qcompile import targets
from qcompile.lower.kernels import PACKINGS
from qcompile.lower.passes.pack_conv import _conv_blocked, pack_kernel

SCALE = 2.0 ** -7  # a power of two: every float in the epilogue is exact, so fused or not the rounding is the same
HOST = targets.resolve("x86").tvm_target()
# (target, its intrinsic, the instruction in its code, the CPU feature running it needs); the AVX2 one runs on
# every x86-64 CPU of the last decade
MACHINES = {
    "vnni": (HOST, intrinsics.VNNI, "vpdpbusd", "avx512vnni"),
    "avx2": (targets.resolve("x86-avx2").tvm_target(), intrinsics.AVX2, "vpmaddwd", "avx2"),
    "avx2-w16": (targets.resolve("x86-avx2").tvm_target(), intrinsics.AVX2_W16, "vpmaddwd", "avx2"),
}
# the packing of each kernel class's weights: AVX2's stored as int8 (large) or widened (small)
PACKING = {intrinsics.VNNI: PACKINGS[intrinsics.VNNI],
           intrinsics.AVX2: dataclasses.replace(PACKINGS[intrinsics.AVX2], wide_weights_up_to=0),
           intrinsics.AVX2_W16: dataclasses.replace(PACKINGS[intrinsics.AVX2], wide_weights_up_to=1 << 30)}


def _on_host(machine):
    runs = tvm.target.codegen.target_has_features(MACHINES[machine][3], HOST)
    return pytest.param(machine, marks=pytest.mark.skipif(not runs, reason=f"this machine's CPU has no {machine}"))


def _reference(data_nchw, kernel_oihw, stride, pad):
    """int32 conv in numpy."""
    padded = np.pad(data_nchw.astype(np.int32), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_c, _, kh, kw = kernel_oihw.shape
    out_h = (padded.shape[2] - kh) // stride + 1
    out_w = (padded.shape[3] - kw) // stride + 1
    out = np.zeros((1, out_c, out_h, out_w), np.int32)
    for ry in range(kh):
        for rx in range(kw):
            window = padded[:, :, ry:ry + stride * out_h:stride, rx:rx + stride * out_w:stride]
            out += np.einsum("nchw,oc->nohw", window, kernel_oihw[:, :, ry, rx].astype(np.int32))
    return out


def _blocked(nchw, lanes):
    n, c, h, w = nchw.shape
    return np.ascontiguousarray(nchw.reshape(n, c // lanes, lanes, h, w).transpose(0, 1, 3, 4, 2))


def _kernel(in_c, out_c, size, stride, pad, residual, intrinsic):
    """The packed conv as lowering makes it, followed by a residual requantize epilogue like realize's (or none)."""
    packing = PACKING[intrinsic]
    lanes, groups = packing.lanes, packing.weight_groups
    data = te.placeholder((1, in_c // lanes, 14, 14, lanes), "uint8", name="data")
    weight = te.placeholder((out_c // lanes, in_c // 4, size, size, groups, lanes, 4 // groups), "int8",
                            name="weight")
    acc = _conv_blocked(data, weight, (stride, stride), (pad,) * 4, (1, 1),
                        wide_weights=packing.widens_weights(in_c * out_c * size * size))
    if not residual:
        return te.create_prim_func([data, weight, acc])
    other = te.placeholder(acc.shape, "uint8", name="other")
    out = te.compute(acc.shape, lambda *i: te.max(te.min(te.floor(
        acc(*i).astype("float32") * SCALE + other(*i).astype("float32") * 0.5 + 0.5), 255.0), 0.0).astype("uint8"))
    return te.create_prim_func([data, weight, other, out])


def _case(size, stride, pad, residual, intrinsic):
    """(kernel module, its arguments, the expected output) of a 32 → 64 channel conv on a 14×14 input."""
    rng = np.random.default_rng(size + stride)
    in_c, out_c, lanes = 32, 64, PACKING[intrinsic].lanes
    data = rng.integers(0, 256, (1, in_c, 14, 14)).astype(np.uint8)
    kernel = rng.integers(-128, 128, (out_c, in_c, size, size)).astype(np.int8)
    acc = _reference(data, kernel, stride, pad)
    func = _kernel(in_c, out_c, size, stride, pad, residual, intrinsic)
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    args = [_blocked(data, lanes), pack_kernel(kernel, PACKING[intrinsic])]
    if residual:
        other = rng.integers(0, 256, acc.shape).astype(np.uint8)
        expected = np.clip(np.floor(acc.astype(np.float32) * SCALE + other.astype(np.float32) * 0.5 + 0.5), 0, 255)
        args.append(_blocked(other, lanes))
        expected = _blocked(expected.astype(np.uint8), lanes)
    else:
        expected = _blocked(acc, lanes)
    return mod, args, expected


def _check(sch, args, expected, machine):
    target, _, instruction, _ = MACHINES[machine]
    library = tvm.tirx.build(sch.mod, target=target)
    assert instruction in library.inspect_source("asm")
    out = tvm.runtime.tensor(np.zeros(expected.shape, expected.dtype))
    library["main"](*[tvm.runtime.tensor(a) for a in args], out)
    np.testing.assert_array_equal(out.numpy(), expected)


CASES = pytest.mark.parametrize("size,stride,pad,residual", [(3, 1, 1, True), (1, 2, 0, True), (3, 1, 1, False)],
                                ids=["3x3-residual", "1x1-stride2-residual", "3x3-int32-out"])


@CASES
def test_every_tile_shape_computes_the_conv_and_its_epilogue_on_vpdpbusd(size, stride, pad, residual):
    if not tvm.target.codegen.target_has_features("avx512vnni", HOST):
        pytest.skip("this machine's CPU has no vnni")
    mod, args, expected = _case(size, stride, pad, residual, intrinsics.VNNI)
    schedules = conv_templates.candidates(mod, conv_templates.REGISTER_FILES[intrinsics.VNNI])
    # 4 output-channel blocks, 14 or 7 pixels a row: tiles of 1, 2 and 4 blocks × 2, 7 and 14 pixels within 16
    # sums (1×2, 1×7, 1×14, 2×2, 2×7, 4×2), or of 1 and 2 blocks × 7 pixels
    assert len(schedules) == (6 if stride == 1 else 2)
    for sch in schedules:
        _check(sch, args, expected, "vnni")


@CASES
@pytest.mark.parametrize("machine", [_on_host("vnni"), _on_host("avx2"), _on_host("avx2-w16")])
def test_the_default_schedule_computes_the_conv_and_its_epilogue(machine, size, stride, pad, residual):
    intrinsic = MACHINES[machine][1]
    mod, args, expected = _case(size, stride, pad, residual, intrinsic)
    _check(conv_templates.default_schedule(mod, conv_templates.REGISTER_FILES[intrinsic]), args, expected, machine)


def test_the_default_tile_fits_the_register_file_and_prefers_fewer_instructions_per_sum():
    vnni, avx2 = conv_templates.REGISTER_FILES[intrinsics.VNNI], conv_templates.REGISTER_FILES[intrinsics.AVX2]
    # at most 16 sums beside the operand vpdpbusd cannot take from memory; 4 blocks × 2 pixels issue the fewest
    # broadcasts a sum of the tiles with enough sums to hide its latency
    assert conv_templates.register_tile(4, 14, vnni) == (4, 2)
    # unless 4 blocks' weights overflow L1 and would be read from L2 at every pixel: ResNet-50's 3×3 convs at 14²
    # (2304 products a sum: 4 blocks' weights 144 KB, 2 blocks' 72 KB, read once per 2 and per 7 pixels)
    assert conv_templates.register_tile(16, 14, vnni, reduction=2304) == (2, 7)
    assert conv_templates.register_tile(16, 14, vnni, reduction=256) == (4, 2)  # 4 blocks' weights 16 KB
    # a 13-pixel row: 1 × 13 sums rather than 4 × 1, which would leave vpdpbusd's latency exposed
    assert conv_templates.register_tile(4, 13, vnni) == (1, 13)
    # AVX2: at most 8 sums in its 16 registers, over as many channel blocks as reuse one widened input word
    assert conv_templates.register_tile(8, 56, avx2) == (4, 2)
    assert conv_templates.register_tile(125, 13, avx2) == (5, 1)  # SqueezeNet's classifier: 1000 channels, 13²
    # widened weights: a column of blocks over one pixel, unless its weights overflow L1 (ResNet-50's 64 → 64
    # 3×3 convs, 576 products a sum: 4 blocks' weights are 36 KB, 2 blocks' 18 KB)
    wide = conv_templates.REGISTER_FILES[intrinsics.AVX2_W16]
    assert conv_templates.register_tile(8, 56, wide, reduction=64) == (4, 1)
    assert conv_templates.register_tile(8, 56, wide, reduction=576) == (2, 2)
    for oc_blocks, width in [(1, 1), (4, 13), (24, 28), (16, 7)]:
        oc_tile, x_tile = conv_templates.register_tile(oc_blocks, width, avx2)
        assert avx2.fits(oc_tile, x_tile) and oc_blocks % oc_tile == 0 and width % x_tile == 0


@pytest.mark.parametrize("size,stride,width,form", [
    (3, 1, 14, intrinsics.I8MM),  # pixel pairs adjacent in memory: the 2 × 2 smmla
    (3, 2, 14, intrinsics.I8MM_SINGLE),  # a pair 2 pixels apart is no 2 × 8 operand: the single-pixel form
    (1, 1, 7, intrinsics.I8MM_SINGLE),  # an odd row has no pixel pairs
], ids=["3x3", "3x3-stride2", "1x1-odd-row"])
def test_i8mm_convs_get_the_smmla_template_whose_form_fits_their_pixels(size, stride, width, form):
    """ARM i8mm (compiled, not run here: tests/test_arm.py runs whole models under qemu): the first of the
    kernel class's forms that the conv's pixels fit is its default schedule, and its code multiplies with smmla."""
    target = targets.resolve("arm64-i8mm").tvm_target()
    data = te.placeholder((1, 4, width, width, 8), "int8", name="data")
    weight = te.placeholder((8, 4, size, size, 1, 8, 8), "int8", name="weight")
    acc = _conv_blocked(data, weight, (stride, stride), (size // 2,) * 4, (1, 1))
    mod = tvm.IRModule({"main": te.create_prim_func([data, weight, acc]).with_attr("global_symbol", "main")})
    files = conv_templates.register_files(target)
    assert [f.tensorize for f in files[:2]] == [intrinsics.I8MM, intrinsics.I8MM_SINGLE]
    with target:
        chosen = next(f for f in files if conv_templates.default_schedule(mod, f) is not None)
        assert chosen.tensorize == form
        library = tvm.tirx.build(conv_templates.default_schedule(mod, chosen).mod, target=target)
    assert "smmla" in library.inspect_source("asm")


def test_a_kernel_that_is_not_a_packed_conv_gets_no_template():
    x = te.placeholder((1, 4, 14, 14, 16), "uint8", name="x")
    doubled = te.compute(x.shape, lambda *i: x(*i) * 2)
    mod = tvm.IRModule({"main": te.create_prim_func([x, doubled]).with_attr("global_symbol", "main")})
    assert conv_templates.candidates(mod, conv_templates.REGISTER_FILES[intrinsics.VNNI]) == []
    assert conv_templates.default_schedule(mod, conv_templates.REGISTER_FILES[intrinsics.AVX2]) is None
