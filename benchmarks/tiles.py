"""Is the default register tile the right one? Every packed conv of a model's build timed alone with each register
tile that fits, beside the tile the cost model of `conv_templates.REGISTER_FILES` picks.

Prints a Markdown table, most time lost first: the conv's shape, its default tile and time, the fastest tile and
its time, and the three fastest tiles; then the sums over the model's calls. Kernels timed alone find their
weights in cache (see kernels.py): the table compares tiles, it does not predict the model's latency.

    python benchmarks/tiles.py MODEL.onnx --calib DATA --preprocess torch [--calib-count 8] [--top 25]
                               [--json TIMES.json]
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from kernels import call_counts, time_kernel  # benchmarks/kernels.py: the script's folder is on sys.path

from qcompile import driver, targets
from qcompile.data.calibdata import DataSource
from qcompile.data.datasets import PREPROCESS_PRESETS
from qcompile.driver import CompileRequest
from qcompile.lower import compiler, conv_templates


@dataclasses.dataclass
class Conv:
    name: str
    calls: int
    shape: tuple[int, int, int]  # output-channel blocks, output width, products a sum
    default: tuple[int, int]
    times: dict  # (oc_tile, x_tile) -> ms per call

    @property
    def best(self) -> tuple[int, int]:
        return min(self.times, key=self.times.get)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--calib", type=Path, required=True, help="calibration data")
    parser.add_argument("--calib-count", type=int, default=8)
    parser.add_argument("--preprocess", choices=sorted(PREPROCESS_PRESETS), default="torch")
    parser.add_argument("--top", type=int, default=25, help="rows to print (the sums cover every conv)")
    parser.add_argument("--json", type=Path, help="also write every conv's shape, calls and tile times here")
    args = parser.parse_args()
    convs = sweep(args)
    if args.json:
        args.json.write_text(json.dumps([{"name": c.name, "calls": c.calls, "shape": c.shape, "default": c.default,
                                          "times": [[*tile, ms] for tile, ms in c.times.items()]} for c in convs]))
    print(f"`python benchmarks/tiles.py {' '.join(sys.argv[1:])}`: {len(convs)} packed convs\n")
    print("| kernel | oc blocks × width × reduction | calls | default tile | ms | best tile | ms | default / best "
          "| fastest three |")
    print("|---|---|---|---|---|---|---|---|---|")
    lost = sorted(convs, key=lambda c: -(c.times[c.default] - c.times[c.best]) * c.calls)
    for c in lost[:args.top]:
        top3 = ", ".join(f"{o}×{x} {c.times[(o, x)]:.3f}" for o, x in sorted(c.times, key=c.times.get)[:3])
        print(f"| `{c.name[:48]}` | {'×'.join(map(str, c.shape))} | {c.calls} | {c.default[0]}×{c.default[1]} | "
              f"{c.times[c.default]:.3f} | {c.best[0]}×{c.best[1]} | {c.times[c.best]:.3f} | "
              f"{c.times[c.default] / c.times[c.best]:.2f} | {top3} |")
    default = sum(c.times[c.default] * c.calls for c in convs)
    best = sum(c.times[c.best] * c.calls for c in convs)
    print(f"\nSummed over the calls: default tiles {default:.3f} ms, fastest tiles {best:.3f} ms "
          f"(default / fastest {default / best:.2f}).")


def sweep(args) -> list[Conv]:
    import tvm
    from tvm import s_tir, tirx

    spec = targets.resolve("x86")
    calib = DataSource(path=args.calib, count=args.calib_count, preprocess=PREPROCESS_PRESETS[args.preprocess])
    lowered = compiler.lower_kernels(driver.lower_model(CompileRequest(model=args.model, target=spec,
                                                                       calib=calib)).mod, spec)
    files = conv_templates.register_files(spec.tvm_target())
    calls = call_counts(lowered)
    convs = []
    for gvar, func in lowered.functions_items():
        if not isinstance(func, tirx.PrimFunc) or gvar.name_hint not in calls:
            continue
        mod = tvm.IRModule({"main": func})
        found = [(f, s) for f in files if (s := conv_templates.conv_shape(s_tir.Schedule(mod), f)) is not None]
        if not found or not found[0][0].intrinsic:
            continue  # not an int8 packed conv
        file, (oc_blocks, width, reduction) = found[0]
        times = {}
        for oc, x in conv_templates.fitting_tiles(oc_blocks, width, file):
            sch = s_tir.Schedule(mod)
            try:
                conv_templates.schedule(sch, oc, x, file)
            except Exception:  # noqa: BLE001 - an epilogue that cannot be fused into the tile
                continue
            times[(oc, x)] = time_kernel(sch.mod["main"], spec)
        default = conv_templates.register_tile(oc_blocks, width, file, reduction)
        if default in times:
            convs.append(Conv(gvar.name_hint, calls[gvar.name_hint], (oc_blocks, width, reduction), default, times))
            print(f"{gvar.name_hint}: {len(times)} tiles", file=sys.stderr)
    return convs


if __name__ == "__main__":
    main()
