"""The quantization pipeline, in order: prepare → annotate → (calibrate) → insert QDQ → realize."""

from __future__ import annotations

import tvm

from .annotate import Annotate, Exclusions
from .bias_correction import CorrectBias
from .expose import ExposeQuantPoints
from .insert_qdq import InsertQDQ
from .prepare import Prepare
from .realize import Realize


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
        passes.append(Realize())
    return tvm.transform.Sequential(passes, name="qcompile.realize_pipeline")
