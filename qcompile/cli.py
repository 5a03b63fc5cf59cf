"""The `qcompile` command line: parses and validates options once, then calls the library."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from .errors import QcompileError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except QcompileError as err:
        print(f"qcompile: error: {err}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        print("qcompile: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug of ours or TVM's: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"qcompile: internal error: {type(err).__name__}: {first} (rerun with --debug for details)", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qcompile",
        description="Compile ONNX models with Apache TVM into deployable shared libraries for x86, 64-bit ARM and CUDA.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
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
    build.set_defaults(handler=_build)

    run = sub.add_parser("run", parents=[common], help="run a built library on inputs from .npy/.npz files",
                         description="Load a library written by 'qcompile build' and run it on this machine.")
    run.add_argument("library", type=Path, help="the .so written by 'qcompile build' (its .json sidecar beside it)")
    run.add_argument("-i", "--input", action="append", default=[], metavar="[NAME=]FILE",
                     help="input data: a .npy for a one-input model, NAME=FILE.npy per input, or one .npz keyed by "
                          "input name; repeatable")
    run.add_argument("-o", "--output", type=Path, help="save the outputs to this .npz, keyed by output name")
    run.set_defaults(handler=_run)

    inspect = sub.add_parser("inspect", parents=[common], help="list a model's operators, inputs and outputs",
                             description="Show an ONNX model's input/output signature and its operators with counts, "
                                         "and whether qcompile's pipeline supports each.")
    inspect.add_argument("model", type=Path, help="the ONNX model file")
    inspect.set_defaults(handler=_inspect)

    targets = sub.add_parser("targets", parents=[common], help="list the target presets",
                             description="List the target presets in targets/ with their TVM target dicts.")
    targets.set_defaults(handler=_targets)
    return parser


def _add_input_shape(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                        help="static shape of an input, e.g. input:1x3x224x224; needed for dynamic dimensions other "
                             "than a leading batch dimension, which defaults to 1; repeatable")


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


def _build(args) -> int:
    from . import targets
    from .build import BuildConfig, build

    spec = targets.resolve(args.target)
    output = args.output or Path(f"{args.model.stem}_{spec.name.replace(':', '_')}.so")
    config = BuildConfig(
        model=args.model, target=spec, output=output,
        input_shapes=parse_input_shapes(args.input_shape), quiet=args.quiet,
    )
    sidecar = build(config)
    print(f"wrote {output} and {output.with_suffix('.json').name} ({sidecar.precision}, target {spec.name})")
    return 0


def _run(args) -> int:
    from .artifact import load
    from .runio import read_inputs, save_outputs, summarize

    model = load(args.library)
    outputs = model(**read_inputs(args.input, model.inputs))
    named = {sig.name: value for sig, value in zip(model.outputs, outputs)}
    print(summarize(named))
    if args.output:
        save_outputs(named, args.output)
        print(f"saved {len(named)} output(s) to {args.output}")
    return 0


def _inspect(args) -> int:
    from tabulate import tabulate

    from . import importer

    model = importer.load(args.model)
    supported = importer.supported_ops()
    print(f"{args.model}  (opset {model.opset}, sha256 {model.sha256[:12]})\n")
    rows = [("input", s.name, _dims(s.shape), s.dtype) for s in model.inputs]
    rows += [("output", s.name, _dims(s.shape), s.dtype) for s in model.outputs]
    print(tabulate(rows, headers=["", "name", "shape", "dtype"], tablefmt="github"))
    print()
    ops = sorted(model.op_counts().items(), key=lambda kv: (-kv[1], kv[0]))
    print(tabulate([(op, n, "yes" if op in supported else "NO") for op, n in ops],
                   headers=["operator", "count", "supported"], tablefmt="github"))
    missing = [op for op, _ in ops if op not in supported]
    if missing:
        print(f"\nnot supported: {', '.join(missing)}")
    return 0


def _targets(args) -> int:
    from tabulate import tabulate

    from . import targets

    rows = [(s.name, s.description, s.key()) for s in targets.load_presets()]
    print(tabulate(rows, headers=["preset", "description", "TVM target"], tablefmt="github"))
    return 0


def _dims(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
