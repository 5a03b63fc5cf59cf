"""`--max-accuracy-drop` on the shared ImageNet classifiers: top-1 of FP32, static INT8 and the accuracy-controlled
INT8, the plan (layers left in FP32) and its latency cost.

    python benchmarks/accuracy_control.py [--shared ../shared] [--budget 0.3] [--count 600]

Runs `qcompile eval --max-accuracy-drop`: the plan is searched on the even-numbered held-out images and every row is
measured on the odd-numbered ones. Prints a Markdown section for benchmarks/RESULTS.md.
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {  # file, preprocessing
    "MobileNet v1 0.75": ("mobilenet_v1_0.75_224_keras.onnx", "tf"),
    "SqueezeNet 1.1": ("squeezenet1.1_caffe2_fp32_op13.onnx", "caffe"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    parser.add_argument("--budget", type=float, default=0.3, help="--max-accuracy-drop, points (default 0.3)")
    parser.add_argument("--count", type=int, default=600, help="images, calibration ones included (default 600)")
    parser.add_argument("--calib-count", type=int, default=100)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    args = parser.parse_args()
    chosen = [m.strip() for m in args.models.split(",")]
    sys.path.insert(0, str(HERE))
    from latency import machine

    images, synsets = args.shared / "data" / "imagenet-sample", args.shared / "data" / "imagenet_synsets.txt"
    print("## Accuracy control (`benchmarks/accuracy_control.py`)\n")
    print(machine() + "\n")
    print(f"Command: `python benchmarks/accuracy_control.py --budget {args.budget:g} --count {args.count} --models "
          f"'{args.models}'`, i.e. "
          f"`qcompile eval MODEL --data imagenet-sample --labels imagenet_synsets.txt --calib imagenet-sample "
          f"--calib-count {args.calib_count} --count {args.count} --max-accuracy-drop {args.budget:g}`: percentile "
          "calibration; the plan is searched on the even-numbered held-out images (top-1 against the labels), the "
          "table measures every build on the odd-numbered ones. Latency: the search's own timing of the untuned "
          "INT8 build on this CPU, all layers INT8 vs the plan.\n")
    for title, (file, preprocess) in ((t, MODELS[t]) for t in chosen):
        run = subprocess.run([sys.executable, "-m", "qcompile", "eval", args.shared / "models" / file, "--data", images,
                              "--labels", synsets, "--calib", images, "--calib-count", str(args.calib_count),
                              "--count", str(args.count), "--preprocess", preprocess, "--max-accuracy-drop",
                              str(args.budget)], capture_output=True, text=True)
        print(f"### {title}\n")
        if run.returncode != 0:
            print(f"failed: {run.stderr.strip().splitlines()[-1]}\n")
            continue
        print(run.stdout.strip() + "\n")
        for line in run.stderr.splitlines():
            if line.startswith("[qcompile] accuracy control:") and ("budget" in line or "latency" in line
                                                                    or "all layers" in line):
                print(f"- {line.removeprefix('[qcompile] accuracy control: ')}")
        print()


if __name__ == "__main__":
    main()
