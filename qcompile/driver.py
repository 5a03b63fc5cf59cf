"""Building a model, stage by stage: frontend (import) → quantize → lower (with tuning records) → compile, then
emit the library, its sidecar, and on request a quantization report and a deploy kit.

What to compile (`CompileRequest`) and where to write it (`EmitRequest`) are separate requests: `tune`, `eval`
and `bench` compile without writing anything.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import instrument
from .data import calibdata
from .data.calibdata import DataSource
from .errors import QcompileError
from .frontend import importer
from .frontend.importer import TensorSig
from .lower import compiler
from .progress import SILENT, Reporter
from .quantize.fallback import AccuracyConfig
from .quantize.pipeline import hybrid_pipeline, qdq_import_pipeline
from .quantize.quantizer import QuantConfig, Quantized
from .runtime import artifact, verify
from .runtime.deploy import emulate
from .runtime.verify import VerifyConfig
from .targets import TargetSpec
from .tune import library, records
from .tune.records import RecordSource

HYBRID = ("int8-weights", "int8-dynamic")  # int8 weights without calibration (`quantize/passes/hybrid.py`)
PRECISIONS = ("int8", "fp32") + HYBRID


@dataclasses.dataclass(frozen=True)
class AccuracyControl:
    """--max-accuracy-drop: the budget, and the held-out inputs it is measured on. With labels the metric is
    theirs (`measure/task.py`: top-1 of classes, exact text of text lines); without, the agreement with FP32 read
    by the output's form (`_metric`)."""

    config: AccuracyConfig
    data: DataSource  # samples of it the calibration did not use, when it is the calibration data
    labels: Path | None = None
    stride: tuple[int, int] = (0, 1)  # (start, step) over those samples: `eval` searches on half, reports on half


@dataclasses.dataclass(frozen=True)
class CompileRequest:
    """What to compile: a model, for a target, in a precision, calibrated on data, with tuning records."""

    model: Path
    target: TargetSpec
    input_shapes: dict = dataclasses.field(default_factory=dict)  # input name → static shape
    precision: str = "int8"
    quant: QuantConfig = QuantConfig()
    calib: DataSource | None = None  # required for int8 (unless the model is already quantized)
    records: RecordSource = dataclasses.field(default_factory=RecordSource.default)
    accuracy: AccuracyControl | None = None  # restore layers to FP32 until the metric drop fits a budget

    def __post_init__(self):
        object.__setattr__(self, "model", Path(self.model))
        if self.precision not in PRECISIONS:
            raise QcompileError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")


@dataclasses.dataclass(frozen=True)
class EmitRequest:
    """Where a compiled model goes: the library (its .json sidecar beside it), optionally a quantization report
    (Markdown, JSON beside it) and a deploy kit folder."""

    output: Path
    report: Path | None = None
    bundle: Path | None = None
    verify: VerifyConfig = VerifyConfig()  # checked beside onnxruntime before anything is written
    verify_data: DataSource | None = None  # inputs to check on; default: held-out calibration samples, else random

    def __post_init__(self):
        object.__setattr__(self, "output", Path(self.output))
        if self.output.suffix != ".so":
            raise QcompileError(f"the output must be a .so file, got {self.output}")
        _check_writable(self.output)
        if self.report is not None:
            report = Path(self.report)
            object.__setattr__(self, "report", report)
            if report.with_suffix(".json").resolve() == artifact.sidecar_path(self.output).resolve():
                raise QcompileError(f"the report {report} would overwrite the sidecar "
                                    f"{artifact.sidecar_path(self.output)}; name the report differently")


def _check_writable(path: Path) -> None:
    """Fail now, not after compiling, if `path` cannot be written: a file is made and removed in the nearest folder
    that exists (the folders below it are made when the library is written)."""
    import tempfile

    if path.is_dir():
        raise QcompileError(f"the output {path} is a folder")
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise QcompileError(f"cannot write {path}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise QcompileError(f"cannot write {path}: {err.strerror} in {folder}") from None


@dataclasses.dataclass
class Lowered:
    """A model imported and quantized: the Relax module to compile, the sidecar that will describe it, and
    (quantized builds) what the quantizer computed and the calibration samples, for the report."""

    mod: object
    sidecar: artifact.Sidecar
    quantized: Quantized | None = None
    samples: list | None = None


@dataclasses.dataclass
class Compiled:
    """A compiled model, before it is written: the executable and its sidecar (the lowered one's, with the tuned
    kernels counted), and what it was compiled from."""

    executable: object  # relax.Executable
    sidecar: artifact.Sidecar
    lowered: Lowered


def build(request: CompileRequest, emit_request: EmitRequest, reporter: Reporter = SILENT) -> artifact.Sidecar:
    """Compile, verify and emit: the library and sidecar appear together, and only if verified (or not asked to
    be), or not at all."""
    request.target.check_toolchain()
    compiled = compile_model(request, reporter)

    def verified(library: Path) -> dict:
        return verify_build(request, library, compiled.sidecar, emit_request.verify, emit_request.verify_data,
                            reporter)

    return emit(compiled, emit_request, request.target, reporter, verified)


def verify_build(request: CompileRequest, library: Path, sidecar: artifact.Sidecar, config: VerifyConfig,
                 data: DataSource | None, reporter: Reporter = SILENT) -> dict:
    """Run the library as written (before it is moved into place) beside onnxruntime's FP32 on a few inputs
    (`runtime/verify.py`): the figures for the sidecar, or a QcompileError when it does not compute the model."""
    if not config.enabled:
        return {"verified": False, "reason": "verification was turned off"}
    elsewhere = _runs_elsewhere(request.target)
    if elsewhere is not None:
        reporter.note(f"not verified: {elsewhere}")
        return {"verified": False, "reason": elsewhere}
    samples, described = _verification_inputs(request, sidecar.inputs, config, data)
    emulated = request.target.kind == "llvm" and request.target.is_cross
    how = f"under {emulate.QEMU}" if emulated else "here"
    with reporter.step(f"verifying the build ({how}) against onnxruntime on {len(samples)} {described}"):
        if emulated:
            ours = emulate.run(library, request.target, samples, len(sidecar.outputs), reporter)
        else:
            import tvm

            model = artifact.CompiledModel(tvm.runtime.load_module(str(library)), sidecar, name="the build")
            ours = [model(*sample) for sample in samples]
        reference = verify.onnxruntime_outputs(request.model, [s.name for s in sidecar.inputs], samples,
                                               as_written=sidecar.precision == "int8-qdq")
    figures = verify.compare(ours, reference, [s.name for s in sidecar.outputs])
    why = verify.failure(figures, "fp32" if sidecar.precision == "fp32" else "int8", config)
    if why is not None:
        hint = ("; {report} ranks the quantized tensors by error, {exclude} keeps layers in FP32, "
                "{max_accuracy_drop} picks them" if sidecar.precision == "int8"
                else "; {exclude} keeps layers in FP32 (Conv: the convolutions)" if sidecar.precision in HYBRID
                else "")
        if described == "random inputs":  # a detector's map of noise is ~0 everywhere: no signal to compare
            hint += "; these were random inputs: {verify_data} checks on real ones"
        raise QcompileError(f"the build does not compute the model: {why}; nothing was written "
                            f"({{no_verify}} writes it anyway){hint}")
    result = {"verified": True, "samples": len(samples), "inputs": described, "outputs": figures, "ran": how}
    reporter.note(verify.summary(result))
    return result


def _runs_elsewhere(target: TargetSpec) -> str | None:
    """Why a build for `target` cannot be run here, natively or emulated, or None."""
    import tvm

    if target.kind == "cuda" and not tvm.cuda(0).exist:
        return "built for CUDA, and this machine has no CUDA GPU"
    if target.kind == "llvm" and target.is_cross:
        missing = emulate.unavailable(target)
        return None if missing is None else f"built for {target.target.get('mtriple')}, and {missing}"
    if missing := target.missing_here():
        return f"built for a CPU with {missing}, which this one lacks"
    return None


def _verification_inputs(request: CompileRequest, inputs, config: VerifyConfig, data: DataSource | None):
    """(samples, what they are): `data`'s; else calibration samples the calibration did not use (those it used,
    if none is left); else random inputs (zeros for integer inputs, which index tables)."""
    import numpy as np

    if data is not None:
        return list(calibdata.samples(data, inputs)[:config.samples]), f"samples of {Path(data.path).name}"
    calib = request.calib
    if calib is not None and calib.path is not None:
        held_out = calibdata.samples(dataclasses.replace(calib, count=config.samples), inputs, avoid=calib.count)
        if len(held_out):
            return list(held_out), "held-out calibration samples"
        return list(calibdata.samples(calib, inputs)[:config.samples]), "calibration samples"
    rng = np.random.default_rng(0)
    return [[rng.standard_normal(s.shape).astype(s.dtype) if np.dtype(s.dtype).kind == "f"
             else np.zeros(s.shape, s.dtype) for s in inputs] for _ in range(config.samples)], "random inputs"


def emit(compiled: Compiled, request: EmitRequest, target: TargetSpec, reporter: Reporter = SILENT,
         verified=None):
    """Write the library and its sidecar (atomically), then the report and the deploy kit asked for.
    `verified(library)`: the verification figures of the library written, before it is moved into place."""
    with reporter.step(f"exporting {request.output}"):
        sidecar = artifact.write(lambda path: compiler.export_library(compiled.executable, target, path),
                                 compiled.sidecar, request.output, verified)
    quantized = compiled.lowered.quantized
    if request.report is not None and quantized is not None:
        from .quantize import report

        with reporter.step(f"measuring quantization error for {request.report}"):
            written = report.write(report.build_report(quantized, compiled.lowered.samples[:8], compiler.for_host),
                                   request.report)
        reporter.note("wrote " + " and ".join(str(p) for p in written))
    if request.bundle is not None:
        from .runtime.deploy.bundle import write_bundle

        write_bundle(request.output, target, request.bundle, reporter)
    return sidecar


def compile_model(request: CompileRequest, reporter: Reporter = SILENT) -> Compiled:
    """Import, quantize and compile with the tuning records found."""
    lowered = lower_model(request, reporter)
    database = find_records(request, lowered.sidecar, reporter)
    sidecar = lowered.sidecar
    with reporter.step(f"compiling for {request.target.name}"):
        kernels = compiler.lower_kernels(lowered.mod, request.target, reporter)
        if database is not None:
            kernels, found, total = records.apply(kernels, database, request.target.tvm_target())
            sidecar = dataclasses.replace(sidecar, tuned_kernels=[found, total])
            reporter.note(f"tuning records: {found} of {total} kernels tuned")
        if request.records.folder is None and not request.records.untuned:
            kernels, lent = library.lend(kernels, request.records.roots, request.target)
            if lent:
                sidecar = dataclasses.replace(sidecar, library_kernels=lent)
                reporter.note(f"records library: {lent} more kernels scheduled as a same-shaped kernel of another "
                              "model was tuned")
        executable = compiler.compile_kernels(kernels, request.target)
    return Compiled(executable, sidecar, lowered)


def find_records(request: CompileRequest, sidecar: artifact.Sidecar, reporter: Reporter = SILENT):
    """The tuning database to build with: the request's folder, else the one found for this model and target."""
    source = request.records
    if source.folder is not None:
        return records.load(source.folder, request.target)
    if source.untuned:
        return None
    folder = records.find(source.roots, request.model, sidecar.model_sha256, sidecar.precision, request.target)
    if folder is None:
        reporter.note("no tuning records for this model and target: kernels get their default schedules "
                      "('qcompile tune' tunes them)")
        return None
    recorded = records.measured_on(folder)
    if recorded != request.target.target:
        reporter.note(f"using tuning records measured on a compatible target ({json.dumps(recorded)}) in {folder}; "
                      f"'qcompile tune' tunes for this one")
    else:
        reporter.note(f"using tuning records in {folder}")
    return records.load(folder, request.target)


def lower_model(request: CompileRequest, reporter: Reporter = SILENT) -> Lowered:
    """Import and quantize."""
    with reporter.step(f"loading {request.model.name}"):
        model = importer.load(request.model)
        inputs = importer.static_inputs(model, request.input_shapes)
        model = importer.static_graph(model, inputs)
    precision, quantized, samples, plan_json = request.precision, None, None, None
    calibrating = precision == "int8" and not is_prequantized(model)
    if calibrating:  # read and checked before the expensive work
        with reporter.step("reading the calibration data"):
            samples = calibdata.samples(request.calib, inputs)
            calibdata.validate(samples, inputs)
    with reporter.step("importing into Relax"):
        mod = importer.to_relax(model, inputs)
    outputs = _output_sigs(mod, model)
    if is_prequantized(model):
        precision = "int8-qdq"
        with reporter.step("realizing the model's own quantize/dequantize pairs as integer kernels"):
            mod = instrument.apply(qdq_import_pipeline(request.quant.per_channel), mod, reporter)
    elif precision in HYBRID:
        from .quantize import quantizer

        with reporter.step(f"quantizing the weights ({precision})"):
            exclusions = quantizer.exclusions(request.quant, quantizer.anchor_names(model))
            mod = instrument.apply(hybrid_pipeline(precision, request.quant.activation_dtype, exclusions), mod,
                                   reporter)
    elif calibrating:
        precision = "int8-simulated" if request.quant.simulate else "int8"
        if request.accuracy is None:
            quantized = quantize_module(mod, model, samples, request.quant, reporter)
        else:
            quantized, plan_json = control_accuracy(mod, model, samples, inputs, outputs, request, reporter)
        mod = quantized.mod
    sidecar = artifact.Sidecar(
        inputs=inputs,
        outputs=outputs,
        target_name=request.target.name,
        target=request.target.target,
        precision=precision,
        model_sha256=model.sha256,
        versions=_versions(),
        index_bounds=importer.index_bounds(model, inputs) or None,
        accuracy_control=plan_json,
    )
    return Lowered(mod, sidecar, quantized, samples)


def control_accuracy(mod, model, samples, inputs, outputs, request: CompileRequest,
                     reporter: Reporter) -> tuple[Quantized, dict]:
    """Quantize; where the drop exceeds the budget, take the best of the calibration's alternative activation
    ranges (`CalibrationConfig.alternatives`), then restore the layers that cost the metric most to FP32 until the
    drop fits the budget (`quantize/fallback.py`). Every candidate is realized in integers, compiled for this CPU
    and run on the held-out inputs; the calibration statistics are collected once and shared by all candidates."""
    import numpy as np

    from .measure import evaluate as evaluation
    from .quantize import fallback, quantizer, report, sensitivity

    control = request.accuracy
    held_out, labels = _accuracy_data(control, request.calib, inputs, model.proto, outputs[0].shape)
    names = quantizer.anchor_names(model)
    with reporter.step(f"accuracy control: running onnxruntime FP32 on {len(held_out)} held-out samples"):
        # the model's own FP32 answers (the FP32 build agrees within 1e-5 of the range), 50× faster than the
        # untuned FP32 build
        reference = np.stack([o[0].reshape(-1) for o in verify.onnxruntime_outputs(
            request.model, [s.name for s in inputs], held_out)])
    metric_name, metric = _metric(reference, labels, outputs[0].shape)
    stats: dict = {}
    measured: dict = {}  # (restored layers, calibration) → (metric, seconds a sample)
    last: dict = {}  # the last candidate quantized: the search measures the one the ranking quantized first

    calibration = request.quant.calibration  # the ranges the layer search quantizes with, chosen below

    def quantize_with(restored: tuple[str, ...], progress: Reporter = SILENT) -> Quantized:
        key = (frozenset(restored), calibration)
        if key not in last:
            config = dataclasses.replace(request.quant, exclude=request.quant.exclude | key[0],
                                         calibration=calibration)
            last.clear()
            last[key] = quantizer.quantize(mod, samples, config, names, progress, stats_cache=stats,
                                           compile_host=compiler.for_host)
        return last[key]

    def evaluate(restored: tuple[str, ...]) -> float:
        key = (frozenset(restored), calibration)
        if key not in measured:
            run = _on_host(quantize_with(restored).mod, inputs, outputs)
            results, took = evaluation.scores(run, held_out, "")
            measured[key] = metric(results), took
        return measured[key][0]

    def with_ranges(candidate) -> float:
        nonlocal calibration
        calibration = candidate
        return evaluate(())

    def progress(step: fallback.Step, kind: str):
        layer = step.restored[-1] if step.restored else ""
        what = {"start": "all layers in INT8", "probe": f"only {layer} in FP32 (probe)",
                "kept": f"{layer} to FP32, kept ({len(step.restored)} in FP32)",
                "rejected": f"{layer} to FP32 gains nothing, stays INT8",
                "prefix": f"{len(step.restored)} layers in FP32, the nearest the input",
                "suffix": f"{len(step.restored)} layers in FP32, the nearest the output",
                "ends": f"{len(step.restored)} layers in FP32, the nearest the input and the output"}[kind]
        reporter.note(f"accuracy control: {what}: {metric_name} {step.metric:.2f} (FP32 {fp32:.2f})")

    fp32 = metric(reference)
    with reporter.step(f"accuracy control: calibrating on {len(samples)} samples"):
        quantize_with((), reporter)
    candidates = request.quant.calibration.alternatives()
    if len(candidates) > 1 and fp32 - evaluate(()) > control.config.max_drop:
        # other ranges first, before any layer goes to FP32: the statistics are cached, so each costs a build
        with reporter.step(f"accuracy control: measuring {len(candidates)} choices of activation ranges"):
            calibration, scores = fallback.choose(candidates, with_ranges)
        reporter.note("accuracy control: all layers in INT8 with " + ", ".join(
            f"{c.describe()} ranges: {metric_name} {m:.2f}" for c, m in zip(candidates, scores))
            + f"; the search uses {calibration.describe()}")
    with reporter.step("accuracy control: ranking the layers"):
        first = quantize_with((), reporter)
        ranked = sensitivity.rank_layers(first, report.build_report(first, samples[:8], compiler.for_host), names)
    plan = fallback.search(ranked, evaluate, fp32, metric_name, control.config, progress,
                           from_input=sensitivity.in_graph_order(first, names))
    reporter.note(plan.summary())
    if not plan.met:
        raise QcompileError(f"{{max_accuracy_drop}} {control.config.max_drop:g} is not met with {len(plan.restored)} "
                            f"of {len(ranked)} layers in FP32 ({metric_name}: INT8 {plan.after:.2f}, FP32 {fp32:.2f}); "
                            "allow a larger drop, or build with {precision} fp32")
    quantized = quantize_with(plan.restored)
    before, after = (round(measured[frozenset(k), calibration][1] * 1e3, 3) for k in ((), plan.restored))
    reporter.note(f"accuracy control: latency on this CPU (untuned kernels) {before:.1f} → {after:.1f} ms a sample")
    return quantized, plan.to_json(untuned_ms_here={"all_int8": before, "plan": after},
                                   calibration=dataclasses.asdict(calibration))


def _accuracy_data(control: AccuracyControl, calib: DataSource, inputs, proto, output_shape):
    """(held-out samples, their labels or None) for accuracy control: none of them calibrated the model."""
    from .measure import evaluate, task

    avoid = calib.count if control.data.same_data(calib.path) else 0
    start, step = control.stride
    if control.labels is not None:
        characters = task.characters(proto, int(output_shape[-1])) if task.is_text(control.labels) else ()
        samples, labels = evaluate.load(evaluate.EvalData(control.data, control.labels, avoid), inputs, characters)
        return list(samples)[start::step], labels[start::step]
    samples = list(calibdata.samples(control.data, inputs, avoid=avoid))[start::step]
    if not samples:
        raise QcompileError("accuracy control needs held-out inputs, and the calibration data has none left: "
                            "give {accuracy_data}")
    return samples, None


def _metric(reference, labels, output_shape):
    """(name, outputs [samples, values] → points) of the metric accuracy control holds: the labels' own (top-1,
    exact text) with labels; else FP32's answer, read the way the output's form says:
    - probabilities over the last axis at several positions (a sequence recognizer's per-step softmax): the share
      of samples decoded to FP32's text (greedy CTC: per-step classes, repeats merged, the blank dropped, taken
      to be the class FP32 picks most often);
    - class scores (one dimension that is not 1) or a softmax: the top-1 agreement;
    - independent probabilities (every value in [0, 1], not summing to 1: a VAD's per-frame speech probability, a
      multi-label sigmoid): the share of values on FP32's side of 0.5;
    - anything else: the cosine to FP32."""
    import numpy as np

    if labels is not None:
        return f"{labels.metric} (%)", lambda out: 100 * float(np.mean(labels.correct(out)))
    classes = int(output_shape[-1])
    rows = reference.reshape(len(reference), -1, classes)
    probabilities = classes > 1 and rows.min() >= 0 and np.allclose(rows.sum(-1), 1, atol=1e-3)
    if probabilities and rows.shape[1] > 1:
        best = rows.argmax(-1)
        blank = int(np.bincount(best.ravel()).argmax())
        expected = [_decoded(r, blank) for r in best]
        return ("decoded sequences equal to FP32's (%)",
                lambda out: 100 * float(np.mean([np.array_equal(_decoded(o, blank), e) for o, e in
                                                 zip(out.reshape(rows.shape).argmax(-1), expected)])))
    if not probabilities and reference.min() >= 0 and reference.max() <= 1:
        decisions = reference > 0.5
        return ("decisions (> 0.5) as FP32's (%)",
                lambda out: 100 * float(np.mean((out.reshape(reference.shape) > 0.5) == decisions)))
    if sum(1 for d in output_shape if d != 1) == 1 or probabilities:
        top = rows.argmax(-1)
        return ("top-1 agreement with FP32 (%)",
                lambda out: 100 * float(np.mean(out.reshape(rows.shape).argmax(-1) == top)))

    def cosine(out):
        a, b = out.astype(np.float64), reference.astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return 100 * float(np.mean(np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-300), 1.0)))

    return "output cosine to FP32 (×100)", cosine


def _decoded(classes, blank: int):
    """Greedy CTC decoding of per-step classes: consecutive repeats merged, then the blank dropped."""
    import numpy as np

    merged = classes[np.r_[True, classes[1:] != classes[:-1]]]
    return merged[merged != blank]


def _on_host(mod, inputs, outputs) -> artifact.CompiledModel:
    """`mod` compiled for this CPU with the default schedules: what accuracy control measures candidates with."""
    from . import targets

    spec = targets.resolve("x86")
    return artifact.CompiledModel(compiler.for_host(mod), artifact.Sidecar(inputs, outputs, spec.name, spec.target,
                                                                           "int8", "", {}))


def is_prequantized(model: importer.OnnxModel) -> bool:
    """A QDQ model (quantized by another tool, e.g. onnxruntime's quantize_static) brings its own scales."""
    return "QuantizeLinear" in model.op_counts()


def quantize_module(mod, model: importer.OnnxModel, samples, config: QuantConfig, reporter: Reporter) -> Quantized:
    """Calibrate the imported module on `samples` and realize it in integers."""
    from .quantize import quantizer, report

    reporter.note(f"quantizing: {config.calibration.method} calibration on {len(samples)} samples, "
                  f"{config.activation_dtype} activations × int8 weights")
    quantized = quantizer.quantize(mod, samples, config, quantizer.anchor_names(model), reporter,
                                   compile_host=compiler.for_host)
    integer, floating, _ = report.count_ops(quantized.mod)
    reporter.note(f"{integer} conv/matmul layers run in integer arithmetic, {floating} in FP32")
    return quantized


def _output_sigs(mod, model: importer.OnnxModel) -> list[TensorSig]:
    """Output shapes as Relax inferred them from the static inputs, named as in the ONNX graph; a dimension known
    only at run time (NonMaxSuppression's count) is None, as is the whole shape where Relax knows no rank."""
    from tvm import relax, tirx

    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    sigs = []
    for onnx_sig, info in zip(model.outputs, infos):
        shape = getattr(info, "shape", None)
        dims = onnx_sig.shape if shape is None else tuple(int(d) if isinstance(d, tirx.IntImm) else None
                                                          for d in shape)
        sigs.append(TensorSig(onnx_sig.name, tuple(dims), str(getattr(info, "dtype", onnx_sig.dtype))))
    return sigs


def _versions() -> dict:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("qcompile", "apache-tvm", "apache-tvm-ffi", "onnx")}
