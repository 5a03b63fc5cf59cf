"""Build verification of every shared model: each FP32 and INT8 build beside onnxruntime's FP32, as
`qcompile build` checks it before writing (figures from the sidecar), or why the model does not build.

    python benchmarks/verification.py [--shared ../shared]

Prints a Markdown section for benchmarks/RESULTS.md.
"""

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name → (ONNX file, calibration data (under data/), preprocessing, calibration samples, input shapes)
MODELS = {
    "MobileNet v1 0.75": ("mobilenet_v1_0.75_224_keras.onnx", "imagenet-sample", "tf", 32, None),
    "SqueezeNet 1.1": ("squeezenet1.1_caffe2_fp32_op13.onnx", "imagenet-sample", "caffe", 32, None),
    "MNIST CNN": ("mnist-cntk-opset7.onnx", "mnist/t10k-images-idx3-ubyte.gz", "tf", 100, None),
    "PP-OCRv4 detection": ("ch_PP-OCRv4_det_infer.onnx", "text/pages", "torch", 16, {"x": (1, 3, 480, 480)}),
    "PP-OCRv4 recognition": ("ch_PP-OCRv4_rec_infer.onnx", "text/lines", "lines", 32, {"x": (1, 3, 48, 320)}),
    "PP-OCR v2.0 direction": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", "text/lines", "lines", 32,
                              {"x": (1, 3, 48, 192)}),
    "Silero VAD": ("silero_vad_16k_sequence.onnx", None, None, 8, None),
}


def text_lines(folder: Path, width: int, out: Path) -> Path:
    """The text-line images as the PP-OCR models take them (`../shared/README.md`): RGB, resized to height 48
    keeping the aspect ratio (at most `width` wide), padded right with 0 to `width`, (x/255 - 0.5)/0.5; one .npy."""
    import numpy as np
    from PIL import Image

    samples = []
    for path in sorted(folder.glob("*.png")):
        image = Image.open(path).convert("RGB")
        w = min(width, max(1, round(image.width * 48 / image.height)))
        x = (np.asarray(image.resize((w, 48), Image.BILINEAR), np.float32) / 255 - 0.5) / 0.5
        padded = np.zeros((3, 48, width), np.float32)
        padded[:, :, :w] = x.transpose(2, 0, 1)
        samples.append(padded[None])
    np.save(out, np.stack(samples))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    args = parser.parse_args()
    import qcompile
    from qcompile.data.calibdata import DataSource
    from qcompile.data.datasets import PREPROCESS_PRESETS
    from qcompile.runtime.verify import summary

    print("## Build verification\n")
    print("Command: `python benchmarks/verification.py`. Every library `qcompile build` writes has first run beside "
          "onnxruntime's FP32 on 4 calibration samples the calibration did not use; FP32 must "
          "agree within 1e-3 of each output's range, INT8 keep each output's cosine ≥ 0.9. x86 preset, default "
          "schedules (no tuning records); text pages resized and centre-cropped to 480×480, text lines as the "
          "recognizer takes them "
          "(height 48, padded right); the INT8 rows check the build, they do not measure task accuracy.\n")
    print("| model | precision | result |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="qcompile-verification-") as folder:
        for name, (file, data, preprocess, count, shapes) in MODELS.items():
            fp32_failed = False
            for precision in ("fp32", "int8"):
                if fp32_failed:
                    print(f"| {name} | {precision} | not built: the model does not import (FP32 row) |")
                    continue
                calib = None
                if preprocess == "lines":
                    array = text_lines(args.shared / "data" / data, shapes["x"][3], Path(folder) / "lines.npy")
                    calib = DataSource(array, count=count)
                elif data is not None:
                    shape = (shapes or {}).get("x")
                    size = {"resize_short": shape[2], "crop": shape[2]} if shape and shape[2] == shape[3] else {}
                    base = PREPROCESS_PRESETS[preprocess]
                    calib = DataSource(args.shared / "data" / data, count=count,
                                       preprocess=base.__class__(**{**base.__dict__, **size}))
                try:
                    sidecar = qcompile.build(args.shared / "models" / file, Path(folder) / "model.so",
                                             precision=precision, calib=calib, input_shapes=shapes)
                    result = summary(sidecar.verification)
                except qcompile.QcompileError as err:
                    result = f"not built: {err}"
                    fp32_failed = precision == "fp32"
                print(f"| {name} | {precision} | {result} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
