"""What an operator rule's `realize` works with: its quantized operands (`QInput`) and the context that emits
integer code (`RealizeContext`: the builder plus the requantize arithmetic every rule shares)."""

from __future__ import annotations

import dataclasses
import math
import operator

import numpy as np
from tvm import relax
from tvm.relax import op as R

from ...ir import alias_root
from ..qparams import QuantParams


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """8-bit codes that are a function of another tensor's 8-bit codes, `source` (with `params`): the code for
    source code c is values[c - params.qmin]. Every tensor is one of itself (the identity table); a table of a
    table is a table of the first source, so chains of elementwise functions of one tensor become one lookup."""

    source: relax.Expr
    params: QuantParams
    values: np.ndarray  # one entry per source code

    def real(self, params: QuantParams) -> np.ndarray:
        """The real value each source code stands for after the function, whose codes have `params`."""
        return (self.values.astype(np.float64) - float(params.zero_point)) * float(params.scale)


@dataclasses.dataclass(frozen=True, eq=False)
class Affine:
    """Codes that stand for factor · source + constant in real values (factor and constant broadcast against the
    source: a per-channel scale and shift), so that a chain of such ops (batch norm that no conv absorbs:
    − mean, ÷ σ, · γ, + β) is one rescale of the first source."""

    source: "QInput"
    factor: np.ndarray
    constant: np.ndarray

    def then(self, function, c: np.ndarray, constant_first: bool) -> "Affine | None":
        """This followed by `function` (add, sub, mul, div) with the constant `c` (its first operand if
        `constant_first`); None where the result is not affine in the source (c / x)."""
        f, g = self.factor, self.constant
        if function is operator.add:
            return Affine(self.source, f, g + c)
        if function is operator.sub:
            return Affine(self.source, -f, c - g) if constant_first else Affine(self.source, f, g - c)
        if function is operator.mul:
            return Affine(self.source, f * c, g * c)
        if function is operator.truediv and not constant_first and np.all(c != 0):
            return Affine(self.source, f / c, g / c)
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class Unrounded:
    """An anchor's requantized codes before their rounding: round(real · multiplier) + the zero point, saturated.
    A rescale that alone reads those codes (a residual add, a batch norm no conv absorbs) reads real · multiplier
    instead, so the value is rounded once, where it is stored: rounding twice adds up to half a step of error,
    and the first rounding and saturation cost the fused kernel's epilogue as much as the add itself."""

    real: relax.Expr  # the int32 accumulator in float32
    multiplier: np.ndarray  # per channel, broadcast against it


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

    def __init__(self, builder, lookup_binding=None):
        self.builder = builder
        self._lookup_binding = lookup_binding or (lambda var: None)
        self._derived: dict = {}  # emitted lookup → its Table, rescale → its Affine, requantize → Unrounded
        self._read_once: set = set()  # codes that a single operation reads
        self._rescales: dict = {}  # emitted rescale → (its clamp, a function re-emitting it with another clamp)

    def producer(self, expr):
        """The value `expr` is bound to, through aliases (or `expr` itself where it is no bound variable)."""
        root = self._canonical(expr)
        value = self._lookup_binding(root)
        return root if value is None else value

    def _canonical(self, expr):
        """The variable at the end of `expr`'s aliases, at which a derived result is recorded."""
        return alias_root(self._lookup_binding, expr)

    def _recorded(self, expr, kind):
        found = self._derived.get(self._canonical(expr))
        return found if isinstance(found, kind) else None

    def read_once(self, expr) -> None:
        """Declare that one operation alone reads the codes `expr` (so a rescale may read them unrounded)."""
        self._read_once.add(self._canonical(expr))

    def _unrounded(self, x: QInput) -> Unrounded | None:
        return self._recorded(x.q, Unrounded) if self._canonical(x.q) in self._read_once else None

    def table(self, x: QInput) -> Table:
        """`x`'s codes as a table of the codes they were looked up from (the identity table if they were not)."""
        found = self._recorded(x.q, Table)
        return found or Table(self._canonical(x.q), x.params, np.arange(x.params.qmin, x.params.qmax + 1))

    def affine(self, x: QInput) -> Affine:
        """`x` as a per-channel scale and shift of the tensor it was rescaled from (of itself if it was not)."""
        found = self._recorded(x.q, Affine)
        return found or Affine(x, np.float64(1.0), np.float64(0.0))

    def rescale(self, affine: Affine, out: QuantParams, clamp):
        """`affine` requantized to `out`: one multiply-add of its source's codes, one rounding."""
        result = self.rescale_sum([affine.source], out, clamp, factors=[affine.factor], constant=affine.constant)
        self._derived[result] = affine
        self._rescales[result] = clamp, lambda narrowed: self.rescale(affine, out, narrowed)
        return result

    def lookup(self, source: Table, real: np.ndarray, out: QuantParams, clamp=None):
        """The codes of `real` (one value per code of `source`'s source, requantized to `out` as the integer
        kernels round: half up, saturated, narrowed by `clamp`), as one byte gather from `source.source`."""
        lo, hi = _clamp_bounds(out, clamp)
        with np.errstate(over="ignore", invalid="ignore"):
            q = np.floor(real / float(out.scale) + 0.5) + float(out.zero_point)
        values = np.clip(np.nan_to_num(q, nan=out.zero_point, posinf=hi, neginf=lo), lo, hi).astype(out.dtype)
        index = source.source  # uint8 codes index the table as they are
        if source.params.qmin:  # int8 codes start at -128
            index = self.emit(R.subtract(self.emit(R.astype(index, "int32")),
                                         self.const([source.params.qmin], "int32")))
        # every index is within the table by construction; "clip" keeps TVM from warning that "fast" is unchecked
        result = self.emit(R.take(self.const(values, out.dtype), index, axis=0, mode="clip"))
        self._derived[result] = Table(source.source, source.params, values)
        return result

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
        result = self._round_and_saturate(scaled, 0.0, out, clamp)
        if _clamp_bounds(out, clamp) == (out.qmin, out.qmax):  # no fused ReLU/Clip to keep
            self._derived[result] = Unrounded(real, multiplier.astype(np.float64))
        return result

    def rescale_sum(self, inputs: list[QInput], out: QuantParams, clamp, factors=None, constant=0.0):
        """Σ f_i s_i (q_i - z_i) + constant requantized to `out` as round(Σ m_i q_i + offset) + z_out,
        m_i = f_i s_i / s_out, in float32 with a single rounding; the inputs' zero points and the real `constant`
        fold into one offset. A factor f_i (default 1) and the constant may be arrays that broadcast against the
        inputs (a per-channel scale and shift: batch norm that no conv absorbs). The first input that is an
        anchor's requantized output read by this rescale alone enters unrounded (`Unrounded`), and the rescale
        becomes that anchor's epilogue; only one, as a kernel has one anchor: a second would be stored in float32."""
        factors = [1.0] * len(inputs) if factors is None else factors
        total = None
        offset = np.asarray(constant, np.float64) / np.float64(out.scale)
        fused = next((i for i in inputs if self._unrounded(i) is not None), None)
        for i, factor in zip(inputs, factors):
            m = np.asarray(factor, np.float64) * np.float64(i.params.scale) / np.float64(out.scale)
            if i is fused:  # q_i - z_i is real · multiplier before its rounding
                unrounded = self._unrounded(i)
                m, source = m * unrounded.multiplier, unrounded.real
            else:
                source = R.astype(i.q, "float32")
                offset = offset - m * float(i.params.zero_point)
            term = R.multiply(source, self.const(m.reshape(m.shape or (1,)), "float32"))
            total = term if total is None else R.add(total, term)
        result = self._round_and_saturate(self.emit(total), offset, out, clamp)
        self._rescales[result] = clamp, lambda narrowed: self.rescale_sum(inputs, out, narrowed, factors, constant)
        return result

    def rescale_product(self, a: QInput, b: QInput, out: QuantParams, clamp):
        """s_a (q_a - z_a) · s_b (q_b - z_b) requantized to `out`: the centred codes' product is exact in float32
        (below 2**16), then one multiply by s_a s_b / s_out and one rounding."""
        centred = [R.astype(i.q, "float32") if not int(i.params.zero_point) else
                   R.subtract(R.astype(i.q, "float32"), self.const([float(i.params.zero_point)], "float32"))
                   for i in (a, b)]
        m = np.float64(a.params.scale) * np.float64(b.params.scale) / np.float64(out.scale)
        scaled = R.multiply(R.multiply(*centred), self.const([m], "float32"))
        return self._round_and_saturate(self.emit(scaled), 0.0, out, clamp)

    def clamp(self, x: QInput, clamp):
        """`x` narrowed to `clamp` (real bounds) on its codes; a lookup's table is narrowed instead, so that the
        chain stays one lookup, and a rescale that this clamp alone reads (a residual add's ReLU) saturates to
        the narrowed bounds itself."""
        table = self._recorded(x.q, Table)
        if table is not None:
            return self.lookup(table, table.real(x.params), x.params, clamp)
        rescale = self._rescales.get(self._canonical(x.q))
        if rescale is not None and self._canonical(x.q) in self._read_once:
            own, emit = rescale
            if own is not None:
                clamp = (max(own[0], clamp[0]), min(own[1], clamp[1]))
            return emit(clamp)
        lo, hi = _clamp_bounds(x.params, clamp)
        return self.emit(R.clip(x.q, lo, hi))

    def _round_and_saturate(self, scaled, offset: float, out: QuantParams, clamp):
        """floor(scaled + offset + 0.5) (round half up) + `out`'s zero point, saturated to its range narrowed by
        `clamp`. The zero point is added after rounding, exactly, as onnxruntime does: added before, a value
        within float32's step at 255 (2**-16) of a half would round the other way."""
        lo, hi = _clamp_bounds(out, clamp)
        offset = np.asarray(offset, np.float64) + 0.5
        rounded = R.floor(R.add(scaled, self.const(offset.reshape(offset.shape or (1,)), "float32")))
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
