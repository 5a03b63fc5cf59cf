"""Annotate: mark the activations and weights to quantize, as the operator rules in `qcompile.ops` decide."""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import tvm
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax import PyExprMutator, expr_functor

from .. import ops
from ..ops import Role
from ...ir import bias_of, clamp_of, constant_value, op_name, rewrite_main
from ..markers import QUANT_POINT, WEIGHT_POINT


@dataclasses.dataclass(frozen=True)
class Exclusions:
    """Layers kept in FP32: by ONNX op type, or by ONNX node name (anchors: Conv, MatMul, Gemm)."""

    op_types: frozenset = frozenset()
    node_names: frozenset = frozenset()
    anchor_names: dict = dataclasses.field(default_factory=dict)  # relax op → ONNX node names, in graph order


@tvm.transform.module_pass(opt_level=0, name="qcompile.Annotate")
class Annotate:
    """Wrap each activation to quantize in a `qcompile.quant_point` marker (one id per set of shared
    parameters) and each anchor's constant weight in a `qcompile.weight_point` marker (its channel axis).

    Only the consumers that take the tensor quantized see the marker; float consumers keep the original.
    """

    def __init__(self, exclusions: Exclusions = Exclusions()):
        self.exclusions = exclusions

    def transform_module(self, mod, ctx):
        requests, weights, classes, labels = _plan(mod["main"], self.exclusions)
        return rewrite_main(_InsertMarkers(mod, requests, weights, classes, labels), mod)


def _plan(func: relax.Function, exclusions: Exclusions):
    """Decide, from consumers back to producers, which arguments of which bindings are quantized.

    An anchor always takes quantized inputs; a merge or pass-through op only when its own output is
    wanted quantized, so float regions (softmax, unknown ops) get no pointless quantize/dequantize.
    A pass-through op's output shares its input's parameters (tied to the same point). A recurrence's state (the
    input of an anchor computed from an earlier anchor with the same weights: an unrolled LSTM/GRU's hidden
    state) is quantized where the anchor reads it, and what computes it stays FP32: rounded to 8 bits at every
    step, the error of the cell state compounds over the sequence.
    """
    bindings = [b for block in func.body.blocks for b in block.bindings]
    consumers = consumers_of(bindings)
    nodes = onnx_nodes(bindings, exclusions.anchor_names)
    excluded = excluded_vars(bindings, exclusions, nodes)
    epilogue = _epilogues(bindings, consumers, excluded)
    states = _recurrent_states(bindings)

    wanted, requests, weights, tie = set(), {}, {}, {}
    for b in reversed(bindings):
        call = b.value
        rule = ops.lookup(op_name(call) or "")
        if rule is None or b.var in epilogue or b.var in excluded:
            continue
        if rule.role is not Role.ANCHOR and (b.var not in wanted or b.var in states):
            continue
        indices = rule.activations(call)
        operands = rule.operands(call)
        inputs = [operands[i] for i in indices]
        if not inputs or not all(isinstance(x, relax.Var) for x in inputs):
            continue
        if rule.role is Role.ANCHOR:
            w = {i: axis for i, axis in rule.weights(call).items() if i not in indices}
            if not w and len(indices) < len(operands):
                continue  # neither constant weights nor every operand an activation
            if not all(isinstance(operands[i], GenericConst) for i in w):
                continue
            if w:
                weights[b.var] = w
        requests[b.var] = indices
        wanted.update(inputs)
        if rule.role is Role.PASS_THROUGH:
            tie[b.var] = inputs[0]
        elif rule.shares_output:
            # an input read by this op alone is rounded once, straight to the output's scale, not twice
            tie.update((x, b.var) for x in inputs if x not in tie and len(consumers.get(x, [])) == 1)
    producers = {b.var: b.value for b in bindings}
    # program order, not set order: point ids (and so reports and fallback plans) are the same on every run
    position = {v: i for i, v in enumerate(list(func.params) + [b.var for b in bindings])}
    wanted = sorted(wanted, key=position.__getitem__)
    labels = {}
    for x in wanted:
        label = _label(x, producers, nodes, epilogue)
        labels[x] = label if label not in labels.values() else f"{label} ({x.name})"
    return requests, weights, {x: _root(x, tie) for x in wanted}, labels


def _recurrent_states(bindings) -> set:
    """The activation inputs of anchors that depend on an earlier anchor with the same constant weights."""
    weights = {b.var: _anchor_weights(b.value) for b in bindings}  # each anchor's weights hashed once
    uses = collections.Counter(key for keys in weights.values() for key in keys)
    shared = {key for key, count in uses.items() if count > 1}
    if not shared:  # a feed-forward net: nothing else to do
        return set()
    upstream, states = {}, set()  # var → the shared weights of the anchors it is computed from
    for b in bindings:
        own = set(weights[b.var]) & shared
        seen = set().union(*(upstream.get(a, ()) for a in var_args(b.value)))
        if own & seen:
            rule = ops.lookup(op_name(b.value))
            operands, activations = rule.operands(b.value), rule.activations(b.value)
            states.update(operands[i] for i in activations if upstream.get(operands[i], set()) & own)
        if own | seen:
            upstream[b.var] = own | seen
    return states


def _anchor_weights(call) -> list:
    """Keys of the constant weights of an anchor call (none for other calls): equal for equal values, as an
    unrolled recurrence may hold one copy of its weights per step."""
    rule = ops.lookup(op_name(call) or "")
    if rule is None or rule.role is not Role.ANCHOR:
        return []
    operands = rule.operands(call)
    values = [constant_value(operands[i]) for i in rule.weights(call)]
    return [(v.shape, str(v.dtype), hashlib.sha1(v.tobytes()).hexdigest()) for v in values if v is not None]


def _root(var, tie):
    while var in tie:
        var = tie[var]
    return var


def _label(var, producers, nodes, epilogue) -> str:
    """A name a user recognizes for a quantized tensor: the ONNX layer that produces it, where known."""
    anchor = epilogue.get(var, var)
    if anchor in nodes:
        return nodes[anchor]
    if var not in producers:
        return f"input {var.name}"
    return f"{(op_name(producers[var]) or 'value').removeprefix('relax.')} {var.name}"


def _epilogues(bindings, consumers, excluded) -> dict:
    """Bindings fused into the anchor before them (→ that anchor): one bias add, then clamps, each the sole consumer."""
    fused = {}
    for b in bindings:
        rule = ops.lookup(op_name(b.value) or "")
        if rule is None or rule.role is not Role.ANCHOR or b.var in excluded:
            continue
        var, bias_allowed = b.var, True
        while len(consumers.get(var, [])) == 1:
            nxt = consumers[var][0]
            if bias_allowed and bias_of(nxt.value) is not None:
                bias_allowed = False
            elif clamp_of(nxt.value) is not None:
                bias_allowed = False
            else:
                break
            fused[nxt.var] = b.var
            var = nxt.var
    return fused


def onnx_nodes(bindings, anchor_names) -> dict:
    """Anchor binding → ONNX node name: the importer emits one anchor per node, in graph order."""
    nodes, seen = {}, {}
    for b in bindings:
        name = op_name(b.value)
        if name not in anchor_names:
            continue
        ordinal = seen[name] = seen.get(name, -1) + 1
        if ordinal < len(anchor_names[name]):
            nodes[b.var] = anchor_names[name][ordinal]
    return nodes


def excluded_vars(bindings, exclusions: Exclusions, nodes: dict | None = None) -> set:
    """The bindings `exclusions` keeps in FP32 (by their rule's ONNX op types, or anchors by ONNX node name)."""
    nodes = onnx_nodes(bindings, exclusions.anchor_names) if nodes is None else nodes
    excluded = set()
    for b in bindings:
        rule = ops.lookup(op_name(b.value) or "")
        if rule is not None and (exclusions.op_types & set(rule.onnx_types)
                                 or nodes.get(b.var) in exclusions.node_names):
            excluded.add(b.var)
    return excluded


def excluded_calls(func, exclusions: Exclusions) -> set:
    """The calls of `func` that `exclusions` keeps in FP32 (for the passes that rewrite calls as they visit them)."""
    bindings = [b for block in func.body.blocks for b in block.bindings]
    excluded = excluded_vars(bindings, exclusions)
    return {b.value for b in bindings if b.var in excluded}


def consumers_of(bindings) -> dict:
    """Variable → the bindings that take it as an argument, in program order."""
    consumers = {}
    for b in bindings:
        for arg in var_args(b.value):
            consumers.setdefault(arg, []).append(b)
    return consumers


def var_args(expr) -> list:
    if not isinstance(expr, relax.Call):
        return []
    flat = []
    for arg in expr.args:
        flat.extend(arg.fields if isinstance(arg, relax.Tuple) else [arg])
    return [a for a in flat if isinstance(a, relax.Var)]


@expr_functor.mutator
class _InsertMarkers(PyExprMutator):
    def __init__(self, mod, requests, weights, classes, labels):
        super().__init__(mod)
        self.requests, self.weights, self.labels = requests, weights, labels
        roots = list(dict.fromkeys(classes.values()))
        self.point_id = {var: roots.index(root) for var, root in classes.items()}
        self.markers = {}

    def visit_var_binding_(self, binding):
        if binding.var not in self.requests:
            return super().visit_var_binding_(binding)
        call = binding.value
        rule = ops.lookup(op_name(call))
        operands = rule.operands(call)
        marked = {i: self._quant_point(operands[i]) for i in self.requests[binding.var]}
        for i, axis in self.weights.get(binding.var, {}).items():
            marked[i] = self.builder_.emit(relax.op.call_pure_packed(
                WEIGHT_POINT, operands[i], relax.prim_value(axis), ty_args=[operands[i].ty]))
        new_call = rule.with_operands(call, [marked.get(i, self.visit_expr(a)) for i, a in enumerate(operands)])
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(new_call, binding.var.name))

    def _quant_point(self, source):
        if source not in self.markers:
            self.markers[source] = self.builder_.emit(relax.op.call_pure_packed(
                QUANT_POINT, self.visit_expr(source), relax.prim_value(self.point_id[source]),
                tvm.ir.StringImm(self.labels[source]), ty_args=[source.ty]))
        return self.markers[source]
