"""The `qcompile` command line: parses and validates options once, then calls the library."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from .errors import QcompileError


# the request fields error messages name (`QcompileError`), as the options that set them
OPTION_FLAGS = {
    "target": "--target", "input_shapes": "--input-shape", "calib": "--calib", "precision": "--precision",
    "precisions": "--precision", "output": "--output", "inputs": "--input", "trials": "--trials",
    "minutes": "--minutes", "batch": "--batch", "cores": "--cores", "rpc": "--rpc", "rpc_tracker": "--rpc-tracker",
    "rpc_key": "--rpc-key", "repeat": "--repeat", "warmup": "--warmup", "threads": "--threads",
    "compare_onnxruntime": "--compare onnxruntime", "report": "--report", "no_verify": "--no-verify",
    "verify_count": "--verify-count", "max_accuracy_drop": "--max-accuracy-drop", "accuracy_data": "--data",
    "exclude": "--exclude-nodes", "verify_data": "--verify-data",
}


class _Interrupts:
    """Ctrl-C: raises KeyboardInterrupt as Python's own handler does, and remembers it, for when TVM's C++ code
    turns it into an ordinary error or one of its passes catches it (`Reporter.interrupted`)."""

    seen = False

    @classmethod
    def handle(cls, signum, frame):
        cls.seen = True
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _Interrupts.seen = False
    previous = signal.signal(signal.SIGINT, _Interrupts.handle)
    try:
        return _run_command(args)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_command(args) -> int:
    try:
        return args.handler(args) or 0
    except QcompileError as err:
        print(f"qcompile: error: {err.render(OPTION_FLAGS)}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        print("qcompile: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`| head`): nothing left to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as err:  # a bug of ours or TVM's: still one line unless --debug
        if _Interrupts.seen:  # TVM's C++ code turned the Ctrl-C into an error of its own
            print("qcompile: interrupted", file=sys.stderr)
            return 130
        if args.debug:
            traceback.print_exc()
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"qcompile: internal error: {type(err).__name__}: {first} (rerun with --debug for details)", file=sys.stderr)
        return 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qcompile",
        description="Compile ONNX models with Apache TVM into deployable shared libraries for x86, 64-bit ARM and CUDA.",
    )
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="on errors, show the full Python traceback; also report each compiler pass's time")
    common.add_argument("--dump-ir", type=Path, metavar="DIR",
                        help="write the IR after every compiler pass into DIR, one folder per pipeline (debugging)")
    common.add_argument("-q", "--quiet", action="store_true", help="do not report progress on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(command=None, debug=False)

    build = sub.add_parser("build", parents=[common], help="compile an ONNX model into a shared library",
                           description="Import an ONNX model, compile it for a target and write one shared library "
                                       "(weights embedded) plus a JSON sidecar describing its inputs and outputs.")
    build.add_argument("model", type=Path, help="the ONNX model file")
    build.add_argument("-t", "--target", default="x86",
                       help="a preset name (see 'qcompile targets'; 'cuda:sm_80' picks a CUDA arch), a preset .toml "
                            "file, or a TVM target dict as JSON (default: x86, this machine's CPU)")
    build.add_argument("-o", "--output", type=Path,
                       help="the library to write, ending in .so; its sidecar gets the same name with .json "
                            "(default: MODEL_TARGET.so in the current folder)")
    _add_input_shape(build)
    _add_quantization_options(build)
    build.add_argument("--report", type=Path, metavar="REPORT.md",
                       help="write a quantization report (Markdown, and JSON beside it): each quantized tensor's "
                            "SQNR and cosine against FP32, worst first, integer vs float operator counts, scales")
    _add_tuning_log_options(build)
    build.add_argument("--bundle", type=Path, metavar="DIR",
                       help="also write a deploy kit to DIR: the library, the TVM runtime for the target's CPU "
                            "(x86_64 or aarch64), a C++ runner (source and binary) and a README for the board")
    accuracy = build.add_argument_group("accuracy control (INT8)")
    accuracy.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                          help="where all layers in INT8 miss the budget, first measure a wider percentile of "
                               "the activation ranges (99.999, no new calibration) and keep it if it scores better; "
                               "then restore the layers whose quantization costs "
                               "the most to FP32, one at a time, until "
                               "the INT8 metric is at most POINTS (percentage points) below FP32's on held-out "
                               "data: with --labels theirs (top-1 of classes, exact text lines), else agreement "
                               "with FP32 read by the output's form (top-1 "
                               "of class scores, the decoded text of a per-step softmax, decisions at 0.5 of "
                               "independent probabilities) or the outputs' cosine to FP32 ×100; where no single "
                               "layer helps, the fewest layers nearest the input (then the output, then both "
                               "ends) that do. The plan goes into the "
                               "sidecar. It fails, writing nothing, when the budget is not met (default: off)")
    accuracy.add_argument("--data", type=Path, metavar="DIR|FILE",
                          help="held-out inputs for --max-accuracy-drop, as for --calib (default: calibration "
                               "samples the calibration did not use)")
    accuracy.add_argument("--labels", type=Path, metavar="FILE",
                          help="labels of those inputs: a synsets list for <wnid>_*.JPEG images, a .npy or an IDX "
                               "file of classes, or text lines for a CTC recognizer with a character list in its "
                               "metadata (PaddleOCR's): a .txt, one line a sample, or a .tsv of FILE<tab>TEXT "
                               "(default: none; the metric is then the agreement with FP32)")
    accuracy.add_argument("--data-count", type=int, default=100, metavar="N",
                          help="held-out samples to measure on (default 100)")
    verify = build.add_argument_group("verification (before anything is written)")
    verify.add_argument("--no-verify", action="store_true",
                        help="write the library without first running it beside onnxruntime's FP32 (by default an "
                             "FP32 build must agree within 1e-3 of each output's range, an INT8 build keep each "
                             "output's cosine above 0.9, or nothing is written; aarch64 builds run under qemu for it "
                             "where qemu is installed, CUDA builds only where a GPU is)")
    verify.add_argument("--verify-data", type=Path, metavar="DIR|FILE",
                        help="inputs to verify on, as for --calib (default: calibration samples the calibration "
                             "did not use, else random inputs)")
    verify.add_argument("--verify-count", type=int, default=4, metavar="N",
                        help="inputs to verify on (default 4)")
    build.set_defaults(handler=_build)

    run = sub.add_parser("run", parents=[common], help="run a built library on inputs from .npy/.npz files",
                         description="Load a library written by 'qcompile build' and run it on this machine.")
    run.add_argument("library", type=Path, help="the .so written by 'qcompile build' (its .json sidecar beside it)")
    run.add_argument("-i", "--input", action="append", default=[], metavar="[NAME=]FILE",
                     help="input data: a .npy for a one-input model, NAME=FILE.npy per input, or one .npz keyed by "
                          "input name; repeatable")
    run.add_argument("-o", "--output", type=Path, help="save the outputs to this .npz, keyed by output name")
    _add_rpc_options(run)
    run.set_defaults(handler=_run)

    evaluate = sub.add_parser("eval", parents=[common], help="accuracy of FP32 and INT8 on labelled data",
                              description="Compile an ONNX model in FP32 and INT8 for this machine (or load a built "
                                          "library) and measure its accuracy on labelled data: top-1/top-5 and the "
                                          "INT8-vs-FP32 top-1 agreement for classes, the share of exactly read "
                                          "lines and of lines read as FP32 does for text. Calibration samples taken "
                                          "from the evaluation data are left out of the evaluation.")
    evaluate.add_argument("model", type=Path, help="an ONNX model, or a .so written by 'qcompile build'")
    evaluate.add_argument("--data", type=Path, required=True,
                          help="evaluation inputs: a folder of images, a .npy/.npz, or an IDX file")
    evaluate.add_argument("--labels", type=Path, required=True,
                          help="labels: a synsets list (line i = wnid of class i, images named <wnid>_*.JPEG), "
                               "a .npy of class indices, an IDX file, or text lines for a CTC text recognizer "
                               "whose ONNX metadata has its character list (PaddleOCR's 'character'): a .txt, one "
                               "line a sample, or a .tsv of FILE<tab>TEXT (spaces are ignored in the comparison)")
    evaluate.add_argument("--count", type=int, default=1000, help="evaluate at most this many samples (default 1000)")
    evaluate.add_argument("-t", "--target", default="x86",
                          help="a target that runs on this machine (default: x86); see 'qcompile build --help'")
    _add_input_shape(evaluate)
    _add_quantization_options(evaluate, precision=False)
    evaluate.add_argument("--precision", default="fp32,int8", metavar="LIST",
                          help="comma-separated builds to evaluate side by side: fp32, int8, int8-weights, "
                               "int8-dynamic (see 'qcompile build --help'); fp32, the reference, always is "
                               "(default: fp32,int8)")
    evaluate.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                          help="also build INT8 with accuracy control (see 'qcompile build --help'): its plan is "
                               "searched on the even-numbered evaluation samples, and every row of the table is "
                               "then measured on the odd-numbered ones, which the search never saw (default: off)")
    evaluate.set_defaults(handler=_eval)

    bench = sub.add_parser("bench", parents=[common], help="latency table: FP32 vs INT8 (vs onnxruntime)",
                           description="Build the model in each precision, warm up, then time every variant in "
                                       "interleaved rounds (so machine noise hits them alike) and print a table: "
                                       "median/p90/min latency, throughput, speedups, size, INT8 agreement.")
    bench.add_argument("model", type=Path, help="the ONNX model file")
    bench.add_argument("-t", "--target", default="x86",
                       help="preset, preset file or TVM target dict (default: x86); other machines need --rpc")
    bench.add_argument("--precision", default="fp32,int8", metavar="LIST",
                       help="comma-separated precisions to compare: fp32, int8, int8-weights, int8-dynamic (see "
                            "'qcompile build --help'; onnxruntime's counterparts with --compare onnxruntime: "
                            "quantize_static for int8, quantize_dynamic of MatMul/Gemm/Gather for int8-dynamic) "
                            "(default: fp32,int8)")
    bench.add_argument("--threads", default="1", metavar="LIST",
                       help="comma-separated thread counts, e.g. 1,2 (default: 1)")
    bench.add_argument("--compare", choices=("onnxruntime", "untuned"), action="append", default=[],
                       help="onnxruntime: also time onnxruntime on the same inputs (its INT8: quantize_static QDQ "
                            "per-channel, same calibration data); untuned: also time qcompile's builds without "
                            "tuning records; repeatable")
    bench.add_argument("--compare-tuning-log", type=Path, action="append", default=[], metavar="DIR",
                       help="also time builds with the records in this folder (written by 'qcompile tune'), for "
                            "example a short tune's beside the full one's; its rows name the folder; repeatable")
    bench.add_argument("--repeat", type=int, default=30, help="timed rounds per variant (default 30)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed runs per variant first (default 3)")
    bench.add_argument("--format", choices=("md", "csv", "json"), default="md",
                       help="format of the table printed on stdout (default md)")
    bench.add_argument("--output", type=Path, action="append", default=[], metavar="FILE.md|.csv|.json",
                       help="also write the table to this file, in the format its extension names; repeatable, "
                            "all from the same measurements")
    bench.add_argument("--plot", type=Path, metavar="PNG", help="also draw a bar chart of the latencies")
    bench.add_argument("--data", type=Path,
                       help="inputs (as for --calib) on which to report INT8-vs-FP32 top-1 agreement")
    bench.add_argument("--data-count", type=int, default=100, help="samples of --data to use (default 100)")
    _add_input_shape(bench)
    _add_quantization_options(bench, precision=False)
    _add_tuning_log_options(bench)
    _add_rpc_options(bench)  # on a board, the board's own thread pool runs; --threads applies to this machine
    bench.set_defaults(handler=_bench)

    tune = sub.add_parser("tune", parents=[common], help="auto-tune a model's kernels for a target (MetaSchedule)",
                          description="Quantize the model as 'qcompile build' would (or keep it FP32), extract its "
                                      "kernels and search schedules for them with MetaSchedule and its XGBoost cost "
                                      "model, int8 convolutions tensorized with the CPU's dot-product instruction "
                                      "(VNNI vpdpbusd, ARM sdot). Records go to <records>/<model>/<precision>/"
                                      "<target>/ (records: --records, default the user's records folder, see "
                                      "'qcompile targets'), where 'qcompile build' finds them. Running it again "
                                      "continues "
                                      "from the stored records. On CPUs, the search's best schedules of each kernel "
                                      "(and hand-written ones for int8 convs on VNNI) are then re-timed with the "
                                      "weights flushed from the caches, as in the running network, and the fastest "
                                      "is what 'qcompile build' uses. Before searching, kernels with no record get "
                                      "the measured replays of stored schedules of same-shaped kernels (this "
                                      "model's, and the records library's: other models'); after it, what was tuned "
                                      "joins the records library of --records (not with --tuning-log). Ctrl-C stops "
                                      "after the batch being measured (and that re-timing) and keeps everything "
                                      "measured.")
    tune.add_argument("model", type=Path, help="the ONNX model file")
    tune.add_argument("-t", "--target", default="x86",
                      help="preset, preset file or TVM target dict (default: x86, this machine's CPU); a board's "
                           "target needs --rpc-tracker")
    budget = tune.add_argument_group("budget (whichever ends first)")
    budget.add_argument("--trials", type=int, default=2000,
                        help="candidate schedules to measure in all, shared among the kernels (default 2000)")
    budget.add_argument("--minutes", type=float,
                        help="stop after this many minutes, the cold re-timing included; a budget too short for a "
                             "search round over every kernel searches those with the most work (default: no limit)")
    tune.add_argument("--batch", type=int, default=16,
                      help="candidates measured per kernel per search round (default 16: every kernel is measured "
                           "once before the budget goes where it helps most); Ctrl-C and --minutes act between "
                           "rounds")
    tune.add_argument("--untuned-only", action="store_true",
                      help="tune only the kernels that have no stored record yet (for example the kernels a newer "
                           "qcompile compiles differently), leaving the others' records as they are")
    tune.add_argument("--cores", type=int,
                      help="threads the candidates are measured on, so schedules are chosen for the thread count "
                           "the library will run on (default: the target's num-cores, else this machine's cores)")
    tune.add_argument("--tuning-log", type=Path, metavar="DIR",
                      help="the records folder to write (and continue from) instead of the model's folder under "
                           "--records")
    tune.add_argument("--records", type=Path, metavar="DIR",
                      help="the root of the records folders to write into (default: the user's records folder, "
                           "$QCOMPILE_RECORDS or ~/.cache/qcompile/tuning_logs)")
    _add_input_shape(tune)
    _add_quantization_options(tune)
    rpc = tune.add_argument_group("measuring on a board (TVM RPC)")
    rpc.add_argument("--rpc-tracker", metavar="HOST:PORT",
                     help="measure candidates on boards registered with this TVM RPC tracker (with --rpc-key); "
                          "several boards behind one tracker measure in turn")
    rpc.add_argument("--rpc-key", metavar="KEY", help="the key the boards registered with")
    tune.set_defaults(handler=_tune, rpc=None)

    inspect = sub.add_parser("inspect", parents=[common], help="list a model's operators, inputs and outputs",
                             description="Show an ONNX model's input/output signature and its operators with counts, "
                                         "and whether qcompile's pipeline supports each; or, for a library built "
                                         "by 'qcompile build', what its sidecar records: signature, target, "
                                         "precision, tuned kernels and the verification figures.")
    inspect.add_argument("model", type=Path, help="the ONNX model file, or a .so written by 'qcompile build'")
    _add_input_shape(inspect)
    inspect.set_defaults(handler=_inspect)

    targets = sub.add_parser("targets", parents=[common], help="list the target presets",
                             description="List the target presets in targets/ with their TVM target dicts.")
    targets.set_defaults(handler=_targets)
    return parser


def _add_rpc_options(parser: argparse.ArgumentParser) -> None:
    rpc = parser.add_argument_group("remote board (TVM RPC)")
    rpc.add_argument("--rpc", metavar="HOST:PORT",
                     help="run on the board whose RPC server (e.g. the deploy kit's qcompile-rpc-server) listens here")
    rpc.add_argument("--rpc-tracker", metavar="HOST:PORT",
                     help="run on a board taken from this TVM RPC tracker (with --rpc-key)")
    rpc.add_argument("--rpc-key", metavar="KEY", help="the key the boards registered with (tracker) or require")


def _add_tuning_log_options(parser: argparse.ArgumentParser) -> None:
    tuning = parser.add_argument_group("tuning records")
    tuning.add_argument("--tuning-log", type=Path, metavar="DIR",
                        help="apply the records in this folder (written by 'qcompile tune') instead of looking "
                             "for this model and target's folder (and no records library)")
    tuning.add_argument("--records", type=Path, metavar="DIR",
                        help="look for this model and target's records under DIR first, then in the user's records "
                             "folder ($QCOMPILE_RECORDS or ~/.cache/qcompile/tuning_logs), then in those shipped "
                             "with qcompile (default: those two); kernels still without a record then take the "
                             "schedule of a same-shaped kernel from those folders' records library (tuned in "
                             "other models), if any")
    tuning.add_argument("--untuned", action="store_true",
                        help="ignore tuning records: compile with qcompile's default schedules (register-tile "
                             "templates for convs and matmuls, fixed schedules for the rest)")


def record_source(args):
    """The RecordSource that --tuning-log / --records / --untuned ask for."""
    from .tune.records import RecordSource

    if sum((args.untuned, args.tuning_log is not None, args.records is not None)) > 1:
        raise QcompileError("give one of --tuning-log, --records and --untuned")
    if args.tuning_log is not None and not args.tuning_log.is_dir():
        raise QcompileError(f"tuning log folder not found: {args.tuning_log}")
    if args.untuned:
        return RecordSource()
    if args.tuning_log is not None:
        return RecordSource(folder=args.tuning_log)
    return RecordSource.default(args.records)


def reporter(args):
    from .progress import Reporter

    return Reporter(quiet=args.quiet, debug=args.debug, dump_ir=args.dump_ir, interrupted=lambda: _Interrupts.seen)


def _add_input_shape(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                        help="static shape of an input, e.g. input:1x3x224x224; needed for dynamic dimensions other "
                             "than a leading batch dimension, which defaults to 1; repeatable")


def _add_quantization_options(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    from .driver import PRECISIONS
    from .data.datasets import FITS, PREPROCESS_PRESETS
    from .quantize.calibrate import METHODS, CalibrationConfig

    defaults = CalibrationConfig()

    q = parser.add_argument_group("quantization (INT8)")
    if precision:
        q.add_argument("--precision", choices=PRECISIONS, default="int8",
                       help="int8: quantize weights and activations, integer kernels (needs --calib); fp32: compile "
                            "the model as it is; int8-weights: MatMul/Gemm weights in int8, converted inside the "
                            "kernel, activations float (4x smaller weights, no calibration; convolutions stay FP32); "
                            "int8-dynamic: MatMul/Gemm and Conv weights in int8, activations quantized at run time "
                            "(per row; per sample for convs), integer matmuls and convs (no calibration; convs lose "
                            "more accuracy than matmuls this way: --exclude-nodes Conv keeps them FP32). Embedding "
                            "tables are int8 in every int8 precision (default: int8)")
    q.add_argument("--calib", type=Path, metavar="DIR|FILE",
                   help="calibration data: a folder of images (preprocessed as below), a .npy (samples × input "
                        "shape), an .npz keyed by input name, or an IDX file")
    q.add_argument("--calib-count", type=int, default=100, metavar="N",
                   help="calibration samples, spread evenly over the data (default: 100)")
    q.add_argument("--calib-random", action="store_true",
                   help="calibrate on random inputs when no data exists (a loud warning: accuracy is then arbitrary)")
    q.add_argument("--calibration", choices=METHODS, default=defaults.method,
                   help="how activation ranges are chosen: minmax, percentile (of |x|), entropy (KL divergence, "
                        "TensorRT-style), mse, or adaptive (per tensor, whichever of those four ranges quantizes "
                        "its calibration values with the least squared error; the report names each choice) "
                        f"(default: {defaults.method})")
    q.add_argument("--percentile", type=float, default=defaults.percentile,
                   help=f"the percentile for --calibration percentile (default: {defaults.percentile:g})")
    q.add_argument("--activation-dtype", choices=("uint8", "int8"),
                   help="activation type: uint8 asymmetric or int8 symmetric (default: the target's; x86 VNNI "
                        "takes uint8, ARM sdot and CUDA dp4a int8)")
    q.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor instead of one per output channel")
    q.add_argument("--exclude-nodes", "--skip-layers", action="append", default=[], metavar="NAME|OPTYPE",
                   help="keep in FP32 the ONNX node of this name, or every node of this op type (e.g. Conv); "
                        "repeatable")
    q.add_argument("--simulate", action="store_true",
                   help="compile the fake-quantized FP32 graph (quantize/dequantize pairs) instead of integer "
                        "kernels: for debugging accuracy")
    p = parser.add_argument_group("image preprocessing (for --calib DIR)")
    p.add_argument("--preprocess", choices=sorted(PREPROCESS_PRESETS), default="tf",
                   help="preset: tf (RGB, x/127.5-1), caffe (BGR, minus ImageNet mean), torch (RGB, /255, "
                        "ImageNet mean/std) (default: tf); the options below override its parts")
    p.add_argument("--resize", type=int, metavar="N", help="resize the short side to N pixels (default 256)")
    p.add_argument("--crop", type=int, metavar="N", help="then centre-crop N×N (default 224)")
    p.add_argument("--fit", choices=FITS, default="crop",
                   help="crop: resize and centre-crop as above (default); pad: resize to the input's height keeping "
                        "the aspect ratio (at most its width), normalize, pad right with 0: text-line "
                        "recognizers' (PaddleOCR's) convention")
    p.add_argument("--channels", choices=("RGB", "BGR"), help="channel order")
    p.add_argument("--scale", type=float, help="multiply pixel values (0-255) by this first")
    p.add_argument("--mean", type=_triple, metavar="A,B,C", help="then subtract these, per channel")
    p.add_argument("--std", type=_triple, metavar="A,B,C", help="then divide by these, per channel")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), help="tensor layout (default NCHW)")


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values


def quant_config(args, spec):
    from .quantize.calibrate import CalibrationConfig
    from .quantize.quantizer import QuantConfig

    return QuantConfig(
        calibration=CalibrationConfig(method=args.calibration, percentile=args.percentile),
        activation_dtype=args.activation_dtype or spec.activation_dtype,
        per_channel=not args.per_tensor,
        exclude=frozenset(args.exclude_nodes),
        simulate=args.simulate,
    )


def data_source(args):
    import dataclasses

    from .data.calibdata import DataSource
    from .data.datasets import PREPROCESS_PRESETS

    overrides = {"resize_short": args.resize, "crop": args.crop, "channels": args.channels, "scale": args.scale,
                 "mean": args.mean, "std": args.std, "layout": args.layout, "fit": args.fit}
    preprocess = dataclasses.replace(PREPROCESS_PRESETS[args.preprocess],
                                     **{k: v for k, v in overrides.items() if v is not None})
    return DataSource(path=args.calib, count=args.calib_count, preprocess=preprocess, random=args.calib_random)


def parse_input_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) <= 0:
            raise QcompileError(f"--input-shape '{item}': expected NAME:DIMS with positive dimensions, e.g. input:1x3x224x224")
        shapes[name] = shape
    return shapes


def compile_request(args, spec, precision: str, calibrate: bool = True, **fields):
    """The CompileRequest the shared options of build, eval, bench and tune describe (`fields`: others, such as
    the records to apply)."""
    from .driver import CompileRequest

    return CompileRequest(model=args.model, target=spec, input_shapes=parse_input_shapes(args.input_shape),
                          precision=precision, quant=quant_config(args, spec),
                          calib=data_source(args) if calibrate and precision == "int8" else None, **fields)


def _build(args) -> int:
    from . import targets
    from .driver import EmitRequest, build

    import dataclasses

    from .runtime.verify import VerifyConfig

    spec = targets.resolve(args.target)
    output = args.output or Path(f"{args.model.stem}_{spec.name.replace(':', '_')}_{args.precision}.so")
    verify_data = None
    if args.verify_data is not None:
        verify_data = dataclasses.replace(data_source(args), path=args.verify_data, count=args.verify_count,
                                          random=False)
    emit = EmitRequest(output=output, report=args.report if args.precision == "int8" else None, bundle=args.bundle,
                       verify=VerifyConfig(enabled=not args.no_verify, samples=args.verify_count),
                       verify_data=verify_data)
    request = compile_request(args, spec, args.precision, records=record_source(args),
                              accuracy=accuracy_control(args))
    sidecar = build(request, emit, reporter(args))
    print(f"wrote {output} and {output.with_suffix('.json').name} ({sidecar.precision}, target {spec.name})")
    return 0


def accuracy_control(args):
    """--max-accuracy-drop and its data, checked; None when not asked for."""
    import dataclasses

    from .driver import AccuracyControl
    from .quantize.fallback import AccuracyConfig

    if args.max_accuracy_drop is None:
        if args.data is not None or args.labels is not None:
            raise QcompileError("--data and --labels are the held-out data of --max-accuracy-drop; give that too")
        return None
    if args.precision != "int8":
        raise QcompileError("--max-accuracy-drop applies to INT8 builds (--precision int8)")
    if args.data_count <= 0:
        raise QcompileError(f"--data-count must be positive, not {args.data_count}")
    for path in (args.data, args.labels):
        if path is not None and not path.exists():
            raise QcompileError(f"not found: {path}")
    data = dataclasses.replace(data_source(args), path=args.data or args.calib, count=args.data_count, random=False)
    return AccuracyControl(AccuracyConfig(args.max_accuracy_drop), data=data, labels=args.labels)


def _run(args) -> int:
    from .data.runio import read_inputs, save_outputs, summarize
    from .runtime.artifact import load
    from .runtime.deploy import remote

    board = remote.RemoteSpec.parse(args.rpc, args.rpc_tracker, args.rpc_key)
    model = load(args.library) if board is None else remote.load(args.library, board)
    outputs = model(**read_inputs(args.input, model.inputs))
    named = {sig.name: value for sig, value in zip(model.outputs, outputs)}
    print(summarize(named))
    if model.sidecar.verification is not None:
        from .runtime.verify import summary

        print(f"build {summary(model.sidecar.verification)}")
    if args.output:
        save_outputs(named, args.output)
        print(f"saved {len(named)} output(s) to {args.output}")
    return 0


def _eval(args) -> int:
    import dataclasses

    from tabulate import tabulate

    from . import targets
    from .driver import PRECISIONS, compile_model
    from .frontend import importer
    from .measure import evaluate, task
    from .runtime import artifact

    for what, path in (("evaluation data", args.data), ("labels file", args.labels)):
        if not path.exists():
            raise QcompileError(f"{what} not found: {path}")
    source = dataclasses.replace(data_source(args), path=args.data, count=args.count)
    shared = source.same_data(args.calib)
    data = evaluate.EvalData(source=source, labels=args.labels, calibration_count=args.calib_count if shared else 0)
    report = reporter(args)
    precisions = list(dict.fromkeys(["fp32"] + [p.strip() for p in args.precision.split(",") if p.strip()]))
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise QcompileError(f"--precision takes {', '.join(PRECISIONS)} (comma-separated), not {unknown[0]!r}")
    controlled = args.max_accuracy_drop is not None
    if controlled and (args.model.suffix == ".so" or "int8" not in precisions):
        raise QcompileError("--max-accuracy-drop needs an ONNX model and int8 among --precision")
    if args.model.suffix == ".so":
        models = {"library": artifact.load(args.model)}
    else:
        spec = targets.resolve(args.target)
        variants = [(p, p, None) for p in precisions]
        if controlled:
            from .driver import AccuracyControl
            from .quantize.fallback import AccuracyConfig

            control = AccuracyControl(AccuracyConfig(args.max_accuracy_drop), source, args.labels, stride=(0, 2))
            variants.append((f"int8 (≤{args.max_accuracy_drop:g} drop)", "int8", control))
        models = {}
        for name, precision, control in variants:
            compiled = compile_model(compile_request(args, spec, precision, accuracy=control), report)
            models[name] = artifact.CompiledModel(compiled.executable, compiled.sidecar, name=f"the {name} build")
    first = next(iter(models.values()))
    characters = ()
    if task.is_text(args.labels):
        if args.model.suffix == ".so":
            raise QcompileError("text labels need the ONNX model (its character list), not a built library")
        characters = task.characters(importer.load(args.model).proto, int(first.outputs[0].shape[-1]))
    samples, labels = evaluate.load(data, first.inputs, characters)
    if controlled:  # the search measured the even-numbered samples
        samples, labels = list(samples)[1::2], labels[1::2]
    results, seconds = {}, {}
    for name, m in models.items():
        results[name], seconds[name] = evaluate.scores(m, samples, f"evaluating {name}", report)
    note = f", leaving out the {args.calib_count} that calibrated" if shared else ""
    note += "; the odd-numbered ones, which accuracy control did not search on" if controlled else ""
    print(f"{args.model.name}: {len(samples)} samples from {args.data}{note}\n")
    headers, rows = evaluate.table(results, labels)
    rows = [row + (f"{seconds[row[0]] * 1e3:.1f}",) for row in rows]
    print(tabulate(rows, headers=[*headers, "ms a sample (here)"], tablefmt="github"))
    return 0


def _bench(args) -> int:
    import dataclasses

    from . import targets
    from .measure import bench
    from .runtime.deploy import remote

    spec = targets.resolve(args.target)
    try:
        threads = tuple(int(t) for t in args.threads.split(","))
    except ValueError:
        raise QcompileError(f"--threads takes comma-separated integers, got {args.threads!r}") from None
    precisions = tuple(p.strip() for p in args.precision.split(","))
    for path in args.output:
        if path.suffix.lstrip(".") not in bench.FORMATS:
            raise QcompileError(f"--output {path}: the extension must be one of .md, .csv, .json")
    data = None
    if args.data is not None:
        data = dataclasses.replace(data_source(args), path=args.data, count=args.data_count, random=False)
    request = compile_request(args, spec, "int8", calibrate="int8" in precisions, records=record_source(args))
    config = bench.BenchConfig(compile=request, precisions=precisions, threads=threads,
                               compare_onnxruntime="onnxruntime" in args.compare,
                               compare_untuned="untuned" in args.compare,
                               compare_records=tuple(args.compare_tuning_log), repeat=args.repeat,
                               warmup=args.warmup, data=data,
                               remote=remote.RemoteSpec.parse(args.rpc, args.rpc_tracker, args.rpc_key))
    rows = bench.run(config, reporter(args))
    print(bench.render(rows, args.format), end="")
    for path in args.output:
        path.write_text(bench.render(rows, path.suffix.lstrip(".")))
        print(f"wrote {path}", file=sys.stderr)
    if args.plot:
        bench.plot(rows, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _tune(args) -> int:
    from . import targets
    from .runtime.deploy import remote
    from .tune.search import TuneConfig, tune

    spec = targets.resolve(args.target)
    board = remote.RemoteSpec.parse(None, args.rpc_tracker, args.rpc_key)
    if spec.is_cross and board is None:
        raise QcompileError(f"target '{spec.name}' is another machine: measure on it with --rpc-tracker and --rpc-key")
    if board is None and (missing := spec.missing_here()):
        raise QcompileError(f"target '{spec.name}' uses {missing}, "
                            f"which this machine's CPU lacks: tune on a machine that has them (or measure there "
                            f"with --rpc-tracker and --rpc-key)")
    if args.tuning_log is not None and args.records is not None:
        raise QcompileError("give either --tuning-log or --records, not both")
    config = TuneConfig(compile=compile_request(args, spec, args.precision), trials=args.trials,
                        minutes=args.minutes, folder=args.tuning_log, root=args.records, remote=board,
                        cores=args.cores, batch=args.batch, untuned_only=args.untuned_only)
    result = tune(config, reporter(args))
    state = "stopped early; run the same command again to continue" if result.stopped_early else "done"
    print(f"{result.stored} tuning records in {result.folder} ({result.measured} measured in "
          f"{result.seconds / 60:.1f} min, {result.tasks} kernels searched, {state})")
    return 0


def _inspect(args) -> int:
    from tabulate import tabulate

    from .frontend import importer
    from .quantize import ops

    if args.model.suffix == ".so":
        return _inspect_library(args.model)
    model = importer.load(args.model)
    supported = importer.supported_ops()
    from .frontend.recurrent import RECURRENT_OPS

    # recurrences are unrolled at import: their MatMuls are quantized like any other
    quantizable = {t for rule in ops.all_rules() for t in rule.onnx_types} | RECURRENT_OPS
    print(f"{args.model}  (opset {model.opset}, sha256 {model.sha256[:12]})\n")
    print(_signature_table(model.inputs, model.outputs))
    print()
    counts = sorted(model.op_counts().items(), key=lambda kv: (-kv[1], kv[0]))
    missing = [op for op, _ in counts if op not in supported]
    failure = None
    if not missing:  # every operator has a converter: whether the model imports as a whole is what counts
        try:
            inputs = importer.static_inputs(model, parse_input_shapes(args.input_shape))
            importer.to_relax(importer.static_graph(model, inputs), inputs)
        except QcompileError as err:
            failure = err.render(OPTION_FLAGS)
    converted = "yes" if failure is None else "yes*"
    print(tabulate([(op, n, converted if op in supported else "NO", "yes" if op in quantizable else "fp32")
                    for op, n in counts], headers=["operator", "count", "supported", "int8"], tablefmt="github"))
    if missing:
        print(f"\nnot supported: {', '.join(missing)}")
    elif failure is not None:
        print(f"\n* TVM converts each operator, but the model does not import: {failure}")
    else:
        print("\nimports into TVM: yes")
    return 0


def _inspect_library(library: Path) -> int:
    from .runtime import artifact
    from .runtime.verify import summary

    sidecar = artifact.read_sidecar(library)
    print(f"{library}  ({sidecar.precision}, target {sidecar.target_name}: {json.dumps(sidecar.target)})\n")
    print(_signature_table(sidecar.inputs, sidecar.outputs))
    print(f"\nkernels: {sidecar.tuning()}; model sha256 {sidecar.model_sha256[:12]}")
    if sidecar.verification is not None:
        print(summary(sidecar.verification))
    return 0


def _targets(args) -> int:
    from tabulate import tabulate

    from . import targets

    rows = [(s.name, s.description, s.key()) for s in targets.load_presets()]
    print(tabulate(rows, headers=["preset", "description", "TVM target"], tablefmt="github"))
    return 0


def _signature_table(inputs, outputs) -> str:
    from tabulate import tabulate

    rows = [("input", s.name, _dims(s.shape), s.dtype) for s in inputs]
    rows += [("output", s.name, _dims(s.shape), s.dtype) for s in outputs]
    return tabulate(rows, headers=["", "name", "shape", "dtype"], tablefmt="github")


def _dims(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
