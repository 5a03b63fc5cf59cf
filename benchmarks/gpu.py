"""CUDA builds checked and timed on a GPU machine that has only the TVM runtime (the deployment case).

`prepare` (here, with the TVM compiler) builds MobileNet v1 0.75 and SqueezeNet 1.1 for CUDA, FP32 and INT8
(int8 activations, packed convs on __dp4a), and the same INT8 build for x86 as the reference: both INT8 builds
come from one calibration, so their integers must agree. It writes a kit folder: the libraries, held-out images
(uint8, cropped) and the reference outputs (x86 INT8, onnxruntime FP32).

`run` (on the GPU machine, `TVM_USE_RUNTIME_LIB=1`: no compiler needed) runs the CUDA libraries on those images,
compares them with the references and times them (batch 1, medians of 30 repeats of 100 runs), and prints a
Markdown table.

    python benchmarks/gpu.py prepare KIT [--arch sm_90] [--shared ../shared]
    TVM_USE_RUNTIME_LIB=1 python benchmarks/gpu.py run KIT > gpu.md
"""

import argparse
import importlib.util
import platform
import sys
import time
from pathlib import Path

import numpy as np

MODELS = {  # key → (title, file under shared/models, preprocessing preset)
    "mobilenet": ("MobileNet v1 0.75", "mobilenet_v1_0.75_224_keras.onnx", "tf"),
    "squeezenet": ("SqueezeNet 1.1", "squeezenet1.1_caffe2_fp32_op13.onnx", "caffe"),
}
CALIBRATION, IMAGES = 100, 32


def prepare(kit: Path, arch: str, shared: Path) -> None:
    import onnxruntime as ort

    from qcompile import cli
    from qcompile.data import datasets
    from qcompile.data.calibdata import held_out

    folder = shared / "data/imagenet-sample"
    files = datasets.image_files(folder)
    chosen = [files[i] for i in held_out(len(files), CALIBRATION)[:IMAGES]]
    kit.mkdir(parents=True, exist_ok=True)
    pixels = np.stack([datasets.crop_image(f, datasets.PREPROCESS_PRESETS["tf"]) for f in chosen])
    np.save(kit / "pixels.npy", pixels)  # both presets resize to 256 and crop 224: one set of crops serves both
    for key, (_, file, preset) in MODELS.items():
        model = shared / "models" / file
        calib = ["--calib", str(folder), "--calib-count", str(CALIBRATION), "--preprocess", preset]
        builds = {f"{key}_int8_cuda.so": ["--target", f"cuda:{arch}", *calib],
                  f"{key}_fp32_cuda.so": ["--target", f"cuda:{arch}", "--precision", "fp32"],
                  f"{key}_int8_x86.so": ["--target", "x86", "--activation-dtype", "int8", *calib]}
        for name, options in builds.items():
            if cli.main(["build", str(model), "-o", str(kit / name), "-q", *options]) != 0:
                sys.exit(f"building {name} failed")
        inputs = [datasets.PREPROCESS_PRESETS[preset].normalize(p) for p in pixels]
        x86 = _load(kit / f"{key}_int8_x86.so")
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        np.savez(kit / f"{key}_reference.npz", int8_x86=np.stack([x86(x)[0] for x in inputs]),
                 fp32_onnxruntime=np.stack([session.run(None, {name: x})[0] for x in inputs]))
        (kit / f"{key}_int8_x86.so").unlink()  # the reference outputs are what the GPU machine needs
        (kit / f"{key}_int8_x86.json").unlink()


def _load(library: Path):
    import qcompile

    return qcompile.load(library)


def run(kit: Path) -> None:
    import tvm

    from qcompile.data import datasets

    loaded, load_seconds = {}, {}
    for key in MODELS:  # loading compiles the kernels (see qcompile.runtime.artifact._cuda_compiler): timed apart
        for precision in ("fp32", "int8"):
            start = time.perf_counter()
            loaded[key, precision] = _load(kit / f"{key}_{precision}_cuda.so")
            load_seconds[key, precision] = time.perf_counter() - start
    device = loaded["mobilenet", "int8"].device
    pixels = np.load(kit / "pixels.npy")
    rows = []
    for key, (title, _, preset) in MODELS.items():
        inputs = [datasets.PREPROCESS_PRESETS[preset].normalize(p) for p in pixels]
        reference = np.load(kit / f"{key}_reference.npz")
        fp32_classes = reference["fp32_onnxruntime"].reshape(len(inputs), -1).argmax(1)
        for precision in ("fp32", "int8"):
            model = loaded[key, precision]
            outputs = np.stack([model(x)[0] for x in inputs])
            if precision == "int8":
                against = "x86 INT8, same calibration"
                diff = np.abs(outputs - reference["int8_x86"]).max()
            else:
                against = "onnxruntime FP32 (CPU)"
                diff = np.abs(outputs - reference["fp32_onnxruntime"]).max()
            agreement = (outputs.reshape(len(inputs), -1).argmax(1) == fp32_classes).mean()
            ms = float(np.median(model.timer(inputs[0], number=100, repeat=30)())) * 1e3
            rows.append((title, precision.upper(), f"{diff:.2e} vs {against}", f"{agreement:.3f}", ms,
                         load_seconds[key, precision]))
    fp32_ms = {title: ms for title, precision, *_, ms, _ in rows if precision == "FP32"}
    print(f"GPU: {device.device_name} (compute {device.compute_version}); host {platform.machine()}, "
          f"TVM runtime only ({tvm.__version__})\n")
    print("| model | build | max abs difference of the outputs | top-1 agreement with FP32 | "
          "median latency (ms) | speed-up over FP32 | first load (s) |")
    print("|---|---|---|---|---|---|---|")
    for title, precision, diff, agreement, ms, load in rows:
        print(f"| {title} | {precision} | {diff} | {agreement} | {ms:.3f} | {fp32_ms[title] / ms:.2f}× | {load:.1f} |")
    print(f"\n{len(pixels)} held-out images of the ImageNet sample; batch 1; "
          f"`time_evaluator` medians of 30 repeats of 100 runs. First load: `qcompile.load`, which compiles the "
          f"kernels' CUDA C (with {'NVRTC' if importlib.util.find_spec('cuda') else 'nvcc'}).")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "run"))
    parser.add_argument("kit", type=Path, help="the folder prepare writes and run reads")
    parser.add_argument("--arch", default="sm_90", help="CUDA architecture of the GPU (prepare; default sm_90)")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.kit, args.arch, args.shared)
    else:
        run(args.kit)


if __name__ == "__main__":
    main()
