"""Which quantized layers to suspect first: the quantization noise each layer adds, from the report's errors.

The report measures every quantized tensor's noise against FP32 on the fake-quantized graph, and that noise
accumulates through the network; a layer's own share is the noise of the first quantized tensor after it (or of
the model's outputs) less that of its quantized inputs. Layers adding the most come first.
"""

from __future__ import annotations

from .markers import QUANT_POINT, marker
from .passes.annotate import consumers_of, onnx_nodes, var_args


def rank_layers(quantized, report, anchor_names: dict) -> list[str]:
    """The ONNX names of the layers computed in integers, most added noise first (ties in graph order)."""
    noise = {p.label: 10 ** (-p.sqnr_db / 10) for p in report.points}
    output_noise = 10 ** (-report.output_sqnr_db / 10)
    bindings, layers, labels = _layers(quantized, anchor_names)
    consumers = consumers_of(bindings)
    scored = []
    for order, (var, name, inputs) in enumerate(layers):
        after = _next_point(var, consumers, labels)
        added = (output_noise if after is None else noise.get(after, 0.0)) - max(noise.get(i, 0.0) for i in inputs)
        scored.append((-added, order, name))
    return [name for _, _, name in sorted(scored)]


def in_graph_order(quantized, anchor_names: dict) -> list[str]:
    """The ONNX names of the layers computed in integers, nearest the input first."""
    return [name for _, name, _ in _layers(quantized, anchor_names)[1]]


def _layers(quantized, anchor_names: dict):
    """(bindings of the annotated `main`, [(var, ONNX name, labels of its quantized inputs)] of the layers in
    integers in graph order, quantized var → its label)."""
    bindings = [b for block in quantized.annotated["main"].body.blocks for b in block.bindings]
    nodes = onnx_nodes(bindings, anchor_names)
    labels = {}
    for b in bindings:
        found = marker(b.value)
        if found is not None and found[0] == QUANT_POINT:
            labels[b.var] = found[1][2].value
    layers = []
    for b in bindings:
        inputs = [labels[a] for a in var_args(b.value) if a in labels]
        if b.var in nodes and inputs:  # a layer, and not one left in FP32
            layers.append((b.var, nodes[b.var], inputs))
    return bindings, layers, labels


def _next_point(var, consumers, labels) -> str | None:
    """The label of the first quantized tensor downstream of `var` (breadth first), or None (only outputs)."""
    frontier, seen = [var], {var}
    while frontier:
        for consumer in consumers.get(frontier.pop(0), []):
            if consumer.var in labels:
                return labels[consumer.var]
            if consumer.var not in seen:
                seen.add(consumer.var)
                frontier.append(consumer.var)
    return None
