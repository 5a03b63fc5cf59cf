"""FP32 parity per imported operator family: a one- or few-node ONNX model built by qcompile against onnxruntime,
on random inputs, within a tolerance scaled to the output's range."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import run_cli

RNG = np.random.default_rng(5)
X = [1, 8, 6, 6]


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


# name → (nodes, initializers, input shape, output shape, opset)
CASES = {
    "ConvTranspose": ([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                                        output_padding=[1, 1])],
                      [_const("w", RNG.standard_normal((8, 4, 3, 3)).astype(np.float32))], X, [1, 4, 12, 12], 13),
    # kernel = stride: lowered as a 1×1 conv and a pixel shuffle (ConvTransposeAsConv), with its bias
    "ConvTranspose 2x2 stride 2": ([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2],
                                                     kernel_shape=[2, 2])],
                                   [_const("w", RNG.standard_normal((8, 4, 2, 2)).astype(np.float32)),
                                    _const("b", RNG.standard_normal(4).astype(np.float32))], X, [1, 4, 12, 12], 13),
    "Resize nearest": ([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
                       [_const("scales", np.array([1, 1, 2, 2], np.float32))], X, [1, 8, 12, 12], 13),
    "Resize linear": ([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                                        coordinate_transformation_mode="half_pixel")],
                      [_const("scales", np.array([1, 1, 2, 2], np.float32))], X, [1, 8, 12, 12], 13),
    "HardSigmoid": ([helper.make_node("HardSigmoid", ["x"], ["y"], alpha=1 / 6, beta=0.5)], [], X, X, 13),
    "HardSwish": ([helper.make_node("HardSwish", ["x"], ["y"])], [], X, X, 14),
    "SiLU (Sigmoid, Mul)": ([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                            [], X, X, 13),
    "Tanh": ([helper.make_node("Tanh", ["x"], ["y"])], [], X, X, 13),
    "Gelu": ([helper.make_node("Gelu", ["x"], ["y"])], [], X, X, 20),
    "Softmax": ([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [], X, X, 13),
    "LayerNormalization": ([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
                           [_const("g", RNG.uniform(0.5, 1.5, 6).astype(np.float32)),
                            _const("b", RNG.standard_normal(6).astype(np.float32))], X, X, 17),
    "LayerNorm as ReduceMean/Pow/Sqrt": ([
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["centered"]),
        helper.make_node("Pow", ["centered", "two"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["centered", "std"], ["y"])],
        [_const("two", np.float32(2)), _const("eps", np.float32(1e-5))], X, X, 13),
    "MatMul of two activations (attention scores)": ([
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["x", "xt"], ["y"])], [], X, X, 13),
    # 1-D convs run as 2-D ones over a one-row image (Conv1dAsConv2d), bias and relu carried along, batch 2
    "Conv 1-D (stride, padding, dilation)": ([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2], pads=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], dilations=[2], pads=[2, 2])],
        [_const("w1", RNG.standard_normal((6, 8, 3)).astype(np.float32)),
         _const("b1", RNG.standard_normal(6).astype(np.float32)),
         _const("w2", RNG.standard_normal((5, 6, 3)).astype(np.float32))], [2, 8, 20], [2, 5, 10], 13),
    # one channel, a wide kernel (an STFT as a conv): its windows unfolded into a 1×1 conv's channels
    "Conv 1-D over a raw signal": ([helper.make_node("Conv", ["x", "w"], ["y"], strides=[8])],
                                   [_const("w", RNG.standard_normal((6, 1, 16)).astype(np.float32))],
                                   [2, 1, 64], [2, 6, 7], 13),
    "Conv 1-D, BatchNormalization, Relu": ([
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["y"])],
        [_const("w", RNG.standard_normal((6, 8, 3)).astype(np.float32)),
         _const("g", RNG.uniform(0.5, 2, 6).astype(np.float32)), _const("b", RNG.standard_normal(6).astype(np.float32)),
         _const("m", RNG.standard_normal(6).astype(np.float32)), _const("v", RNG.uniform(0.5, 2, 6).astype(np.float32))],
        [2, 8, 20], [2, 6, 20], 13),
    "BatchNormalization alone": ([helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])],
                                 [_const("g", RNG.uniform(0.5, 2, 8).astype(np.float32)),
                                  _const("b", RNG.standard_normal(8).astype(np.float32)),
                                  _const("m", RNG.standard_normal(8).astype(np.float32)),
                                  _const("v", RNG.uniform(0.5, 2, 8).astype(np.float32))], X, X, 13),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_operator_builds_and_matches_onnxruntime_in_fp32(name, tmp_path):
    import onnxruntime as ort

    nodes, inits, in_shape, out_shape, opset = CASES[name]
    graph = helper.make_graph(nodes, "op", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    onnx.save(model, tmp_path / "op.onnx")
    assert run_cli("build", tmp_path / "op.onnx", "--precision", "fp32", "-o", tmp_path / "op.so", "-q") == 0
    library = qcompile.load(tmp_path / "op.so")
    session = ort.InferenceSession(str(tmp_path / "op.onnx"), providers=["CPUExecutionProvider"])
    for x in RNG.uniform(-4, 4, (3, *in_shape)).astype(np.float32):
        ours, theirs = library(x)[0], session.run(None, {"x": x})[0]
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-5 * max(np.abs(theirs).max(), 1.0)
