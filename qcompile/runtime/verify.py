"""Verification of a built library before it is written: its outputs beside onnxruntime's FP32 run of the same ONNX
file, on a few inputs.

An FP32 build must agree with onnxruntime within a tolerance scaled to each output's range; an INT8 build must keep
every output's cosine to onnxruntime's FP32 above a floor (a broken calibration or lowering collapses it). The
figures go into the sidecar either way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import QcompileError


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Whether and how a build is checked before it is written."""

    enabled: bool = True
    samples: int = 4  # inputs run through both engines
    # FP32: |ours - onnxruntime| ≤ this × the output's largest |value| (+ 1e-6). Summation order alone moves a deep
    # network's outputs by ~1e-4 of their range (onnxruntime against itself with and without its graph
    # optimizations: 2.5e-4 on PP-OCRv4's detection map); a wrong lowering moves them by far more
    fp32_tolerance: float = 1e-3
    int8_min_cosine: float = 0.9  # INT8: every output's cosine to onnxruntime's FP32 at least this

    def __post_init__(self):
        if self.samples < 1:
            raise QcompileError("{verify_count} must be at least 1")


def compare(ours: list[list[np.ndarray]], reference: list[list[np.ndarray]], names: list[str]) -> list[dict]:
    """Per output, over all samples: the largest absolute error, and relative to the reference's largest |value|
    (`reference_max`), cosine, SQNR and (class-score outputs) top-1 agreement."""
    figures = []
    for k, name in enumerate(names):
        for mine, theirs in zip(ours, reference):
            if mine[k].shape != theirs[k].shape:
                raise QcompileError(f"the build does not compute the model: output '{name}' has shape "
                                    f"{list(mine[k].shape)} where onnxruntime's has {list(theirs[k].shape)}")
        # flattened and joined: an output's shape may change from one input to the next (NonMaxSuppression)
        a = np.concatenate([o[k].reshape(-1) for o in ours]).astype(np.float64)
        r = np.concatenate([o[k].reshape(-1) for o in reference]).astype(np.float64)
        error = np.abs(a - r)
        scale = float(np.abs(r).max())
        signal, noise, dot, own = float((r * r).sum()), float(((a - r) ** 2).sum()), float((a * r).sum()), float((a * a).sum())
        finite = bool(np.isfinite(error).all())
        entry = {
            "output": name,
            "reference_max": scale,
            "max_abs_error": float(error.max()) if finite else float("inf"),
            "relative_error": float(error.max() / scale) if finite and scale > 0 else (0.0 if finite else float("inf")),
            "cosine": dot / np.sqrt(signal * own) if signal > 0 and own > 0 else float(signal == own),
            "sqnr_db": 10 * np.log10(signal / noise) if noise > 0 and signal > 0 else float("inf"),
        }
        if _scores(reference[0][k]):
            entry["top1_agreement"] = float(np.mean([o[k].argmax() == t[k].argmax() for o, t in zip(ours, reference)]))
        figures.append(entry)
    return figures


def _scores(output: np.ndarray) -> bool:
    """Whether an output looks like class scores: one vector of several values (for a batch of one)."""
    return output.size > 1 and sum(d > 1 for d in output.shape) == 1


def failure(figures: list[dict], precision: str, config: VerifyConfig) -> str | None:
    """Why the build must not be written, in one line, or None."""
    for f in figures:
        if not np.isfinite(f["max_abs_error"]):
            return f"output '{f['output']}' holds NaN or infinite values where onnxruntime's does not"
        if precision == "fp32":
            if f["max_abs_error"] > config.fp32_tolerance * f["reference_max"] + 1e-6:
                return (f"output '{f['output']}' differs from onnxruntime's by up to {f['max_abs_error']:.3g} "
                        f"({f['relative_error']:.2g} of its range; allowed {config.fp32_tolerance:g})")
        elif f["cosine"] < config.int8_min_cosine:
            return (f"output '{f['output']}' has collapsed: cosine {f['cosine']:.3f} to onnxruntime's FP32 "
                    f"(at least {config.int8_min_cosine} required)")
    return None


def summary(verification: dict) -> str:
    """One line on the figures of a sidecar's `verification`."""
    if not verification.get("verified"):
        return f"not verified: {verification.get('reason', 'no figures')}"
    parts = []
    for f in verification["outputs"]:
        text = f"{f['output']} max error {f['max_abs_error']:.3g} ({f['relative_error']:.2g} of range), cosine {f['cosine']:.5f}"
        if "top1_agreement" in f:
            text += f", top-1 agreement {f['top1_agreement']:.2f}"
        parts.append(text)
    where = " (run under qemu)" if "qemu" in verification.get("ran", "") else ""
    return (f"verified{where} against onnxruntime FP32 on {verification['samples']} {verification['inputs']}: "
            + "; ".join(parts))


def onnxruntime_outputs(model_path, names: list[str], samples, as_written: bool = False) -> list[list[np.ndarray]]:
    """onnxruntime's outputs of the ONNX file on each sample. `as_written`: its graph optimizations off, for a
    model already quantized (QDQ): its fused u8×s8 kernels are no reference on every CPU (on AVX2 without VNNI
    they saturate int16 sums)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if as_written:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, dict(zip(names, sample))) for sample in samples]
