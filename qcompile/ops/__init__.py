"""Operator rules for quantization, one module per operator family, found through `registry.lookup`."""

from . import concat, conv, elementwise, matmul, pooling, shape  # noqa: F401  (each registers its rules)
from .registry import Role, Rule, all_rules, lookup

__all__ = ["Role", "Rule", "all_rules", "lookup"]
