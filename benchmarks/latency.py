"""Latency of onnxruntime and qcompile (FP32 and INT8, default schedules and tuned) side by side, in one process.

For each model: onnxruntime FP32 and INT8 (quantize_static, QDQ, per-channel, u8×s8), qcompile FP32 and INT8
built without tuning records (the default schedules) and with the records in tuning_logs/ where they apply to
this CPU, at 1 and 2 threads, batch 1, p10/median/p90 over 30 interleaved runs after 3 warm-up runs (`qcompile
bench`'s harness). Prints a Markdown section with the
machine, the table, the tuning time behind the records and the fraction of the CPU's peak reached.

    python benchmarks/latency.py [--shared ../shared] [--models mobilenet,squeezenet,resnet50] > latency.md
"""

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from qcompile.measure import bench
from qcompile.tune import records
from qcompile import targets
from qcompile.driver import CompileRequest, lower_model
from qcompile.data.calibdata import DataSource
from qcompile.data.datasets import PREPROCESS_PRESETS

HERE = Path(__file__).resolve().parent
# key → (title, file under shared/models or None for the generated ResNet-50, preprocessing, calibration images).
# ResNet-50's weights are random, so its calibration only has to give plausible ranges: 16 images.
MODELS = {
    "mobilenet": ("MobileNet v1 0.75", "mobilenet_v1_0.75_224_keras.onnx", "tf", 100),
    "squeezenet": ("SqueezeNet 1.1", "squeezenet1.1_caffe2_fp32_op13.onnx", "caffe", 100),
    "resnet50": ("ResNet-50 v1.5 (random weights)", None, "torch", 16),
}
# The reference peak the issue fixes: one Cascade Lake core at 2.5 GHz
PEAK_GHZ, FP32_PER_CYCLE, INT8_PER_CYCLE = 2.5, 64, 256


def model_ops(path: Path) -> float:
    """Multiply-adds ×2 of the model's Conv and Gemm/MatMul nodes (the usual 'FLOPs' of a CNN), from shapes."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]  # dynamic batch: 1
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    ops = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, weight = shapes[node.output[0]], shapes[node.input[1]]
            ops += 2 * np.prod(out) * np.prod(weight[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            out, a = shapes[node.output[0]], shapes[node.input[0]]
            ops += 2 * np.prod(out) * a[-1]
    return float(ops)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    import os

    import onnxruntime
    import tvm

    spec = targets.resolve("x86")
    return (f"- CPU: {name}, {os.cpu_count()} logical cores; ISA: {', '.join(isa)}; LLVM CPU `{spec.target['mcpu']}`\n"
            f"- Python {platform.python_version()}, apache-tvm {tvm.__version__}, onnxruntime {onnxruntime.__version__}")


def tuning_summary(model: Path, sha: str, spec, roots=None, precisions=("fp32", "int8")) -> dict:
    """precision → (the records folder `qcompile build` uses, or the first under `roots`, its tuning totals), or
    None where it finds none."""
    out = {}
    for precision in precisions:
        folder = records.find(roots or records.RecordSource.default().roots, model, sha, precision, spec)
        history = None if folder is None else folder / "tuning.json"
        out[precision] = (folder, json.loads(history.read_text())) if history and history.is_file() else None
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--short-tune", type=Path, metavar="ROOT",
                        help="a records root written by 'qcompile tune MODEL --records ROOT --minutes 5': also time "
                             "each model's INT8 with its records there (the row names the folder)")
    args = parser.parse_args()
    spec = targets.resolve("x86")
    images = args.shared / "data" / "imagenet-sample"
    print("## Latency: onnxruntime vs qcompile, default schedules and tuned (issues 4, 22)\n")
    short = f" --short-tune {args.short_tune}" if args.short_tune else ""
    print(f"Command: `python benchmarks/latency.py --models {args.models} --repeat {args.repeat}{short}`\n")
    print(machine() + "\n")
    print("Batch 1, medians over {} interleaved runs after 3 warm-up runs (on 2 threads each timed run follows a "
          "{} s pause, in which the other variant's spinning workers go idle, then by an untimed run if runs take "
          "under {} s); 'tuned kernels' counts the kernels that got a schedule from tuning records ('untuned': none, "
          "every kernel has its default schedule). Peak: one "
          "Cascade Lake core at {} GHz, FP32 {} flop/cycle, INT8 VNNI {} op/cycle, times the threads.\n".format(
              args.repeat, bench.IDLE_PAUSE_S, bench.UNTIMED_RUN_BELOW_S, PEAK_GHZ, FP32_PER_CYCLE, INT8_PER_CYCLE))
    with tempfile.TemporaryDirectory(prefix="qcompile-latency-") as folder:
        scratch = Path(folder)
        for key in args.models.split(","):
            title, file, preprocess, calibration = MODELS[key]
            if file is None:
                from resnet50 import build as build_resnet

                path = scratch / "resnet50.onnx"
                onnx.save(build_resnet(), str(path))
            else:
                path = args.shared / "models" / file
            calib = DataSource(images, count=calibration, preprocess=PREPROCESS_PRESETS[preprocess])
            config = CompileRequest(model=path, target=spec, calib=calib)
            sidecar = lower_model(dataclasses.replace(config, precision="fp32")).sidecar
            tuning = tuning_summary(path, sidecar.model_sha256, spec)
            short = args.short_tune and tuning_summary(path, sidecar.model_sha256, spec, roots=[args.short_tune],
                                                       precisions=("int8",))["int8"]
            short_tune = short and short[0]
            rows = bench.run(bench.BenchConfig(compile=config, precisions=("fp32", "int8"), threads=(1, 2),
                                               compare_onnxruntime=True,
                                               compare_untuned=any(t is not None for t in tuning.values()),
                                               compare_records=(short_tune,) if short_tune else (),
                                               repeat=args.repeat, warmup=3))
            ops = model_ops(path)
            print(f"### {title} ({ops / 1e9:.2f} G multiply-add ops ×2)\n")
            table = ["| engine | precision | tuned kernels | threads | p10 ms | median ms | p90 ms | vs ORT INT8 | "
                     "% of peak |", "|---|---|---|---|---|---|---|---|---|"]
            for r in sorted(rows, key=lambda r: (r["threads"], r["engine"] != "onnxruntime", r["precision"],
                                                 r["tuned kernels"] != "untuned", "(" not in r["tuned kernels"])):
                ort_int8 = next(o for o in rows if (o["engine"], o["precision"], o["threads"]) ==
                                ("onnxruntime", "int8", r["threads"]))
                per_cycle = INT8_PER_CYCLE if r["precision"] == "int8" else FP32_PER_CYCLE
                peak = PEAK_GHZ * 1e9 * per_cycle * r["threads"]
                fraction = ops / (r["median ms"] / 1e3) / peak
                tuned = r["tuned kernels"].replace(f"({short_tune.name})", "(short tune)") if short_tune else \
                    r["tuned kernels"]
                table.append(f"| {r['engine']} | {r['precision']} | {tuned} | {r['threads']} | "
                             f"{r['p10 ms']:.2f} | {r['median ms']:.2f} | {r['p90 ms']:.2f} | "
                             f"{ort_int8['median ms'] / r['median ms']:.2f}× | {100 * fraction:.1f} % |")
            print("\n".join(table) + "\n")
            for precision, found in [*tuning.items(), ("int8, short tune", short)]:
                if found is not None:
                    folder, t = found
                    print(f"- {precision} records: {t['measured']} candidates measured in {t['seconds'] / 60:.1f} min "
                          f"of tuning ({t['runs']} run(s)) on `{json.dumps(records.measured_on(folder))}`.")
            print()
            sys.stdout.flush()


if __name__ == "__main__":
    main()
