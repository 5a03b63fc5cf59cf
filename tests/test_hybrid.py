"""--precision int8-weights and int8-dynamic: int8 weights without calibration, in real kernels."""

import re

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
    return [(call.args[0].name_hint, [str(a.ty.dtype) for a in call.args[1].fields]) for call in _calls(mod)]


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


def _calls(mod) -> list:
    """Every `call_tir` of `main`."""
    found = []
    tvm.relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e) if isinstance(e, tvm.relax.Call)
                                        and getattr(e.op, "name", "") == "relax.call_tir" else None)
    return found


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
    for path in (mlp(tmp_path / "mlp.onnx"), heads(tmp_path / "heads.onnx"), cnn(tmp_path / "cnn.onnx"),
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


def cnn(path):
    """x [1, 3, 16, 16] → Conv 3×3 pad 1 → Relu → Conv 3×3 stride 2 → Relu → depthwise Conv 3×3 pad 1 →
    Conv 1×1: the dynamic form's signed and non-negative inputs, padding, strides and groups."""
    rng = np.random.default_rng(2)
    shapes = {"w1": (8, 3, 3, 3), "w2": (16, 8, 3, 3), "w3": (16, 1, 3, 3), "w4": (10, 16, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32), n)
             for n, s in shapes.items()]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], group=16),
             helper.make_node("Conv", ["c3", "w4"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10, 7, 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_int8_dynamic_convs_multiply_8_bit_integers_into_int32_and_hold_int8_weights(tmp_path):
    from qcompile.lower.kernels import CONV_BLOCK

    kernels = lowered_kernels(cnn(tmp_path / "cnn.onnx"), "int8-dynamic")
    convs = [(name, dtypes) for name, dtypes in kernel_calls(kernels) if "conv2d" in name or "depthwise" in name]
    assert len(convs) == 4, kernel_calls(kernels)
    for name, dtypes in convs:
        assert dtypes[0] in ("uint8", "int8") and dtypes[1] in ("int8", "int16"), (name, dtypes)
    sums = [b for name, _ in convs for b in _blocks(kernels[name]) if CONV_BLOCK in b.name_hint]
    assert sums and all(str(w.source.dtype) == "int32" for b in sums for w in b.writes)
    assert not [c for c in constants(kernels) if c.dtype == np.float32 and c.size >= 8 * 3 * 3 * 3]
    # the scales (the weights' per channel, the input's from its run-time range) are the packed convs' epilogue,
    # and each conv's input range is the maximum over its producer's blocked result, not over an unpacked copy
    assert all("multiply" in name for name, _ in convs if CONV_BLOCK in name), convs
    ranges = [call for call in _calls(kernels) if re.search(r"(^|_)max\d*$", call.args[0].name_hint)]
    assert [len(call.args[1].fields[0].ty.shape) for call in ranges] == [4, 5, 5, 5]  # the model's input, then blocked


@pytest.mark.parametrize("relu, steps, zero_point", [(True, 255, 0), (False, 127, 128)],
                         ids=["after-relu", "signed-input"])
def test_a_dynamic_conv_quantizes_its_input_from_its_own_range_with_a_fixed_zero_point(relu, steps, zero_point):
    """Against numpy doing the same arithmetic: m = max|x| per sample; codes floor(x·steps/m + 0.5) + zero point,
    255 steps from 0 for a ReLU's non-negative result, 127 each side of 128 for anything else; the conv of the
    centred codes with per-channel int8 weights, times both scales."""
    from tvm import relax
    from tvm.relax import op as Rop

    from qcompile.quantize.passes.hybrid import HybridQuantize

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((1, 4, 9, 9)) * 3).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    bb = relax.BlockBuilder()
    var = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [var]):
        with bb.dataflow():
            data = bb.emit(Rop.nn.relu(var)) if relu else var
            out = bb.emit_output(Rop.nn.conv2d(data, relax.const(w), padding=[1, 1, 1, 1]))
        bb.emit_func_output(out)
    ex = tvm.compile(HybridQuantize("int8-dynamic", "uint8")(bb.get()), target="llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    data = np.maximum(x, 0) if relu else x
    scale = np.float32(np.abs(data).max()) / np.float32(steps)
    codes = np.floor(data * (np.float32(1) / scale) + np.float32(0.5 + zero_point)) - zero_point
    w_scale = np.abs(w).max(axis=(1, 2, 3)) / 127
    w_q = np.round(w / w_scale[:, None, None, None])
    padded = np.pad(codes, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded[0], (3, 3), axis=(1, 2))  # [c, y, x, 3, 3]
    acc = np.einsum("cyxij,ocij->oyx", windows.astype(np.float64), w_q.astype(np.float64))[None]
    want = acc * scale * w_scale[None, :, None, None]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
