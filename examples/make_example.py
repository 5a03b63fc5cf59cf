"""Writes examples/tiny_cnn.onnx and examples/samples.npz: a small image classifier and inputs for it.

The network is a real CNN shape (conv/bn-folded/relu, depthwise, pooling, dense, softmax) with seeded random
weights; it exists so that a fresh checkout has something to compile without any download.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def main():
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        fan_in = int(np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32), name)

    def bias(name, n):
        return numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), name)

    inits = [weight("w1", 16, 3, 3, 3), bias("b1", 16), weight("w2", 16, 1, 3, 3), bias("b2", 16),
             weight("w3", 32, 16, 1, 1), bias("b3", 32), weight("fc", 10, 32), bias("fcb", 10)]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dwconv2", pads=[1, 1, 1, 1], group=16),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6_2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("MaxPool", ["r3"], ["p3"], name="pool3", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    inits += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="qcompile-example")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, HERE / "tiny_cnn.onnx")
    samples = rng.uniform(-1, 1, size=(16, 1, 3, 32, 32)).astype(np.float32)
    np.savez(HERE / "samples.npz", image=samples)
    np.save(HERE / "sample.npy", samples[0])


if __name__ == "__main__":
    main()
