"""`qcompile bench`: latency of FP32 and INT8 builds (and onnxruntime), measured interleaved in one process."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..driver import PRECISIONS, CompileRequest, compile_model
from ..data import calibdata
from ..frontend import importer
from ..lower import compiler
from ..progress import SILENT, Reporter, logger_level
from ..runtime import artifact
from ..tune.records import RecordSource
from ..errors import QcompileError

FORMATS = ("md", "csv", "json")
# Before each timed run on more than one thread. After a run, both engines' workers spin for a while, waiting
# for more work (fast back-to-back runs, as in deployment): TVM's for ~0.2-0.5 s here. Timed in that window,
# onnxruntime on 2 threads took 3.5x as long as alone (a spinning worker holds the core its second thread needs);
# with spinning turned off instead, each engine's workers sleep between kernels, and waking them made
# onnxruntime's 2-thread runs 1.9x (FP32) and TVM's 1.2x slower on this VM.
IDLE_PAUSE_S = 0.6
# After the pause this variant's own workers sleep too, and waking them took up to ~1 ms here: runs shorter than
# this are preceded by an untimed one
UNTIMED_RUN_BELOW_S = 0.5
COLUMNS = ["model", "target", "engine", "precision", "tuned kernels", "threads", "median ms", "p90 ms", "min ms", "p10 ms",
           "throughput /s", "speedup vs FP32", "speedup vs onnxruntime", "size MB", "top-1 agreement"]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    compile: CompileRequest  # model, target, quantization, calibration and records, shared by every variant
    precisions: tuple[str, ...] = ("fp32", "int8")
    threads: tuple[int, ...] = (1,)
    compare_onnxruntime: bool = False
    compare_untuned: bool = False  # also time qcompile's builds without tuning records
    compare_records: tuple[Path, ...] = ()  # also time builds with each of these records folders (a short tune's)
    repeat: int = 30
    warmup: int = 3
    data: calibdata.DataSource | None = None  # inputs for INT8-vs-FP32 top-1 agreement
    remote: object = None  # deploy.remote.RemoteSpec: time on a board over RPC

    def __post_init__(self):
        if self.repeat < 1 or self.warmup < 0:
            raise QcompileError("{repeat} must be at least 1 and {warmup} not negative")
        if not self.precisions or set(self.precisions) - set(PRECISIONS):
            raise QcompileError(f"{{precisions}} takes {', '.join(PRECISIONS)} (comma-separated)")
        if not self.threads or min(self.threads) < 1:
            raise QcompileError("{threads} takes positive thread counts, comma-separated")
        missing = [str(folder) for folder in self.compare_records if not folder.is_dir()]
        if missing:
            raise QcompileError(f"tuning log folder not found: {missing[0]}")
        if self.remote is not None and self.compare_onnxruntime:
            raise QcompileError("{compare_onnxruntime} measures on this machine; it does not run over RPC")


@dataclasses.dataclass
class Variant:
    engine: str
    precision: str
    run: object  # callable(threads) → one latency in seconds
    size_mb: float
    outputs: object = None  # callable(sample) → first output, for agreement
    tuned: str = ""  # "found/total" kernels given tuned schedules, "untuned", or "" (not qcompile); "+N library"
    family: str = ""  # "untuned" for the builds of --compare untuned: their FP32 is their own speedup baseline
    samples: list = dataclasses.field(default_factory=list)  # latencies per thread count


def run(config: BenchConfig, reporter: Reporter = SILENT) -> list[dict]:
    """Build the variants, time them in interleaved rounds, return one row per (variant, threads)."""
    # TVM sizes its thread pool once, when a model first runs (calibration, or the first timing), from this
    # variable, by default to half the logical cores on x86: one here, and config_threadpool cannot go past it
    with _environment("TVM_NUM_THREADS", str(max(config.threads))):
        return _run(config, reporter)


@contextlib.contextmanager
def _environment(name: str, value: str):
    """The variable set within, as it was after."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _run(config: BenchConfig, reporter: Reporter) -> list[dict]:
    model = importer.load(config.compile.model)
    inputs = importer.static_inputs(model, config.compile.input_shapes)
    x = [np.random.default_rng(0).standard_normal(s.shape).astype(s.dtype) for s in inputs]
    session = config.remote.connect() if config.remote is not None else None
    variants = [_tvm_variant(config, config.compile, precision, x, session, reporter)
                for precision in config.precisions]
    if config.compare_untuned:
        untuned = dataclasses.replace(config.compile, records=RecordSource())
        # a precision that found no records is untuned already: its FP32/INT8 pair serves as the baseline
        for v in [v for v in variants if v.tuned != "untuned"]:
            variants.append(dataclasses.replace(_tvm_variant(config, untuned, v.precision, x, session, reporter),
                                                family="untuned"))
    for folder in config.compare_records:
        other = dataclasses.replace(config.compile, records=RecordSource(folder=folder))
        for precision in config.precisions:
            v = _tvm_variant(config, other, precision, x, session, reporter)
            if v.tuned.startswith("0/"):  # a tune writes one precision's records: the others find none there
                reporter.note(f"{folder} holds no record of the {precision} build's kernels: not timed")
                continue
            # the folder's name tells its rows apart; its speedup vs FP32 is against the main FP32 build
            variants.append(dataclasses.replace(v, tuned=f"{v.tuned} ({folder.name})", family=str(folder)))
    if config.compare_onnxruntime:
        # onnxruntime's counterparts: quantize_static for int8, quantize_dynamic for int8-dynamic; it has no
        # int8 weight-only CPU form (MatMulNBits needs the onnx_ir package)
        variants += [_ort_variant(config, precision, inputs, x, reporter) for precision in config.precisions
                     if precision != "int8-weights"]
    rows, owners = [], []
    for threads in config.threads:
        for v in variants:
            for _ in range(config.warmup):
                v.run(threads)
            v.samples = []
        for _ in reporter.bar(range(config.repeat), desc=f"timing, {threads} thread(s)", unit="round"):
            for v in variants:  # interleaved: machine noise hits every variant alike
                if threads > 1:
                    time.sleep(IDLE_PAUSE_S)  # the last variant's workers stop spinning,
                    if not v.samples or v.samples[-1] < UNTIMED_RUN_BELOW_S:
                        v.run(threads)  # and an untimed run wakes this one's, as back-to-back runs find them
                v.samples.append(v.run(threads))
        rows += [_row(config, model, v, threads) for v in variants]
        owners += variants
    _speedups(rows, owners)
    if config.data is not None:
        _agreement(config, variants, rows, owners, inputs)
    return rows


def _tvm_variant(config: BenchConfig, request: CompileRequest, precision: str, x, session, reporter) -> Variant:
    import tvm

    request = dataclasses.replace(request, precision=precision)
    compiled = compile_model(request, reporter)
    executable, sidecar = compiled.executable, compiled.sidecar
    with tempfile.TemporaryDirectory() as folder:
        library = Path(folder) / f"{precision}.so"
        artifact.write(lambda p: compiler.export_library(executable, request.target, p), sidecar, library)
        size = library.stat().st_size / 1e6
        if config.remote is not None:
            from ..runtime.deploy import remote

            model = remote.load(library, config.remote, session)
        else:
            model = artifact.CompiledModel(executable, sidecar)
    timer = model.timer(*x)
    configure = tvm.get_global_func("runtime.config_threadpool")

    def timed(threads: int) -> float:
        if config.remote is None:
            configure(1, threads)
        return timer()[0]

    tuned = "untuned" if sidecar.tuned_kernels is None else "{}/{}".format(*sidecar.tuned_kernels)
    tuned += f" +{sidecar.library_kernels} library" if sidecar.library_kernels else ""
    return Variant("qcompile", precision, timed, size, outputs=lambda sample: model(*sample)[0], tuned=tuned)


def _ort_variant(config: BenchConfig, precision: str, inputs, x, reporter) -> Variant:
    import onnxruntime as ort

    if precision in ("int8", "int8-dynamic"):
        model = _ort_quantized(config, inputs, reporter, dynamic=precision == "int8-dynamic")
        size = len(model)
    else:  # by its path, where onnxruntime finds any external data files beside it
        model = str(config.compile.model)
        size = Path(model).stat().st_size
    sessions = {}
    feed = {s.name: a for s, a in zip(inputs, x)}

    def session(threads):
        if threads not in sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            sessions[threads] = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return sessions[threads]

    def timed(threads: int) -> float:
        s = session(threads)
        start = time.perf_counter()
        s.run(None, feed)
        return time.perf_counter() - start

    def outputs(sample):
        return session(1).run(None, {s.name: a for s, a in zip(inputs, sample)})[0]

    return Variant("onnxruntime", precision, timed, size / 1e6, outputs=outputs)


def _ort_quantized(config: BenchConfig, inputs, reporter, dynamic: bool = False) -> bytes:
    """onnxruntime's own INT8 (quantize_static: QDQ, per-channel, u8 activations × s8 weights), same calibration;
    with `dynamic`, quantize_dynamic of MatMul/Gemm/Gather (per-channel s8 weights, activations at run time): the
    model's bytes (the file it writes is removed)."""
    import logging
    import sys

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            samples = calibdata.samples(config.compile.calib, inputs)
            self.items = iter([{s.name: a for s, a in zip(inputs, sample)} for sample in samples])

        def get_next(self):
            return next(self.items, None)

    # it warns through the root logger to pre-process the model
    with reporter.step(f"quantizing with onnxruntime ({'dynamic' if dynamic else 'static'}) for comparison"), \
            logger_level(None, logging.ERROR), contextlib.redirect_stdout(sys.stderr), \
            tempfile.TemporaryDirectory(prefix="qcompile-ort-") as folder:
        path = Path(folder) / "int8.onnx"
        try:
            if dynamic:
                # MatMul/Gemm and tables in int8 rows, as qcompile's int8-dynamic; not its convs: onnxruntime's dynamic
                # Conv fails on exports whose conv weights are no initializers (PP-OCR's)
                quantize_dynamic(str(config.compile.model), str(path), per_channel=True, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm", "Gather"])
            else:
                quantize_static(str(config.compile.model), str(path), Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as err:  # noqa: BLE001 - onnxruntime's quantizer raises whatever its passes raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise QcompileError(f"onnxruntime could not quantize the model for the comparison: {first}") from None
        return path.read_bytes()


def _row(config: BenchConfig, model, v: Variant, threads: int) -> dict:
    ms = np.asarray(v.samples) * 1e3
    batch = importer.static_inputs(model, config.compile.input_shapes)[0].shape[0]
    return {
        "model": config.compile.model.name, "target": config.compile.target.name, "engine": v.engine,
        "precision": v.precision, "tuned kernels": v.tuned, "threads": threads, "median ms": float(np.median(ms)),
        "p90 ms": float(np.percentile(ms, 90)), "min ms": float(ms.min()), "p10 ms": float(np.percentile(ms, 10)),
        "throughput /s": float(batch * 1e3 / np.median(ms)), "speedup vs FP32": None,
        "speedup vs onnxruntime": None, "size MB": round(v.size_mb, 3), "top-1 agreement": None,
    }


def _speedups(rows: list[dict], owners: list[Variant]) -> None:
    """Speedups from the medians shown: against the FP32 of the same engine built the same way (with the records
    found, or untuned for --compare untuned), and against onnxruntime's same precision."""
    def find(engine, precision, threads, family):
        return next((r for r, v in zip(rows, owners) if (v.engine, v.precision, r["threads"], v.family)
                     == (engine, precision, threads, family)), None)

    for r, v in zip(rows, owners):
        # an untuned INT8 without an untuned FP32 twin: the FP32 build found no records, so it is untuned itself
        fp32 = find(v.engine, "fp32", r["threads"], v.family) or find(v.engine, "fp32", r["threads"], "")
        ort = find("onnxruntime", v.precision, r["threads"], "")
        if fp32 is not None:
            r["speedup vs FP32"] = fp32["median ms"] / r["median ms"]
        if ort is not None and v.engine != "onnxruntime":
            r["speedup vs onnxruntime"] = ort["median ms"] / r["median ms"]


def _agreement(config: BenchConfig, variants: list[Variant], rows: list[dict], owners: list[Variant],
               inputs) -> None:
    calib = config.compile.calib
    shared = calib is not None and calib.same_data(config.data.path)
    samples = calibdata.samples(config.data, inputs, avoid=calib.count if shared else 0)  # held out from calibration
    reference = {(v.engine, v.family): v for v in variants if v.precision == "fp32"}
    for v in variants:
        fp32 = reference.get((v.engine, v.family)) or reference.get((v.engine, ""))
        if v.precision == "fp32" or fp32 is None:
            continue
        agree = np.mean([v.outputs(s).argmax() == fp32.outputs(s).argmax() for s in samples])
        for r, owner in zip(rows, owners):
            if owner is v:
                r["top-1 agreement"] = float(agree)


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    from tabulate import tabulate

    def cell(key, value):
        if value is None:
            return ""
        if key.startswith("speedup"):
            return f"{value:.2f}×"
        if key == "top-1 agreement":
            return f"{value:.4f}"
        return f"{value:.3f}" if isinstance(value, float) else value

    return tabulate([[cell(k, r[k]) for k in COLUMNS] for r in rows], headers=COLUMNS, tablefmt="github",
                    disable_numparse=True) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """A bar per variant: median latency, whiskers from p10 to p90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['engine']}{' untuned' if r['tuned kernels'] == 'untuned' else ''}\n{r['precision']}, "
              f"{r['threads']} thr" for r in rows]
    medians = np.array([r["median ms"] for r in rows])
    low = medians - np.array([r["p10 ms"] for r in rows])
    high = np.array([r["p90 ms"] for r in rows]) - medians
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows)), 4.5))
    colors = ["tab:blue" if r["precision"] == "fp32" else "tab:orange" for r in rows]
    ax.bar(range(len(rows)), medians, yerr=[low, high], capsize=4, color=colors)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("latency, ms (median; whiskers p10–p90)")
    ax.set_title(f"{rows[0]['model']} on {rows[0]['target']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
