"""The registry of operator rules: how each Relax operator takes part in quantization."""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable


class Role(enum.Enum):
    ANCHOR = "anchor"  # integer compute with int32 accumulation (conv, matmul): inputs always quantized
    MERGE = "merge"  # combines quantized inputs into an output with its own scale (add, concat, mean)
    PASS_THROUGH = "pass-through"  # output shares the input's scale (max pool, reshape, relu)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One operator family.

    activations(call) → indices of arguments that must be quantized activations;
    weights(call) → {argument index: per-channel axis} for constant weights (anchors only);
    realize(ctx, call, inputs, out, clamp, bias) → the integer expression, or None when the case is not handled.
    """

    ops: tuple[str, ...]
    onnx_types: tuple[str, ...]
    role: Role
    activations: Callable
    realize: Callable
    weights: Callable = lambda call: {}


_RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    for op in rule.ops:
        _RULES[op] = rule
    return rule


def lookup(op_name: str) -> Rule | None:
    return _RULES.get(op_name)


def all_rules() -> list[Rule]:
    return list(dict.fromkeys(_RULES.values()))
