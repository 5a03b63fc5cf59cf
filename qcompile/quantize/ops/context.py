"""What an operator rule's `realize` works with: its quantized operands (`QInput`) and the context that emits
integer code (`RealizeContext`: the builder plus the requantize arithmetic every rule shares)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from tvm import relax
from tvm.relax import op as R

from ..qparams import QuantParams


@dataclasses.dataclass(frozen=True)
class QInput:
    """A quantized operand: its integers (a Relax expression), their parameters, and the values if constant."""

    q: relax.Expr
    params: QuantParams
    value: np.ndarray | None
    shape: tuple

    @property
    def is_constant(self) -> bool:
        return self.value is not None


class RealizeContext:
    """What operator rules use to emit integer code: the builder plus the shared requantize arithmetic."""

    def __init__(self, builder):
        self.builder = builder

    def emit(self, expr):
        return self.builder.emit(expr)

    @staticmethod
    def const(value, dtype):
        return relax.const(np.asarray(value).astype(dtype), dtype)

    def finish_anchor(self, acc, in_scale, offset, bias, out, clamp, channel_axis):
        """int32 accumulator (per-channel real scale `in_scale`) → requantized output, or FP32 if `out` is None.

        `offset` (per channel, in accumulator units) carries the input zero point's correction; a constant
        bias joins it, rounded to the accumulator's scale, so both cost one int32 add.
        """
        ndim = len(acc.ty.shape)
        channels = in_scale.size
        in_scale = np.asarray(in_scale, np.float64)
        offset = np.asarray(offset, np.int64)
        if bias is not None:
            if bias.size != channels:
                return None
            offset = offset + np.round(bias.reshape(-1).astype(np.float64) / in_scale).astype(np.int64)
        if np.abs(offset).max(initial=0) >= 2**31:
            return None  # the bias does not fit the int32 accumulator: the layer stays FP32
        shape = [1] * ndim
        shape[channel_axis] = channels
        if np.any(offset):
            acc = self.emit(R.add(acc, self.const(offset.reshape(shape), "int32")))
        if out is None:
            real = self.emit(R.astype(acc, "float32"))
            return self.emit(R.multiply(real, self.const(in_scale.reshape(shape), "float32")))
        return self.requantize(acc, in_scale / np.float64(out.scale), out, clamp, shape)

    def requantize(self, acc, multiplier, out: QuantParams, clamp, shape):
        """round(acc · multiplier) + zero point, saturated, in float32 (see `qparams.requantize`)."""
        multiplier = np.asarray(multiplier, np.float32)
        multiplier = multiplier.reshape(shape) if shape is not None else multiplier.reshape(1)
        real = self.emit(R.astype(acc, "float32"))
        scaled = self.emit(R.multiply(real, self.const(multiplier, "float32")))
        return self._round_and_saturate(scaled, 0.0, out, clamp)

    def rescale_sum(self, inputs: list[QInput], out: QuantParams, clamp):
        """Σ s_i (q_i - z_i) requantized to `out` as round(Σ m_i q_i - Σ m_i z_i) + z_out, m_i = s_i / s_out, in
        float32 with a single rounding; the inputs' zero points fold into one constant."""
        total = None
        offset = 0.0
        for i in inputs:
            m = float(np.float64(i.params.scale) / np.float64(out.scale))
            term = R.multiply(R.astype(i.q, "float32"), self.const([m], "float32"))
            total = term if total is None else R.add(total, term)
            offset -= m * float(i.params.zero_point)
        return self._round_and_saturate(self.emit(total), offset, out, clamp)

    def clamp(self, q, params: QuantParams, clamp):
        lo, hi = _clamp_bounds(params, clamp)
        return self.emit(R.clip(q, lo, hi))

    def _round_and_saturate(self, scaled, offset: float, out: QuantParams, clamp):
        """floor(scaled + offset + 0.5) (round half up) + `out`'s zero point, saturated to its range narrowed by
        `clamp`. The zero point is added after rounding, exactly, as onnxruntime does: added before, a value
        within float32's step at 255 (2**-16) of a half would round the other way."""
        lo, hi = _clamp_bounds(out, clamp)
        rounded = R.floor(R.add(scaled, self.const([offset + 0.5], "float32")))
        if int(out.zero_point):
            rounded = R.add(rounded, self.const([float(out.zero_point)], "float32"))
        rounded = self.emit(rounded)
        # saturated before the cast, which is undefined out of range; bounds as tensors, like `LiftScalars`'s
        saturated = R.minimum(R.maximum(rounded, self.const([lo], "float32")), self.const([hi], "float32"))
        return self.emit(R.astype(saturated, out.dtype))


def _clamp_bounds(params: QuantParams, clamp) -> tuple[int, int]:
    """The integer range: the type's, narrowed by a fused ReLU/Clip's bounds mapped through the scale."""
    lo, hi = params.qmin, params.qmax
    if clamp is not None:
        z, s = int(params.zero_point), float(params.scale)
        if math.isfinite(clamp[0]):
            lo = max(lo, min(hi, round(clamp[0] / s) + z))
        if math.isfinite(clamp[1]):
            hi = min(hi, max(lo, round(clamp[1] / s) + z))
    return lo, hi
