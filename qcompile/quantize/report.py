"""The quantization report: error of every quantized tensor against FP32, operator counts, chosen scales."""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
from tabulate import tabulate

from ..ir import op_name
from . import ops
from .pipeline import realize_pipeline
from .quantizer import Quantized, run_exposed


@dataclasses.dataclass
class PointError:
    label: str
    sqnr_db: float
    cosine: float
    scale: float
    zero_point: int
    dtype: str
    method: str = ""  # the calibration method that chose its range


@dataclasses.dataclass
class Report:
    points: list[PointError]  # worst SQNR first
    integer_anchors: int
    float_anchors: int
    ops_by_dtype: dict  # "integer"/"float" → Counter of op names
    samples: int
    output_sqnr_db: float = float("inf")  # the model's outputs (all of them together) against FP32

    def to_json(self) -> dict:
        return {
            "samples": self.samples,
            "output_sqnr_db": self.output_sqnr_db,
            "integer_anchors": self.integer_anchors,
            "float_anchors": self.float_anchors,
            "ops": {k: dict(v) for k, v in self.ops_by_dtype.items()},
            "points": [dataclasses.asdict(p) for p in self.points],
        }

    def to_markdown(self) -> str:
        integer = sum(self.ops_by_dtype["integer"].values())
        floating = sum(self.ops_by_dtype["float"].values())
        lines = [
            "# qcompile quantization report",
            "",
            f"- conv/matmul layers in integer arithmetic: {self.integer_anchors}; left in FP32: {self.float_anchors}",
            f"- operators with integer results: {integer}; with float results: {floating} "
            f"({_op_list(self.ops_by_dtype['float'])})",
            f"- the model's outputs against FP32: SQNR {self.output_sqnr_db:.1f} dB",
            f"- error of each quantized tensor against FP32, fake-quantized graph, {self.samples} calibration samples; "
            "worst first",
            "",
            tabulate([(p.label, f"{p.sqnr_db:.1f}", f"{p.cosine:.5f}", f"{p.scale:.6g}", p.zero_point, p.dtype,
                       p.method) for p in self.points],
                     headers=["tensor (producing layer)", "SQNR dB", "cosine", "scale", "zero point", "type",
                              "range by"],
                     tablefmt="github"),
            "",
        ]
        return "\n".join(lines)


def _op_list(counter) -> str:
    return ", ".join(f"{name.removeprefix('relax.')} ×{n}" for name, n in counter.most_common())


def build_report(quantized: Quantized, samples: list, compile_host=None) -> Report:
    """Each quantized tensor's error against FP32, measured on the fake-quantized graph (the realize pipeline
    stopped before the integer kernels, the points still marked). `compile_host`: as `quantizer.quantize`'s."""
    simulated = realize_pipeline(quantized.params, quantized.means, quantized.per_channel, simulate=True,
                                 keep_markers=True)(quantized.annotated)
    sums = np.zeros((len(quantized.points) + 1, 4))  # signal², noise², dot, |quantized|²; last: the outputs
    exact, fake = (run_exposed(module, samples, True, compile_host) for module in (quantized.annotated, simulated))
    for (ref_out, reference), (approx_out, approx) in zip(exact, fake):
        joined = [np.concatenate([o.ravel() for o in outputs]) for outputs in (ref_out, approx_out)]
        for i, (r, a) in enumerate(list(zip(reference, approx)) + [joined]):
            r, a = r.astype(np.float64).ravel(), a.astype(np.float64).ravel()
            sums[i] += [r @ r, (r - a) @ (r - a), r @ a, a @ a]
    points = []
    for (point, label), row in zip(quantized.points, sums):
        p = quantized.params[point]
        points.append(PointError(label, *_sqnr_cosine(*row), scale=float(p.scale), zero_point=int(p.zero_point),
                                 dtype=p.dtype, method=quantized.methods.get(point, "")))
    points.sort(key=lambda p: p.sqnr_db)
    integer_anchors, float_anchors, by_dtype = count_ops(quantized.mod)
    return Report(points, integer_anchors, float_anchors, by_dtype, len(samples),
                  output_sqnr_db=_sqnr_cosine(*sums[-1])[0])


def _sqnr_cosine(signal, noise, dot, quant) -> tuple[float, float]:
    return (float(10 * np.log10(signal / noise)) if noise > 0 else float("inf"),
            float(dot / np.sqrt(signal * quant)) if signal > 0 and quant > 0 else 1.0)


def count_ops(mod) -> tuple[int, int, dict]:
    """(conv/matmul in integers, conv/matmul in float, {integer|float: Counter of op names}) of `main`."""
    by_dtype = {"integer": collections.Counter(), "float": collections.Counter()}
    integer_anchors = float_anchors = 0
    anchors = ops.anchor_ops()
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            name = op_name(b.value)
            if name is None or not hasattr(b.var.ty, "dtype"):
                continue
            if name == "relax.call_tir":  # a rule's own kernel (an int8 table's rows, a weight-only matmul)
                name = b.value.args[0].name_hint
            is_int = str(b.var.ty.dtype).startswith(("int", "uint", "bool"))
            by_dtype["integer" if is_int else "float"][name] += 1
            if name in anchors:  # integer anchors accumulate in int32 (8-bit operands, or 16-bit centred ones)
                if str(b.var.ty.dtype) == "int32":
                    integer_anchors += 1
                else:
                    float_anchors += 1
    return integer_anchors, float_anchors, by_dtype


def write(report: Report, path) -> list:
    """Markdown at `path` and JSON beside it (same name, .json)."""
    from pathlib import Path

    path = Path(path)
    json_path = path.with_suffix(".json")
    path.write_text(report.to_markdown())
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return [path, json_path]
