"""The hand-written packed-conv schedules tuning measures first: every tile shape offered computes the conv's
integers (numpy reference) with its epilogue, on vpdpbusd."""

import numpy as np
import pytest
import tvm
from tvm import te

from qcompile.lower import conv_templates
from qcompile import targets
from qcompile.lower.passes.pack_conv import _conv_blocked, pack_kernel

TARGET = targets.resolve("x86").tvm_target()
SCALE = 2.0 ** -7  # a power of two: every float in the epilogue is exact, so fused or not the rounding is the same

pytestmark = pytest.mark.skipif(not tvm.target.codegen.target_has_features("avx512vnni", TARGET),
                                reason="this machine's CPU has no AVX-512 VNNI")


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


def _blocked(nchw):
    n, c, h, w = nchw.shape
    return np.ascontiguousarray(nchw.reshape(n, c // 16, 16, h, w).transpose(0, 1, 3, 4, 2))


def _kernel(in_c, out_c, size, stride, pad, residual):
    """The packed conv as lowering makes it, followed by a residual requantize epilogue like realize's (or none)."""
    data = te.placeholder((1, in_c // 16, 14, 14, 16), "uint8", name="data")
    weight = te.placeholder((out_c // 16, in_c // 4, size, size, 1, 16, 4), "int8", name="weight")
    acc = _conv_blocked(data, weight, (stride, stride), (pad,) * 4, (1, 1))
    if not residual:
        return te.create_prim_func([data, weight, acc])
    other = te.placeholder(acc.shape, "uint8", name="other")
    out = te.compute(acc.shape, lambda *i: te.max(te.min(te.floor(
        acc(*i).astype("float32") * SCALE + other(*i).astype("float32") * 0.5 + 0.5), 255.0), 0.0).astype("uint8"))
    return te.create_prim_func([data, weight, other, out])


@pytest.mark.parametrize("size,stride,pad,residual", [(3, 1, 1, True), (1, 2, 0, True), (3, 1, 1, False)],
                         ids=["3x3-residual", "1x1-stride2-residual", "3x3-int32-out"])
def test_every_tile_shape_computes_the_conv_and_its_epilogue_on_vpdpbusd(size, stride, pad, residual):
    rng = np.random.default_rng(size + stride)
    in_c, out_c = 32, 64
    data = rng.integers(0, 256, (1, in_c, 14, 14)).astype(np.uint8)
    kernel = rng.integers(-128, 128, (out_c, in_c, size, size)).astype(np.int8)
    acc = _reference(data, kernel, stride, pad)
    mod = tvm.IRModule({"main": _kernel(in_c, out_c, size, stride, pad, residual).with_attr("global_symbol", "main")})
    schedules = conv_templates.candidates(mod)
    # 4 output-channel blocks, 14 or 7 pixels a row: tiles 1, 2 and 4 blocks × 7 and 14 pixels within 28 sums
    assert len(schedules) == (5 if stride == 1 else 3)
    args = [_blocked(data), pack_kernel(kernel, 16)]
    if residual:
        other = rng.integers(0, 256, acc.shape).astype(np.uint8)
        expected = np.clip(np.floor(acc.astype(np.float32) * SCALE + other.astype(np.float32) * 0.5 + 0.5), 0, 255)
        args.append(_blocked(other))
        expected = _blocked(expected.astype(np.uint8))
    else:
        expected = _blocked(acc)
    for sch in schedules:
        library = tvm.tirx.build(sch.mod, target=TARGET)
        assert "vpdpbusd" in library.inspect_source("asm")
        out = tvm.runtime.tensor(np.zeros(expected.shape, expected.dtype))
        library["main"](*[tvm.runtime.tensor(a) for a in args], out)
        np.testing.assert_array_equal(out.numpy(), expected)


def test_a_kernel_that_is_not_a_packed_conv_gets_no_template():
    x = te.placeholder((1, 4, 14, 14, 16), "uint8", name="x")
    doubled = te.compute(x.shape, lambda *i: x(*i) * 2)
    mod = tvm.IRModule({"main": te.create_prim_func([x, doubled]).with_attr("global_symbol", "main")})
    assert conv_templates.candidates(mod) == []
