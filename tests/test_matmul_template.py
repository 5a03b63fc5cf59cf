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


@pytest.mark.parametrize("dtype, rows, columns", [("int16", 128, 128), ("int8", 6, 24)])
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
