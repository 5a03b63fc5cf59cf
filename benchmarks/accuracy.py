"""INT8 accuracy of qcompile (every calibration method) beside onnxruntime's quantize_static, on the shared data.

Calibrates on 100 images spread over the 1,000-image ImageNet sample and evaluates on the other 900 (MNIST: 100
of the 10,000 test digits, evaluated on the other 9,900), and prints a Markdown table.

    python benchmarks/accuracy.py [--shared ../shared] > accuracy.md
"""

import argparse
import contextlib
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter

from qcompile.runtime import artifact
from qcompile.data import datasets
from qcompile.measure import evaluate, task
from qcompile import targets
from qcompile.driver import CompileRequest, compile_model
from qcompile.progress import Reporter
from qcompile.data.calibdata import DataSource
from qcompile.quantize.calibrate import METHODS, CalibrationConfig
from qcompile.quantize.quantizer import QuantConfig

CALIBRATION = 100
MODELS = {  # name → (file, preprocessing preset or "mnist")
    "MobileNet v1 0.75": ("mobilenet_v1_0.75_224_keras.onnx", "tf"),
    "SqueezeNet 1.1": ("squeezenet1.1_caffe2_fp32_op13.onnx", "caffe"),
    "MNIST CNN": ("mnist-cntk-opset7.onnx", "mnist"),
}


def data_for(shared: Path, kind: str):
    if kind == "mnist":
        images = shared / "data/mnist/t10k-images-idx3-ubyte.gz"
        return DataSource(images, count=CALIBRATION), DataSource(images, count=10**6), \
            shared / "data/mnist/t10k-labels-idx1-ubyte.gz"
    folder = shared / "data/imagenet-sample"
    preprocess = datasets.PREPROCESS_PRESETS[kind]
    return (DataSource(folder, count=CALIBRATION, preprocess=preprocess),
            DataSource(folder, count=10**6, preprocess=preprocess), shared / "data/imagenet_synsets.txt")


def qcompile_scores(model_path, calib, samples, precision, method):
    config = CompileRequest(model=model_path, target=targets.resolve("x86"), precision=precision, calib=calib,
                            quant=QuantConfig(calibration=CalibrationConfig(method=method or "minmax")))
    compiled = compile_model(config)
    model = artifact.CompiledModel(compiled.executable, compiled.sidecar)
    return evaluate.scores(model, samples, f"{model_path.name} {precision} {method or ''}", Reporter())[0]


def onnxruntime_scores(model_path, calib_samples, samples, input_name, method):
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: s[0]} for s in calib_samples])

        def get_next(self):
            return next(self.items, None)

    model = str(model_path)
    if method is not None:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            source = model_path
            fp32 = onnx.load(str(model_path))
            if fp32.opset_import[0].version < 13:  # per-channel QDQ needs opset 13 (DequantizeLinear's axis)
                source = folder / "opset13.onnx"
                onnx.save(onnx.version_converter.convert_version(fp32, 13), str(source))
            path = folder / "qdq.onnx"
            with contextlib.redirect_stdout(sys.stderr):  # it prints its progress on stdout
                quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, method))
            model = path.read_bytes()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.stack([session.run(None, {input_name: s[0]})[0].reshape(-1) for s in samples])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    args = parser.parse_args()
    chosen = args.models.split(",")
    print("## INT8 accuracy\n")
    print(f"Command: `python benchmarks/accuracy.py --models \"{args.models}\"`; x86 preset "
          f"`{targets.resolve('x86').key()}`, Python {platform.python_version()}.\n")
    print(f"Calibration on {CALIBRATION} images spread evenly over the 1,000-image ImageNet sample in `../shared/data/` "
          f"(MNIST: {CALIBRATION} of the 10,000 test digits), evaluation on the others, so calibration and evaluation "
          "never share an image. Both quantizers use per-channel symmetric int8 weights and asymmetric uint8 "
          "activations (what x86 VNNI multiplies); onnxruntime's is `quantize_static` in QDQ format, run by "
          "onnxruntime itself. \"Agreement\" is the share of inputs where INT8 and FP32 pick the same top-1 class. "
          "These images score well above published ImageNet-val accuracy (see `../shared/README.md`): read the "
          "differences, not the absolute levels.\n")
    print("| model | quantizer | calibration | top-1 | top-5 | top-1 Δ vs FP32 | INT8/FP32 top-1 agreement |")
    print("|---|---|---|---|---|---|---|")
    for name, (file, kind) in ((n, MODELS[n]) for n in chosen):
        model_path = args.shared / "models" / file
        calib, held_out, labels = data_for(args.shared, kind)
        from qcompile.data import calibdata
        from qcompile.frontend import importer

        onnx_model = importer.load(model_path)
        inputs = importer.static_inputs(onnx_model, {})
        calib_samples = calibdata.samples(calib, inputs)
        samples, y = evaluate.load(evaluate.EvalData(held_out, labels, calibration_count=CALIBRATION), inputs)
        start = time.time()
        fp32 = onnxruntime_scores(model_path, None, samples, inputs[0].name, None)
        rows = [("FP32 (onnxruntime)", "", fp32)]
        for method in ("MinMax", "Entropy", "Percentile"):
            rows.append(("onnxruntime quantize_static (QDQ, per-channel, u8×s8)", method,
                         onnxruntime_scores(model_path, calib_samples, samples, inputs[0].name, method)))
        rows.append(("qcompile FP32", "", qcompile_scores(model_path, calib, samples, "fp32", None)))
        for method in METHODS:
            rows.append(("qcompile INT8 (per-channel, u8×s8)", method,
                         qcompile_scores(model_path, calib, samples, "int8", method)))
        top1_fp32 = task.top_k(fp32, y.labels, 1)
        for quantizer, method, s in rows:
            agreement = np.mean(s.argmax(1) == fp32.argmax(1))
            top1 = task.top_k(s, y.labels, 1)
            print(f"| {name} ({len(samples)} held-out) | {quantizer} | {method} | {top1:.4f} | "
                  f"{task.top_k(s, y.labels, 5):.4f} | {100 * (top1 - top1_fp32):+.2f} pt | {agreement:.4f} |",
                  flush=True)
        print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
