"""MobileNetV3-Small (torchvision's layer table: hardswish, squeeze-excite with hardsigmoid gates) as ONNX,
random weights, batch norm folded; with --measure, its INT8 beside onnxruntime's.

Written with onnx.helper, as `resnet50.py` is, so that no torch install is needed. The weights are He-initialized
random numbers: the classes mean nothing, but INT8's distance to FP32 on real photos does (the activations'
ranges come from the images).

    python benchmarks/mobilenetv3.py OUT.onnx
    python benchmarks/mobilenetv3.py --measure [--shared ../shared]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# kernel, expanded width, output width, squeeze-excite, hardswish (else ReLU), stride
BLOCKS = [(3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
          (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
          (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
          (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)]


def _divisible(value: float, by: int = 8) -> int:
    return max(by, int(value + by / 2) // by * by)


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def conv(x, cin, cout, k, stride, name, groups=1, act=None, scale=1.0):
        fan_in = cin // groups * k * k
        w = rng.standard_normal((cout, cin // groups, k, k)) * scale * np.sqrt(2 / fan_in)
        b = rng.standard_normal(cout) * 0.01
        weights.extend([numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
                        numpy_helper.from_array(b.astype(np.float32), f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        return activation(f"{name}.y", act, name)

    def activation(x, act, name):
        if act is None:
            return x
        nodes.append(helper.make_node(act, [x], [f"{name}.{act}"], **({"alpha": 1 / 6, "beta": 0.5}
                                                                       if act == "HardSigmoid" else {})))
        return f"{name}.{act}"

    x = conv("input", 3, 16, 3, 2, "stem", act="HardSwish")
    cin = 16
    for i, (k, expanded, cout, se, hardswish, stride) in enumerate(BLOCKS):
        name, act = f"block{i}", "HardSwish" if hardswish else "Relu"
        y = conv(x, cin, expanded, 1, 1, f"{name}.expand", act=act) if expanded != cin else x
        y = conv(y, expanded, expanded, k, stride, f"{name}.dw", groups=expanded, act=act)
        if se:
            squeezed = _divisible(expanded / 4)
            nodes.append(helper.make_node("GlobalAveragePool", [y], [f"{name}.se.pool"]))
            gate = conv(f"{name}.se.pool", expanded, squeezed, 1, 1, f"{name}.se.fc1", act="Relu")
            gate = conv(gate, squeezed, expanded, 1, 1, f"{name}.se.fc2", act="HardSigmoid")
            nodes.append(helper.make_node("Mul", [y, gate], [f"{name}.se.out"]))
            y = f"{name}.se.out"
        y = conv(y, expanded, cout, 1, 1, f"{name}.project", scale=0.5)
        if stride == 1 and cin == cout:
            nodes.append(helper.make_node("Add", [y, x], [f"{name}.sum"]))
            y = f"{name}.sum"
        x, cin = y, cout
    x = conv(x, cin, 576, 1, 1, "last", act="HardSwish")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    x = conv("pool", 576, 1024, 1, 1, "head", act="HardSwish")
    nodes.append(helper.make_node("Flatten", [x], ["flat"]))
    fc = rng.standard_normal((1000, 1024)).astype(np.float32) * np.float32(np.sqrt(1 / 1024))
    weights += [numpy_helper.from_array(fc, "fc.w"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "mobilenetv3_small", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [1, 3, 224, 224])], [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, [1, 1000])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def measure(shared: Path, calibration: int, held_out: int) -> None:
    """Top-1 agreement and logit cosine to FP32 of qcompile INT8 and onnxruntime quantize_static (same calibration
    images), the float round trips left in qcompile's INT8 graph, and the 1-thread latency of both."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from accuracy import onnxruntime_scores, qcompile_scores  # noqa: E402 - the sibling script's helpers

    from qcompile import targets
    from qcompile.data import calibdata, datasets
    from qcompile.data.calibdata import DataSource
    from qcompile.driver import CompileRequest
    from qcompile.frontend import importer
    from qcompile.measure import bench, evaluate
    from qcompile.quantize.quantizer import QuantConfig, quantize
    from qcompile.quantize.report import count_ops

    folder_images = shared / "data/imagenet-sample"
    preprocess = datasets.PREPROCESS_PRESETS["torch"]
    with tempfile.TemporaryDirectory(prefix="qcompile-mnv3-") as folder:
        path = Path(folder) / "mobilenetv3_small.onnx"
        onnx.save(build(), str(path))
        model = importer.load(path)
        inputs = importer.static_inputs(model, {})
        calib = DataSource(folder_images, count=calibration, preprocess=preprocess)
        calib_samples = calibdata.samples(calib, inputs)
        samples, _ = evaluate.load(evaluate.EvalData(DataSource(folder_images, count=held_out, preprocess=preprocess),
                                                     shared / "data/imagenet_synsets.txt", calibration), inputs)
        fp32 = onnxruntime_scores(path, None, samples, "input", None)
        rows = {"onnxruntime quantize_static (percentile)":
                onnxruntime_scores(path, calib_samples, samples, "input", "Percentile"),
                "onnxruntime quantize_static (minmax)":
                onnxruntime_scores(path, calib_samples, samples, "input", "MinMax"),
                "qcompile FP32": qcompile_scores(path, calib, samples, "fp32", None),
                "qcompile INT8 (percentile)": qcompile_scores(path, calib, samples, "int8", "percentile"),
                "qcompile INT8 (minmax)": qcompile_scores(path, calib, samples, "int8", "minmax"),
                "qcompile INT8 (adaptive)": qcompile_scores(path, calib, samples, "int8", "adaptive")}
        realized = quantize(importer.to_relax(model, inputs), calib_samples, QuantConfig()).mod
        integer, floating, ops = count_ops(realized)
        round_trips = ops["float"]["relax.dequantize"] + ops["integer"]["relax.quantize"]
        print(f"Command: `python benchmarks/mobilenetv3.py --measure`; {calibration} calibration images, "
              f"{len(samples)} held-out (ImageNet sample, torch preprocessing); LLVM CPU "
              f"`{targets.resolve('x86').target['mcpu']}`. qcompile INT8 graph: {integer} conv/matmul layers in "
              f"integers, {floating} in FP32, {round_trips} quantize/dequantize left (float round trips).\n")
        # random weights give every image nearly the same logits: compare what varies from image to image
        centre = fp32.mean(axis=0)
        print("| engine | centred-logit cosine to onnxruntime FP32 (mean / min) | centred top-1 agreement with FP32 |")
        print("|---|---|---|")
        for name, scores in rows.items():
            ours, theirs = scores - centre, fp32 - centre
            cos = np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
            agreement = np.mean(ours.argmax(1) == theirs.argmax(1))
            print(f"| {name} | {cos.mean():.4f} / {cos.min():.4f} | {agreement:.3f} |")
        request = CompileRequest(model=path, target=targets.resolve("x86"), calib=calib)
        table = bench.run(bench.BenchConfig(compile=request, precisions=("fp32", "int8"), threads=(1,),
                                            compare_onnxruntime=True, repeat=20, warmup=3))
        print()
        print(bench.render(table, "markdown"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, help="write the model here")
    parser.add_argument("--measure", action="store_true", help="print its INT8 figures beside onnxruntime")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--calibration", type=int, default=50, help="calibration images (default 50)")
    parser.add_argument("--held-out", type=int, default=200, help="evaluation images (default 200)")
    args = parser.parse_args()
    if args.output:
        onnx.save(build(), str(args.output))
    if args.measure:
        measure(args.shared, args.calibration, args.held_out)


if __name__ == "__main__":
    main()
