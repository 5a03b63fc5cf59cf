"""The frontend: shape computations folded so that TVM imports what onnxruntime runs."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import EXAMPLE_MODEL, run_cli
from qcompile.frontend import importer
from qcompile.frontend.fold import fold_shapes


def _reshape_by_computed_shape(path):
    """x [1, 8, 4, 4] → GlobalAveragePool → Reshape to [batch, channels] where the shape is computed from x as
    Shape → Gather → Concat (as PaddleOCR's exports write it), then a MatMul."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w")]
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["channels"], axis=0),
        helper.make_node("Concat", ["batch", "channels"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["pooled", "new_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "computed_shape", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                      ["N", 8, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_reshape_to_a_computed_shape_builds_and_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    path = _reshape_by_computed_shape(tmp_path / "computed.onnx")
    assert run_cli("build", path, "--precision", "fp32", "-o", tmp_path / "computed.so", "-q") == 0
    x = np.random.default_rng(1).standard_normal((1, 8, 4, 4)).astype(np.float32)
    (ours,) = qcompile.load(tmp_path / "computed.so")(x)
    (theirs,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_folding_removes_the_shape_computation_and_keeps_the_file_hash(tmp_path):
    model = importer.load(_reshape_by_computed_shape(tmp_path / "computed.onnx"))
    folded = fold_shapes(model, importer.static_inputs(model, {}))
    ops = [n.op_type for n in folded.proto.graph.node]
    assert "Shape" not in ops and "Gather" not in ops and "Reshape" in ops
    assert folded.sha256 == model.sha256  # tuning records are keyed by the file


def test_a_model_without_shape_computations_is_imported_as_it_is():
    model = importer.load(EXAMPLE_MODEL)
    assert fold_shapes(model, importer.static_inputs(model, {})) is model


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("ch_ppocr_mobile_v2.0_cls_infer.onnx", "1x3x48x192"),
                                         ("ch_PP-OCRv4_rec_infer.onnx", "1x3x48x320")])
def test_the_pp_ocr_models_import_and_match_onnxruntime_in_fp32(name, shape, tmp_path):
    import onnxruntime as ort

    from conftest import MODELS

    library = tmp_path / "model.so"
    assert run_cli("build", MODELS / name, "--precision", "fp32", "--input-shape", f"x:{shape}", "-o", library,
                   "-q") == 0
    x = np.random.default_rng(2).uniform(-1, 1, [int(d) for d in shape.split("x")]).astype(np.float32)
    (ours,) = qcompile.load(library)(x)
    (theirs,) = ort.InferenceSession(str(MODELS / name), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # relative to the output's range: summation order alone moves it by ~1e-5 here
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()


def test_a_1d_conv_and_the_ops_after_it_become_a_2d_conv_over_one_row():
    import tvm
    from tvm.script import ir as I
    from tvm.script import relax as R

    from qcompile.frontend.conv1d_as_conv2d import Conv1dAsConv2d

    rng = np.random.default_rng(3)
    w1, w2 = rng.standard_normal((6, 4, 3)).astype(np.float32), rng.standard_normal((5, 6, 1)).astype(np.float32)
    bias = rng.standard_normal((1, 6, 1)).astype(np.float32)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4, 10), "float32")) -> R.Tensor((2, 5, 5), "float32"):
            with R.dataflow():
                c = R.nn.conv1d(x, R.const(w1), strides=[2], padding=[1, 1])
                b = R.add(c, R.const(bias))
                r = R.nn.relu(b)
                y = R.nn.conv1d(r, R.const(w2))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4, 10), "float32")) -> R.Tensor((2, 5, 5), "float32"):
            with R.dataflow():
                row = R.expand_dims(x, [2])
                c = R.nn.conv2d(row, R.const(w1[:, :, None, :]), strides=[1, 2], padding=[0, 1, 0, 1])
                b = R.add(c, R.const(bias.reshape(1, 6, 1, 1)))
                r = R.nn.relu(b)
                y = R.nn.conv2d(r, R.const(w2[:, :, None, :]))
                out = R.squeeze(y, [2])
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(Conv1dAsConv2d()(Before), Expected)


def _signal_model(path, nodes, inits, in_shape, out_shape):
    """A float model of `nodes` from input x to output y, saved at `path` and loaded as the importer reads it."""
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.save(proto, path)
    return importer.load(path)


def test_a_batch_norm_after_a_1d_conv_is_folded_into_it(tmp_path):
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 8, 3)).astype(np.float32), "w"),
             *(numpy_helper.from_array(rng.uniform(0.5, 2, 6).astype(np.float32), name) for name in ("g", "v")),
             *(numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), name) for name in ("b", "m"))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    model = _signal_model(tmp_path / "conv_bn.onnx", nodes, inits, [1, 8, 20], [1, 6, 20])
    text = importer.to_relax(model, importer.static_inputs(model, {}))["main"].script()
    # one conv with the batch norm in its weights and bias: nothing of the norm left to run
    assert text.count("R.nn.conv2d") == 1 and "batch_norm" not in text and "multiply" not in text, text


def test_1d_convs_quantize_to_integer_convs(tmp_path):
    # TVM's conv1d had no quantizer rule: a 1-D conv net's "INT8" build kept every conv in FP32
    from qcompile.quantize.quantizer import QuantConfig, anchor_names, quantize
    from qcompile.quantize.report import count_ops

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 1, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 6, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], strides=[4]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1])]
    model = _signal_model(tmp_path / "signal.onnx", nodes, inits, [1, 1, 64], [1, 4, 13])
    samples = [[rng.standard_normal((1, 1, 64)).astype(np.float32)] for _ in range(4)]
    realized = quantize(importer.to_relax(model, importer.static_inputs(model, {})), samples, QuantConfig(),
                        anchor_names(model)).mod
    assert count_ops(realized)[:2] == (2, 0)  # both convs in integers, none in FP32
