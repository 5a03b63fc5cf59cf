"""--max-accuracy-drop: layers go back to FP32, most costly first, until the metric drop fits the budget."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import fails_cleanly, run_cli
from qcompile.errors import QcompileError
from qcompile.quantize.calibrate import CalibrationConfig
from qcompile.quantize.fallback import AccuracyConfig, choose, search


def fake_metric(costs: dict[str, float], base: float):
    """metric = base + the gain of each restored layer; records every evaluation."""
    calls = []

    def evaluate(restored):
        calls.append(tuple(restored))
        return base + sum(costs[layer] for layer in restored)

    return evaluate, calls


def test_the_search_stops_at_the_first_step_within_budget():
    evaluate, calls = fake_metric({"a": 1.0, "b": 3.0, "c": 0.5, "d": 2.0}, base=90.0)
    plan = search(["a", "b", "c", "d"], evaluate, fp32=95.0, metric="m", config=AccuracyConfig(0.5, measured=2))
    # probes a and b; b gained most, then a; then c, d in ranking order: 90 → 93 → 94 → 94.5 (within 0.5: stop)
    assert [s.restored for s in plan.steps] == [(), ("b",), ("b", "a"), ("b", "a", "c")]
    assert plan.restored == ("b", "a", "c") and plan.met and plan.after == pytest.approx(94.5)
    assert len(calls) == len(set(frozenset(c) for c in calls))  # no set of layers evaluated twice


def test_a_restore_that_gains_nothing_is_dropped():
    evaluate, _ = fake_metric({"a": 2.0, "b": 0.0, "c": 2.5}, base=90.0)
    plan = search(["a", "b", "c"] + ["d"], evaluate, fp32=95.0, metric="m",
                  config=AccuracyConfig(0.5, measured=0))
    # a helps, b does not (dropped, stays INT8), c reaches 94.5: within budget
    assert plan.restored == ("a", "c") and [s.restored for s in plan.rejected] == [("a", "b")] and plan.met


def test_no_layer_is_restored_when_int8_already_meets_the_budget():
    evaluate, calls = fake_metric({"a": 5.0}, base=94.8)
    plan = search(["a"], evaluate, fp32=95.0, metric="m", config=AccuracyConfig(0.3))
    assert plan.restored == () and plan.met and calls == [()]


def test_a_budget_that_only_fp32_meets_is_reported_as_not_met():
    evaluate, calls = fake_metric({"a": 0.1, "b": 0.1, "c": 0.1}, base=80.0)
    plan = search(["a", "b", "c"], evaluate, fp32=95.0, metric="m", config=AccuracyConfig(1.0, measured=0))
    assert plan.restored == ("a", "b") and not plan.met and "NOT met" in plan.summary()
    assert ("a", "b", "c") not in calls  # every layer in FP32 is no INT8 build


def test_the_search_gives_up_after_restores_in_a_row_that_gain_nothing():
    layers = [f"l{i}" for i in range(40)]
    evaluate, calls = fake_metric({**{layer: 0.0 for layer in layers}, "l3": 1.0}, base=80.0)
    plan = search(layers, evaluate, fp32=95.0, metric="m", config=AccuracyConfig(0.3, measured=2, patience=5))
    # l0, l1 (probed), l2 in vain; l3 gains and is kept; then l4…l8 in vain: it gives up, l9… never built
    assert plan.restored == ("l3",) and not plan.met and len(plan.rejected) == 8
    assert len(calls) == 1 + 2 + 1 + 1 + 5 and ("l3", "l9") not in calls


def test_error_spread_over_the_first_layers_is_found_by_bisecting_from_the_input():
    # no layer gains alone; the budget holds once the first 5 of 32 layers (graph order) are all in FP32
    layers = [f"l{i}" for i in range(32)]
    calls = []

    def evaluate(restored):
        calls.append(tuple(restored))
        return 95.0 if {f"l{i}" for i in range(5)} <= set(restored) else 80.0

    ranked = layers[::-1]  # the ranking suspects the last layers
    plan = search(ranked, evaluate, fp32=95.0, metric="m", config=AccuracyConfig(0.3, measured=2, patience=3),
                  from_input=layers)
    assert plan.met and plan.restored == tuple(layers[:5])
    # INT8, 2 probes (also the first 2 restores in vain), a 3rd in vain, then prefixes of 31, 15, 7, 3, 5, 4
    # layers: about log2(32) builds
    assert len(calls) == 1 + 2 + 1 + 6 and len(calls) == len(set(frozenset(c) for c in calls))
    assert [len(s.restored) for s in plan.rejected[-2:]] == [3, 4]  # the prefixes that fell short


def test_a_loss_at_the_last_layer_is_found_by_bisecting_from_the_output_when_the_input_end_falls_short():
    # a classifier whose last layer alone costs the budget: no probe gains (it is ranked last and never probed),
    # all but the last layer in FP32 fall short, so the search bisects from the output and restores that layer
    layers = [f"l{i}" for i in range(28)]
    calls = []

    def evaluate(restored):
        calls.append(tuple(restored))
        return 84.33 if "l27" in restored else 83.67

    plan = search(layers, evaluate, fp32=84.33, metric="m", config=AccuracyConfig(0.3, measured=2, patience=3),
                  from_input=layers)
    assert plan.met and plan.restored == ("l27",)
    assert [s.restored for s in plan.steps[1:]][-1] == ("l27",)
    assert len(calls) == len(set(frozenset(c) for c in calls))  # no set of layers built twice
    prefixes = [s for s in plan.rejected if len(s.restored) == 27]
    assert prefixes and "l27" not in prefixes[0].restored  # all but the last, tried first, fell short


def test_a_loss_at_the_first_and_last_layers_is_found_by_bisecting_from_both_ends():
    # each end alone costs the budget (the image's quantization in the first layer, the logits' in the last):
    # all but the last and all but the first both fall short; from both ends, 2 layers meet it
    layers = [f"l{i}" for i in range(28)]
    calls = []

    def evaluate(restored):
        calls.append(tuple(restored))
        return 84.33 if {"l0", "l27"} <= set(restored) else 84.0

    plan = search(layers, evaluate, fp32=84.33, metric="m", config=AccuracyConfig(0.3, measured=2, patience=3),
                  from_input=layers)
    assert plan.met and set(plan.restored) == {"l0", "l27"}
    assert len(calls) == len(set(frozenset(c) for c in calls)) and len(calls) <= 1 + 2 + 1 + 2 + 6


def test_the_best_scoring_range_choice_wins_and_equal_scores_keep_the_first():
    scores = {"given": 90.0, "wider": 92.5, "other": 92.5}
    chosen, measured = choose(["given", "wider", "other"], scores.__getitem__)
    assert chosen == "wider" and measured == [90.0, 92.5, 92.5]
    assert choose(["given", "wider"], lambda c: 90.0)[0] == "given"


def test_a_percentile_calibration_also_offers_a_wider_percentile_and_other_methods_only_themselves():
    given = CalibrationConfig(method="percentile", percentile=99.99)
    assert given.alternatives() == [given, CalibrationConfig(method="percentile", percentile=99.999)]
    assert CalibrationConfig(method="percentile", percentile=99.999).alternatives() == [
        CalibrationConfig(method="percentile", percentile=99.999)]
    assert CalibrationConfig(method="minmax").alternatives() == [CalibrationConfig(method="minmax")]


def test_a_negative_budget_is_refused():
    with pytest.raises(QcompileError):
        AccuracyConfig(-1.0)


def fragile_model(path):
    """fc1 → relu → fc2 → relu → fc3, where fc1's output has one column 1000× the others (and fc2 scales it
    back): quantizing fc2's input per tensor flattens the other 31 columns to a few steps, so fc2 is the layer to
    restore, and restoring it alone recovers the FP32 output."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w1[:, 5] *= 1000
    w2 = rng.standard_normal((32, 32)).astype(np.float32)
    w2[5, :] /= 1000
    w3 = rng.standard_normal((32, 10)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc3")]
    graph = helper.make_graph(nodes, "fragile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_the_fragile_layer_is_restored_first_and_alone(tmp_path):
    model = fragile_model(tmp_path / "fragile.onnx")
    x = np.random.default_rng(1).standard_normal((200, 1, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    library = tmp_path / "fragile.so"
    assert run_cli("build", model, "--calib", tmp_path / "x.npy", "--calib-count", "32", "--max-accuracy-drop", "10",
                   "-o", library, "-q") == 0
    plan = json.loads(library.with_suffix(".json").read_text())["accuracy_control"]
    assert plan["metric"] == "top-1 agreement with FP32 (%)"
    assert plan["before"] < 60  # the fully quantized model is broken on purpose
    assert plan["probes"][0]["restored"] == ["fc2"]  # ranked first by the noise it adds
    assert plan["restored"] == ["fc2"] and plan["met"] and [s["restored"] for s in plan["steps"]] == [[], ["fc2"]]
    assert plan["calibration"]["method"] == "percentile"  # the ranges the plan was searched with
    # the library as written holds the budget on inputs it never saw, against onnxruntime FP32
    fresh = np.random.default_rng(2).standard_normal((100, 1, 16)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    built = qcompile.load(library)
    agreement = np.mean([built(s)[0].argmax() == session.run(None, {"x": s})[0].argmax() for s in fresh])
    assert agreement >= 0.9


def test_a_budget_that_only_fp32_meets_fails_with_one_line_and_writes_nothing(capsys, tmp_path):
    model = fragile_model(tmp_path / "fragile.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((200, 1, 16)).astype(np.float32))
    message = fails_cleanly(capsys, tmp_path, "build", model, "--calib", tmp_path / "x.npy", "--calib-count", "32",
                            "--max-accuracy-drop", "0")
    assert "--max-accuracy-drop 0 is not met with 2 of 3 layers in FP32" in message and "--precision fp32" in message


@pytest.mark.parametrize("args, expected", [
    (["--labels", "labels.npy"], "--max-accuracy-drop"),
    (["--max-accuracy-drop", "1", "--precision", "fp32"], "INT8"),
    (["--max-accuracy-drop", "-1"], "0 or more"),
    (["--max-accuracy-drop", "1", "--data", "missing.npy"], "not found"),
])
def test_bad_accuracy_control_options_fail_with_one_line(args, expected, capsys, tmp_path):
    from conftest import EXAMPLE_MODEL, EXAMPLE_SAMPLES

    message = fails_cleanly(capsys, tmp_path, "build", EXAMPLE_MODEL, "--calib", EXAMPLE_SAMPLES,
                            *[str(tmp_path / a) if a.endswith(".npy") else a for a in args])
    assert expected in message


def test_eval_reports_the_controlled_build_on_samples_the_search_did_not_see(capsys, tmp_path):
    model = fragile_model(tmp_path / "fragile.onnx")
    x = np.random.default_rng(1).standard_normal((300, 1, 16)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "labels.npy", np.array([session.run(None, {"x": s})[0].argmax() for s in x]))
    assert run_cli("eval", model, "--data", tmp_path / "x.npy", "--labels", tmp_path / "labels.npy", "--calib",
                   tmp_path / "x.npy", "--calib-count", "32", "--max-accuracy-drop", "10", "-q") == 0
    out = capsys.readouterr().out
    assert "134 samples" in out and "did not search on" in out  # (300 - 32) / 2
    top1 = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.splitlines()
            if line.startswith("| fp32") or line.startswith("| int8")}
    assert top1["fp32"] == 1.0  # the labels are FP32's own answers
    assert top1["int8"] < 0.6 and top1["int8 (≤10 drop)"] >= 0.9


def test_the_metric_reads_each_output_form_the_way_its_task_does():
    from qcompile.driver import _metric

    rng = np.random.default_rng(4)
    # a VAD's per-frame probabilities: decisions at 0.5, not the argmax frame
    speech = rng.uniform(0, 1, (4, 64)).astype(np.float32)
    name, metric = _metric(speech, None, (64,))
    flipped = speech.copy()
    flipped[0, :8] = 1 - flipped[0, :8]  # 8 of 256 decisions turned over, the peaks left where they were
    assert name.startswith("decisions") and metric(speech) == 100
    assert metric(flipped) == pytest.approx(100 * (1 - np.mean((speech[0, :8] > 0.5) != (flipped[0, :8] > 0.5)) / 32))
    # a CTC recognizer's per-step softmax: the decoded text (repeats merged, the blank 0 dropped) decides
    steps = np.eye(5, dtype=np.float32)[[[0, 1, 1, 0, 2, 2], [3, 3, 0, 4, 4, 0]]]  # [2 samples, 6 steps, 5 classes]
    name, metric = _metric(steps, None, (6, 5))
    shifted = np.eye(5, dtype=np.float32)[[[0, 1, 0, 0, 2, 0], [3, 0, 0, 4, 0, 0]]]  # the same texts, other steps
    wrong = np.eye(5, dtype=np.float32)[[[0, 1, 1, 0, 2, 2], [3, 3, 0, 2, 4, 0]]]  # the second text differs
    assert name.startswith("decoded sequences")
    assert (metric(steps), metric(shifted.reshape(2, -1)), metric(wrong.reshape(2, -1))) == (100, 100, 50)
    # class scores (logits): top-1
    name, _ = _metric(rng.standard_normal((4, 10)).astype(np.float32), None, (1, 10))
    assert name.startswith("top-1 agreement")


def fragile_recognizer(path, characters=("a", "b", "c")):
    """The fragile model's layers as a CTC text recognizer: fc3 scores 4 steps × (blank, 3 characters, space),
    softmax per step, the character list in PaddleOCR's metadata key."""
    model = onnx.load(fragile_model(path))
    graph = model.graph
    graph.initializer[2].CopyFrom(numpy_helper.from_array(
        np.random.default_rng(3).standard_normal((32, 20)).astype(np.float32), "w3"))
    graph.node[-1].output[0] = "logits"
    graph.initializer.append(numpy_helper.from_array(np.array([1, 4, 5], np.int64), "steps"))
    graph.node.extend([helper.make_node("Reshape", ["logits", "steps"], ["per_step"]),
                       helper.make_node("Softmax", ["per_step"], ["y"], axis=-1)])
    graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5]))
    helper.set_model_props(model, {"character": "\n".join(characters)})
    onnx.save(model, path)
    return path


def test_text_labels_score_a_recognizer_by_its_exactly_read_lines(capsys, tmp_path):
    from qcompile.measure import task

    model = fragile_recognizer(tmp_path / "reader.onnx")
    texts = task.Texts(("", ""), task.characters(onnx.load(model), 5))
    # greedy CTC: repeats merged, the blank (0) dropped, the class after the characters a space
    assert texts.decode(np.eye(5)[[1, 1, 0, 1, 4, 3]]) == "aa c"
    x = np.random.default_rng(1).standard_normal((300, 1, 16)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    read = [texts.decode(session.run(None, {"x": s})[0]) for s in x]
    assert len(set(read)) > 10  # the lines differ
    np.save(tmp_path / "x.npy", x)
    # spaces do not count: the labels are FP32's reading without them
    (tmp_path / "texts.txt").write_text("".join(t.replace(" ", "") + "\n" for t in read))
    assert run_cli("eval", model, "--data", tmp_path / "x.npy", "--labels", tmp_path / "texts.txt", "--calib",
                   tmp_path / "x.npy", "--calib-count", "32", "--max-accuracy-drop", "10", "-q") == 0
    out = capsys.readouterr().out
    assert "exact text" in out and "text as FP32's" in out
    exact = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.splitlines()
             if line.startswith("| fp32") or line.startswith("| int8")}
    assert exact["fp32"] == 1.0
    assert exact["int8"] < exact["fp32"] - 0.2 and exact["int8 (≤10 drop)"] >= exact["fp32"] - 0.1


def test_text_labels_need_the_models_character_list(capsys, tmp_path):
    model = fragile_recognizer(tmp_path / "reader.onnx", characters=("a", "b"))  # 4 classes named, 5 scored
    np.save(tmp_path / "x.npy", np.zeros((8, 1, 16), np.float32))
    (tmp_path / "texts.txt").write_text("a\n" * 8)
    assert run_cli("eval", model, "--data", tmp_path / "x.npy", "--labels", tmp_path / "texts.txt", "--calib",
                   tmp_path / "x.npy", "--precision", "fp32", "-q") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "5 classes per step" in err and "character list has 2" in err


def test_a_synsets_list_labels_classes_and_any_other_text_file_labels_text_lines(tmp_path):
    from qcompile.data.calibdata import DataSource
    from qcompile.measure import evaluate, task

    (tmp_path / "synsets.txt").write_text("n01440764\nn01443537 goldfish\n")
    (tmp_path / "lines.txt").write_text("n01440764 is not a class here\nEXIT\n")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("n01443537_1.JPEG", "n01440764_2.JPEG"):
        (images / name).touch()  # read only when a sample is used
    assert not task.is_text(tmp_path / "synsets.txt") and task.is_text(tmp_path / "lines.txt")
    _, labels = evaluate.load(evaluate.EvalData(DataSource(images, count=2), tmp_path / "synsets.txt"), [None])
    assert isinstance(labels, task.Classes) and sorted(labels.labels.tolist()) == [0, 1]
