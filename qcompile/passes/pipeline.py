"""The quantization pipelines, in order: prepare → annotate → (calibrate) → correct bias → insert QDQ → realize →
lift scalars."""

from __future__ import annotations

import tvm

from .annotate import Annotate, Exclusions
from .bias_correction import CorrectBias
from .expose import ExposeQuantPoints
from .insert_qdq import InsertQDQ
from .lift_scalars import LiftScalars
from .prepare import Prepare
from .realize import Realize
from .requantize_weights import RequantizeWeights


def annotate_pipeline(exclusions: Exclusions) -> tvm.transform.Pass:
    """FP32 import → graph with quantization points marked."""
    return tvm.transform.Sequential([Prepare(), Annotate(exclusions)], name="qcompile.annotate_pipeline")


def calibration_pipeline() -> tvm.transform.Pass:
    """Annotated graph → FP32 graph that also returns every quantization point's value."""
    return ExposeQuantPoints()


def realize_pipeline(params, means, per_channel: bool, simulate: bool) -> tvm.transform.Pass:
    """Annotated graph + calibrated parameters → integer graph (or the fake-quantized FP32 graph)."""
    passes = [CorrectBias(means, per_channel), InsertQDQ(params, per_channel)]
    if not simulate:
        passes += [Realize(), LiftScalars()]
    return tvm.transform.Sequential(passes, name="qcompile.realize_pipeline")


def qdq_import_pipeline(per_channel: bool = True) -> tvm.transform.Pass:
    """An already-quantized (QDQ) ONNX import → integer graph, through the same realize pass."""
    return tvm.transform.Sequential([Prepare(), RequantizeWeights(per_channel), Realize(), LiftScalars()],
                                    name="qcompile.qdq_import_pipeline")
