"""The fixed CPU schedules (injective kernels, re-blocking, packed depthwise convs): vectorized without predicates,
and still computing the same values."""

import numpy as np
import pytest
import tvm
from tvm import te, topi

from qcompile import targets
from qcompile.lower.cpu_schedule import schedule_injective


def _scheduled(compute, *shapes, dtypes=None):
    """A one-kernel module built from `compute` over placeholders of `shapes` (float32 unless `dtypes` says),
    after the fixed CPU rules."""
    dtypes = dtypes or ["float32"] * len(shapes)
    inputs = [te.placeholder(shape, dtype, name=f"x{i}") for i, (shape, dtype) in enumerate(zip(shapes, dtypes))]
    func = te.create_prim_func([*inputs, compute(*inputs)]).with_attr("global_symbol", "main")
    target = targets.resolve("x86").tvm_target()
    return schedule_injective(tvm.IRModule({"main": func}), target), target


def _run(mod, target, *arrays, out_shape, out_dtype=np.float32):
    lib = tvm.compile(mod, target=target)
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return out.numpy()


def test_a_kernel_whose_size_is_not_a_multiple_of_the_vector_vectorizes_its_rows_without_a_predicate():
    # padding a 3×224×224 image by one pixel: 3·225·225 elements, odd
    mod, target = _scheduled(lambda x: topi.nn.pad(x, (0, 0, 1, 1), (0, 0, 0, 0), pad_value=7.0), (1, 3, 224, 224))
    script = mod["main"].script()
    assert "T.vectorized" in script and "T.where" not in script
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = _run(mod, target, x, out_shape=(1, 3, 225, 225))
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), (1, 0), (1, 0)), constant_values=7.0))


def test_a_kernel_whose_size_is_a_multiple_of_the_vector_runs_as_one_flat_vector_loop():
    mod, target = _scheduled(lambda a, b: te.compute(a.shape, lambda *i: a(*i) * b(*i)), (4, 8, 16), (4, 8, 16))
    script = mod["main"].script()
    assert "T.vectorized" in script and "T.parallel" in script and "T.where" not in script
    a, b = (np.random.default_rng(s).standard_normal((4, 8, 16)).astype(np.float32) for s in (1, 2))
    np.testing.assert_array_equal(_run(mod, target, a, b, out_shape=(4, 8, 16)), a * b)


def test_an_operand_broadcast_along_outer_axes_is_read_once_per_step_not_gathered_per_lane():
    # int8-dynamic's quantize of a conv's output [1, C/8, 1, rows, 8] by a per-row scale [1, 1, 1, rows, 1]
    mod, target = _scheduled(lambda x, s: te.compute(x.shape, lambda b, c, h, r, k: x[b, c, h, r, k]
                                                     / s[b, 0, h, r, 0]), (1, 16, 1, 32, 8), (1, 1, 1, 32, 1))
    vector = [loop for loop in _loops(mod["main"]) if loop.kind == tvm.tirx.stmt.ForKind.VECTORIZED]
    assert [int(loop.extent) for loop in vector] == [8]  # the lanes of one row; the scale one value for them
    x = np.random.default_rng(3).standard_normal((1, 16, 1, 32, 8)).astype(np.float32)
    scale = np.random.default_rng(4).uniform(0.5, 2, (1, 1, 1, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(_run(mod, target, x, scale, out_shape=x.shape), x / scale)


def test_a_transpose_is_computed_in_square_tiles_of_vectors():
    # a conv's output [1, C, 1, T] as attention's rows [1, T, C], plus a residual
    mod, target = _scheduled(lambda x, r: te.compute(r.shape, lambda b, t, c: x[b, c, 0, t] + r[b, t, c]),
                             (1, 64, 1, 32), (1, 32, 64))
    loops = _loops(mod["main"])
    assert [int(loop.extent) for loop in loops[-2:]] == [8, 8]  # a tile's rows, over a vector of its columns
    assert loops[-1].kind == tvm.tirx.stmt.ForKind.VECTORIZED and loops[-2].kind == tvm.tirx.stmt.ForKind.UNROLLED
    x = np.random.default_rng(5).standard_normal((1, 64, 1, 32)).astype(np.float32)
    r = np.random.default_rng(6).standard_normal((1, 32, 64)).astype(np.float32)
    np.testing.assert_array_equal(_run(mod, target, x, r, out_shape=r.shape), x[:, :, 0].transpose(0, 2, 1) + r)


@pytest.mark.parametrize("heads", [1, 2])
def test_a_blocked_operand_read_into_rows_is_vectorized_over_its_lanes_not_gathered(heads):
    # a conv's output in NCHW8c [1, 64/8, 1, T, 8] as attention's rows [1, T, 64] plus a residual (one head), or
    # as its heads [1, 2, T, 32]
    width = 64 // heads

    def rows(x, r):
        return te.compute(r.shape, lambda b, t, c: x[b, c // 8, 0, t, c % 8] + r[b, t, c])

    def split_heads(x):
        return te.compute((1, heads, 32, width), lambda b, h, t, d: x[b, (h * width + d) // 8, 0, t, (h * width + d) % 8])

    x = np.random.default_rng(11).standard_normal((1, 8, 1, 32, 8)).astype(np.float32)
    channels_last = x[:, :, 0].transpose(0, 2, 1, 3).reshape(1, 32, 64)
    if heads == 1:
        r = np.random.default_rng(12).standard_normal((1, 32, 64)).astype(np.float32)
        mod, target = _scheduled(rows, x.shape, r.shape)
        arrays, expected = (x, r), channels_last + r
    else:
        mod, target = _scheduled(split_heads, x.shape)
        arrays, expected = (x,), channels_last.reshape(1, 32, heads, width).transpose(0, 2, 1, 3)
    loops = _loops(mod["main"])
    assert int(loops[-1].extent) == 8 and loops[-1].kind == tvm.tirx.stmt.ForKind.VECTORIZED  # one block's lanes
    np.testing.assert_array_equal(_run(mod, target, *arrays, out_shape=expected.shape), expected)


def test_a_row_reduction_keeps_a_vector_of_partial_results_per_row():
    # int8-dynamic's per-row range: max |x| over each row of 256
    def row_max(x):
        k = te.reduce_axis((0, 256), "k")
        return te.compute((1, 32, 1), lambda b, t, _: te.max(te.abs(x[b, t, k]), axis=k))

    mod, target = _scheduled(row_max, (1, 32, 256))
    assert "T.vectorized(16)" in mod["main"].script()
    x = np.random.default_rng(7).standard_normal((1, 32, 256)).astype(np.float32)
    np.testing.assert_array_equal(_run(mod, target, x, out_shape=(1, 32, 1)), np.abs(x).max(-1, keepdims=True))


def test_a_reduction_over_blocks_and_lanes_steps_through_the_blocks_with_a_vector_of_lanes():
    # int8-dynamic's range of a conv's output in NCHW8c: max |x| over the channel blocks and their 8 lanes
    def blocked_max(x):
        blocks, lanes = te.reduce_axis((0, 16), "blocks"), te.reduce_axis((0, 8), "lanes")
        return te.compute((1, 1, 1, 32, 1), lambda b, _, h, t, __: te.max(te.abs(x[b, blocks, h, t, lanes]),
                                                                            axis=[blocks, lanes]))

    mod, target = _scheduled(blocked_max, (1, 16, 1, 32, 8))
    assert mod["main"].script().count("T.vectorized(8)") == 2  # the partial results' init and update
    x = np.random.default_rng(10).standard_normal((1, 16, 1, 32, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(mod, target, x, out_shape=(1, 1, 1, 32, 1)),
                                  np.abs(x).max(axis=(1, 4), keepdims=True))


def _loops(func) -> list:
    """Every loop (`For`) of a one-block kernel."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    block = sch.get_child_blocks(sch.get_sblock("root"))[0]
    return [sch.get(loop) for loop in sch.get_loops(block)]


def _depthwise_reference(data, kernel, stride):
    """NCHW[k]c depthwise conv with one pixel of zero padding, in numpy (int32 sums)."""
    padded = np.pad(data.astype(np.int32), ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    out_h, out_w = (data.shape[2] - 1) // stride + 1, (data.shape[3] - 1) // stride + 1
    out = np.zeros((*data.shape[:2], out_h, out_w, data.shape[4]), np.int32)
    for ry in range(3):
        for rx in range(3):
            window = padded[:, :, ry:ry + stride * out_h:stride, rx:rx + stride * out_w:stride]
            out += window * kernel[None, :, ry, rx, None, None, :].astype(np.int32)
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_a_packed_depthwise_conv_gets_a_fixed_schedule_that_computes_the_same_integers(stride):
    from qcompile.lower.passes.pack_conv import _depthwise_blocked

    def conv_and_requantize(x, w):
        acc = _depthwise_blocked(x, w, (stride, stride), (1, 1, 1, 1), (1, 1))
        # a requantize epilogue like realize's: float32 multiply, round half up, clamp to uint8
        return te.compute(acc.shape, lambda *i: te.max(te.min(te.floor(acc(*i).astype("float32") * 0.05 + 0.5),
                                                              255.0), 0.0).astype("uint8"))

    rng = np.random.default_rng(stride)
    data = rng.integers(0, 256, (1, 2, 12, 12, 16)).astype(np.uint8)
    kernel = rng.integers(-128, 128, (2, 3, 3, 16)).astype(np.int8)
    scaled = _depthwise_reference(data, kernel, stride).astype(np.float32) * np.float32(0.05)
    expected = np.clip(np.floor(scaled + np.float32(0.5)), 0, 255)
    mod, target = _scheduled(conv_and_requantize, data.shape, kernel.shape, dtypes=["uint8", "int8"])
    assert mod["main"].attrs["tirx.is_scheduled"]
    assert "T.vectorized" in mod["main"].script()
    result = _run(mod, target, data, kernel, out_shape=expected.shape, out_dtype=np.uint8)
    np.testing.assert_array_equal(result, expected.astype(np.uint8))


def test_a_blocked_concat_repacked_to_nchw4c_is_scheduled_source_block_by_source_block():
    from qcompile.lower.passes.pack_conv import to_blocked, unpack

    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 256, (1, 2, 5, 7, 16)).astype(np.uint8) for _ in range(2)]
    mod, target = _scheduled(lambda a, b: to_blocked(unpack(topi.concatenate([a, b], axis=1), 64), 4),
                             *(p.shape for p in parts), dtypes=["uint8", "uint8"])
    assert "T.vectorized" in mod["main"].script()  # the 4 lanes of an output block, one 32-bit move
    result = _run(mod, target, *parts, out_shape=(1, 16, 5, 7, 4), out_dtype=np.uint8)
    nchw = np.concatenate(parts, axis=1).transpose(0, 1, 4, 2, 3).reshape(1, 64, 5, 7)
    expected = nchw.reshape(1, 16, 4, 5, 7).transpose(0, 1, 3, 4, 2)
    np.testing.assert_array_equal(result, expected)


def test_a_blocked_tensor_padded_into_the_same_blocks_is_copied_a_vector_of_lanes_at_a_time():
    # a conv's result unpacked, padded with its zero point and packed for a 5x5 conv (PP-OCRv4 rec's)
    from qcompile.lower.passes.pack_conv import to_blocked, unpack

    x = np.random.default_rng(4).integers(0, 256, (1, 3, 4, 6, 8)).astype(np.uint8)
    pad = lambda t: topi.nn.pad(t, (0, 0, 2, 2), (0, 0, 2, 2), pad_value=tvm.tirx.const(7, "uint8"))
    mod, target = _scheduled(lambda a: to_blocked(pad(unpack(a, 24)), 8), x.shape, dtypes=["uint8"])
    assert "T.vectorized(8)" in mod["main"].script()
    result = _run(mod, target, x, out_shape=(1, 3, 8, 10, 8), out_dtype=np.uint8)
    np.testing.assert_array_equal(result, np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2), (0, 0)), constant_values=7))


def test_a_lookup_by_byte_codes_is_vectorized_over_16_lanes_not_64():
    # an 8-bit function's table indexed by a conv's uint8 codes: each lane's index is loaded alone, so a vector of
    # 64 bytes (what a byte-wide kernel gets) would be 64 scalar loads (PP-OCRv4 det's tables: 0.07 → 0.32 ms)
    table = np.arange(256, dtype=np.uint8)[::-1].copy()
    codes = np.random.default_rng(5).integers(0, 256, (1, 4, 6, 8, 8)).astype(np.uint8)
    mod, target = _scheduled(lambda t, c: topi.take(t, c, axis=0, mode="clip"), table.shape, codes.shape,
                             dtypes=["uint8", "uint8"])
    assert "T.vectorized(16)" in mod["main"].script()
    np.testing.assert_array_equal(_run(mod, target, table, codes, out_shape=codes.shape, out_dtype=np.uint8),
                                  table[codes])


def test_a_maximum_over_the_channels_of_every_position_reads_rows_of_positions_as_vectors():
    """int8-dynamic's row maxima in a conv's [1, C, 1, rows] layout: abs, then max over C."""
    def row_max(x):
        magnitude = te.compute(x.shape, lambda *i: te.abs(x(*i)), name="magnitude")
        return topi.max(magnitude, axis=1, keepdims=True)

    mod, target = _scheduled(row_max, (1, 64, 1, 128))
    script = mod["main"].script()
    assert "T.vectorized" in script
    x = np.random.default_rng(3).standard_normal((1, 64, 1, 128)).astype(np.float32)
    np.testing.assert_array_equal(_run(mod, target, x, out_shape=(1, 1, 1, 128)), np.abs(x).max(axis=1, keepdims=True))


def test_a_sum_over_the_innermost_axes_is_left_to_tuning_where_no_vector_divides_them():
    # NCHW's global pool over 7 × 7 positions: 49, which no width of 8 to 16 partial results divides
    mod, _ = _scheduled(lambda x: topi.sum(x, axis=[2, 3]), (1, 64, 7, 7))
    assert not mod["main"].attrs or not mod["main"].attrs.get("tirx.is_scheduled", False)


@pytest.mark.parametrize("shape, partials", [((1, 32, 24, 20), 16), ((1, 40, 13, 13), 13)])
def test_a_global_pool_over_the_innermost_axes_reads_them_as_one_row_of_vector_partials(shape, partials):
    # a squeeze-excite block's sum over 24 × 20 positions (PP-OCRv4 det's: 0.43 → 0.08 ms), one row of 480;
    # SqueezeNet's mean over 13 × 13, a row of 169 in 13 partials and the division after them
    positions = shape[2] * shape[3]

    def pool(x):
        total = topi.sum(x, axis=[2, 3])
        return total if partials == 16 else te.compute(total.shape, lambda *i: total(*i) / positions)

    mod, target = _scheduled(pool, shape)
    assert f"T.vectorized({partials})" in mod["main"].script()
    x = np.random.default_rng(16).standard_normal(shape).astype(np.float32)
    expected = x.sum((2, 3)) if partials == 16 else x.mean((2, 3))
    np.testing.assert_allclose(_run(mod, target, x, out_shape=shape[:2]), expected, rtol=1e-5, atol=1e-5)


def test_a_layer_norm_gets_a_row_by_row_schedule_with_vector_partial_sums_and_computes_it():
    mod, target = _scheduled(lambda x, g, b: topi.nn.layer_norm(x, g, b, axis=[-1], epsilon=1e-5),
                             (1, 32, 256), (256,), (256,))
    assert mod["main"].attrs.get("tirx.is_scheduled", False) and "T.vectorized" in mod["main"].script()
    rng = np.random.default_rng(5)
    x, gamma, beta = (rng.standard_normal(s).astype(np.float32) for s in ((1, 32, 256), (256,), (256,)))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * gamma + beta
    # the partial sums add in another order than numpy's: float32 rounding, 1e-5 of values of order 1
    np.testing.assert_allclose(_run(mod, target, x, gamma, beta, out_shape=(1, 32, 256)), expected, atol=1e-5)


# 40: a recognizer's attention over its steps; 6625: its classes, which no vector width divides
@pytest.mark.parametrize("width, partials", [(128, 16), (40, 8), (6625, 25)])
def test_a_softmax_gets_the_row_schedule_and_computes_it(width, partials):
    shape = (4, 128, width) if width < 1000 else (3, width)
    mod, target = _scheduled(lambda x: topi.nn.softmax(x, axis=-1), shape)
    assert mod["main"].attrs.get("tirx.is_scheduled", False)
    assert f"T.vectorized({partials})" in mod["main"].script()  # the reductions' partial results
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32) * 4
    expected = np.exp(x - x.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(_run(mod, target, x, out_shape=shape), expected, rtol=1e-5, atol=1e-7)
