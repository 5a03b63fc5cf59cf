"""LSTM, GRU and RNN nodes unrolled into plain ONNX operators over their (static) sequence length.

TVM 0.27's ONNX importer has no recurrent operators. With every input shape fixed the sequence length is known, so
each recurrence becomes one MatMul of the whole input sequence by the input weights (one int8 kernel after
quantization) and, per time step, a MatMul of the hidden state by the recurrent weights followed by the gate
arithmetic of the ONNX specification. Everything downstream (import, quantization, lowering) then sees ordinary
MatMul/Add/Sigmoid/Tanh/Mul operators and needs no recurrent special case.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import QcompileError

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})

# gate count and default activations (f, g, h) per operator, from the ONNX specification
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
# activations that are ONNX operators of the same name, used with their ONNX default attributes
_ACTIVATIONS = {"Sigmoid", "Tanh", "Relu", "HardSigmoid", "LeakyRelu", "Elu", "Softsign", "Softplus"}


def unroll_recurrent(model, inputs):
    """The model with every LSTM/GRU/RNN node replaced by its unrolled form for the static `inputs`; the model
    itself if it has none. Unsupported variants (non-constant weights, per-batch sequence lengths, activation
    parameters, input_forget) raise QcompileError naming the node."""
    if not any(node.op_type in RECURRENT_OPS for node in model.proto.graph.node):
        return model
    proto = copy.deepcopy(model.proto)
    shapes = _static_shapes(proto, inputs)
    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    nodes = []
    for node in proto.graph.node:
        if node.op_type not in RECURRENT_OPS:
            nodes.append(node)
            continue
        builder = _Builder(node, constants, shapes, opset)
        nodes.extend(builder.unroll())
        proto.graph.initializer.extend(builder.initializers)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return dataclasses.replace(model, proto=proto)


def _static_shapes(proto, inputs) -> dict[str, list[int]]:
    """Every tensor's shape by ONNX shape inference, with the graph inputs fixed to `inputs`."""
    from .importer import with_static_inputs

    inferred = onnx.shape_inference.infer_shapes(with_static_inputs(proto, inputs), data_prop=True)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
            for v in values}


@dataclasses.dataclass
class _Spec:
    op: str
    hidden: int
    directions: list[str]  # "forward" / "reverse", one per weight slice
    activations: list[str]
    clip: float | None
    layout: int
    linear_before_reset: int


class _Builder:
    """Emits the unrolled nodes of one recurrent node; weights become new initializers."""

    def __init__(self, node, constants, shapes, opset):
        self.node, self.constants, self.opset = node, constants, opset
        self.initializers: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = f"{node.name or node.output[0]}/unrolled"
        self.count = 0
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for unsupported in ("activation_alpha", "activation_beta"):
            if unsupported in attrs:
                self.refuse(f"attribute {unsupported} is not supported")
        if attrs.get("input_forget", 0):
            self.refuse("input_forget=1 is not supported")
        direction = attrs.get("direction", b"forward").decode()
        directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        activations = [a.decode() for a in attrs.get("activations", [])] or \
            _DEFAULT_ACTIVATIONS[node.op_type] * len(directions)
        unknown = sorted(set(activations) - _ACTIVATIONS)
        if unknown:
            self.refuse(f"activation {unknown[0]} is not supported")
        self.spec = _Spec(node.op_type, int(attrs["hidden_size"]) if "hidden_size" in attrs else 0, directions,
                          activations, attrs.get("clip"), attrs.get("layout", 0), attrs.get("linear_before_reset", 0))
        x_shape = shapes.get(node.input[0], [])
        if len(x_shape) != 3 or 0 in x_shape:
            self.refuse("the input's shape is not static (fix the model's input shapes with --input-shape)")
        self.seq, self.batch = (x_shape[0], x_shape[1]) if self.spec.layout == 0 else (x_shape[1], x_shape[0])
        lengths = self.optional_input(4)
        if lengths is not None:
            if lengths not in constants or np.any(constants[lengths] != self.seq):
                self.refuse("per-batch sequence_lens shorter than the sequence are not supported")

    def refuse(self, why: str):
        raise QcompileError(f"{self.node.op_type} node '{self.node.name or self.node.output[0]}': {why}")

    def optional_input(self, index: int) -> str | None:
        return self.node.input[index] if len(self.node.input) > index and self.node.input[index] else None

    def weight(self, index: int) -> np.ndarray:
        name = self.optional_input(index)
        if name is None:
            return None
        if name not in self.constants:
            self.refuse(f"input {index} ('{name}') must be a constant (an initializer)")
        return self.constants[name].astype(np.float32)

    # --- node emission ---------------------------------------------------------------------------------------
    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def emit(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def const(self, hint: str, value) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        if self.opset < 10:
            return self.emit("Slice", [x], starts=[start], ends=[end], axes=[axis])
        return self.emit("Slice", [x, self.const("start", np.array([start], np.int64)),
                                   self.const("end", np.array([end], np.int64)),
                                   self.const("axis", np.array([axis], np.int64))])

    def reshape(self, x: str, shape, output: str | None = None) -> str:
        return self.emit("Reshape", [x, self.const("shape", np.array(shape, np.int64))], output)

    def activate(self, kind: str, x: str) -> str:
        return self.emit(kind, [x])

    def clip(self, x: str) -> str:
        if self.spec.clip is None:
            return x
        limit = np.float32(self.spec.clip)
        return self.emit("Min", [self.emit("Max", [x, self.const("lo", -limit)]), self.const("hi", limit)])

    def initial_state(self, index: int, direction: int) -> str:
        name = self.optional_input(index)
        hidden = self.spec.hidden
        if name is None:
            return self.const("zeros", np.zeros((self.batch, hidden), np.float32))
        # [directions, batch, hidden], or [batch, directions, hidden] with layout 1
        return self.emit("Gather", [name, self.const("dir", np.array(direction, np.int64))], axis=self.spec.layout)

    # --- the recurrence ----------------------------------------------------------------------------------------
    def unroll(self) -> list[onnx.NodeProto]:
        spec = self.spec
        x = self.node.input[0]
        if spec.layout == 1:  # [batch, seq, input] → [seq, batch, input]
            x = self.emit("Transpose", [x], perm=[1, 0, 2])
        w, r, b = self.weight(1), self.weight(2), self.weight(3)
        peepholes = self.weight(7) if spec.op == "LSTM" else None
        if w is None or r is None:
            self.refuse("W and R are required")
        spec.hidden = spec.hidden or r.shape[-1]
        gates = _GATES[spec.op] * spec.hidden
        if b is None:
            b = np.zeros((len(spec.directions), 2 * gates), np.float32)
        per_direction = [(len(spec.activations) // len(spec.directions)) * d for d in range(len(spec.directions))]
        ys, finals_h, finals_c = [], [], []
        for d, direction in enumerate(spec.directions):
            acts = spec.activations[per_direction[d]:per_direction[d] + len(_DEFAULT_ACTIVATIONS[spec.op])]
            wb, rb = b[d, :gates], b[d, gates:]
            # one MatMul for the whole sequence; for GRU's candidate gate the recurrent bias stays apart
            input_bias = wb + rb if spec.op != "GRU" else wb + np.concatenate([rb[:2 * spec.hidden],
                                                                             np.zeros(spec.hidden, np.float32)])
            xw = self.emit("Add", [self.emit("MatMul", [x, self.const("W_T", np.ascontiguousarray(w[d].T))]),
                                   self.const("bias", input_bias)])
            h = self.initial_state(5, d)
            c = self.initial_state(6, d) if spec.op == "LSTM" else None
            steps = range(self.seq) if direction == "forward" else range(self.seq - 1, -1, -1)
            outputs = {}
            r_t = self.const("R_T", np.ascontiguousarray(r[d].T))
            for t in steps:
                xw_t = self.emit("Gather", [xw, self.const("t", np.array(t, np.int64))], axis=0)
                if spec.op == "LSTM":
                    h, c = self.lstm_step(xw_t, h, c, r_t, acts, None if peepholes is None else peepholes[d])
                elif spec.op == "GRU":
                    h = self.gru_step(xw_t, h, r[d], rb[2 * spec.hidden:], acts)
                else:
                    h = self.activate(acts[0], self.clip(self.emit("Add", [xw_t, self.emit("MatMul", [h, r_t])])))
                outputs[t] = h
            ys.append([outputs[t] for t in range(self.seq)])
            finals_h.append(h)
            finals_c.append(c)
        self.outputs(ys, finals_h, finals_c)
        return self.nodes

    def lstm_step(self, xw_t, h, c, r_t, acts, peephole):
        f_act, g_act, h_act = acts
        hidden = self.spec.hidden
        gates = self.emit("Add", [xw_t, self.emit("MatMul", [h, r_t])])
        i, o, f, cand = (self.slice(gates, k * hidden, (k + 1) * hidden, 1) for k in range(4))
        if peephole is not None:
            i = self.emit("Add", [i, self.emit("Mul", [c, self.const("P_i", peephole[:hidden])])])
            f = self.emit("Add", [f, self.emit("Mul", [c, self.const("P_f", peephole[2 * hidden:])])])
        i, f = self.activate(f_act, self.clip(i)), self.activate(f_act, self.clip(f))
        cand = self.activate(g_act, self.clip(cand))
        c = self.emit("Add", [self.emit("Mul", [f, c]), self.emit("Mul", [i, cand])])
        if peephole is not None:
            o = self.emit("Add", [o, self.emit("Mul", [c, self.const("P_o", peephole[hidden:2 * hidden])])])
        o = self.activate(f_act, self.clip(o))
        return self.emit("Mul", [o, self.activate(h_act, c)]), c

    def gru_step(self, xw_t, h, r, rb_h, acts):
        f_act, g_act = acts
        hidden = self.spec.hidden
        xz, xr, xh = (self.slice(xw_t, k * hidden, (k + 1) * hidden, 1) for k in range(3))
        hzr = self.emit("MatMul", [h, self.const("R_zr_T", np.ascontiguousarray(r[:2 * hidden].T))])
        z = self.activate(f_act, self.clip(self.emit("Add", [xz, self.slice(hzr, 0, hidden, 1)])))
        reset = self.activate(f_act, self.clip(self.emit("Add", [xr, self.slice(hzr, hidden, 2 * hidden, 1)])))
        r_h = self.const("R_h_T", np.ascontiguousarray(r[2 * hidden:].T))
        if self.spec.linear_before_reset:
            recurrent = self.emit("Mul", [reset, self.emit("Add", [self.emit("MatMul", [h, r_h]),
                                                                   self.const("Rb_h", rb_h)])])
        else:
            recurrent = self.emit("Add", [self.emit("MatMul", [self.emit("Mul", [reset, h]), r_h]),
                                          self.const("Rb_h", rb_h)])
        cand = self.activate(g_act, self.clip(self.emit("Add", [xh, recurrent])))
        # H = (1 - z) * cand + z * H, written as cand + z * (H - cand)
        return self.emit("Add", [cand, self.emit("Mul", [z, self.emit("Sub", [h, cand])])])

    def outputs(self, ys, finals_h, finals_c):
        """Y [seq, directions, batch, hidden] (layout 1: [batch, seq, directions, hidden]), Y_h and Y_c
        [directions, batch, hidden] (layout 1: [batch, directions, hidden]), for the outputs the node names."""
        spec, n_dir, hidden = self.spec, len(self.spec.directions), self.spec.hidden
        names = list(self.node.output) + [""] * (3 - len(self.node.output))
        if names[0]:
            steps = [self.emit("Concat", [self.reshape(ys[d][t], [1, 1, self.batch, hidden]) for d in range(n_dir)],
                               axis=1) if n_dir > 1 else self.reshape(ys[0][t], [1, 1, self.batch, hidden])
                     for t in range(self.seq)]
            y = self.emit("Concat", steps, axis=0) if self.seq > 1 else self.emit("Identity", steps)
            if spec.layout == 1:
                self.emit("Transpose", [y], names[0], perm=[2, 0, 1, 3])
            else:
                self.emit("Identity", [y], names[0])
        for name, finals in ((names[1], finals_h), (names[2], finals_c)):
            if not name:
                continue
            stacked = self.emit("Concat", [self.reshape(f, [1, self.batch, hidden]) for f in finals], axis=0) \
                if n_dir > 1 else self.reshape(finals[0], [1, self.batch, hidden])
            if spec.layout == 1:
                self.emit("Transpose", [stacked], name, perm=[1, 0, 2])
            else:
                self.emit("Identity", [stacked], name)
