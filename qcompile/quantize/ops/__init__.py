"""Operator rules for quantization, one module per operator family, found through `registry.lookup`."""

# each module registers its rules
from . import (concat, conv, conv_transpose, elementwise, gather, lookup_table, matmul, pooling,  # noqa: F401
               resize, shape)
from .context import QInput, RealizeContext
from .registry import Role, Rule, all_rules, anchor_ops, lookup

__all__ = ["QInput", "RealizeContext", "Role", "Rule", "all_rules", "anchor_ops", "lookup"]
