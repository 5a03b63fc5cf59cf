"""Calibration time: how long `qcompile build` takes to import, calibrate and realize a model in INT8.

Runs the driver's import → quantize step (calibration passes on the FP32 graph, statistics, realize) on N images
and prints the wall time and the time per calibration image. Run it with PYTHONPATH pointing at another checkout
to time that version of qcompile on the same model and data (the API it uses, `driver.lower_model`, is stable).

    python benchmarks/calibration.py [--model resnet50|PATH] [--count 100] [--shared ../shared]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx

from qcompile import targets
from qcompile.data.calibdata import DataSource
from qcompile.data.datasets import PREPROCESS_PRESETS
from qcompile.driver import CompileRequest, lower_model

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="resnet50 (generated, random weights) or an ONNX file")
    parser.add_argument("--count", type=int, default=100, help="calibration images (default 100)")
    parser.add_argument("--preprocess", choices=sorted(PREPROCESS_PRESETS), default="torch")
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qcompile-calibration-") as folder:
        if args.model == "resnet50":
            sys.path.insert(0, str(HERE))
            from resnet50 import build

            model = Path(folder) / "resnet50.onnx"
            onnx.save(build(), str(model))
        else:
            model = Path(args.model)
        calib = DataSource(args.shared / "data" / "imagenet-sample", count=args.count,
                           preprocess=PREPROCESS_PRESETS[args.preprocess])
        request = CompileRequest(model=model, target=targets.resolve("x86"), calib=calib)
        start = time.perf_counter()
        lower_model(request)
        seconds = time.perf_counter() - start
    import qcompile

    print(f"{args.model}: import + calibration + realize on {args.count} images in {seconds:.1f} s "
          f"({seconds / args.count:.2f} s an image; qcompile from {Path(qcompile.__file__).parent})")


if __name__ == "__main__":
    main()
