"""Quantization parameters (scale, zero point, integer type) and the integer arithmetic they imply."""

from __future__ import annotations

import dataclasses

import numpy as np

INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
CHANNEL_SCALE_FLOOR = 4096.0  # no channel's weight scale is below 1/4096 of the largest one's
WEIGHT_QMAX = 127  # weights use [-127, 127]: symmetric, so that negating a weight never overflows


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


def fixed_point_multiplier(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write each positive real multiplier m as m0 * 2**-shift with m0 a 31-bit integer in [2**30, 2**31)."""
    multiplier = np.asarray(multiplier, dtype=np.float64)
    mantissa, exponent = np.frexp(multiplier)  # multiplier = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = np.round(mantissa * (1 << 31)).astype(np.int64)
    overflow = m0 == (1 << 31)  # rounding reached 1.0: renormalize
    m0 = np.where(overflow, m0 // 2, m0)
    shift = 31 - exponent.astype(np.int64) - overflow.astype(np.int64)
    if np.any(shift < 1):
        raise ValueError(f"requantize multiplier too large: {multiplier.max():.3g}")
    # a multiplier below 2**-31 maps every int32 accumulator to 0
    negligible = shift > 62
    return np.where(negligible, 0, m0), np.where(negligible, 62, shift)


def requantize(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """The integer requantize the realized graph computes: round-half-up fixed-point multiply, offset, saturate.

    Reference implementation for tests; `realize` emits the same steps as Relax ops.
    """
    acc = acc.astype(np.int64)
    scaled = (acc * m0 + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(scaled + zero_point, lo, hi)
