"""The fixed CPU schedule of injective kernels: vectorized without predicates, and still computing the same values."""

import numpy as np
import tvm
from tvm import te, topi

from qcompile import targets
from qcompile.cpu_schedule import schedule_injective


def _scheduled(compute, *shapes):
    """A one-kernel module built from `compute` over placeholders of `shapes`, after the injective rule."""
    inputs = [te.placeholder(shape, "float32", name=f"x{i}") for i, shape in enumerate(shapes)]
    func = te.create_prim_func([*inputs, compute(*inputs)]).with_attr("global_symbol", "main")
    target = targets.resolve("x86").tvm_target()
    return schedule_injective(tvm.IRModule({"main": func}), target), target


def _run(mod, target, *arrays, out_shape):
    lib = tvm.compile(mod, target=target)
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
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
