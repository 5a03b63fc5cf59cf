"""Latency of every shared model: qcompile INT8 (default schedules, no tuning records) against onnxruntime INT8
(quantize_static, same calibration data), 1 thread, interleaved in one process (`qcompile bench`'s harness).

The models and their calibration data are `verification.py`'s (PP-OCR inputs at its fixed shapes; Silero VAD
calibrated on random inputs, as there). Prints a Markdown table for benchmarks/RESULTS.md.

    python benchmarks/real_models.py [--shared ../shared] [--repeat 20]
"""

import argparse
import sys
import tempfile
from pathlib import Path

from qcompile import targets
from qcompile.data.calibdata import DataSource
from qcompile.data.datasets import PREPROCESS_PRESETS
from qcompile.driver import CompileRequest
from qcompile.errors import QcompileError
from qcompile.measure import bench

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from verification import MODELS, text_lines  # noqa: E402 - the sibling script's model list


def calibration(name: str, shared: Path, scratch: Path) -> DataSource:
    file, data, preprocess, count, shapes = MODELS[name]
    if data is None:
        return DataSource(None, count=count, random=True)
    if preprocess == "lines":
        return DataSource(text_lines(shared / "data" / data, shapes["x"][3], scratch / f"{name}.npy"), count=count)
    shape = (shapes or {}).get("x")
    size = {"resize_short": shape[2], "crop": shape[2]} if shape and shape[2] == shape[3] else {}
    base = PREPROCESS_PRESETS[preprocess]
    return DataSource(shared / "data" / data, count=count, preprocess=base.__class__(**{**base.__dict__, **size}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    spec = targets.resolve("x86")
    print(f"Command: `python benchmarks/real_models.py --repeat {args.repeat}`; LLVM CPU `{spec.target['mcpu']}`.\n")
    print("| model | qcompile INT8 ms (p10 / median / p90) | onnxruntime INT8 ms (p10 / median / p90) | "
          "speed vs onnxruntime INT8 |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="qcompile-real-models-") as folder:
        for name, (file, _, _, _, shapes) in MODELS.items():
            request = CompileRequest(model=args.shared / "models" / file, target=spec, input_shapes=shapes or {},
                                     calib=calibration(name, args.shared, Path(folder)))
            try:
                rows = bench.run(bench.BenchConfig(compile=request, precisions=("int8",), threads=(1,),
                                                   compare_onnxruntime=True, repeat=args.repeat, warmup=3))
            except QcompileError as err:
                print(f"| {name} | not measured: {err} | | |")
                continue
            except Exception as err:  # noqa: BLE001 - onnxruntime's quantize_static fails on some models
                print(f"| {name} | not measured: onnxruntime: {str(err).strip().splitlines()[-1][:160]} | | |")
                continue
            ours, ort = (next(r for r in rows if r["engine"] == engine) for engine in ("qcompile", "onnxruntime"))
            cells = ["{p10 ms:.2f} / {median ms:.2f} / {p90 ms:.2f}".format(**r) for r in (ours, ort)]
            print(f"| {name} | {cells[0]} | {cells[1]} | {ort['median ms'] / ours['median ms']:.2f}× |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
