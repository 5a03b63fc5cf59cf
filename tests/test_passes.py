"""Passes on small hand-written modules: each rewrite checked against its expected TVMScript, structurally."""

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from qcompile.lower.passes.matmul_as_conv import MatmulAsConv
from qcompile.quantize import ops
from qcompile.quantize.passes.lift_scalars import LiftScalars

WEIGHT = np.arange(-12, 12, dtype=np.int8).reshape(4, 6)  # [K, N]


def test_lift_scalars_makes_integer_constants_and_clamp_bounds_one_element_tensors():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8), "int32")) -> R.Tensor((1, 8), "int8"):
            with R.dataflow():
                a = R.add(x, R.const(3, "int32"))
                c = R.clip(a, R.prim_value(-5), R.prim_value(7))
                d = R.astype(c, "int8")
                R.output(d)
            return d

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8), "int32")) -> R.Tensor((1, 8), "int8"):
            with R.dataflow():
                a = R.add(x, R.const([3], "int32"))
                c = R.minimum(R.maximum(a, R.const([-5], "int32")), R.const([7], "int32"))
                d = R.astype(c, "int8")
                R.output(d)
            return d

    tvm.ir.assert_structural_equal(LiftScalars()(Before), Expected)


def test_lift_scalars_leaves_float_arithmetic_alone():
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 8), "float32"):
            with R.dataflow():
                a = R.add(x, R.const(3.0, "float32"))
                R.output(a)
            return a

    tvm.ir.assert_structural_equal(LiftScalars()(Module), Module)


def test_matmul_as_conv_rewrites_an_integer_matmul_against_constant_weights_as_a_1x1_conv():
    # the rows become one image row of pixels, so that the conv reads each weight block once per tile of rows
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "uint8")) -> R.Tensor((2, 6), "int32"):
            with R.dataflow():
                y = R.matmul(x, R.const(WEIGHT), out_dtype="int32")
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "uint8")) -> R.Tensor((2, 6), "int32"):
            with R.dataflow():
                rows_last = R.permute_dims(R.reshape(x, [2, 4]), [1, 0])
                image = R.reshape(rows_last, [1, 4, 1, 2])
                acc = R.nn.conv2d(image, R.const(np.ascontiguousarray(WEIGHT.T).reshape(6, 4, 1, 1)),
                                  out_dtype="int32")
                columns_last = R.permute_dims(R.reshape(acc, [6, 2]), [1, 0])
                y = R.reshape(columns_last, [2, 6])
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(MatmulAsConv()(Before), Expected)


def test_matmul_as_conv_moves_the_epilogue_before_the_transposes_where_it_fuses_into_the_conv():
    # dynamic quantization's dequantize: a per-column zero-point correction, then the per-row scales
    offset = np.arange(6, dtype=np.int32).reshape(1, 6)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "uint8"), rows: R.Tensor((2, 1), "float32")) -> R.Tensor((2, 6), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(WEIGHT), out_dtype="int32")
                z = R.add(y, R.const(offset))
                f = R.astype(z, "float32")
                g = R.multiply(f, rows)
                R.output(g)
            return g

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "uint8"), rows: R.Tensor((2, 1), "float32")) -> R.Tensor((2, 6), "float32"):
            with R.dataflow():
                rows_last = R.permute_dims(R.reshape(x, [2, 4]), [1, 0])
                image = R.reshape(rows_last, [1, 4, 1, 2])
                acc = R.nn.conv2d(image, R.const(np.ascontiguousarray(WEIGHT.T).reshape(6, 4, 1, 1)),
                                  out_dtype="int32")
                z = R.add(acc, R.const(offset.reshape(1, 6, 1, 1)))
                f = R.astype(z, "float32")
                per_row = R.reshape(rows, [1, 1, 1, 2])
                g = R.multiply(f, per_row)
                columns_last = R.permute_dims(R.reshape(g, [6, 2]), [1, 0])
                out = R.reshape(columns_last, [2, 6])
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(MatmulAsConv()(Before), Expected)


def test_matmul_as_conv_feeds_a_matmul_of_a_matmuls_looked_up_result_in_the_conv_layout():
    # a feed-forward block: layer 1, an 8-bit function as a table (GELU's), layer 2, with no transposes between
    table = np.arange(256, dtype=np.uint8)[::-1].copy()
    second = np.arange(-9, 9, dtype=np.int8).reshape(6, 3)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "uint8")) -> R.Tensor((2, 3), "int32"):
            with R.dataflow():
                y = R.matmul(x, R.const(WEIGHT), out_dtype="int32")
                t = R.take(R.const(table), y, axis=0, mode="clip")
                z = R.matmul(t, R.const(second), out_dtype="int32")
                R.output(z)
            return z

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "uint8")) -> R.Tensor((2, 3), "int32"):
            with R.dataflow():
                rows_last = R.permute_dims(R.reshape(x, [2, 4]), [1, 0])
                image = R.reshape(rows_last, [1, 4, 1, 2])
                acc = R.nn.conv2d(image, R.const(np.ascontiguousarray(WEIGHT.T).reshape(6, 4, 1, 1)),
                                  out_dtype="int32")
                t = R.take(R.const(table), acc, axis=0, mode="clip")
                acc2 = R.nn.conv2d(t, R.const(np.ascontiguousarray(second.T).reshape(3, 6, 1, 1)),
                                   out_dtype="int32")
                columns_last = R.permute_dims(R.reshape(acc2, [3, 2]), [1, 0])
                z = R.reshape(columns_last, [2, 3])
                R.output(z)
            return z

    tvm.ir.assert_structural_equal(MatmulAsConv()(Before), Expected)


def test_matmul_as_conv_makes_a_gemv_one_pixel():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4), "uint8")) -> R.Tensor((1, 6), "int32"):
            with R.dataflow():
                y = R.matmul(x, R.const(WEIGHT), out_dtype="int32")
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "uint8")) -> R.Tensor((1, 6), "int32"):
            with R.dataflow():
                image = R.reshape(x, [1, 4, 1, 1])
                acc = R.nn.conv2d(image, R.const(np.ascontiguousarray(WEIGHT.T).reshape(6, 4, 1, 1)),
                                  out_dtype="int32")
                y = R.reshape(acc, [1, 6])
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(MatmulAsConv()(Before), Expected)


def test_matmul_as_conv_leaves_a_float_matmul_unless_float_convs_are_packed():
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 6), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(WEIGHT.astype(np.float32)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(MatmulAsConv()(Module), Module)
    rewritten = MatmulAsConv(floats=True)(Module)
    assert [b.value.op.name for b in rewritten["main"].body.blocks[0].bindings] == [
        "relax.reshape", "relax.nn.conv2d", "relax.reshape"]


def _first_call(mod):
    return mod["main"].body.blocks[0].bindings[0].value


def test_concat_rule_reads_and_rebuilds_its_tuple_operands():
    @I.ir_module
    class Module:
        @R.function
        def main(a: R.Tensor((1, 2), "float32"), b: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 5), "float32"):
            with R.dataflow():
                y = R.concat((a, b), axis=1)
                R.output(y)
            return y

    call = _first_call(Module)
    rule = ops.lookup("relax.concat")
    operands = rule.operands(call)
    assert [v.name for v in operands] == ["a", "b"] and rule.activations(call) == [0, 1]
    rebuilt = rule.with_operands(call, operands)
    assert rebuilt.op.same_as(call.op) and rebuilt.attrs.same_as(call.attrs)
    tvm.ir.assert_structural_equal(rebuilt.args, call.args)


def test_every_anchor_rule_knows_its_bias_correction_shift():
    assert ops.anchor_ops() == {"relax.nn.conv2d", "relax.matmul", "relax.nn.conv2d_transpose"}
    assert all(ops.lookup(op).mean_shift is not None for op in ops.anchor_ops())


def test_conv_transpose_rule_shift_is_the_mean_output_of_the_weight_error_on_a_constant_input():
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 2, 8, 8), "float32"):
            with R.dataflow():
                y = R.nn.conv2d_transpose(x, R.const(np.zeros((3, 2, 2, 2), np.float32)), strides=[2, 2])
                R.output(y)
            return y

    rng = np.random.default_rng(1)
    delta = rng.standard_normal((3, 2, 2, 2))  # IOHW
    channel_mean = rng.standard_normal(3)
    mean = np.broadcast_to(channel_mean.reshape(1, 3, 1, 1), (1, 3, 4, 4))
    shift = ops.lookup("relax.nn.conv2d_transpose").mean_shift(_first_call(Module), delta, mean)
    # the transposed conv of the constant mean image, averaged over its output pixels
    output = np.zeros((2, 8, 8))
    for dy in range(2):
        for dx in range(2):
            output[:, dy::2, dx::2] = (channel_mean @ delta[:, :, dy, dx]).reshape(2, 1, 1)
    np.testing.assert_allclose(shift, output.mean(axis=(1, 2)), rtol=1e-12)


def test_conv_rule_shift_is_the_mean_input_through_the_weight_error():
    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 4, 5, 5), "float32")) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(np.zeros((4, 2, 3, 3), np.float32)), groups=2)
                R.output(y)
            return y

    rng = np.random.default_rng(0)
    delta = rng.standard_normal((4, 2, 3, 3))
    mean = rng.standard_normal((1, 4, 5, 5))
    shift = ops.lookup("relax.nn.conv2d").mean_shift(_first_call(Module), delta, mean)
    channel_mean = mean.mean(axis=(0, 2, 3))
    # output channels 0-1 read input channels 0-1 (group 0), 2-3 read 2-3
    expected = [delta[o].sum(axis=(1, 2)) @ channel_mean[2 * (o // 2):2 * (o // 2) + 2] for o in range(4)]
    np.testing.assert_allclose(shift, expected, rtol=1e-12)


def _quantized_float_conv(scale, zero_point, axis):
    kernel = np.ones((16, 8, 1, 1), np.float32)

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "float32")) -> R.Tensor((1, 16, 4, 4), "uint8"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(kernel))
                q = R.quantize(y, R.const(scale), R.const(zero_point), axis=axis, out_dtype="uint8")
                R.output(q)
            return q

    return Module


def test_blocked_epilogue_quantizes_a_float_convs_result_in_its_blocks_when_per_tensor():
    """A layer accuracy control keeps in FP32, between int8 ones: its output's quantize runs on the conv's blocks
    (then fuses into it), not as a kernel reading the unpacked NCHW tensor across channels."""
    from qcompile.lower.passes.blocked_epilogue import BlockedEpilogue
    from qcompile.lower.passes.pack_conv import PackConv

    def quantize_input_rank(mod):
        with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}):
            mod = BlockedEpilogue()(PackConv(None, float_block=8)(mod))
        (value,) = [b.value for b in mod["main"].body.blocks[0].bindings
                    if getattr(getattr(b.value, "op", None), "name", "") == "relax.quantize"]
        return len(value.args[0].ty.shape)

    per_tensor = _quantized_float_conv(np.array([0.5], np.float32), np.array([3], np.int32), -1)
    per_channel = _quantized_float_conv(np.full(16, 0.5, np.float32), np.zeros(16, np.int32), 1)
    assert quantize_input_rank(per_tensor) == 5  # NCHW8c
    assert quantize_input_rank(per_channel) == 4  # its channel axis means NCHW's: left after the unpack


def test_blocked_epilogue_takes_a_maximum_across_channels_over_the_blocks_without_unpacking():
    """int8-dynamic's row range of a float conv's output (|y| maxed over the channels of a [1, C, 1, rows] view):
    over the blocks and their lanes, so that no unpacked copy of the conv's output is made for it."""
    from qcompile.lower.passes.blocked_epilogue import BlockedEpilogue
    from qcompile.lower.passes.pack_conv import PackConv

    kernel = np.random.default_rng(8).standard_normal((16, 8, 1, 1)).astype(np.float32)

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 8, 1, 32), "float32")) -> R.Tensor((1, 1, 1, 32), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(kernel))
                m = R.max(R.abs(y), axis=[1], keepdims=True)
                R.output(m)
            return m

    with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}):
        mod = BlockedEpilogue()(PackConv(None, float_block=8)(Module))
    (value,) = [b.value for b in mod["main"].body.blocks[0].bindings
                if getattr(getattr(b.value, "op", None), "name", "") == "relax.max"]
    assert len(value.args[0].ty.shape) == 5 and [int(a) for a in value.attrs.axis] == [1, 4]  # NCHW8c
    x = np.random.default_rng(9).standard_normal((1, 8, 1, 32)).astype(np.float32)
    expected = np.abs(np.einsum("oc,nchw->nohw", kernel[:, :, 0, 0], x)).max(1, keepdims=True)
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("method", ["nearest_neighbor", "linear"])
def test_blocked_epilogue_resizes_a_convs_result_in_its_blocks(method):
    """A feature pyramid's upsampling between convs: the resize runs on the conv's blocks, each lane alone, so
    that the conv's result is not unpacked to NCHW for it and packed again for the next conv."""
    from qcompile.lower.passes.blocked_epilogue import BlockedEpilogue
    from qcompile.lower.passes.pack_conv import PackConv

    kernel = np.random.default_rng(11).standard_normal((16, 8, 1, 1)).astype(np.float32)

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 8, 5, 6), "float32")) -> R.Tensor((1, 16, 10, 12), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(kernel))
                z = R.image.resize2d(y, (10, 12), method=method, coordinate_transformation_mode="half_pixel")
                R.output(z)
            return z

    with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}):
        mod = BlockedEpilogue()(PackConv(None, float_block=8)(Module))
    (value,) = [b.value for b in mod["main"].body.blocks[0].bindings
                if getattr(getattr(b.value, "op", None), "name", "") == "relax.image.resize2d"]
    assert value.attrs.layout == "NCHW8c" and len(value.args[0].ty.shape) == 5
    x = np.random.default_rng(12).standard_normal((1, 8, 5, 6)).astype(np.float32)
    run = lambda m: tvm.relax.VirtualMachine(tvm.compile(m, target="llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(run(mod), run(Module), rtol=1e-5, atol=1e-6)


SIGNAL_FILTERS = np.arange(-24, 24, dtype=np.int8).reshape(6, 1, 1, 8)  # 6 filters of 8 taps over one channel


def test_unfold_row_conv_reads_a_one_channel_conv_as_its_windows_and_a_1x1_conv():
    from qcompile.lower.passes.unfold_row_conv import UnfoldRowConv

    windows = (np.arange(9)[:, None] * 4 + np.arange(8)[None, :]).astype(np.int64)  # 9 outputs, stride 4

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 1, 1, 40), "uint8")) -> R.Tensor((2, 6, 1, 9), "int32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(SIGNAL_FILTERS), strides=[1, 4], out_dtype="int32")
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 1, 1, 40), "uint8")) -> R.Tensor((2, 6, 1, 9), "int32"):
            with R.dataflow():
                taps = R.take(x, R.const(windows), axis=3, mode="clip")
                channels_first = R.permute_dims(taps, [0, 1, 4, 2, 3])
                unfolded = R.reshape(channels_first, [2, 8, 1, 9])
                y = R.nn.conv2d(unfolded, R.const(SIGNAL_FILTERS.reshape(6, 8, 1, 1)), out_dtype="int32")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(UnfoldRowConv()(Before), Expected)


def test_an_unfolded_one_channel_conv_computes_numpys_integers():
    from tvm import relax

    from qcompile.lower import compiler

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((2, 1, 1, 40), "uint8")) -> R.Tensor((2, 6, 1, 7), "int32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(SIGNAL_FILTERS), strides=[1, 4], dilation=[1, 2], out_dtype="int32")
                R.output(y)
            return y

    x = np.random.default_rng(0).integers(0, 256, (2, 1, 1, 40)).astype(np.uint8)
    vm = relax.VirtualMachine(compiler.for_host(Module), tvm.cpu())
    ours = vm["main"](tvm.runtime.tensor(x)).numpy()
    taps = x[:, 0, 0, np.arange(7)[:, None] * 4 + np.arange(8)[None, :] * 2].astype(np.int64)  # [N, W', K]
    expected = np.einsum("njk,ok->noj", taps, SIGNAL_FILTERS[:, 0, 0].astype(np.int64))[:, :, None, :]
    np.testing.assert_array_equal(ours, expected)


def test_unpack_into_consumers_lets_an_unpack_fuse_with_the_transposes_after_it_but_not_with_a_concat():
    """PackConv binds the conv's variable to the unpack's (an alias), which FuseOps takes as an opaque node: the
    alias goes where only layout changes read it (attention's head split) and stays before a concat."""
    from qcompile.lower.passes.pack_conv import PackConv
    from qcompile.lower.passes.unpack_into_consumers import UnpackIntoConsumers

    kernel = np.random.default_rng(13).standard_normal((16, 8, 1, 1)).astype(np.float32)

    @I.ir_module
    class Heads:
        @R.function
        def main(x: R.Tensor((1, 8, 1, 32), "float32")) -> R.Tensor((1, 2, 32, 8), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(kernel))
                h = R.permute_dims(R.reshape(y, [1, 2, 8, 32]), [0, 1, 3, 2])
                R.output(h)
            return h

    @I.ir_module
    class Concat:
        @R.function
        def main(x: R.Tensor((1, 8, 1, 32), "float32")) -> R.Tensor((1, 24, 1, 32), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(kernel))
                c = R.concat([y, x], axis=1)
                R.output(c)
            return c

    def aliases(mod):
        return sum(isinstance(b.value, tvm.relax.Var) for b in mod["main"].body.blocks[0].bindings)

    def fused_kernels(mod):
        with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}):
            mod = tvm.relax.get_pipeline("zero")(mod)
        return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]

    for module, fuses in ((Heads, True), (Concat, False)):
        with tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}):
            packed = PackConv(None, float_block=8)(module)
            mod = UnpackIntoConsumers()(packed)
        assert aliases(packed) == 1 and aliases(mod) == (0 if fuses else 1)
        assert any("unpack_output" in k and "transpose" in k for k in fused_kernels(mod)) == fuses
    x = np.random.default_rng(14).standard_normal((1, 8, 1, 32)).astype(np.float32)
    y = np.einsum("oc,nchw->nohw", kernel[:, :, 0, 0], x)
    vm = tvm.relax.VirtualMachine(tvm.compile(UnpackIntoConsumers()(PackConv(None, float_block=8)(Heads)),
                                              target="llvm"), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(),
                               y.reshape(1, 2, 8, 32).transpose(0, 1, 3, 2), rtol=1e-5, atol=1e-5)


def _codes_product(depth):
    """Attention's integer product as the quantizer writes it: two uint8 activations less their zero points, as
    int16, multiplied into int32."""
    from tvm import relax

    builder = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((2, 8, depth), "uint8"))
    b = relax.Var("b", relax.TensorType((2, depth, 16), "uint8"))
    with builder.function("main", [a, b]):
        with builder.dataflow():
            x = builder.emit(R.subtract(R.astype(a, "int16"), relax.const(np.array([3], np.int16))))
            y = builder.emit(R.subtract(R.astype(b, "int16"), relax.const(np.array([250], np.int16))))
            p = builder.emit_output(R.matmul(x, y, out_dtype="int32"))
        builder.emit_func_output(p)
    return builder.get()


def test_exact_float_matmul_multiplies_8_bit_codes_in_float_and_gets_the_same_integers():
    from qcompile.lower.passes.exact_float_matmul import ExactFloatMatmul

    def matmuls(mod):
        return [str(b.value.ty.dtype) for b in mod["main"].body.blocks[0].bindings
                if getattr(getattr(b.value, "op", None), "name", "") == "relax.matmul"]

    before = _codes_product(256)  # 256 · 252 · 253 < 2^24: every partial sum exact in float32
    after = ExactFloatMatmul()(before)
    assert matmuls(before) == ["int32"] and matmuls(after) == ["float32"]
    assert matmuls(ExactFloatMatmul()(_codes_product(512))) == ["int32"]  # 512 · 252 · 253 > 2^24: left alone
    rng = np.random.default_rng(15)
    # the extremes too: the largest products, all of one sign
    a = np.concatenate([rng.integers(0, 256, (1, 8, 256)), np.full((1, 8, 256), 255)]).astype(np.uint8)
    b = np.concatenate([rng.integers(0, 256, (1, 256, 16)), np.zeros((1, 256, 16))]).astype(np.uint8)
    expected = (a.astype(np.int64) - 3) @ (b.astype(np.int64) - 250)
    for mod in (before, after):
        vm = tvm.relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        got = vm["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
        assert got.dtype == np.int32 and np.array_equal(got, expected)


def test_annotate_gives_a_concats_own_inputs_its_parameters_so_they_are_rounded_once():
    from qcompile.quantize.passes.annotate import Annotate
    from qcompile.quantize.passes.expose import quant_points

    w = np.ones((4, 4, 1, 1), np.float32)

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 4, 5, 5), "float32")) -> R.Tensor((1, 4, 5, 5), "float32"):
            with R.dataflow():
                a = R.nn.relu(R.nn.conv2d(x, R.const(w)))  # read by the concat alone
                b = R.nn.relu(R.nn.conv2d(x, R.const(w)))  # read by the concat and by a conv
                c = R.concat((a, b), axis=1)
                d = R.nn.conv2d(c, R.const(np.ones((4, 8, 1, 1), np.float32)))
                e = R.add(d, R.nn.conv2d(b, R.const(w)))
                R.output(e)
            return e

    assert quant_points(Annotate()(Module)) == [(0, "input x"), (1, "nn.relu a"), (2, "nn.relu b"), (1, "concat c")]


def test_elide_code_casts_reads_a_requantized_code_as_its_float_within_one_kernel():
    from qcompile.lower.passes.elide_code_casts import ElideCodeCasts

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 8), "float32"):
            with R.dataflow():
                r = R.add(R.floor(x), R.const([3.0], "float32"))  # a rounded value plus a zero point
                c = R.minimum(R.maximum(r, R.const([0.0], "float32")), R.const([255.0], "float32"))
                q = R.astype(c, "uint8")
                y = R.multiply(R.astype(q, "float32"), R.const([0.5], "float32"))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 8), "float32"):
            with R.dataflow():
                r = R.add(R.floor(x), R.const([3.0], "float32"))
                c = R.minimum(R.maximum(r, R.const([0.0], "float32")), R.const([255.0], "float32"))
                y = R.multiply(c, R.const([0.5], "float32"))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ElideCodeCasts()(Before), Expected)


def test_elide_code_casts_keeps_a_code_that_crosses_kernels_or_was_not_rounded():
    from qcompile.lower.passes.elide_code_casts import ElideCodeCasts

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "float32")):
            with R.dataflow():
                c = R.minimum(R.maximum(R.floor(x), R.const([0.0], "float32")), R.const([255.0], "float32"))
                q = R.astype(c, "uint8")
                # a resize's kernel reads the code: as a float it would cross kernels at 4 bytes a value
                big = R.image.resize2d(R.astype(q, "float32"), (8, 8), method="nearest_neighbor")
                # not rounded: the cast truncates, so the float is not the code
                t = R.minimum(R.maximum(x, R.const([0.0], "float32")), R.const([255.0], "float32"))
                u = R.multiply(R.astype(R.astype(t, "uint8"), "float32"), R.const([2.0], "float32"))
                R.output(big, u)
            return (big, u)

    tvm.ir.assert_structural_equal(ElideCodeCasts()(Module), Module)
