"""The default schedule of a matmul of two activations (attention's Q·Kᵀ, A·V): register tile, epilogue on the
tile, the numpy result."""

import numpy as np
import pytest
import tvm
from tvm import te

from qcompile import targets
from qcompile.lower import matmul_template

TARGET = targets.resolve("x86").tvm_target()
LANES = 8  # AVX2's int32 lanes: every x86-64 CPU qcompile builds for here has them


def _attention_scores(heads, rows, depth, columns, dtype):
    """[heads, rows, depth] × [heads, depth, columns] in int32, then a float scale: Q·Kᵀ as the realize pass
    leaves it."""
    a = te.placeholder((1, heads, rows, depth), dtype, name="a")
    b = te.placeholder((1, heads, depth, columns), dtype, name="b")
    k = te.reduce_axis((0, depth), "k")
    acc = te.compute((1, heads, rows, columns),
                     lambda n, h, i, j: te.sum(a[n, h, i, k].astype("int32") * b[n, h, k, j].astype("int32"), axis=k),
                     name="matmul")
    scaled = te.compute(acc.shape, lambda *i: acc(*i).astype("float32") * 0.125, name="scale")
    return te.create_prim_func([a, b, scaled]).with_attr("global_symbol", "main")


# 15 columns: a recognizer's attention head, which no vector width divides
@pytest.mark.parametrize("dtype, rows, columns", [("int16", 128, 128), ("int8", 6, 24), ("int16", 40, 15)])
def test_the_default_schedule_computes_the_matmul_and_its_epilogue(dtype, rows, columns):
    sch = matmul_template.default_schedule(_attention_scores(4, rows, 64, columns, dtype), LANES)
    script = sch.mod["main"].script()
    assert "T.vectorized" in script and 'scope="local"' in script  # a register tile, not TE's scalar loop nest
    rng = np.random.default_rng(0)
    limit = 128 if dtype == "int8" else 256  # 8-bit codes, or centred ones in 16 bits: sums stay exact in float32
    a = rng.integers(-limit, limit, (1, 4, rows, 64)).astype(dtype)
    b = rng.integers(-limit, limit, (1, 4, 64, columns)).astype(dtype)
    expected = np.matmul(a.astype(np.int64), b.astype(np.int64)).astype(np.float32) * np.float32(0.125)
    library = tvm.tirx.build(sch.mod, target=TARGET)
    out = tvm.runtime.tensor(np.zeros(expected.shape, np.float32))
    library["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    np.testing.assert_array_equal(out.numpy(), expected)  # int32 sums, then a power-of-two scale: exact


def test_a_matmul_whose_columns_are_not_contiguous_gets_no_template():
    a = te.placeholder((64, 32), "float32", name="a")
    b = te.placeholder((48, 32), "float32", name="b")  # read transposed: the columns are b's outer axis
    k = te.reduce_axis((0, 32), "k")
    c = te.compute((64, 48), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="matmul")
    assert matmul_template.default_schedule(te.create_prim_func([a, b, c]), LANES) is None


def test_elementwise_producers_of_the_operands_are_read_through_not_a_reason_to_give_up():
    # ExactFloatMatmul's form once fused: the int16 codes cast to float32 in blocks of their own, a float sum
    a = te.placeholder((1, 2, 16, 40), "int16", name="a")
    b = te.placeholder((1, 2, 40, 24), "int16", name="b")
    a_f = te.compute(a.shape, lambda *i: a(*i).astype("float32"), name="a_float")
    b_f = te.compute(b.shape, lambda *i: b(*i).astype("float32"), name="b_float")
    k = te.reduce_axis((0, 40), "k")
    acc = te.compute((1, 2, 16, 24), lambda n, h, i, j: te.sum(a_f[n, h, i, k] * b_f[n, h, k, j], axis=k),
                     name="matmul")
    out = te.compute(acc.shape, lambda *i: acc(*i).astype("int32"), name="integers")
    sch = matmul_template.default_schedule(te.create_prim_func([a, b, out]).with_attr("global_symbol", "main"), LANES)
    assert sch is not None and 'scope="local"' in sch.mod["main"].script()
    rng = np.random.default_rng(1)
    x, y = (rng.integers(-255, 256, shape).astype(np.int16) for shape in ((1, 2, 16, 40), (1, 2, 40, 24)))
    result = tvm.runtime.tensor(np.zeros((1, 2, 16, 24), np.int32))
    tvm.tirx.build(sch.mod, target=TARGET)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y), result)
    np.testing.assert_array_equal(result.numpy(), np.matmul(x.astype(np.int64), y.astype(np.int64)))
