"""Where a model's time goes: each kernel of its build timed alone, on random inputs, with its call count.

Builds the model as `qcompile build` does (same passes, the tuning records it finds, the default schedules),
then times every kernel of the lowered module with TVM's time evaluator and prints a Markdown table, slowest
total first: per-call and total time, how it got its schedule (tuned record, fixed rule, default template, or
none) and, for the packed (dense) convs, the int8 multiply-adds per second. Kernels timed alone find their weights in cache: their sum is a lower bound of the
model's latency, not a prediction of it.

    python benchmarks/kernels.py MODEL.onnx --calib DATA --preprocess tf [--precision int8] [--untuned] [--top 25]
                                 [--input-shape NAME:DIMS]
"""

import argparse
import collections
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

from qcompile import cli, driver, targets
from qcompile.lower import compiler
from qcompile.tune import records
from qcompile.driver import CompileRequest
from qcompile.data.calibdata import DataSource
from qcompile.data.datasets import PREPROCESS_PRESETS
from qcompile.errors import QcompileError
from qcompile.lower.kernels import CONV_BLOCK
from qcompile.quantize.quantizer import QuantConfig


@dataclasses.dataclass
class Kernel:
    name: str
    calls: int
    ms: float  # median of one call
    schedule: str  # "tuned", "fixed" or "none"
    macs: int  # int8 multiply-adds of a packed dense conv (0 for other kernels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--calib", type=Path, help="calibration data (int8)")
    parser.add_argument("--calib-count", type=int, default=16)
    parser.add_argument("--preprocess", choices=sorted(PREPROCESS_PRESETS), default="torch")
    parser.add_argument("--precision", choices=driver.PRECISIONS, default="int8")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                        help="static shape of a dynamic input, as `qcompile build --input-shape` (repeatable)")
    parser.add_argument("--target", default="x86", help="a CPU preset this machine runs (default: x86)")
    parser.add_argument("--untuned", action="store_true", help="ignore tuning records: every kernel's default schedule")
    parser.add_argument("--top", type=int, default=25, help="rows to print (the total covers every kernel)")
    parser.add_argument("--exclude-nodes", action="append", default=[], metavar="NAME|OPTYPE",
                        help="ONNX nodes kept in FP32, as `qcompile build --exclude-nodes` (repeatable)")
    args = parser.parse_args()
    if args.precision == "int8" and args.calib is None:
        parser.error("--calib is needed for int8")
    try:
        kernels = profile(args)
    except QcompileError as err:
        raise SystemExit(f"kernels.py: {err}") from None
    total = sum(k.ms * k.calls for k in kernels)
    print(f"`python benchmarks/kernels.py {' '.join(sys.argv[1:])}`: {len(kernels)} kernels, "
          f"{total:.3f} ms summed over their calls\n")
    print("| kernel | calls | ms per call | ms in all | share | schedule | G int8 MAC/s |")
    print("|---|---|---|---|---|---|---|")
    for k in kernels[:args.top]:
        rate = f"{k.macs / k.ms / 1e6:.0f}" if k.macs else ""
        print(f"| `{k.name[:70]}` | {k.calls} | {k.ms:.3f} | {k.ms * k.calls:.3f} | "
              f"{k.ms * k.calls / total:.1%} | {k.schedule} | {rate} |")


def profile(args) -> list[Kernel]:
    from tvm import tirx

    spec = targets.resolve(args.target)
    if spec.kind != "llvm" or spec.is_cross:
        raise SystemExit(f"kernels.py: --target {args.target} does not run on this machine's CPU")
    calib = None
    if args.precision == "int8":
        calib = DataSource(path=args.calib, count=args.calib_count, preprocess=PREPROCESS_PRESETS[args.preprocess])
    config = CompileRequest(model=args.model, target=spec, precision=args.precision, calib=calib,
                            input_shapes=cli.parse_input_shapes(args.input_shape),
                            quant=QuantConfig(exclude=frozenset(args.exclude_nodes)))
    lowered_model = driver.lower_model(config)
    mod, sidecar = lowered_model.mod, lowered_model.sidecar
    lowered = compiler.lower_kernels(mod, spec)
    fixed = {gv.name_hint for gv, f in lowered.functions_items()
             if isinstance(f, tirx.PrimFunc) and f.attrs and f.attrs.get("tirx.is_scheduled", False)}
    macs = {gv.name_hint: _conv_macs(f) for gv, f in lowered.functions_items()
            if isinstance(f, tirx.PrimFunc) and gv.name_hint not in fixed}
    database = None if args.untuned else driver.find_records(config, sidecar)
    if database is not None:
        lowered, _, _ = records.apply(lowered, database, spec.tvm_target())
    tuned = {gv.name_hint for gv, f in lowered.functions_items()
             if isinstance(f, tirx.PrimFunc) and f.attrs and f.attrs.get("tirx.is_scheduled", False)} - fixed
    lowered = compiler.schedule_defaults(lowered, spec)
    calls = call_counts(lowered)
    result = []
    for gvar, func in lowered.functions_items():
        if not isinstance(func, tirx.PrimFunc) or gvar.name_hint not in calls:
            continue
        scheduled = func.attrs and func.attrs.get("tirx.is_scheduled", False)
        schedule = ("fixed" if gvar.name_hint in fixed else "tuned" if gvar.name_hint in tuned
                    else "default" if scheduled else "none")
        result.append(Kernel(gvar.name_hint, calls[gvar.name_hint], time_kernel(func, spec), schedule,
                             macs.get(gvar.name_hint, 0)))
    return sorted(result, key=lambda k: -k.ms * k.calls)


def call_counts(mod) -> collections.Counter:
    import tvm
    from tvm import relax

    counts = collections.Counter()

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op == call_tir:
            counts[expr.args[0].name_hint] += 1

    call_tir = tvm.ir.Op.get("relax.call_tir")
    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


def time_kernel(func, spec) -> float:
    """Median milliseconds of one call of `func` alone, on random data."""
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=spec.tvm_target())
    rng = np.random.default_rng(0)
    args = []
    for info in ArgInfo.from_prim_func(func):
        shape, dtype = [int(d) for d in info.shape], str(info.dtype)
        # small integers keep requantize shifts and multipliers in range; the timing does not depend on values
        data = rng.random(shape) if "float" in dtype else rng.integers(0, 4, shape)
        args.append(tvm.runtime.tensor(data.astype(dtype)))
    timer = library.jit().time_evaluator("main", tvm.cpu(), number=20, repeat=5)
    return float(np.median(timer(*args).results)) * 1e3


def _conv_macs(func) -> int:
    """int8 multiply-adds of a packed dense conv kernel, from its unscheduled form: the conv block's iteration
    space (0 if it has none)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint == CONV_BLOCK:
            return math.prod(int(iv.dom.extent) for iv in sch.get(block).iter_vars)
    return 0


if __name__ == "__main__":
    main()
