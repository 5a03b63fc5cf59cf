"""ONNX → Relax: load and check the model, fix its input shapes, import it with weights as constants."""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx

from ..errors import QcompileError


@dataclasses.dataclass(frozen=True)
class TensorSig:
    """Name, shape and dtype of a model input or output; None marks a dimension not known statically."""

    name: str
    shape: tuple
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> "TensorSig":
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


@dataclasses.dataclass(frozen=True)
class OnnxModel:
    path: Path
    proto: onnx.ModelProto
    sha256: str

    @property
    def opset(self) -> int:
        return next((o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), 1)

    @property
    def inputs(self) -> list[TensorSig]:
        """Graph inputs that are real inputs (old opsets also list every initializer as an input)."""
        initializers = {t.name for t in self.proto.graph.initializer}
        return [_sig(v) for v in self.proto.graph.input if v.name not in initializers]

    @property
    def outputs(self) -> list[TensorSig]:
        return [_sig(v) for v in self.proto.graph.output]

    def op_counts(self) -> collections.Counter:
        return collections.Counter(node.op_type for node in self.proto.graph.node)


def load(path: str | Path) -> OnnxModel:
    """Read and check an ONNX file; a missing, malformed or invalid model raises QcompileError."""
    path = Path(path)
    if path.is_dir():
        raise QcompileError(f"{path} is a folder; give the model's .onnx file")
    if not path.is_file():
        raise QcompileError(f"model file not found: {path}")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf raises DecodeError, but also other types on garbage
        raise QcompileError(f"{path} is not a readable ONNX model ({type(err).__name__}: {_first_line(err)})") from None
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:  # ValidationError, InferenceError, or protobuf errors on odd bytes
        raise QcompileError(f"{path} is not a valid ONNX model: {_first_line(err)}") from None
    return OnnxModel(path=path, proto=proto, sha256=hashlib.sha256(data).hexdigest())


def unsupported_nodes(model: OnnxModel) -> list[onnx.NodeProto]:
    """Nodes whose operator TVM's ONNX importer cannot convert."""
    supported = supported_ops()
    return [node for node in model.proto.graph.node if node.op_type not in supported]


def supported_ops() -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    from .recurrent import RECURRENT_OPS

    # Constant and If are handled by the importer itself, outside its converter map; recurrences are unrolled first.
    return set(_get_convert_map()) | {"Constant", "If"} | RECURRENT_OPS


def static_graph(model: OnnxModel, inputs: list[TensorSig]) -> OnnxModel:
    """The model as TVM's importer can take it for the static `inputs`: shape computations folded to constants,
    LSTM/GRU/RNN unrolled. The result keeps the file's SHA-256, which tuning records are keyed by."""
    from .fold import fold_shapes
    from .recurrent import unroll_recurrent

    return unroll_recurrent(fold_shapes(model, inputs), inputs)


def static_inputs(model: OnnxModel, overrides: dict[str, tuple[int, ...]]) -> list[TensorSig]:
    """The model's inputs with every dimension known: from the model, from --input-shape, or batch 1.

    A dynamic leading (batch) dimension defaults to 1; any other dynamic dimension must be given.
    """
    inputs = model.inputs
    names = [sig.name for sig in inputs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise QcompileError(f"{{input_shapes}} names no input of the model: {', '.join(unknown)} (inputs: {', '.join(names)})")
    result = []
    for sig in inputs:
        if sig.name in overrides:
            shape = overrides[sig.name]
            if len(shape) != len(sig.shape) or any(d is not None and d != s for d, s in zip(sig.shape, shape)):
                raise QcompileError(f"{{input_shapes}} {sig.name}:{_dims(shape)} does not fit the model's shape {_dims(sig.shape)}")
        else:
            shape = tuple(1 if (d is None and i == 0) else d for i, d in enumerate(sig.shape))
            if None in shape:
                raise QcompileError(
                    f"input '{sig.name}' has dynamic shape {_dims(sig.shape)}; give it with {{input_shapes}} {sig.name}:"
                    + "x".join("N" if d is None else str(d) for d in shape)
                )
        result.append(TensorSig(sig.name, tuple(shape), sig.dtype))
    return result


def to_relax(model: OnnxModel, inputs: list[TensorSig]):
    """Import into a Relax IRModule with static input shapes and the weights bound as constants, in canonical
    form (`prepare.Prepare`: batch norm and constants folded, Clip as a plain op; 1-D convs as 2-D ones), which
    every precision's lowering expects (a float conv's bias and clip then run in its packed kernel)."""
    from tvm.relax.frontend.onnx import from_onnx

    bad = unsupported_nodes(model)
    if bad:
        node = bad[0]
        others = sorted({n.op_type for n in bad} - {node.op_type})
        more = f" (also unsupported: {', '.join(others)})" if others else ""
        raise QcompileError(f"unsupported operator '{node.op_type}' at node '{node.name or '<unnamed>'}'{more}")
    from .conv1d_as_conv2d import Conv1dAsConv2d
    from .prepare import Prepare
    from .safe_take import SafeTake

    proto = explicit_padding(model.proto, inputs)
    try:
        mod = from_onnx(
            proto,
            shape_dict={sig.name: list(sig.shape) for sig in inputs},
            dtype_dict={sig.name: sig.dtype for sig in inputs},
        )
    except Exception as err:  # the importer raises many kinds; the user needs the first line
        raise QcompileError(f"TVM could not import {model.path.name}: {_first_line(err)}") from None
    return Prepare()(Conv1dAsConv2d()(SafeTake()(mod)))


def index_bounds(model: OnnxModel, inputs: list[TensorSig]) -> dict[str, list[int]]:
    """Integer inputs that index a table directly (Gather's indices) → the [lowest, highest] index allowed: ONNX
    takes -n … n-1 for a table of n rows. From the tables' shapes (initializers, or ONNX shape inference)."""
    integer = {s.name for s in inputs if np.dtype(s.dtype).kind in "iu"}
    gathers = [n for n in model.proto.graph.node if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] in integer]
    if not gathers:
        return {}
    shapes = {t.name: list(t.dims) for t in model.proto.graph.initializer}
    if any(n.input[0] not in shapes for n in gathers):
        inferred = onnx.shape_inference.infer_shapes(model.proto)
        for v in list(inferred.graph.value_info) + list(inferred.graph.input):
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
            shapes.setdefault(v.name, dims)
    bounds = {}
    for node in gathers:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = shapes.get(node.input[0], [])
        rows = table[axis] if -len(table) <= axis < len(table) else 0
        if rows > 0:
            lo, hi = bounds.get(node.input[1], [-rows, rows - 1])
            bounds[node.input[1]] = [max(lo, -rows), min(hi, rows - 1)]
    return bounds


def explicit_padding(proto: onnx.ModelProto, inputs: list[TensorSig]) -> onnx.ModelProto:
    """Rewrite auto_pad=SAME_* as explicit pads, computed from the static shapes.

    TVM imports SAME padding as a separate float pad kernel; explicit pads stay inside the conv or pool,
    where the quantizer pads with the zero point.
    """
    nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "MaxPool", "AveragePool")
             and any(a.name == "auto_pad" and a.s in (b"SAME_UPPER", b"SAME_LOWER") for a in n.attribute)]
    if not nodes:
        return proto
    proto = with_static_inputs(proto, inputs)
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    initializers = {t.name: t.dims for t in proto.graph.initializer}
    for node in proto.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type not in ("Conv", "MaxPool", "AveragePool") or "auto_pad" not in attrs:
            continue
        mode = attrs["auto_pad"].s
        spatial = shapes.get(node.input[0], [])[2:]
        if mode not in (b"SAME_UPPER", b"SAME_LOWER") or not spatial or 0 in spatial:
            continue
        if "kernel_shape" in attrs:
            kernel = list(attrs["kernel_shape"].ints)
        else:
            kernel = list(initializers.get(node.input[1], []))[2:]
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(spatial)
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(spatial)
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if mode == b"SAME_UPPER" else large)
            end.append(large if mode == b"SAME_UPPER" else small)
        node.attribute.remove(attrs["auto_pad"])
        if "pads" in attrs:
            node.attribute.remove(attrs["pads"])
        node.attribute.append(onnx.helper.make_attribute("pads", begin + end))
    return proto


def with_static_inputs(proto: onnx.ModelProto, inputs: list[TensorSig]) -> onnx.ModelProto:
    """A copy of `proto` whose graph inputs have the static shapes of `inputs`."""
    proto = copy.deepcopy(proto)
    for graph_input in proto.graph.input:
        for sig in inputs:
            if graph_input.name == sig.name:
                for dim, size in zip(graph_input.type.tensor_type.shape.dim, sig.shape):
                    dim.Clear()
                    dim.dim_value = size
    return proto


def _sig(value: onnx.ValueInfoProto) -> TensorSig:
    tensor_type = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    return TensorSig(value.name, dims, dtype)


def _dims(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
