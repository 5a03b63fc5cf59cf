"""Post-training INT8 quantization of a Relax module: annotate, calibrate on real inputs, realize."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import numpy as np

from .. import instrument
from ..errors import QcompileError
from ..progress import SILENT, Reporter
from . import calibrate
from .calibrate import CalibrationConfig, TensorStats
from .passes.annotate import Exclusions
from .passes.expose import point_keys, quant_points
from .pipeline import annotate_pipeline, calibration_pipeline, realize_pipeline
from .qparams import QuantParams, activation_params


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    calibration: CalibrationConfig = CalibrationConfig()
    activation_dtype: str = "uint8"  # uint8 (asymmetric; x86 VNNI is u8×s8) or int8 (symmetric; ARM sdot, dp4a)
    per_channel: bool = True
    exclude: frozenset = frozenset()  # ONNX op types or node names kept in FP32
    simulate: bool = False  # fake-quantized FP32 graph instead of integer kernels

    def __post_init__(self):
        if self.activation_dtype not in ("uint8", "int8"):
            raise QcompileError(f"activation type must be uint8 or int8, not {self.activation_dtype!r}")


@dataclasses.dataclass
class Quantized:
    mod: object  # the realized (or simulated) IRModule
    annotated: object  # the FP32 module with its quantization points marked
    params: dict[int, QuantParams]  # point id → parameters
    means: dict[str, np.ndarray]  # tensor label → its FP32 mean over the calibration samples (bias correction)
    points: list[tuple[int, str]]  # (point id, label) of each marked tensor
    per_channel: bool  # weights quantized per output channel
    methods: dict[int, str] = dataclasses.field(default_factory=dict)  # point id → the calibration method of its range


def anchor_names(model) -> dict:
    """Relax anchor op → names of the ONNX nodes it is imported from, in graph order; an unnamed node (Caffe2's
    exports name none) is known by its first output's name, unique in a valid graph."""
    from . import ops

    names = {}
    for rule in ops.all_rules():
        if rule.role is ops.Role.ANCHOR:
            names[rule.ops[0]] = [n.name or n.output[0] for n in model.proto.graph.node
                                  if n.op_type in rule.onnx_types]
    return names


def exclusions(config: QuantConfig, anchor_names: dict) -> Exclusions:
    from . import ops

    op_types = {t for rule in ops.all_rules() for t in rule.onnx_types}
    return Exclusions(op_types=frozenset(config.exclude & op_types),
                      node_names=frozenset(config.exclude - op_types), anchor_names=anchor_names)


def quantize(mod, samples: Iterable[list[np.ndarray]], config: QuantConfig, anchor_names: dict | None = None,
             reporter: Reporter = SILENT, stats_cache: dict | None = None,
             compile_host: Callable | None = None) -> Quantized:
    """FP32 Relax module + calibration samples (each a list of input arrays) → integer module.

    `stats_cache` (point key → statistics, see `point_keys`) is read and filled when given: quantizing the same
    module again with other exclusions calibrates only if it marks a tensor the cache has not seen.
    `compile_host` (Relax module → executable for this CPU) compiles the calibration graph; by default TVM's
    own compile, without schedules (the driver passes the lowering's, many times faster)."""
    annotated = instrument.apply(annotate_pipeline(exclusions(config, anchor_names or {})), mod, reporter)
    points = quant_points(annotated)
    if not points:
        raise QcompileError("nothing to quantize: no Conv, MatMul or Gemm with constant weights "
                            "(build with --precision fp32)")
    keys = point_keys(annotated)
    if stats_cache is not None and all(k in stats_cache for k in keys):
        stats = [stats_cache[k] for k in keys]
    else:
        stats = collect_stats(annotated, samples, len(points), reporter, compile_host)
        if stats_cache is not None:
            stats_cache.update(zip(keys, stats))
    ranges, methods = {}, {}
    for (point, _), s in zip(points, stats):
        levels = 256 if config.activation_dtype == "uint8" and s.min >= 0 else 128
        lo, hi, method = calibrate.choose_range(s, config.calibration, levels, config.activation_dtype)
        # tensors sharing parameters (a pass-through op's input and output) get the union of their ranges
        old_lo, old_hi = ranges.get(point, (lo, hi))
        ranges[point] = min(lo, old_lo), max(hi, old_hi)
        methods.setdefault(point, method)
    params = {point: activation_params(lo, hi, config.activation_dtype) for point, (lo, hi) in ranges.items()}
    means = {label: s.mean for (_, label), s in zip(points, stats)}
    realized = instrument.apply(realize_pipeline(params, means, config.per_channel, config.simulate), annotated,
                                reporter)
    return Quantized(mod=realized, annotated=annotated, params=params, means=means, points=points,
                     per_channel=config.per_channel, methods=methods)


def run_exposed(annotated, samples: Iterable[list[np.ndarray]], with_result: bool = False,
                compile_host: Callable | None = None):
    """Yield, per sample, the value of every marked tensor (in quant_points order), computed on this CPU; with
    `with_result`, (the model's outputs, those values). `compile_host`: as `quantize`'s."""
    import tvm
    from tvm import relax

    module = calibration_pipeline()(annotated)
    if compile_host is None:
        executable = tvm.compile(module, target=tvm.target.Target({"kind": "llvm"}))
    else:
        executable = compile_host(module)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    for sample in samples:
        results = list(vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in sample]))
        points = [r.numpy() for r in results[1:]]  # [0] is the model's own result
        yield (_arrays(results[0]), points) if with_result else points


def _arrays(result) -> list[np.ndarray]:
    """A VM result (a tensor, or nested tuples of them) as a flat list of arrays."""
    import tvm

    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    return [a for item in result for a in _arrays(item)]


def collect_stats(annotated, samples, count: int, reporter: Reporter = SILENT,
                  compile_host: Callable | None = None) -> list[TensorStats]:
    """Statistics of each marked tensor (in quant_points order) over the samples."""
    stats = [TensorStats() for _ in range(count)]
    seen = 0
    for values in reporter.bar(run_exposed(annotated, samples, compile_host=compile_host), desc="calibrating",
                               unit="sample", total=len(samples) if hasattr(samples, "__len__") else None):
        for i, value in enumerate(values):
            stats[i].update(value)
        seen += 1
    if seen == 0:
        raise QcompileError("no calibration samples")
    return stats
