"""Each operator rule's integer kernels against a numpy integer reference: exact, zero points, rounding,
saturation; and within one step of the real-valued result they stand for."""

import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from qcompile.quantize.passes.realize import Realize
from qcompile.quantize.qparams import requantize
from qcompile.quantize.report import count_ops

RNG = np.random.default_rng(42)


def const(value, dtype):
    return relax.const(np.asarray(value).astype(dtype), dtype)


def dq(x, scale, zero_point, axis=-1):
    return R.dequantize(x, const(scale, "float32"), const(zero_point, "int32"), axis=axis)


def q(x, scale, zero_point, dtype):
    return R.quantize(x, const(scale, "float32"), const(zero_point, "int32"), out_dtype=dtype)


def realized(build, inputs: dict):
    """main(inputs), built with `build(bb, vars)`, realized."""
    bb = relax.BlockBuilder()
    params = [relax.Var(name, relax.TensorType(v.shape, str(v.dtype))) for name, v in inputs.items()]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(bb, *params))
        bb.emit_func_output(out)
    return Realize()(bb.get())


def realize_and_run(build, inputs: dict):
    """Build main(inputs) with `build(bb, vars)`, realize it, check no float anchor is left, run it."""
    realized_mod = realized(build, inputs)
    _, float_anchors, ops = count_ops(realized_mod)
    assert float_anchors == 0
    assert "relax.quantize" not in ops["integer"] and "relax.dequantize" not in ops["float"], ops
    ex = tvm.compile(realized_mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()]).numpy()


def conv_int(x, w, stride, pad, groups, pad_value):
    """Integer NCHW/OIHW convolution in int64: the reference."""
    x = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, k, oh, ow), np.int64)
    kg = k // groups
    for g in range(groups):
        xs, ws = x[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg].astype(np.int64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", patch, ws[:, :, i, j])
    return out


def clamp_bounds(lo, hi, scale, zp, qmin, qmax):
    low = qmin if math.isinf(lo) else max(qmin, round(lo / scale) + zp)
    high = qmax if math.isinf(hi) else min(qmax, round(hi / scale) + zp)
    return low, high


@pytest.mark.parametrize("act, groups, stride, pad, z_x", [
    ("uint8", 1, 1, 1, 7),     # u8 × s8 with a zero point that padding must use
    ("uint8", 8, 1, 1, 0),     # depthwise
    ("uint8", 2, 2, 0, 131),   # grouped, strided
    ("int8", 1, 1, 1, 0),      # s8 × s8 (ARM sdot / CUDA dp4a)
])
def test_conv2d_bias_relu6_requantize_is_exact(act, groups, stride, pad, z_x):
    c, k = 8, 8
    lo_q, hi_q = (0, 255) if act == "uint8" else (-128, 127)
    x = RNG.integers(lo_q, hi_q + 1, (1, c, 9, 9)).astype(act)
    wq = RNG.integers(-127, 128, (k, c // groups, 3, 3)).astype(np.int8)
    s_x, s_w = 0.02, RNG.uniform(0.001, 0.01, k)
    bias = RNG.normal(0, 0.5, k).astype(np.float32)
    s_o, z_o = 0.03, (5 if act == "uint8" else 0)

    def build(bb, xv):
        y = bb.emit(R.nn.conv2d(dq(xv, s_x, z_x), dq(const(wq, "int8"), s_w, np.zeros(k), axis=0),
                                strides=[stride, stride], padding=[pad] * 4, groups=groups))
        y = bb.emit(R.add(y, const(bias.reshape(1, k, 1, 1), "float32")))
        y = bb.emit(R.clip(y, 0.0, 6.0))
        return q(y, s_o, z_o, act)

    got = realize_and_run(build, {"x": x})
    acc = conv_int(x.astype(np.int64) - z_x, wq, stride, pad, groups, 0)
    in_scale = s_x * s_w.astype(np.float32).astype(np.float64)
    acc += np.round(bias.astype(np.float64) / in_scale).astype(np.int64).reshape(1, k, 1, 1)
    low, high = clamp_bounds(0.0, 6.0, np.float32(s_o), z_o, lo_q, hi_q)
    expected = requantize(acc, (in_scale / np.float64(np.float32(s_o))).reshape(1, k, 1, 1), z_o, low, high)
    np.testing.assert_array_equal(got, expected)
    real = np.clip(conv_int(x.astype(np.int64) - z_x, wq, stride, pad, groups, 0) * in_scale.reshape(1, k, 1, 1)
                   + bias.reshape(1, k, 1, 1), 0, 6)
    assert np.abs(got.astype(np.int64) - np.clip(np.round(real / s_o) + z_o, lo_q, hi_q)).max() <= 1


def test_matmul_with_float_output_is_exact():
    x = RNG.integers(0, 256, (1, 16)).astype(np.uint8)
    wq = RNG.integers(-127, 128, (16, 8)).astype(np.int8)
    s_x, z_x, s_w = 0.05, 100, RNG.uniform(0.001, 0.01, 8)

    def build(bb, xv):
        return R.matmul(dq(xv, s_x, z_x), dq(const(wq, "int8"), s_w, np.zeros(8), axis=1))

    got = realize_and_run(build, {"x": x})
    acc = (x.astype(np.int64) - z_x) @ wq.astype(np.int64)
    expected = (acc.astype(np.float32) * (np.float32(s_x) * s_w.astype(np.float32))).astype(np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_matmul_of_two_activations_is_integer_and_within_one_step_of_the_real_product():
    """Attention's Q·Kᵀ: both operands quantized (uint8, their own zero points), requantized to uint8."""
    a = RNG.integers(0, 256, (1, 2, 6, 16)).astype(np.uint8)
    b = RNG.integers(0, 256, (1, 2, 16, 5)).astype(np.uint8)
    s_a, z_a, s_b, z_b, s_o, z_o = 0.03, 120, 0.02, 131, 0.05, 128

    def build(bb, av, bv):
        return q(bb.emit(R.matmul(dq(av, s_a, z_a), dq(bv, s_b, z_b))), s_o, z_o, "uint8")

    got = realize_and_run(build, {"a": a, "b": b})
    acc = (a.astype(np.int64) - z_a) @ (b.astype(np.int64) - z_b)
    multiplier = np.float32(np.float64(s_a) * np.float64(s_b) / np.float64(s_o))
    np.testing.assert_array_equal(got, requantize(acc, multiplier, z_o, 0, 255))
    real = ((a.astype(np.float64) - z_a) * s_a) @ ((b.astype(np.float64) - z_b) * s_b)
    assert np.abs(got.astype(np.int64) - np.clip(np.round(real / s_o) + z_o, 0, 255)).max() <= 1


@pytest.mark.parametrize("method", ["nearest_neighbor", "linear"])
def test_resize_runs_on_the_codes_within_one_step_of_the_float_resize(method):
    x = RNG.integers(0, 256, (1, 3, 5, 7)).astype(np.uint8)
    s, z = 0.04, 117

    def resize(data):
        return R.image.resize2d(data, (10, 14), method=method, coordinate_transformation_mode="half_pixel")

    def build(bb, xv):
        return q(bb.emit(resize(dq(xv, s, z))), s, z, "uint8")

    got = realize_and_run(build, {"x": x})
    bb = relax.BlockBuilder()  # the float resize of the dequantized input, as TVM computes it
    xv = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [xv]):
        bb.emit_func_output(bb.emit(resize(xv)))
    vm = relax.VirtualMachine(tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    real = vm["main"](tvm.runtime.tensor(((x.astype(np.float64) - z) * s).astype(np.float32))).numpy()
    expected = np.clip(np.round(real / s) + z, 0, 255)
    if method == "nearest_neighbor":
        np.testing.assert_array_equal(got, expected)  # codes picked, not computed
    else:
        assert np.abs(got.astype(np.int64) - expected).max() <= 1


def rescaled(q_inputs, scales, zps, s_o, z_o, lo, hi):
    """The rescale-and-sum reference: round(Σ m_i q_i - Σ m_i z_i) + z_o in float32, one rounding (half up)."""
    multipliers = [np.float64(np.float32(s)) / np.float64(np.float32(s_o)) for s in scales]
    total = sum(qi.astype(np.float32) * np.float32(m) for qi, m in zip(q_inputs, multipliers))
    offset = -sum(m * z for m, z in zip(multipliers, zps))
    return np.clip(np.floor(total + np.float32(offset + 0.5)) + np.float32(z_o), lo, hi)


def test_add_of_two_quantized_tensors_is_exact():
    a = RNG.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)
    b = RNG.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)

    def build(bb, av, bv):
        y = bb.emit(R.add(dq(av, 0.02, 10), dq(bv, 0.05, 200)))
        return q(y, 0.06, 128, "uint8")

    got = realize_and_run(build, {"a": a, "b": b})
    np.testing.assert_array_equal(got, rescaled([a, b], [0.02, 0.05], [10, 200], 0.06, 128, 0, 255))
    real = (a.astype(np.float64) - 10) * 0.02 + (b.astype(np.float64) - 200) * 0.05
    assert np.abs(got - np.clip(np.round(real / 0.06) + 128, 0, 255)).max() <= 1


def residual(bb, xv, bv, wq, s_w, also_output=False, relu=False):
    """conv(x) requantized, + b, requantized (then ReLU): a residual block's end; `also_output`: the conv's codes
    are also a result of the function, so the add is not their only reader."""
    conv = bb.emit(q(bb.emit(R.nn.conv2d(dq(xv, 0.02, 7), dq(const(wq, "int8"), s_w, np.zeros(len(s_w)), axis=0))),
                     0.05, 120, "uint8"))
    y = bb.emit(q(bb.emit(R.add(dq(conv, 0.05, 120), dq(bv, 0.04, 100))), 0.08, 128, "uint8"))
    if relu:
        y = bb.emit(q(bb.emit(R.nn.relu(dq(y, 0.08, 128))), 0.08, 128, "uint8"))
    return relax.Tuple([y, conv]) if also_output else y


def residual_case():
    x = RNG.integers(0, 256, (1, 8, 6, 6)).astype(np.uint8)
    b = RNG.integers(0, 256, (1, 8, 6, 6)).astype(np.uint8)
    wq = RNG.integers(-127, 128, (8, 8, 1, 1)).astype(np.int8)
    s_w = RNG.uniform(0.001, 0.01, 8)
    acc = conv_int(x.astype(np.int64) - 7, wq, 1, 0, 1, 0) * (np.float32(0.02) * s_w.astype(np.float32)).reshape(
        1, 8, 1, 1).astype(np.float64)  # the conv's real value
    return x, b, wq, s_w, acc, acc + (b.astype(np.float64) - 100) * np.float64(np.float32(0.04))


def rounded_once(real, scale, zero_point):
    """`real` rounded once to the output's codes (half up), and where it lies within float32's error of a half
    (either code is right there)."""
    steps = real / np.float64(np.float32(scale))
    near_half = np.abs(steps - np.floor(steps) - 0.5) < 1e-3
    return np.clip(np.floor(steps + 0.5) + zero_point, 0, 255), near_half


def floors(mod) -> int:
    return count_ops(mod)[2]["float"]["relax.floor"]


@pytest.mark.parametrize("relu", [False, True])
def test_an_anchor_read_only_by_a_residual_add_enters_it_unrounded_and_is_rounded_once(relu):
    """The conv's codes are never formed: its accumulator, scaled, joins the add, and the sum is rounded once
    (the kernel's epilogue does the add's work only); a ReLU after the add narrows the add's own saturation."""
    x, b, wq, s_w, _, real = residual_case()
    inputs = {"x": x, "b": b}
    mod = realized(lambda bb, xv, bv: residual(bb, xv, bv, wq, s_w, relu=relu), inputs)
    ops = count_ops(mod)[2]
    assert floors(mod) == 1 and "relax.clip" not in ops["integer"], ops
    got = realize_and_run(lambda bb, xv, bv: residual(bb, xv, bv, wq, s_w, relu=relu), inputs)
    expected, ambiguous = rounded_once(np.maximum(real, 0) if relu else real, 0.08, 128)
    np.testing.assert_array_equal(got[~ambiguous], expected[~ambiguous])
    assert np.abs(got - expected).max() <= 1


def test_an_anchor_whose_codes_are_read_elsewhere_too_is_rounded_before_the_add():
    x, b, wq, s_w, conv, _ = residual_case()
    build = lambda bb, xv, bv: residual(bb, xv, bv, wq, s_w, also_output=True)  # noqa: E731
    mod = realized(build, {"x": x, "b": b})
    assert floors(mod) == 2
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    y, codes = (t.numpy() for t in vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(b)))
    np.testing.assert_array_equal(y, rescaled([codes, b], [0.05, 0.04], [120, 100], 0.08, 128, 0, 255))
    expected, ambiguous = rounded_once(conv, 0.05, 120)
    np.testing.assert_array_equal(codes[~ambiguous], expected[~ambiguous])


def test_concat_requantizes_only_inputs_whose_scale_differs():
    a = RNG.integers(0, 256, (1, 2, 3, 3)).astype(np.uint8)
    b = RNG.integers(0, 256, (1, 3, 3, 3)).astype(np.uint8)

    def build(bb, av, bv):
        y = bb.emit(R.concat([dq(av, 0.1, 0), dq(bv, 0.05, 0)], axis=1))
        return q(y, 0.1, 0, "uint8")

    got = realize_and_run(build, {"a": a, "b": b})
    expected = np.concatenate([a, rescaled([b], [0.05], [0], 0.1, 0, 0, 255)], axis=1)
    np.testing.assert_array_equal(got, expected)


def test_max_pool_runs_on_the_integers():
    x = RNG.integers(0, 256, (1, 2, 6, 6)).astype(np.uint8)

    def build(bb, xv):
        y = bb.emit(R.nn.max_pool2d(dq(xv, 0.1, 3), pool_size=[2, 2], strides=[2, 2]))
        return q(y, 0.1, 3, "uint8")

    got = realize_and_run(build, {"x": x})
    np.testing.assert_array_equal(got, x.reshape(1, 2, 3, 2, 3, 2).max(axis=(3, 5)))


def test_global_average_pool_is_an_int32_sum_requantized():
    x = RNG.integers(0, 256, (1, 3, 7, 7)).astype(np.uint8)

    def build(bb, xv):
        y = bb.emit(R.mean(dq(xv, 0.04, 20), axis=[2, 3], keepdims=True))
        return q(y, 0.03, 10, "uint8")

    got = realize_and_run(build, {"x": x})
    total = (x.astype(np.int64) - 20).sum(axis=(2, 3), keepdims=True)
    multiplier = np.float64(np.float32(0.04)) / (49 * np.float64(np.float32(0.03)))
    np.testing.assert_array_equal(got, requantize(total, multiplier, 10, 0, 255))


def test_relu_after_a_non_anchor_clamps_at_the_zero_point():
    x = RNG.integers(0, 256, (1, 8)).astype(np.uint8)

    def build(bb, xv):
        y = bb.emit(R.nn.relu(dq(xv, 0.1, 128)))
        return q(y, 0.1, 128, "uint8")

    np.testing.assert_array_equal(realize_and_run(build, {"x": x}), np.maximum(x, 128))


def test_requantize_between_two_scales():
    x = RNG.integers(-128, 128, (1, 10)).astype(np.int8)

    def build(bb, xv):
        return q(dq(xv, 0.1, 0), 0.3, 0, "int8")

    np.testing.assert_array_equal(realize_and_run(build, {"x": x}), rescaled([x], [0.1], [0], 0.3, 0, -128, 127))


def test_a_requantize_far_beyond_the_output_range_saturates():
    x = np.array([[-128, -1, 0, 1, 127]], np.int8)

    def build(bb, xv):  # 127 / 1e-8: beyond int32, where a float → int cast is undefined
        return q(dq(xv, 1.0, 0), 1e-8, 0, "int8")

    np.testing.assert_array_equal(realize_and_run(build, {"x": x}), [[-128, -128, 0, 127, 127]])


LOOKUP_CASES = [  # (op, function, input dtype, input scale and zero point, output scale and zero point)
    (R.sigmoid, lambda x: 1 / (1 + np.exp(-x)), "uint8", (0.06, 120), (1 / 255, 0)),
    (R.tanh, np.tanh, "int8", (0.03, 0), (1 / 127, 0)),
    (R.nn.gelu, lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))), "uint8", (0.05, 100),
     (0.03, 10)),
    (R.exp, np.exp, "int8", (0.02, 0), (0.06, 0)),  # e^x past 7.6 saturates at the output's top code
]


@pytest.mark.parametrize("op, function, dtype, x_params, out_params", LOOKUP_CASES,
                         ids=["sigmoid", "tanh", "gelu", "exp"])
def test_a_unary_nonlinearity_on_8_bits_is_a_table_within_one_step_of_the_float_function(op, function, dtype,
                                                                                            x_params, out_params):
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    codes = np.arange(lo, hi + 1).astype(dtype).reshape(1, -1)  # every input code once
    out_dtype = "uint8" if out_params[1] else "int8"
    got = realize_and_run(lambda bb, x: q(op(dq(x, *x_params)), *out_params, out_dtype), {"x": codes})
    real = function((codes.astype(np.float64) - x_params[1]) * x_params[0])
    q_lo, q_hi = (0, 255) if out_dtype == "uint8" else (-128, 127)
    expected = np.clip(np.round(real / out_params[0]) + out_params[1], q_lo, q_hi)
    assert got.dtype == np.dtype(out_dtype)
    assert np.abs(got.astype(np.int64) - expected).max() <= 1  # ties may round either way


def test_a_lookup_table_replaces_the_float_function():
    codes = np.arange(256).astype("uint8").reshape(1, -1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(codes.shape, "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(q(R.sigmoid(dq(x, 0.05, 128)), 1 / 255, 0, "uint8"))
        bb.emit_func_output(out)
    _, _, ops = count_ops(Realize()(bb.get()))
    assert "relax.sigmoid" not in ops["float"] and ops["integer"]["relax.take"] == 1


def hardswish(x):
    return x * np.clip(x + 3, 0, 6) / 6


def ops_after_realize(build, inputs: dict) -> dict:
    return count_ops(realized(build, inputs))[2]


def _hardswish_graph(bb, xv):
    """hardswish as onnx's importer writes it, with the quantize/dequantize pairs calibration puts between ops:
    x · clip(x + 3, 0, 6) / 6."""
    x = dq(xv, 0.05, 128)
    shifted = q(bb.emit(R.add(x, const(3.0, "float32"))), 0.05, 68, "uint8")
    clipped = q(bb.emit(R.clip(dq(shifted, 0.05, 68), 0, 6)), 0.05, 68, "uint8")
    gate = q(bb.emit(R.divide(dq(clipped, 0.05, 68), const(6.0, "float32"))), 1 / 255, 0, "uint8")
    return q(bb.emit(R.multiply(x, dq(gate, 1 / 255, 0))), 0.0264, 14, "uint8")


def _silu_graph(bb, xv):
    x = dq(xv, 0.05, 128)
    gate = q(bb.emit(R.sigmoid(x)), 1 / 255, 0, "uint8")
    return q(bb.emit(R.multiply(x, dq(gate, 1 / 255, 0))), 0.026, 11, "uint8")


@pytest.mark.parametrize("graph, function, out_params", [
    (_hardswish_graph, hardswish, (0.0264, 14)),
    (_silu_graph, lambda x: x / (1 + np.exp(-x)), (0.026, 11)),
], ids=["hardswish", "silu"])
def test_a_function_built_from_one_tensor_is_one_table_within_one_step_of_the_float_function(graph, function,
                                                                                             out_params):
    codes = np.arange(256).astype("uint8").reshape(1, -1)
    got = realize_and_run(graph, {"x": codes})
    real = function((codes.astype(np.float64) - 128) * 0.05)
    expected = np.clip(np.round(real / out_params[0]) + out_params[1], 0, 255)
    assert np.abs(got.astype(np.int64) - expected).max() <= 1
    ops = ops_after_realize(graph, {"x": codes})
    assert ops["integer"].get("relax.take") == 1, ops  # the steps composed into one lookup
    assert not {"relax.multiply", "relax.divide", "relax.sigmoid"} & set(ops["float"]), ops


def test_mul_of_two_quantized_tensors_broadcasts_a_gate_and_is_exact():
    """Squeeze-excite: a feature map times a per-channel gate, both 8-bit."""
    x = RNG.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)
    gate = RNG.integers(0, 256, (1, 4, 1, 1)).astype(np.uint8)

    def build(bb, xv, gv):
        return q(bb.emit(R.multiply(dq(xv, 0.04, 30), dq(gv, 1 / 255, 0))), 0.035, 25, "uint8")

    got = realize_and_run(build, {"x": x, "g": gate})
    m = np.float32(np.float64(np.float32(0.04)) * np.float64(np.float32(1 / 255)) / np.float64(np.float32(0.035)))
    product = (x.astype(np.float32) - 30) * gate.astype(np.float32) * m
    np.testing.assert_array_equal(got, np.clip(np.floor(product + np.float32(0.5)) + 25, 0, 255))
    real = (x.astype(np.float64) - 30) * 0.04 * gate / 255
    assert np.abs(got - np.clip(np.round(real / 0.035) + 25, 0, 255)).max() <= 1


def test_sub_of_two_quantized_tensors_is_exact():
    a = RNG.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)
    b = RNG.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)

    def build(bb, av, bv):
        return q(bb.emit(R.subtract(dq(av, 0.02, 10), dq(bv, 0.05, 200))), 0.06, 128, "uint8")

    got = realize_and_run(build, {"a": a, "b": b})
    real = (a.astype(np.float64) - 10) * 0.02 - (b.astype(np.float64) - 200) * 0.05
    assert np.abs(got - np.clip(np.round(real / 0.06) + 128, 0, 255)).max() <= 1


def test_a_batch_norm_no_conv_absorbs_is_one_per_channel_rescale_of_the_codes():
    """Pre-activation nets (DenseNet) normalize a concat's output before any conv; the importer writes it as
    (x − mean) / σ · γ + β, four ops with per-channel constants: one rescale, one rounding."""
    x = RNG.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)
    mean, sigma, gamma, beta = (RNG.uniform(lo, hi, (4, 1, 1)).astype(np.float32)
                                for lo, hi in ((-1, 1), (0.5, 2), (0.5, 2), (-1, 1)))
    steps = [(R.subtract, mean, (0.03, 130)), (R.divide, sigma, (0.06, 128)), (R.multiply, gamma, (0.1, 120)),
             (R.add, beta, (0.1, 100))]

    def build(bb, xv):
        y, params = xv, (0.03, 100)
        for op, c, out in steps:
            y, params = q(bb.emit(op(dq(y, *params), const(c, "float32"))), *out, "uint8"), out
        return y

    got = realize_and_run(build, {"x": x})
    real = ((x.astype(np.float64) - 100) * 0.03 - mean) / sigma * gamma + beta
    assert np.abs(got - np.clip(np.round(real / 0.1) + 100, 0, 255)).max() <= 1
    ops = ops_after_realize(build, {"x": x})
    assert ops["float"]["relax.floor"] == 1, ops  # one rounding: the four steps are one rescale


def test_an_upsampling_conv_transpose_is_an_integer_1x1_conv_and_a_pixel_shuffle_within_one_step():
    """kernel = stride (DBNet's 2×2 stride-2 head): with a zero point, since no inserted zeros must stand for it."""
    x = RNG.integers(0, 256, (1, 6, 4, 5)).astype(np.uint8)
    wq = RNG.integers(-127, 128, (6, 3, 2, 2)).astype(np.int8)  # IOHW
    s_w = RNG.uniform(0.005, 0.02, 3).astype(np.float32)
    bias = RNG.normal(0, 0.3, 3).astype(np.float32)
    s_x, z_x, s_o, z_o = 0.03, 117, 0.05, 60

    def build(bb, xv):
        y = bb.emit(R.nn.conv2d_transpose(dq(xv, s_x, z_x), dq(const(wq, "int8"), s_w, np.zeros(3), axis=1),
                                          strides=[2, 2]))
        y = bb.emit(R.add(y, const(bias.reshape(1, 3, 1, 1), "float32")))
        return q(y, s_o, z_o, "uint8")

    got = realize_and_run(build, {"x": x})
    assert got.shape == (1, 3, 8, 10)
    real = np.zeros((1, 3, 8, 10))
    centred = (x.astype(np.float64) - z_x) * s_x
    weights = wq.astype(np.float64) * s_w.reshape(1, 3, 1, 1)
    for dy in range(2):
        for dx in range(2):
            real[:, :, dy::2, dx::2] = np.einsum("nchw,co->nohw", centred, weights[:, :, dy, dx])
    real += bias.reshape(1, 3, 1, 1)
    assert np.abs(got.astype(np.int64) - np.clip(np.round(real / s_o) + z_o, 0, 255)).max() <= 1
