"""A BERT-like text encoder as ONNX, random weights: token embedding + positions, 4 post-LayerNorm layers 256 wide
(4 heads of 64, GELU feed-forward 1024), sequence 128; and its INT8 figures beside onnxruntime.

For accuracy against its own FP32 and for latency only: the weights are random, so its outputs mean nothing.
Written with onnx.helper, so that the benchmarks need no multi-gigabyte torch install.

    python benchmarks/bert.py OUT.onnx          # the model
    python benchmarks/bert.py --measure         # INT8 cosine to FP32 and latency against onnxruntime (Markdown)
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, SEQUENCE, WIDTH, HEADS, FFN, LAYERS = 30522, 128, 256, 4, 1024, 4


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def const(name, value):
        weights.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def dense(x, cin, cout, name):
        w = const(f"{name}.w", (rng.standard_normal((cin, cout)) / np.sqrt(cin)).astype(np.float32))
        b = const(f"{name}.b", (rng.standard_normal(cout) * 0.02).astype(np.float32))
        nodes.append(helper.make_node("MatMul", [x, w], [f"{name}.mm"]))
        nodes.append(helper.make_node("Add", [f"{name}.mm", b], [f"{name}.y"]))
        return f"{name}.y"

    def layer_norm(x, name):
        g = const(f"{name}.g", np.ones(WIDTH, np.float32))
        b = const(f"{name}.b", np.zeros(WIDTH, np.float32))
        nodes.append(helper.make_node("LayerNormalization", [x, g, b], [f"{name}.y"], axis=-1, epsilon=1e-12))
        return f"{name}.y"

    def heads(x, name):  # [1, S, W] → [1, H, S, W/H]
        nodes.append(helper.make_node("Reshape", [x, "heads_shape"], [f"{name}.r"]))
        nodes.append(helper.make_node("Transpose", [f"{name}.r"], [f"{name}.t"], perm=[0, 2, 1, 3]))
        return f"{name}.t"

    const("heads_shape", np.array([1, SEQUENCE, HEADS, WIDTH // HEADS], np.int64))
    const("width_shape", np.array([1, SEQUENCE, WIDTH], np.int64))
    const("scale", np.float32(1 / np.sqrt(WIDTH // HEADS)))
    table = const("embedding", (rng.standard_normal((VOCAB, WIDTH)) * 0.5).astype(np.float32))
    positions = const("positions", (rng.standard_normal((1, SEQUENCE, WIDTH)) * 0.5).astype(np.float32))
    nodes.append(helper.make_node("Gather", [table, "ids"], ["tokens"], axis=0))
    nodes.append(helper.make_node("Add", ["tokens", positions], ["embedded"]))
    x = layer_norm("embedded", "embedding_norm")
    for i in range(LAYERS):
        n = f"layer{i}"
        q, k, v = (heads(dense(x, WIDTH, WIDTH, f"{n}.{p}"), f"{n}.{p}h") for p in "qkv")
        nodes.append(helper.make_node("Transpose", [k], [f"{n}.kt"], perm=[0, 1, 3, 2]))
        nodes.append(helper.make_node("MatMul", [q, f"{n}.kt"], [f"{n}.scores"]))
        nodes.append(helper.make_node("Mul", [f"{n}.scores", "scale"], [f"{n}.scaled"]))
        nodes.append(helper.make_node("Softmax", [f"{n}.scaled"], [f"{n}.p"], axis=-1))
        nodes.append(helper.make_node("MatMul", [f"{n}.p", v], [f"{n}.ctx"]))
        nodes.append(helper.make_node("Transpose", [f"{n}.ctx"], [f"{n}.ctxt"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"{n}.ctxt", "width_shape"], [f"{n}.merged"]))
        attended = dense(f"{n}.merged", WIDTH, WIDTH, f"{n}.o")
        nodes.append(helper.make_node("Add", [x, attended], [f"{n}.res1"]))
        x = layer_norm(f"{n}.res1", f"{n}.norm1")
        hidden = dense(x, WIDTH, FFN, f"{n}.ffn1")
        nodes.append(helper.make_node("Gelu", [hidden], [f"{n}.gelu"]))
        out = dense(f"{n}.gelu", FFN, WIDTH, f"{n}.ffn2")
        nodes.append(helper.make_node("Add", [x, out], [f"{n}.res2"]))
        x = layer_norm(f"{n}.res2", f"{n}.norm2")
    nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(nodes, "bert_like", [helper.make_tensor_value_info("ids", TensorProto.INT64,
                                                                                  [1, SEQUENCE])],
                              [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, SEQUENCE, WIDTH])],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def measure() -> None:
    with tempfile.TemporaryDirectory(prefix="qcompile-bert-") as folder:
        model, calib = Path(folder) / "bert.onnx", Path(folder) / "ids.npy"
        onnx.save(build(), str(model))
        np.save(calib, np.random.default_rng(1).integers(0, VOCAB, (24, 1, SEQUENCE)).astype(np.int64))
        print("## BERT-like encoder (`benchmarks/bert.py`)\n")
        print(f"Command: `python benchmarks/bert.py --measure`. {LAYERS} layers, width {WIDTH}, {HEADS} heads, "
              f"sequence {SEQUENCE}, vocabulary {VOCAB}, random weights; 16 random token sequences calibrate, the "
              "build's verification (4 held-out sequences) gives the cosine to onnxruntime FP32. int8-weights and "
              "int8-dynamic use no calibration; onnxruntime's int8 row is quantize_static, its int8-dynamic row "
              "quantize_dynamic.\n")
        for precision in ("fp32", "int8", "int8-weights", "int8-dynamic"):
            out = subprocess.run([sys.executable, "-m", "qcompile", "build", model, "--precision", precision,
                                  "--calib", calib, "--calib-count", "16", "-o", Path(folder) / f"{precision}.so",
                                  "--report", Path(folder) / f"{precision}_report.md"],
                                 capture_output=True, text=True)
            line = next((l for l in out.stderr.splitlines() if "verified" in l or "error" in l), out.stderr[-300:])
            counts = next((l for l in out.stderr.splitlines() if "layers run in integer" in l), "")
            print(f"- {precision}: {line.removeprefix('[qcompile] ')}" + (f" ({counts.removeprefix('[qcompile] ')})"
                                                                           if counts else ""))
        print()
        table = subprocess.run([sys.executable, "-m", "qcompile", "bench", model, "--calib", calib, "--calib-count",
                                "16", "--precision", "fp32,int8,int8-weights,int8-dynamic", "--compare",
                                "onnxruntime", "--repeat", "10", "-q"], capture_output=True, text=True)
        print(table.stdout or table.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, help="write the model here")
    parser.add_argument("--measure", action="store_true", help="print its INT8 figures beside onnxruntime")
    args = parser.parse_args()
    if args.output:
        onnx.save(build(), str(args.output))
    if args.measure:
        measure()


if __name__ == "__main__":
    main()
