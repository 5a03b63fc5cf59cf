"""Quantization parameters (scale, zero point, integer type) and the integer arithmetic they imply."""

from __future__ import annotations

import dataclasses

import numpy as np

INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
CHANNEL_SCALE_FLOOR = 4096.0  # no channel's weight scale is below 1/4096 of the largest one's
WEIGHT_QMAX = 127  # weights use [-127, 127]: symmetric, so that negating a weight never overflows
# run-time (dynamic) activation ranges: a range below this quantizes with this instead, so that an all-zero row or
# tensor (padding) divides by no zero
DYNAMIC_RANGE_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True, eq=False)
class QuantParams:
    """real ≈ scale * (q - zero_point); per-tensor when scale is a scalar, else per-channel along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int = -1

    @property
    def qmin(self) -> int:
        return INT_RANGES[self.dtype][0]

    @property
    def qmax(self) -> int:
        return INT_RANGES[self.dtype][1]

    @property
    def per_channel(self) -> bool:
        return np.ndim(self.scale) > 0

    def same_as(self, other: "QuantParams") -> bool:
        return (self.dtype == other.dtype and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.zero_point, other.zero_point))

    def quantize(self, x: np.ndarray) -> np.ndarray:
        scale, zp = self._broadcast(x.ndim)
        return np.clip(np.round(x / scale) + zp, self.qmin, self.qmax).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale, zp = self._broadcast(q.ndim)
        return ((q.astype(np.int32) - zp) * scale).astype(np.float32)

    def _broadcast(self, ndim: int):
        if not self.per_channel:
            return self.scale, self.zero_point
        shape = [1] * ndim
        shape[self.axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)

    def to_json(self) -> dict:
        return {"scale": np.asarray(self.scale).tolist(), "zero_point": np.asarray(self.zero_point).tolist(),
                "dtype": self.dtype, "axis": self.axis}


def activation_params(lo: float, hi: float, dtype: str) -> QuantParams:
    """Asymmetric uint8 over [lo, hi] (widened to hold 0), or symmetric int8 over ±max(|lo|, |hi|)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype == "int8":
        scale = max(abs(lo), abs(hi)) / 127.0
        zero_point = 0
    elif dtype == "uint8":
        scale = (hi - lo) / 255.0
        zero_point = int(np.clip(round(-lo / scale), 0, 255)) if scale > 0 else 0
    else:
        raise ValueError(f"activation dtype must be uint8 or int8, not {dtype}")
    scale = scale if scale > 0 else 1.0  # an all-zero tensor: any scale represents it exactly
    return QuantParams(np.float32(scale), np.int32(zero_point), dtype)


def weight_params(w: np.ndarray, axis: int, per_channel: bool) -> QuantParams:
    """Symmetric int8 scales from the largest magnitude, per output channel or for the whole tensor."""
    if per_channel:
        reduce = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        absmax = np.abs(w).max(axis=reduce)
        # a near-dead channel (weights ~1e-13 after batch-norm folding) would get a scale so small that its
        # bias, in accumulator units, overflows int32; its weights round to 0 at this floor instead
        absmax = np.maximum(absmax, absmax.max() / CHANNEL_SCALE_FLOOR)
    else:
        absmax = np.abs(w).max()
    scale = np.where(absmax > 0, absmax / WEIGHT_QMAX, 1.0).astype(np.float32)
    return QuantParams(scale, np.zeros_like(scale, dtype=np.int32), "int8", axis % w.ndim if per_channel else -1)


def quantize_weight(w: np.ndarray, params: QuantParams) -> np.ndarray:
    return np.clip(params.quantize(w), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: float, lo: int, hi: int) -> np.ndarray:
    """The requantize the realized graph computes: floor(acc · m + 0.5) + zero point in float32, saturated.

    float32, as onnxruntime's kernels do: in a conv's epilogue it costs a multiply, an add and a floor per value,
    where an exact int64 fixed-point multiply costs several times that (AVX-512's 64-bit lanes hold half as many
    values). The float32 product is within a relative 2**-24 of the exact one (2**-23 for sums beyond 2**24,
    which float32 rounds): it rounds differently only where acc · m is that close to a half. Reference
    implementation for tests; `realize` emits the same steps as Relax ops.
    """
    scaled = acc.astype(np.float32) * np.asarray(multiplier, np.float32)
    return np.clip(np.floor(scaled + np.float32(0.5)) + np.float32(zero_point), lo, hi)
