"""Task accuracy of the PP-OCR models in INT8: exact text lines, direction, detected boxes (F1),
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


PAGE = 640  # pages resized so their long side is this, padded to a square: one static input shape for all


def page(path: Path) -> tuple[np.ndarray, float]:
    """A text page as the detector takes it (RGB, /255, ImageNet mean/std), long side PAGE, padded right and
    below with 0; and the scale applied."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    scale = PAGE / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    x = (np.asarray(image.resize(size, Image.BILINEAR), np.float32) / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224,
                                                                                                        0.225)
    padded = np.zeros((3, PAGE, PAGE), np.float32)
    padded[:, :size[1], :size[0]] = x.transpose(2, 0, 1)
    return padded[None], scale


def db_boxes(probability: np.ndarray, threshold=0.3, box_threshold=0.6, unclip=1.5, min_side=3) -> list:
    """DBNet's usual post-processing, with axis-aligned boxes: the map above `threshold` in connected regions,
    kept where their mean probability reaches `box_threshold`, each box grown by area × `unclip` / perimeter."""
    from scipy import ndimage

    probability = probability.reshape(probability.shape[-2:])
    labels, count = ndimage.label(probability > threshold)
    boxes = []
    for k, region in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[region] == k
        y0, y1, x0, x1 = region[0].start, region[0].stop, region[1].start, region[1].stop
        if probability[region][inside].mean() < box_threshold or min(x1 - x0, y1 - y0) < min_side:
            continue
        grow = (x1 - x0) * (y1 - y0) * unclip / (2 * ((x1 - x0) + (y1 - y0)))
        boxes.append((x0 - grow, y0 - grow, x1 + grow, y1 + grow))
    return boxes


def f1(found: list, expected: list, iou=0.5) -> tuple[int, int, int]:
    """(matched, found, expected) boxes, each expected box matched at most once at IoU ≥ `iou`, best first."""
    def overlap(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    pairs = sorted(((overlap(a, b), i, j) for i, a in enumerate(found) for j, b in enumerate(expected)), reverse=True)
    used_found, used_expected = set(), set()
    for score, i, j in pairs:
        if score < iou:
            break
        if i not in used_found and j not in used_expected:
            used_found.add(i)
            used_expected.add(j)
    return len(used_found), len(found), len(expected)


def score(counts) -> float:
    matched, found, expected = (sum(c[k] for c in counts) for k in range(3))
    return 2 * matched / (found + expected) if found + expected else 1.0


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


def engines(model: Path, calibration: np.ndarray, shape: str, folder: Path, dynamic: bool = False) -> dict:
    """name → callable(x) → first output: onnxruntime FP32 and INT8, qcompile FP32 and INT8; with `dynamic`, also
    qcompile int8-dynamic and onnxruntime's quantize_dynamic."""
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
    variants = {"qcompile FP32": {"precision": "fp32"}, "qcompile INT8": {"precision": "int8"}}
    if dynamic:
        variants["qcompile int8-dynamic"] = {"precision": "int8-dynamic"}
        from onnxruntime.quantization import QuantType, quantize_dynamic

        dynamic = folder / f"{model.stem}_dynamic.onnx"
        # MatMul/Gemm only (qcompile's int8-dynamic also has its convs): onnxruntime's dynamic Conv needs the Paddle
        # exports' conv weights as initializers ("Expected conv2d_157.w_0 to be an initializer")
        quantize_dynamic(str(model), str(dynamic), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
        session = ort.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])
        result["onnxruntime INT8 (quantize_dynamic)"] = lambda x, s=session: s.run(None, {"x": x})[0]
    for k, (name, options) in enumerate(variants.items()):
        library = folder / f"{model.stem}_{k}.so"
        qcompile.build(model, library, calib=calib_file, calib_count=len(calibration), input_shapes={"x": dims},
                       **options)
        result[name] = lambda x, m=qcompile.load(library): m(x)[0]
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
          "upright and turned 180°, share classified as such; detection: the 60 pages of `text/pages/` resized to a "
          f"long side of {PAGE} and padded square, 16 calibrate, 44 are evaluated; DBNet's post-processing with "
          "axis-aligned boxes (threshold 0.3, box threshold 0.6, unclip 1.5), F1 at IoU ≥ 0.5 against `boxes.tsv` "
          "and against onnxruntime FP32's boxes. Untuned x86 builds; int8-dynamic needs no calibration.\n")
    print("| model | engine | task metric | agreement with onnxruntime FP32 |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="qcompile-ocr-") as folder:
        folder = Path(folder)
        recognizer = args.shared / "models" / "ch_PP-OCRv4_rec_infer.onnx"
        characters = next(p.value for p in onnx.load(recognizer).metadata_props if p.key == "character").split("\n")
        lines = np.load(text_lines(folder_lines, 320, folder / "lines320.npy"))
        runs = engines(recognizer, lines[calibration_index], "1x3x48x320", folder, dynamic=True)
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
        sys.stdout.flush()
        pages_folder = args.shared / "data" / "text" / "pages"
        page_files = sorted(pages_folder.glob("*.png"))
        truth_boxes = {}
        for line in (pages_folder / "boxes.tsv").read_text().splitlines():
            name, corners, _ = line.split("\t", 2)
            truth_boxes.setdefault(name, []).append(tuple(float(v) for v in corners.split(",")))
        pages = [page(f) for f in page_files]
        calibration_pages = spread(len(page_files), 16)
        evaluation_pages = held_out(len(page_files), 16)
        runs = engines(args.shared / "models" / "ch_PP-OCRv4_det_infer.onnx",
                       np.stack([pages[i][0] for i in calibration_pages]), f"1x3x{PAGE}x{PAGE}", folder)
        found = {name: [[tuple(v / pages[i][1] for v in box) for box in db_boxes(run(pages[i][0]))]
                        for i in evaluation_pages] for name, run in runs.items()}
        for name, boxes in found.items():
            against_truth = score([f1(b, truth_boxes.get(page_files[i].name, [])) for b, i in
                                   zip(boxes, evaluation_pages)])
            against_fp32 = score([f1(b, r) for b, r in zip(boxes, found["onnxruntime FP32"])])
            print(f"| PP-OCRv4 detection | {name} | box F1 {against_truth:.3f} against boxes.tsv | "
                  f"box F1 {against_fp32:.3f} |")


if __name__ == "__main__":
    main()
