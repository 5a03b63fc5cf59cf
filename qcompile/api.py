"""The Python API: the command line's main jobs as functions (`qcompile.build`, `quantize`, `tune`, `load`).

Each takes the model and data as paths and options as keywords with the command line's defaults, builds the
typed requests the commands build, and reports progress on stderr only when `verbose`.
"""

from __future__ import annotations

from pathlib import Path

from .progress import SILENT, Reporter

# The compiler's modules are imported when a function is called: `import qcompile` stays light, and works where
# only the TVM runtime is installed, for `qcompile.load`.


def _calibration(calib, calib_count: int, preprocess: str):
    from .data.calibdata import DataSource
    from .data.datasets import PREPROCESS_PRESETS

    if calib is None or isinstance(calib, DataSource):
        return calib
    return DataSource(path=Path(calib), count=calib_count, preprocess=PREPROCESS_PRESETS[preprocess])


def _request(model, target, precision, calib, calib_count, preprocess, calibration, input_shapes, exclude,
             per_channel, records):
    from . import targets
    from .driver import CompileRequest
    from .quantize.calibrate import CalibrationConfig
    from .quantize.quantizer import QuantConfig
    from .tune.records import RecordSource

    spec = targets.resolve(target) if isinstance(target, str) else target
    quant = QuantConfig(calibration=CalibrationConfig(method=calibration), activation_dtype=spec.activation_dtype,
                        per_channel=per_channel, exclude=frozenset(exclude))
    source = records if isinstance(records, RecordSource) else RecordSource.default(records)
    return CompileRequest(model=Path(model), target=spec, input_shapes=dict(input_shapes or {}),
                          precision=precision, quant=quant, calib=_calibration(calib, calib_count, preprocess),
                          records=source)


def build(model, output, *, target="x86", precision="int8", calib=None, calib_count=100, preprocess="tf",
          calibration="percentile", input_shapes=None, exclude=(), per_channel=True, records=None, report=None,
          bundle=None, max_accuracy_drop=None, data=None, labels=None, data_count=100, verify=True, verbose=False):
    """Compile an ONNX model into a shared library `output` (.so) with its .json sidecar; returns the sidecar.

    `target`: a preset name, preset file, or TVM target dict as JSON (see `qcompile targets`); `calib`: a folder
    of images (preprocessed with `preprocess`: tf, caffe or torch), a .npy, an .npz keyed by input name, or an
    IDX file, needed for int8; `records`: a folder to look for tuning records in first (or a
    `tune.records.RecordSource`); `report`: a Markdown quantization report to write; `bundle`: a deploy kit
    folder to write; `precision`: int8, fp32, int8-weights or int8-dynamic; `max_accuracy_drop`: points of the
    metric INT8 may lose against FP32 on `data_count` held-out samples of `data` (default: of `calib`), top-1
    against `labels` if given, layers restored to FP32 until it holds; `verify`: run the library beside
    onnxruntime before writing it, and refuse one that does not compute the model."""
    import dataclasses

    from . import driver

    request = _request(model, target, precision, calib, calib_count, preprocess, calibration, input_shapes,
                       exclude, per_channel, records)
    if max_accuracy_drop is not None:
        from .quantize.fallback import AccuracyConfig

        held_out = dataclasses.replace(_calibration(data or calib, data_count, preprocess), count=data_count)
        request = dataclasses.replace(request, accuracy=driver.AccuracyControl(
            AccuracyConfig(max_accuracy_drop), held_out, Path(labels) if labels else None))
    emit = driver.EmitRequest(output=Path(output), report=report, bundle=bundle,
                              verify=driver.VerifyConfig(enabled=verify))
    return driver.build(request, emit, Reporter() if verbose else SILENT)


def quantize(model, calib, *, target="x86", calib_count=100, preprocess="tf", calibration="percentile",
             input_shapes=None, exclude=(), per_channel=True, verbose=False):
    """Import an ONNX model and quantize it to integer kernels, without compiling: the quantizer's result, whose
    `.mod` is the integer Relax IRModule (`.params` the chosen scales, `.points` the quantized tensors)."""
    from . import driver

    request = _request(model, target, "int8", calib, calib_count, preprocess, calibration, input_shapes,
                       exclude, per_channel, None)
    return driver.lower_model(request, Reporter() if verbose else SILENT).quantized


def tune(model, *, target="x86", precision="int8", calib=None, calib_count=100, preprocess="tf",
         calibration="percentile", input_shapes=None, minutes=None, trials=2000, records=None, verbose=False):
    """Auto-tune the model's kernels (MetaSchedule) for `target` on this machine; the records go under `records`
    (default: the user's records folder), where `build` finds them. Returns a `tune.search.TuneResult`."""
    from .tune.search import TuneConfig
    from .tune.search import tune as search

    request = _request(model, target, precision, calib, calib_count, preprocess, calibration, input_shapes, (),
                       True, None)
    config = TuneConfig(compile=request, trials=trials, minutes=minutes, root=Path(records) if records else None)
    return search(config, Reporter() if verbose else SILENT)
