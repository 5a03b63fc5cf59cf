"""--precision int8-weights and int8-dynamic: int8 weights without calibration, in real kernels."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import run_cli
from qcompile import targets
from qcompile.data.calibdata import DataSource
from qcompile.driver import CompileRequest, lower_model
from qcompile.quantize.quantizer import QuantConfig
from qcompile.ir import constant_value
from qcompile.lower import compiler
from test_recurrent import recurrent_model


def mlp(path, width=64):
    """x [4, 32] → MatMul 32×width → Add → Relu → MatMul width×10."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)
             for name, shape in (("w1", (32, width)), ("w2", (width, 10)))]
    inits.append(numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b1"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def heads(path, width=32, count=2):
    """x [1, 16, width] → MatMul width×width → Reshape, Transpose into `count` heads [1, count, 16, width/count],
    as attention splits its queries."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 16, count, width // count], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"], name="query"),
             helper.make_node("Reshape", ["q", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, count, 16, width // count])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def lowered_kernels(path, precision, exclude=frozenset(), calib=None):
    spec = targets.resolve("x86")
    request = CompileRequest(model=path, target=spec, precision=precision,
                             calib=None if calib is None else DataSource(calib),
                             quant=QuantConfig(exclude=exclude))
    return compiler.lower_kernels(lower_model(request).mod, spec)


def constants(mod) -> list[np.ndarray]:
    from tvm.ir.expr import GenericConst

    found = []
    tvm.relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(constant_value(e)) if isinstance(e, GenericConst) else None)
    return found


def kernel_calls(mod) -> list[tuple[str, list[str]]]:
    """(kernel name, input dtypes) of every TIR kernel `main` calls."""
    calls = []

    def visit(expr):
        if isinstance(expr, tvm.relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            calls.append((expr.args[0].name_hint, [str(a.ty.dtype) for a in expr.args[1].fields]))

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def test_int8_weights_libraries_hold_the_matmul_weights_as_int8_constants(tmp_path):
    kernels = lowered_kernels(mlp(tmp_path / "mlp.onnx"), "int8-weights")
    shapes = {(c.dtype.name, c.shape) for c in constants(kernels)}
    for weight in ((32, 64), (64, 10)):
        assert ("int8", weight) in shapes and ("float32", weight) not in shapes  # not folded back to float


def test_int8_dynamic_matmuls_multiply_8_bit_integers_into_int32(tmp_path):
    from qcompile.lower.kernels import CONV_BLOCK

    kernels = lowered_kernels(mlp(tmp_path / "mlp.onnx"), "int8-dynamic")
    # a matmul kernel, or the packed 1×1 conv it becomes where the CPU has an int8 dot product (MatmulAsConv)
    matmuls = [(name, dtypes) for name, dtypes in kernel_calls(kernels) if "matmul" in name or CONV_BLOCK in name]
    assert len(matmuls) == 2  # both layers
    for name, dtypes in matmuls:
        # 8-bit activations and weights, their products accumulated in int32: the sum reads integers only, the
        # float conversion (the row and column scales, in the kernel's epilogue) comes after it
        assert dtypes[:2] in (["uint8", "int8"], ["int8", "int8"])
        sums = [b for b in _blocks(kernels[name]) if "matmul" in b.name_hint or CONV_BLOCK in b.name_hint]
        assert sums and all(str(r.source.dtype).startswith(("int", "uint")) for b in sums for r in b.reads)
        assert all(str(w.source.dtype) == "int32" for b in sums for w in b.writes)
    assert not [c for c in constants(kernels) if c.dtype == np.float32 and c.ndim == 2]  # no float weights left


def _blocks(func) -> list:
    """The compute blocks of a (fused, not yet scheduled) kernel."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]


@pytest.mark.parametrize("precision", ["int8-weights", "int8-dynamic"])
def test_an_excluded_layer_keeps_its_float_weights_in_the_hybrid_modes(precision, tmp_path):
    model = mlp(tmp_path / "mlp.onnx")
    w2 = next(numpy_helper.to_array(t) for t in onnx.load(model).graph.initializer if t.name == "w2")
    found = constants(lowered_kernels(model, precision, exclude=frozenset({"fc2"})))
    # fc1's 32×64 int8 weights (as they are, or packed for a dot-product instruction: the same bytes), fc2's
    # float ones (as they are, or packed for FMA vectors, zero-padded: the same values)
    assert [c.size for c in found if c.dtype == np.int8] == [32 * 64]
    assert any(c.dtype == np.float32 and np.array_equal(np.sort(c[c != 0]), np.sort(w2.ravel())) for c in found)


def test_a_projection_split_into_heads_leaves_its_conv_through_one_layout_kernel(tmp_path):
    from qcompile.lower.kernels import UNPACK

    names = [name for name, _ in kernel_calls(lowered_kernels(heads(tmp_path / "heads.onnx"), "int8-dynamic"))]
    # the packed conv's result goes to the heads' layout in one kernel: its unpack fused with the transpose, not
    # an unpack to NCHW and a transpose after it
    unpacks = [name for name in names if UNPACK in name]
    assert unpacks and all("transpose" in name for name in unpacks), names


@pytest.mark.parametrize("precision, bound", [("int8-weights", 0.9999), ("int8-dynamic", 0.999)])
def test_hybrid_builds_stay_close_to_onnxruntime_fp32(precision, bound, tmp_path):
    for path in (mlp(tmp_path / "mlp.onnx"), heads(tmp_path / "heads.onnx"),
                 recurrent_model(tmp_path / "lstm.onnx", "LSTM", seq=6, batch=1, width=16, hidden=16)):
        library = tmp_path / f"{path.stem}_{precision}.so"
        assert run_cli("build", path, "--precision", precision, "-o", library, "-q") == 0  # no calibration data
        model = qcompile.load(library)
        assert model.sidecar.precision == precision
        rng = np.random.default_rng(5)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for _ in range(4):
            feeds = {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in model.inputs}
            for ours, theirs in zip(model(**feeds), session.run(None, feeds)):
                a, b = ours.ravel().astype(np.float64), theirs.ravel().astype(np.float64)
                assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= bound
