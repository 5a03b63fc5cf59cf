"""`--max-accuracy-drop` on the shared models that come without labels (PP-OCR direction and detection, MNIST
scored as agreement): the metric `qcompile build` then holds (`driver._metric`: top-1 agreement with FP32 for
class scores, the share of pixels on FP32's side of 0.5 for a probability map), of all-INT8 and of the plan, on
samples the search never saw.

    python benchmarks/accuracy_control_unlabelled.py [--shared ../shared] [--budget 0.3] [--models A,B]

The plan is searched on the even-numbered held-out samples (those the calibration did not use), as `qcompile eval`
does; every row is measured on the odd-numbered ones. Latency: the FP32, all-INT8 and plan builds each timed on
those samples on this CPU (default schedules). Prints a Markdown section for benchmarks/RESULTS.md.
"""

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from latency import machine  # noqa: E402
from real_models import calibration  # noqa: E402
from verification import MODELS  # noqa: E402

CHOSEN = ["PP-OCR v2.0 direction", "PP-OCRv4 detection", "MNIST CNN"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    parser.add_argument("--budget", type=float, default=0.3, help="--max-accuracy-drop, points (default 0.3)")
    parser.add_argument("--count", type=int, default=200, help="held-out samples, both halves (default 200)")
    parser.add_argument("--models", default=",".join(CHOSEN), help="comma-separated, of: " + ", ".join(CHOSEN))
    args = parser.parse_args()
    from qcompile import driver, targets
    from qcompile.measure import evaluate
    from qcompile.progress import Reporter
    from qcompile.quantize.fallback import AccuracyConfig
    from qcompile.runtime import artifact, verify
    from qcompile.tune.records import RecordSource

    print("## Accuracy control without labels (`benchmarks/accuracy_control_unlabelled.py`)\n")
    print(machine() + "\n")
    print(f"Command: `python benchmarks/accuracy_control_unlabelled.py --budget {args.budget:g} --count {args.count} "
          f"--models '{args.models}'`; calibration as in `benchmarks/verification.py`; the search on the even-numbered "
          "held-out samples, the table on the odd-numbered ones.\n")
    print("| model | metric | FP32 | all INT8 | plan | layers in FP32 | budget | ms FP32 / INT8 / plan (here) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="qcompile-ac-") as scratch:
        for name in [m.strip() for m in args.models.split(",")]:
            file, _, _, _, shapes = MODELS[name]
            calib = calibration(name, args.shared, Path(scratch))
            every = dataclasses.replace(calib, count=calib.count + args.count)
            control = driver.AccuracyControl(AccuracyConfig(args.budget), every, stride=(0, 2))
            request = driver.CompileRequest(model=args.shared / "models" / file, target=targets.resolve("x86"),
                                            input_shapes=shapes or {}, calib=calib, records=RecordSource(),
                                            accuracy=control)
            start = time.time()
            try:
                planned = driver.compile_model(request, Reporter())
            except Exception as err:  # noqa: BLE001 - a budget not met is a row too
                print(f"| {name} | | | | | | not met: {str(err).splitlines()[0]} | |", flush=True)
                continue
            builds = {"int8": driver.compile_model(dataclasses.replace(request, accuracy=None)), "plan": planned,
                      "fp32": driver.compile_model(dataclasses.replace(request, accuracy=None, precision="fp32"))}
            inputs = planned.sidecar.inputs
            # without labels: no model proto or output shape needed (they give a text labels' character list)
            unseen, _ = driver._accuracy_data(dataclasses.replace(control, stride=(1, 2)), calib, inputs, None, None)
            reference = np.stack([o[0].reshape(-1) for o in verify.onnxruntime_outputs(
                request.model, [s.name for s in inputs], unseen)])
            metric_name, metric = driver._metric(reference, None, planned.sidecar.outputs[0].shape)
            scores, ms = {}, {}
            for key, built in builds.items():
                outputs, seconds = evaluate.scores(artifact.CompiledModel(built.executable, built.sidecar), unseen, "")
                scores[key], ms[key] = metric(outputs), seconds * 1e3
            plan = planned.sidecar.accuracy_control
            kept = ", ".join(plan["restored"]) or "none"
            print(f"| {name} ({len(unseen)} unseen) | {metric_name} | {metric(reference):.2f} | {scores['int8']:.2f} | "
                  f"{scores['plan']:.2f} | {kept} | {'met' if metric(reference) - scores['plan'] <= args.budget else 'NOT met'} "
                  f"| {ms['fp32']:.2f} / {ms['int8']:.2f} / {ms['plan']:.2f} |", flush=True)
            print(f"{name}: {time.time() - start:.0f} s; search: {plan['before']:.2f} → {plan['after']:.2f}",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
