"""`qcompile build`: ONNX model → compiled, exported library with its sidecar."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import artifact, compiler, importer, progress
from .importer import TensorSig
from .targets import TargetSpec


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    model: Path
    target: TargetSpec
    output: Path
    input_shapes: dict = dataclasses.field(default_factory=dict)  # input name → static shape
    precision: str = "fp32"
    quiet: bool = False


def build(config: BuildConfig) -> artifact.Sidecar:
    """Import, compile and export; the library and sidecar appear together or not at all."""
    quiet = config.quiet
    config.target.check_toolchain()
    with progress.step(f"loading {config.model.name}", quiet):
        model = importer.load(config.model)
        inputs = importer.static_inputs(model, config.input_shapes)
    with progress.step("importing into Relax", quiet):
        mod = importer.to_relax(model, inputs)
    with progress.step(f"compiling for {config.target.name} ({config.precision})", quiet):
        executable = compiler.compile_module(mod, config.target)
    sidecar = artifact.Sidecar(
        inputs=inputs,
        outputs=_output_sigs(mod, model),
        target_name=config.target.name,
        target=config.target.target,
        precision=config.precision,
        model_sha256=model.sha256,
        versions=_versions(),
    )
    with progress.step(f"exporting {config.output}", quiet):
        artifact.write(lambda path: compiler.export_library(executable, config.target, path), sidecar, config.output)
    return sidecar


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
