"""The registry of operator rules: how each Relax operator takes part in quantization.

A rule is the one owner of its operator family's knowledge: which operands are activations and weights, how the
operands are read from and put back into a call, how the integer code is emitted (`realize`), and (anchors) how
rounding the weights shifts the output's mean (`mean_shift`, for bias correction). The passes ask the rule and
hold no per-operator case of their own.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Optional, Protocol

import numpy as np


class Role(enum.Enum):
    ANCHOR = "anchor"  # integer compute with int32 accumulation (conv, matmul): inputs always quantized
    MERGE = "merge"  # combines quantized inputs into an output with its own scale (add, concat, mean)
    PASS_THROUGH = "pass-through"  # output shares the input's scale (max pool, reshape, relu)
    TABLE = "table"  # a constant table read at run-time indices (Gather): int8 rows, dequantized as read


class Realizer(Protocol):
    def __call__(self, ctx, call, inputs: list, out, clamp: Optional[tuple[float, float]], bias):
        """The integer expression for `call` (emitted through `ctx`, an `ops.context.RealizeContext`) from its
        quantized operands `inputs` (`ops.context.QInput`, in `activations` order; anchors: data and weight),
        requantized to `out` (QuantParams; None: the result stays FP32), narrowed by a fused `clamp` and with a
        constant `bias` (anchors) folded in; None when the case is not handled (the op then stays FP32)."""


class MeanShift(Protocol):
    def __call__(self, call, delta: np.ndarray, input_mean: np.ndarray) -> Optional[np.ndarray]:
        """E[op(x, ΔW)] per output channel for the weight rounding error ΔW = W_q − W, from the input's mean
        over the calibration samples; None where not known."""


class HybridRealizer(Protocol):
    def __call__(self, ctx, call, x, weight: np.ndarray, activation_dtype: str):
        """The expression for `call` with its constant float `weight` in int8 and its activation `x` (a Relax
        expression) left float (weight-only) or quantized at run time (dynamic); None when the case is not
        handled (the op then stays FP32)."""


def _args(call) -> list:
    return list(call.args)


def _call_with(call, operands: list):
    from tvm import relax

    return relax.Call(call.op, operands, call.attrs, call.ty_args)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One operator family.

    operands(call) → the call's tensor operands in order (default: its arguments; concat: its tuple's fields);
    with_operands(call, operands) → the same call on other operands;
    activations(call) → indices (into operands) of the operands that must be quantized activations;
    weights(call) → {operand index: per-channel axis} for constant weights (anchors; a table's rows);
    weight_only / dynamic: the hybrid modes' forms of an anchor (`passes/hybrid.py`), where the family has them;
    a table's int8 form (`passes/quantize_tables.py`) is its `weight_only`;
    shares_output: a merge whose output only copies its inputs' values (concat): an input it alone reads takes the
    output's parameters, so its producer rounds once, to the output's scale.
    """

    ops: tuple[str, ...]
    onnx_types: tuple[str, ...]
    role: Role
    activations: Callable
    realize: Realizer
    weights: Callable = lambda call: {}
    operands: Callable = _args
    with_operands: Callable = _call_with
    mean_shift: MeanShift | None = None
    weight_only: HybridRealizer | None = None  # --precision int8-weights
    dynamic: HybridRealizer | None = None  # --precision int8-dynamic
    shares_output: bool = False


_RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    for op in rule.ops:
        _RULES[op] = rule
    return rule


def lookup(op_name: str) -> Rule | None:
    return _RULES.get(op_name)


def all_rules() -> list[Rule]:
    return list(dict.fromkeys(_RULES.values()))


def anchor_ops() -> frozenset[str]:
    """The Relax ops computed with int32 accumulation (conv, matmul)."""
    return frozenset(op for op, rule in _RULES.items() if rule.role is Role.ANCHOR)
