"""Constant tables read at run-time indices (Gather → take, embeddings): int8 rows in every int8 precision."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax import op as R

import qcompile
from conftest import run_cli
from qcompile.ir import constant_value
from qcompile.quantize.passes.quantize_tables import QuantizeTables
from qcompile.quantize.report import count_ops
from test_hybrid import constants, lowered_kernels

RNG = np.random.default_rng(3)
TABLE = (RNG.standard_normal((512, 8)) * np.linspace(0.01, 4, 512)[:, None]).astype(np.float32)  # rows of all sizes


def lookup(table, indices_shape=(2, 3), axis=0, mode="clip"):
    bb = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType(indices_shape, "int64"))
    with bb.function("main", [ids]):
        with bb.dataflow():
            out = bb.emit_output(R.take(relax.const(table), ids, axis=axis, mode=mode))
        bb.emit_func_output(out)
    return bb.get()


def test_a_table_is_stored_as_int8_rows_with_one_scale_each_read_in_one_kernel():
    # numpy's reference: symmetric per-row scales from each row's largest magnitude, codes in [-127, 127]
    scale = (np.abs(TABLE).max(axis=1) / 127).astype(np.float32)
    codes = np.clip(np.round(TABLE / scale[:, None]), -127, 127).astype(np.int8)
    after = QuantizeTables()(lookup(TABLE))
    calls = []
    relax.analysis.post_order_visit(after["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) else None)
    # one kernel, so that the quantizer sees its float result as one value (not a multiply of two tensors)
    assert [c.op.name for c in calls] == ["relax.call_tir"]
    table, scales = (constant_value(a) for a in calls[0].args[1].fields[:2])
    np.testing.assert_array_equal(table, codes)
    np.testing.assert_array_equal(scales, scale)
    assert count_ops(after)[2]["float"] == {"gather_int8_rows": 1}  # the report names the kernel, not call_tir


def test_the_int8_rows_read_back_within_half_a_step_of_the_float_table_and_clip_indices_as_before():
    ids = np.array([[0, 511, 7], [13, 600, 25]])  # 600 is past the table: clipped to its last row, as before
    ex = tvm.compile(QuantizeTables()(lookup(TABLE)), target="llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(ids)).numpy()
    want = TABLE[np.minimum(ids, 511)]
    step = np.abs(want).max(axis=-1, keepdims=True) / 127
    assert np.all(np.abs(got - want) <= step / 2 * (1 + 1e-5))


@pytest.mark.parametrize("table, axis", [(TABLE[:, 0].copy(), 0), (TABLE, 1), (TABLE.astype(np.float16), 0),
                                         (TABLE[:100], 0), (np.repeat(TABLE[:, :4], 4, axis=0), 0)],
                         ids=["one-value rows", "columns", "float16", "small table", "short rows"])
def test_tables_without_float32_rows_along_axis_0_stay_as_they_are(table, axis):
    before = lookup(table, axis=axis)
    tvm.ir.assert_structural_equal(QuantizeTables()(before), before)


def embedding_model(path, vocab=300, width=32):
    """ids [1, 16] → Gather from a vocab × width table → MatMul width × 8 → Relu: a text model's first layer."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((vocab, width))).astype(np.float32), "table"),
             numpy_helper.from_array((rng.standard_normal((width, 8)) / np.sqrt(width)).astype(np.float32), "w")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0, name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["h"], name="fc"), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("precision", ["int8", "int8-weights", "int8-dynamic"])
def test_every_int8_precision_holds_the_embedding_in_int8_and_stays_close_to_onnxruntime_fp32(precision, tmp_path):
    model = embedding_model(tmp_path / "embed.onnx")
    calib = tmp_path / "ids.npy"
    np.save(calib, np.random.default_rng(1).integers(0, 300, (16, 1, 16)))
    shapes = {(c.dtype.name, c.shape) for c in constants(lowered_kernels(model, precision, calib=calib))}
    assert ("int8", (300, 32)) in shapes and ("float32", (300, 32)) not in shapes

    library = tmp_path / f"embed_{precision}.so"
    assert run_cli("build", model, "--precision", precision, "--calib", calib, "-o", library, "-q") == 0
    ours = qcompile.load(library)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(7).integers(0, 300, (4, 1, 16))  # not the calibration's
    a = np.concatenate([ours(ids=i)[0].ravel() for i in ids]).astype(np.float64)
    b = np.concatenate([session.run(None, {"ids": i})[0].ravel() for i in ids]).astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.999


def test_excluding_gather_keeps_the_table_in_float(tmp_path):
    model = embedding_model(tmp_path / "embed.onnx")
    shapes = {(c.dtype.name, c.shape) for c in constants(lowered_kernels(model, "int8-dynamic",
                                                                          exclude=frozenset({"Gather"})))}
    assert ("float32", (300, 32)) in shapes and ("int8", (300, 32)) not in shapes
