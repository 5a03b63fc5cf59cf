"""The quantization pipelines, each declared as one `tvm.transform.Sequential` (run them through
`qcompile.instrument.apply` for `--debug` timings and IR dumps):

    annotate:   prepare → quantize tables → annotate    (FP32 import → quantization points marked)
    calibrate:  expose                                   (the marked graph, returning every point's value)
    realize:    correct bias → insert QDQ → realize → lift scalars
    qdq import: prepare → requantize weights → realize → lift scalars   (a model quantized by another tool)
    hybrid:     prepare → quantize tables → hybrid quantize   (int8 weights; float or run-time quantized activations)
"""

from __future__ import annotations

import tvm

from .passes.annotate import Annotate, Exclusions
from .passes.bias_correction import CorrectBias
from .passes.expose import ExposeQuantPoints
from .passes.hybrid import HybridQuantize
from .passes.insert_qdq import InsertQDQ
from .passes.lift_scalars import LiftScalars
from .passes.quantize_tables import QuantizeTables
from ..frontend.prepare import Prepare
from .passes.realize import Realize
from .passes.requantize_weights import RequantizeWeights


def annotate_pipeline(exclusions: Exclusions) -> tvm.transform.Pass:
    """FP32 import → graph with quantization points marked."""
    return tvm.transform.Sequential([
        Prepare(),  # batch norm and constants folded, the importer's Clip kernels made plain Relax ops
        QuantizeTables(exclusions),  # embeddings in int8 rows: weights, so before calibration sees the graph
        Annotate(exclusions),  # the operator rules of `ops/` mark the tensors to quantize
    ], name="qcompile.annotate")


def hybrid_pipeline(mode: str, activation_dtype: str, exclusions: Exclusions = Exclusions()) -> tvm.transform.Pass:
    """FP32 import → int8-weights or int8-dynamic graph (no calibration)."""
    return tvm.transform.Sequential([
        Prepare(),
        QuantizeTables(exclusions),
        HybridQuantize(mode, activation_dtype, exclusions),
    ], name="qcompile.hybrid")


def calibration_pipeline() -> tvm.transform.Pass:
    """Annotated graph → FP32 graph that also returns every quantization point's value."""
    return tvm.transform.Sequential([ExposeQuantPoints()], name="qcompile.calibrate")


def realize_pipeline(params, means, per_channel: bool, simulate: bool = False,
                     keep_markers: bool = False) -> tvm.transform.Pass:
    """Annotated graph + calibrated parameters → integer graph; with `simulate`, the fake-quantized FP32 graph
    (with `keep_markers` still marked, which the report measures the error of every point on)."""
    passes = [
        CorrectBias(means, per_channel),  # the mean shift that rounding the weights causes, taken out of the bias
        InsertQDQ(params, per_channel, keep_markers),  # markers → quantize/dequantize pairs, int8 weights
    ]
    if not simulate:
        passes += [
            Realize(),  # dequantize → op → quantize patterns → integer kernels, through the operator rules
            LiftScalars(),  # scalar constants as tensors: kernels (and their tuning records) independent of scales
        ]
    return tvm.transform.Sequential(passes, name="qcompile.realize")


def qdq_import_pipeline(per_channel: bool = True) -> tvm.transform.Pass:
    """An already-quantized (QDQ) ONNX import → integer graph, through the same realize pass."""
    return tvm.transform.Sequential([
        Prepare(),
        RequantizeWeights(per_channel),  # the model's float weights behind dequantize → int8 constants
        Realize(),
        LiftScalars(),
    ], name="qcompile.qdq_import")
