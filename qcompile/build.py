"""`qcompile build`: ONNX model → (quantized) compiled, exported library with its sidecar."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import artifact, calibdata, compiler, importer, progress, records
from .calibdata import DataSource
from .importer import TensorSig
from .passes.pipeline import qdq_import_pipeline
from .quantize import QuantConfig
from .targets import TargetSpec

PRECISIONS = ("int8", "fp32")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    model: Path
    target: TargetSpec
    output: Path
    input_shapes: dict = dataclasses.field(default_factory=dict)  # input name → static shape
    precision: str = "int8"
    quant: QuantConfig = QuantConfig()
    calib: DataSource | None = None  # required for int8
    report: Path | None = None  # Markdown quantization report (JSON beside it)
    bundle: Path | None = None  # deploy kit folder: library, TVM runtime for the target, C++ runner
    tuning_log: Path | None = None  # a records folder to apply; None: look in tuning_records (if set)
    tuning_records: Path | None = records.DEFAULT_ROOT  # root of the per-model, per-target records folders
    quiet: bool = False


def build(config: BuildConfig) -> artifact.Sidecar:
    """Import, quantize, compile and export; the library and sidecar appear together or not at all."""
    config.target.check_toolchain()
    executable, sidecar = compile_model(config)
    with progress.step(f"exporting {config.output}", config.quiet):
        artifact.write(lambda path: compiler.export_library(executable, config.target, path), sidecar, config.output)
    if config.bundle is not None:
        from .deploy.bundle import write_bundle

        write_bundle(config.output, config.target, config.bundle, config.quiet)
    return sidecar


def compile_model(config: BuildConfig):
    """Import, quantize and compile (with the tuning records found): (relax.Executable, its sidecar)."""
    mod, sidecar = lower_model(config)
    database = find_records(config, sidecar)
    with progress.step(f"compiling for {config.target.name}", config.quiet):
        kernels = compiler.lower_kernels(mod, config.target)
        if database is not None:
            kernels, found, total = records.apply(kernels, database, config.target.tvm_target())
            sidecar = dataclasses.replace(sidecar, tuned_kernels=[found, total])
            progress.note(f"tuning records: {found} of {total} kernels tuned", config.quiet)
        executable = compiler.compile_kernels(kernels, config.target)
    return executable, sidecar


def find_records(config: BuildConfig, sidecar: artifact.Sidecar):
    """The tuning database to build with: --tuning-log's, else the one stored for this model and target."""
    if config.tuning_log is not None:
        return records.load(config.tuning_log, config.target)
    if config.tuning_records is None:
        return None
    folder = records.find(config.tuning_records, config.model, sidecar.model_sha256, sidecar.precision,
                          config.target)
    if folder is None:
        progress.note(f"no tuning records for this model and target (kernels stay untuned; "
                      f"'qcompile tune' makes them)", config.quiet)
        return None
    recorded = records.measured_on(folder)
    if recorded != config.target.target:
        progress.note(f"using tuning records measured on a compatible target ({json.dumps(recorded)}) in {folder}; "
                      f"'qcompile tune' tunes for this one", config.quiet)
    else:
        progress.note(f"using tuning records in {folder}", config.quiet)
    return records.load(folder, config.target)


def lower_model(config: BuildConfig):
    """Import and quantize: (the Relax module to compile, the sidecar that will describe its library)."""
    quiet = config.quiet
    with progress.step(f"loading {config.model.name}", quiet):
        model = importer.load(config.model)
        inputs = importer.static_inputs(model, config.input_shapes)
    with progress.step("importing into Relax", quiet):
        mod = importer.to_relax(model, inputs)
    outputs = _output_sigs(mod, model)
    precision = config.precision
    if is_prequantized(model):
        precision = "int8-qdq"
        with progress.step("realizing the model's own quantize/dequantize pairs as integer kernels", quiet):
            mod = qdq_import_pipeline(config.quant.per_channel)(mod)
    elif precision == "int8":
        precision = "int8-simulated" if config.quant.simulate else "int8"
        mod = quantize_model(mod, model, inputs, config)
    sidecar = artifact.Sidecar(
        inputs=inputs,
        outputs=outputs,
        target_name=config.target.name,
        target=config.target.target,
        precision=precision,
        model_sha256=model.sha256,
        versions=_versions(),
    )
    return mod, sidecar


def is_prequantized(model: importer.OnnxModel) -> bool:
    """A QDQ model (quantized by another tool, e.g. onnxruntime's quantize_static) brings its own scales."""
    return "QuantizeLinear" in model.op_counts()


def quantize_model(mod, model: importer.OnnxModel, inputs: list[TensorSig], config: BuildConfig):
    """Calibrate on the configured data and return the integer module; write the report if asked."""
    from . import quantize, report

    with progress.step("finding calibration data", config.quiet):
        samples = calibdata.samples(config.calib, inputs)
    progress.note(f"quantizing: {config.quant.calibration.method} calibration on {len(samples)} samples, "
                  f"{config.quant.activation_dtype} activations × int8 weights", config.quiet)
    quantized = quantize.quantize(mod, samples, config.quant, quantize.anchor_names(model), config.quiet)
    integer, floating, _ = report.count_ops(quantized.mod)
    progress.note(f"{integer} conv/matmul layers run in integer arithmetic, {floating} in FP32", config.quiet)
    if config.report is not None:
        with progress.step(f"measuring quantization error for {config.report}", config.quiet):
            written = report.write(report.build_report(quantized, samples[:8], config.quant.per_channel),
                                   config.report)
        progress.note("wrote " + " and ".join(str(p) for p in written), config.quiet)
    return quantized.mod


def _output_sigs(mod, model: importer.OnnxModel) -> list[TensorSig]:
    """Output shapes as Relax inferred them from the static inputs, named as in the ONNX graph."""
    from tvm import relax

    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    return [
        TensorSig(onnx_sig.name, tuple(int(d) for d in info.shape), str(info.dtype))
        for onnx_sig, info in zip(model.outputs, infos)
    ]


def _versions() -> dict:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("qcompile", "apache-tvm", "apache-tvm-ffi", "onnx")}
