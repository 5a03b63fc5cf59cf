"""Shape computations folded to constants, so that TVM's importer sees static shapes."""

from __future__ import annotations

import dataclasses

from ..errors import QcompileError

from .recurrent import RECURRENT_OPS

# operators whose result depends only on shapes: with every input shape fixed, what they feed is a constant
SHAPE_OPS = frozenset({"Shape", "Size"})
# recurrences are unrolled over their sequence length, which shape inference must then know through every
# computed pad or reshape before them
NEEDS_STATIC_SHAPES = SHAPE_OPS | RECURRENT_OPS


def fold_shapes(model, inputs):
    """The model with its shape computations (Shape → Gather → Concat feeding a Reshape, TorchScript's `chunk` as
    Shape → Div → Slice) folded to constants for the static `inputs`; the model itself if it has none.

    TVM's importer takes a Reshape's shape, a Slice's bounds and the like only as constants ("Reshape requires the
    input new shape to be Shape", "emit_te now only supports Tensor that has ShapeExpr shape"). onnxslim's
    constant folding, shape inference and dead-node elimination remove them; its graph fusions are skipped, which
    would change the arithmetic (the folded models compute bit-identical outputs in onnxruntime: PP-OCRv4
    detection and recognition, PP-OCR direction, measured 2026-11-30). The folded model keeps the file's SHA-256,
    which tuning records are keyed by."""
    if not any(node.op_type in NEEDS_STATIC_SHAPES for node in model.proto.graph.node):
        return model
    import onnxslim

    from .importer import with_static_inputs

    try:
        folded = onnxslim.slim(with_static_inputs(model.proto, inputs), skip_optimizations=["graph_fusion"])
    except Exception as err:  # noqa: BLE001 - onnxslim raises whatever its passes raise
        raise QcompileError(f"could not fold the shape computations of {model.path.name}: "
                            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
    return dataclasses.replace(model, proto=folded)
