"""Modern CNN blocks (hardswish, squeeze-excite gates, SiLU, a batch norm that no conv absorbs) quantize to integers
end to end, and their INT8 stays as close to FP32 as onnxruntime's INT8 on the same calibration data."""

import contextlib
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import run_cli
from qcompile.frontend import importer
from qcompile.quantize.quantizer import QuantConfig, anchor_names, quantize
from qcompile.quantize.report import count_ops

RNG = np.random.default_rng(11)
SHAPE = [1, 8, 16, 16]


def _block_model() -> onnx.ModelProto:
    """conv+hardswish → depthwise+hardswish → squeeze-excite (hardsigmoid gate) → batch norm → ReLU →
    1×1 conv → SiLU → 1×1 conv."""
    weights = []

    def init(name, value):
        weights.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv_w(cout, cin, k):
        return RNG.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))

    node = helper.make_node
    nodes = [
        node("Conv", ["x", init("c1.w", conv_w(16, 8, 3)), init("c1.b", RNG.normal(0, 0.1, 16))], ["c1"], pads=[1] * 4),
        node("HardSwish", ["c1"], ["h1"]),
        node("Conv", ["h1", init("dw.w", conv_w(16, 1, 3)), init("dw.b", RNG.normal(0, 0.1, 16))], ["dw"],
             pads=[1] * 4, group=16),
        node("HardSwish", ["dw"], ["h2"]),
        node("GlobalAveragePool", ["h2"], ["pool"]),
        node("Conv", ["pool", init("se1.w", conv_w(8, 16, 1)), init("se1.b", RNG.normal(0, 0.1, 8))], ["se1"]),
        node("Relu", ["se1"], ["se1r"]),
        node("Conv", ["se1r", init("se2.w", conv_w(16, 8, 1)), init("se2.b", RNG.normal(0, 0.1, 16))], ["se2"]),
        node("HardSigmoid", ["se2"], ["gate"], alpha=1 / 6, beta=0.5),
        node("Mul", ["h2", "gate"], ["excited"]),
        node("BatchNormalization", ["excited", init("bn.g", RNG.uniform(0.5, 2, 16)),
                                    init("bn.b", RNG.normal(0, 0.5, 16)), init("bn.m", RNG.normal(0, 0.5, 16)),
                                    init("bn.v", RNG.uniform(0.5, 2, 16))], ["bn"]),
        node("Relu", ["bn"], ["bnr"]),
        node("Conv", ["bnr", init("c2.w", conv_w(16, 16, 1)), init("c2.b", RNG.normal(0, 0.1, 16))], ["c2"]),
        node("Sigmoid", ["c2"], ["c2s"]),
        node("Mul", ["c2", "c2s"], ["silu"]),
        node("Conv", ["silu", init("c3.w", conv_w(4, 16, 1)), init("c3.b", np.zeros(4))], ["y"]),
    ]
    graph = helper.make_graph(nodes, "blocks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def _inputs(count):
    """Smooth random images (a photo's neighbouring pixels are alike): low-resolution noise, upsampled."""
    coarse = RNG.standard_normal((count, 1, 8, 4, 4)).astype(np.float32)
    return list(np.repeat(np.repeat(coarse, 4, axis=3), 4, axis=4))


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    onnx.save(_block_model(), folder / "blocks.onnx")
    calibration = _inputs(32)
    np.save(folder / "calib.npy", np.stack(calibration))
    return folder, calibration


def test_hardswish_squeeze_excite_silu_and_a_lone_batch_norm_run_in_integers(blocks):
    folder, calibration = blocks
    model = importer.load(folder / "blocks.onnx")
    realized = quantize(importer.to_relax(model, importer.static_inputs(model, {})), [[x] for x in calibration[:8]],
                        QuantConfig(), anchor_names(model)).mod
    integer, floating, ops = count_ops(realized)
    assert (integer, floating) == (6, 0)
    assert not {"relax.sigmoid", "relax.divide", "relax.clip", "relax.dequantize"} & set(ops["float"]), ops
    assert ops["integer"]["relax.quantize"] == 1, ops  # the input's: no float round trip between the kernels
    assert ops["integer"]["relax.take"] == 4, ops  # each one table: two hardswish, the hardsigmoid gate, the SiLU


def test_int8_of_modern_blocks_is_as_close_to_fp32_as_onnxruntime_int8(blocks):
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    folder, calibration = blocks
    assert run_cli("build", folder / "blocks.onnx", "--calib", folder / "calib.npy", "-o", folder / "blocks.so",
                   "-q") == 0
    ours = qcompile.load(folder / "blocks.so")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": x} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    with contextlib.redirect_stdout(sys.stderr):
        quantize_static(str(folder / "blocks.onnx"), str(folder / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    fp32, int8 = (ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
                  for name in ("blocks.onnx", "qdq.onnx"))

    def cosine(a, b):
        return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    held_out = _inputs(8)
    reference = [fp32.run(None, {"x": x})[0] for x in held_out]
    ours_cos = min(cosine(ours(x)[0], r) for x, r in zip(held_out, reference))
    theirs_cos = min(cosine(int8.run(None, {"x": x})[0], r) for x, r in zip(held_out, reference))
    print(f"worst cosine to FP32 over {len(held_out)} held-out inputs: qcompile {ours_cos:.4f}, "
          f"onnxruntime {theirs_cos:.4f}")
    assert ours_cos >= 0.99
    assert ours_cos >= theirs_cos - 0.005  # onnxruntime's INT8 computes the same ops with one rounding each too
