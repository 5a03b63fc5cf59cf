"""ResNet-50 (torchvision's v1.5 architecture: stride on the 3×3 convs) as ONNX, random weights, batch norm folded.

For latency only: the weights are He-initialized random numbers, so its outputs mean nothing. Written with
onnx.helper rather than exported from torch, so that the benchmarks need no multi-gigabyte torch install.

    python benchmarks/resnet50.py OUT.onnx
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LAYERS = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # bottleneck width, blocks, first block's stride


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def conv(x, cin, cout, k, stride, relu, name, scale=1.0):
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.float32(scale * np.sqrt(2 / (cin * k * k)))
        weights.extend([numpy_helper.from_array(w, f"{name}.w"),
                        numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return f"{name}.y"
        nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"]))
        return f"{name}.r"

    x = conv("input", 3, 64, 7, 2, True, "conv1")
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool1", 64
    for stage, (width, blocks, stride) in enumerate(LAYERS, start=1):
        for block in range(blocks):
            name = f"layer{stage}.{block}"
            s = stride if block == 0 else 1
            y = conv(x, cin, width, 1, 1, True, f"{name}.conv1")
            y = conv(y, width, width, 3, s, True, f"{name}.conv2")
            y = conv(y, width, width * 4, 1, 1, False, f"{name}.conv3", scale=0.2)  # keeps the residual sum tame
            shortcut = conv(x, cin, width * 4, 1, s, False, f"{name}.down") if block == 0 else x
            nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.sum"]))
            nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"]))
            x, cin = f"{name}.out", width * 4
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    fc = rng.standard_normal((1000, 2048)).astype(np.float32) * np.float32(np.sqrt(1 / 2048))
    weights += [numpy_helper.from_array(fc, "fc.w"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "resnet50", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the ONNX file to write (about 100 MB)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    args = parser.parse_args()
    onnx.save(build(args.seed), args.output)
