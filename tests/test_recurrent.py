"""LSTM, GRU and RNN: unrolled into plain operators, equal to onnxruntime (or ONNX's reference evaluator where
onnxruntime lacks the variant), built by TVM, and quantized."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import fails_cleanly, run_cli
from qcompile.frontend import importer
from qcompile.frontend.recurrent import unroll_recurrent

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(path, op, direction="forward", layout=0, seq=5, batch=2, width=6, hidden=4, initial=True,
                    peepholes=False, **attrs):
    """One recurrent node with random constant weights; inputs X (and initial h, c when `initial`)."""
    rng = np.random.default_rng(0)
    dirs = 2 if direction == "bidirectional" else 1
    gates = GATES[op] * hidden
    inits = [numpy_helper.from_array((0.5 * rng.standard_normal(shape)).astype(np.float32), name)
             for name, shape in (("W", (dirs, gates, width)), ("R", (dirs, gates, hidden)), ("B", (dirs, 2 * gates)))]
    x_shape = [seq, batch, width] if layout == 0 else [batch, seq, width]
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    y_shape = [seq, dirs, batch, hidden] if layout == 0 else [batch, seq, dirs, hidden]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    node_inputs = ["X", "W", "R", "B", ""]
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    if initial:
        inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, state_shape) for s in states]
    node_inputs += states if initial else [""] * len(states)
    if peepholes:
        inits.append(numpy_helper.from_array(rng.standard_normal((dirs, 3 * hidden)).astype(np.float32), "P"))
        node_inputs.append("P")
    outputs = ["Y", "Y_h", "Y_c"][:len(states) + 1]
    if layout:
        attrs["layout"] = 1
    node = helper.make_node(op, node_inputs, outputs, name="recurrence", hidden_size=hidden, direction=direction,
                            **attrs)
    graph = helper.make_graph([node], op.lower(), inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, y_shape if o == "Y" else state_shape)
                               for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def reference(path, feeds, layout):
    if layout:  # onnxruntime refuses batch-major recurrences
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(str(path)).run(None, feeds)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def random_feeds(model, seed=1):
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in importer.static_inputs(model, {})}


VARIANTS = [
    ("LSTM", {}), ("LSTM", {"direction": "reverse"}), ("LSTM", {"direction": "bidirectional"}),
    ("LSTM", {"layout": 1}), ("LSTM", {"initial": False}), ("LSTM", {"peepholes": True}), ("LSTM", {"clip": 0.5}),
    ("GRU", {}), ("GRU", {"linear_before_reset": 1}), ("GRU", {"direction": "bidirectional", "layout": 1}),
    ("RNN", {}), ("RNN", {"activations": ["Relu"]}), ("RNN", {"direction": "bidirectional"}),
]


@pytest.mark.parametrize("op, variant", VARIANTS, ids=[f"{op}-{'-'.join(map(str, v.values())) or 'plain'}"
                                                       for op, v in VARIANTS])
def test_the_unrolled_recurrence_computes_what_onnxruntime_computes(op, variant, tmp_path):
    path = recurrent_model(tmp_path / "rec.onnx", op, **variant)
    model = importer.load(path)
    unrolled = unroll_recurrent(model, importer.static_inputs(model, {}))
    assert not {n.op_type for n in unrolled.proto.graph.node} & {"LSTM", "GRU", "RNN"}
    feeds = random_feeds(model)
    expected = reference(path, feeds, variant.get("layout", 0))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the replaced node's weights are left unused
    got = ort.InferenceSession(unrolled.proto.SerializeToString(), options,
                               providers=["CPUExecutionProvider"]).run(None, feeds)
    for ours, theirs in zip(got, expected):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_a_recurrent_model_builds_and_matches_onnxruntime_in_fp32_and_int8(op, tmp_path):
    path = recurrent_model(tmp_path / "rec.onnx", op, seq=6, batch=1, width=16, hidden=16)
    model = importer.load(path)
    calibration = {k: np.stack([random_feeds(model, seed)[k] for seed in range(8)]) for k in random_feeds(model)}
    np.savez(tmp_path / "calib.npz", **calibration)
    feeds = random_feeds(model, seed=99)
    expected = reference(path, feeds, 0)
    for precision, check in (("fp32", lambda o, t: np.testing.assert_allclose(o, t, rtol=1e-4, atol=1e-5)),
                             ("int8", lambda o, t: _assert_cosine(o, t, 0.99))):
        library = tmp_path / f"{precision}.so"
        assert run_cli("build", path, "--precision", precision, "--calib", tmp_path / "calib.npz", "-o", library,
                       "-q") == 0
        for ours, theirs in zip(qcompile.load(library)(*feeds.values()), expected):
            check(ours, theirs)


def _assert_cosine(a, b, bound):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= bound


def test_sequence_lengths_given_at_run_time_are_refused_with_one_line(capsys, tmp_path):
    path = recurrent_model(tmp_path / "rec.onnx", "GRU")
    proto = onnx.load(path)
    proto.graph.input.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [2]))
    proto.graph.node[0].input[4] = "lengths"
    onnx.save(proto, path)
    message = fails_cleanly(capsys, tmp_path, "build", path, "--precision", "fp32")
    assert "GRU node 'recurrence'" in message and "sequence_lens" in message


@pytest.mark.slow
def test_silero_vad_imports_and_matches_onnxruntime_in_fp32(tmp_path):
    from conftest import MODELS

    path = MODELS / "silero_vad_16k_sequence.onnx"
    library = tmp_path / "vad.so"
    assert run_cli("build", path, "--precision", "fp32", "--input-shape", "input:16x576", "-o", library, "-q") == 0
    rng = np.random.default_rng(3)
    feeds = {"input": rng.uniform(-0.5, 0.5, (16, 576)).astype(np.float32),
             "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for ours, theirs in zip(qcompile.load(library)(*feeds.values()), expected):
        assert np.abs(ours - theirs).max() <= 1e-4 * max(np.abs(theirs).max(), 1e-6)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_an_int8_recurrence_runs_its_matmuls_in_integers_and_keeps_its_state_in_fp32(op, tmp_path):
    # rounded to 8 bits at every step, a cell state's error compounds over the sequence (Silero VAD's 64 steps:
    # decisions 0.95 → 1.00 agreement with FP32 once the state stayed float)
    from qcompile.quantize.quantizer import QuantConfig, anchor_names, quantize
    from qcompile.quantize.report import count_ops

    seq = 6
    model = importer.load(recurrent_model(tmp_path / "rec.onnx", op, seq=seq, batch=1, width=16, hidden=16))
    inputs = importer.static_inputs(model, {})
    model = importer.static_graph(model, inputs)
    samples = [list(random_feeds(model, seed).values()) for seed in range(4)]
    realized = quantize(importer.to_relax(model, inputs), samples, QuantConfig(), anchor_names(model)).mod
    integer, floating, ops = count_ops(realized)
    assert integer >= seq and floating == 0  # the whole sequence's input MatMul and each step's recurrent one
    # the gates' arithmetic in FP32: no integer product of two activations, and no 8-bit table (sigmoid, tanh)
    # but, in GRU, the first step's reset gate (r ⊙ h0 feeds the candidate's MatMul before any recurrence)
    assert "relax.multiply" not in ops["integer"], ops
    assert ops["integer"]["relax.take"] <= (1 if op == "GRU" else 0), ops
