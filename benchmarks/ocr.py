"""Task accuracy of the PP-OCR recognizer and direction classifier in INT8: exact text lines and direction,
qcompile FP32/INT8 beside onnxruntime FP32 and onnxruntime `quantize_static` INT8 on the same calibration lines.

    python benchmarks/ocr.py [--shared ../shared] [--lines 100]

Prints a Markdown section for benchmarks/RESULTS.md.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from verification import text_lines  # noqa: E402

CALIBRATION = 32  # lines spread over the 300, the rest held out


def ctc_text(probabilities: np.ndarray, characters: list[str]) -> str:
    """Greedy CTC: the best class per step, repeats merged, blanks (0) dropped; class k is character k-1, the
    class after the last character a space. Spaces are ignored in the comparison, as the shared README does."""
    best = probabilities.reshape(probabilities.shape[-2], -1).argmax(-1)
    kept = [k for i, k in enumerate(best) if k != 0 and (i == 0 or k != best[i - 1])]
    return "".join(characters[k - 1] if k - 1 < len(characters) else " " for k in kept).replace(" ", "")


def quantize_with_onnxruntime(model: Path, samples: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": s} for s in samples])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def engines(model: Path, calibration: np.ndarray, shape: str, folder: Path) -> dict:
    """name → callable(x) → first output: onnxruntime FP32 and INT8, qcompile FP32 and INT8."""
    import onnxruntime as ort

    import qcompile

    calib_file = folder / f"{model.stem}_calib.npy"
    np.save(calib_file, calibration)
    result = {}
    quantized = quantize_with_onnxruntime(model, calibration, folder / f"{model.stem}_qdq.onnx")
    as_written = ort.SessionOptions()  # the QDQ graph run as written: its meaning, without the fused int8 kernels
    as_written.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for name, path, options in (("onnxruntime FP32", model, None),
                                ("onnxruntime INT8 (quantize_static)", quantized, None),
                                ("the same QDQ model, graph as written", quantized, as_written)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        result[name] = lambda x, s=session: s.run(None, {"x": x})[0]
    dims = tuple(int(d) for d in shape.split("x"))
    for precision in ("fp32", "int8"):
        library = folder / f"{model.stem}_{precision}.so"
        qcompile.build(model, library, precision=precision, calib=calib_file, calib_count=len(calibration),
                       input_shapes={"x": dims})
        result[f"qcompile {precision.upper()}"] = lambda x, m=qcompile.load(library): m(x)[0]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    parser.add_argument("--lines", type=int, default=100, help="held-out lines to evaluate (default 100)")
    args = parser.parse_args()
    import onnx

    from qcompile.data.calibdata import held_out, spread

    folder_lines = args.shared / "data" / "text" / "lines"
    labels = dict(line.split("\t", 1) for line in (folder_lines / "labels.tsv").read_text().splitlines() if line)
    files = sorted(folder_lines.glob("*.png"))
    calibration_index = spread(len(files), CALIBRATION)
    evaluation_index = held_out(len(files), CALIBRATION)[:args.lines]
    truth = [labels[files[i].name].replace(" ", "").strip() for i in evaluation_index]
    print("## PP-OCR task accuracy in INT8\n")
    print(f"Command: `python benchmarks/ocr.py --lines {args.lines}`. Text lines of `../shared/data/text/lines/` as "
          "the models take them (height 48, padded right with 0); calibration on "
          f"{CALIBRATION} lines spread over the 300, evaluation on the first {len(evaluation_index)} of the others. "
          "Recognition: greedy CTC decoding, exact match of the line's text (spaces ignored); direction: each line "
          "upright and turned 180°, share classified as such. Untuned x86 builds.\n")
    print("| model | engine | task metric | agreement with onnxruntime FP32 |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="qcompile-ocr-") as folder:
        folder = Path(folder)
        recognizer = args.shared / "models" / "ch_PP-OCRv4_rec_infer.onnx"
        characters = next(p.value for p in onnx.load(recognizer).metadata_props if p.key == "character").split("\n")
        lines = np.load(text_lines(folder_lines, 320, folder / "lines320.npy"))
        runs = engines(recognizer, lines[calibration_index], "1x3x48x320", folder)
        texts = {name: [ctc_text(run(lines[i]), characters) for i in evaluation_index] for name, run in runs.items()}
        for name, got in texts.items():
            exact = np.mean([g == t for g, t in zip(got, truth)])
            same = np.mean([g == r for g, r in zip(got, texts["onnxruntime FP32"])])
            print(f"| PP-OCRv4 recognition | {name} | {exact:.3f} exact lines | {same:.3f} same text |")
        sys.stdout.flush()
        classifier = args.shared / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        lines = np.load(text_lines(folder_lines, 192, folder / "lines192.npy"))
        runs = engines(classifier, lines[calibration_index], "1x3x48x192", folder)
        turned = {i: np.ascontiguousarray(lines[i][:, :, ::-1, ::-1]) for i in evaluation_index}
        decisions = {name: [int(run(lines[i]).argmax()) for i in evaluation_index]
                     + [int(run(turned[i]).argmax()) for i in evaluation_index] for name, run in runs.items()}
        expected = [0] * len(evaluation_index) + [1] * len(evaluation_index)
        for name, got in decisions.items():
            correct = np.mean(np.equal(got, expected))
            same = np.mean(np.equal(got, decisions["onnxruntime FP32"]))
            print(f"| PP-OCR v2.0 direction | {name} | {correct:.3f} directions right | {same:.3f} same class |")


if __name__ == "__main__":
    main()
