"""INT8 quantization of the shared models: integer kernels throughout, accuracy on held-out real data."""

import json

import numpy as np
import pytest

import qcompile
from conftest import (CALIBRATION_COUNT, SHARED_MODELS, held_out_inputs, model_path, onnxruntime_outputs,
                      real_inputs, run_cli)
from qcompile.frontend import importer
from qcompile.quantize.quantizer import QuantConfig, anchor_names, quantize
from qcompile.quantize.report import count_ops

pytestmark = pytest.mark.slow  # the real models in ../shared/

ANCHORS = {"mobilenet": 28, "squeezenet": 26, "mnist": 3}
# Held-out subsets of the shared data; the full 900-image sweep is in benchmarks/RESULTS.md (MobileNet 97.4 %,
# SqueezeNet 97.3 % agreement there). On 150 images the agreement's standard error is about 1.4 points.
HELD_OUT = {"mobilenet": 150, "squeezenet": 150, "mnist": 1000}
MIN_AGREEMENT = {"mobilenet": 0.93, "squeezenet": 0.93, "mnist": 0.995}
MAX_TOP1_DROP = {"mobilenet": 0.03, "squeezenet": 0.03, "mnist": 0.005}


@pytest.fixture(scope="session")
def realized_modules():
    """The realized IR of each shared model (small calibration: the IR does not depend on its size)."""
    modules = {}
    for name in SHARED_MODELS:
        model = importer.load(model_path(name))
        mod = importer.to_relax(model, importer.static_inputs(model, {}))
        modules[name] = quantize(mod, [[x] for x in real_inputs(name, 8)], QuantConfig(), anchor_names(model)).mod
    return modules


@pytest.mark.parametrize("name", list(SHARED_MODELS))
def test_every_conv_and_dense_runs_int8_times_int8_into_int32(name, realized_modules):
    anchors = []
    for block in realized_modules[name]["main"].body.blocks:
        for binding in block.bindings:
            call = binding.value
            if getattr(getattr(call, "op", None), "name", None) in ("relax.nn.conv2d", "relax.matmul"):
                anchors.append((str(call.args[0].ty.dtype), str(call.args[1].ty.dtype), str(binding.var.ty.dtype)))
    assert len(anchors) == ANCHORS[name]
    assert set(anchors) == {("uint8", "int8", "int32")}


@pytest.mark.parametrize("name", list(SHARED_MODELS))
def test_float_ops_left_are_only_the_classifier_tail(name, realized_modules):
    _, float_anchors, ops = count_ops(realized_modules[name])
    print(f"{name}: float ops left: {dict(ops['float'])}")
    assert float_anchors == 0
    # the input's quantize, the float32 arithmetic of requantizes (multiply, add, floor, clamp), the rescale of
    # the last (integer) classifier layer, and what follows it
    assert set(ops["float"]) <= {"relax.quantize", "relax.astype", "relax.multiply", "relax.add", "relax.floor",
                                 "relax.maximum", "relax.minimum", "relax.nn.relu", "relax.mean",
                                 "relax.nn.softmax", "relax.reshape"}
    assert ops["float"]["relax.nn.conv2d"] == 0 and ops["float"]["relax.dequantize"] == 0


@pytest.mark.parametrize("name", list(SHARED_MODELS))
def test_int8_top1_stays_close_to_fp32_on_held_out_data(name, int8_x86_libraries):
    inputs, labels = held_out_inputs(name, HELD_OUT[name], CALIBRATION_COUNT[name])
    model = qcompile.load(int8_x86_libraries[name])
    int8 = np.array([model(x)[0].argmax() for x in inputs])
    fp32 = np.array([out.argmax() for out in onnxruntime_outputs(name, inputs)])
    agreement = np.mean(int8 == fp32)
    drop = np.mean(fp32 == labels) - np.mean(int8 == labels)
    print(f"{name}: agreement {agreement:.4f}, top-1 FP32 {np.mean(fp32 == labels):.4f} INT8 {np.mean(int8 == labels):.4f}")
    assert agreement >= MIN_AGREEMENT[name]
    assert drop <= MAX_TOP1_DROP[name]


def test_report_lists_quantized_tensors_worst_first(int8_x86_libraries):
    report = json.loads(int8_x86_libraries["mobilenet"].with_name("mobilenet_report.json").read_text())
    markdown = int8_x86_libraries["mobilenet"].with_name("mobilenet_report.md").read_text()
    sqnr = [p["sqnr_db"] for p in report["points"]]
    assert sqnr == sorted(sqnr) and 10 < sqnr[0] < sqnr[-1]
    assert report["integer_anchors"] == 28 and report["float_anchors"] == 0
    assert {p["label"] for p in report["points"]} >= {"conv1", "conv_pw_13", "input input"}
    assert "| conv_pw_13" in markdown and "SQNR dB" in markdown


def test_sidecar_records_int8(int8_x86_libraries):
    assert json.loads(int8_x86_libraries["mnist"].with_suffix(".json").read_text())["precision"] == "int8"


def test_simulated_build_agrees_with_the_integer_build(int8_x86_libraries, tmp_path):
    library = tmp_path / "sim.so"
    args = ["--calib", model_path("mnist").parents[1] / "data/mnist/t10k-images-idx3-ubyte.gz", "--calib-count", 100]
    assert run_cli("build", model_path("mnist"), "--simulate", "-o", library, "-q", *args) == 0
    simulated, integer = qcompile.load(library), qcompile.load(int8_x86_libraries["mnist"])
    assert simulated.sidecar.precision == "int8-simulated"
    for x in real_inputs("mnist", 20, start=500):
        a, b = simulated(x)[0], integer(x)[0]
        assert a.argmax() == b.argmax()
        np.testing.assert_allclose(a, b, atol=0.02 * np.abs(b).max())


def test_excluded_op_type_stays_fp32():
    model = importer.load(model_path("mnist"))
    mod = importer.to_relax(model, importer.static_inputs(model, {}))
    realized = quantize(mod, [[x] for x in real_inputs("mnist", 8)], QuantConfig(exclude=frozenset({"MatMul"})),
                        anchor_names(model)).mod
    assert count_ops(realized)[:2] == (2, 1)


def test_excluded_node_name_stays_fp32():
    model = importer.load(model_path("mnist"))
    mod = importer.to_relax(model, importer.static_inputs(model, {}))
    config = QuantConfig(exclude=frozenset({"Convolution110"}))
    realized = quantize(mod, [[x] for x in real_inputs("mnist", 8)], config, anchor_names(model)).mod
    assert count_ops(realized)[:2] == (2, 1)


def test_random_calibration_needs_the_flag_and_warns(capsys, tmp_path):
    assert run_cli("build", model_path("mnist"), "--calib-random", "--calib-count", 4, "-o", tmp_path / "r.so",
                   "-q") == 0
    assert "WARNING: calibrating on RANDOM inputs" in capsys.readouterr().err


def test_activation_type_follows_the_target():
    from qcompile import targets

    assert targets.resolve("x86").activation_dtype == "uint8"
    assert targets.resolve("rpi5").activation_dtype == "int8"
    assert targets.resolve("cuda").activation_dtype == "int8"


def test_int8_symmetric_activations_build_and_agree(tmp_path):
    library = tmp_path / "s8.so"
    assert run_cli("build", model_path("mnist"), "--activation-dtype", "int8", "--per-tensor", "-o", library, "-q",
                   "--calib", model_path("mnist").parents[1] / "data/mnist/t10k-images-idx3-ubyte.gz") == 0
    model = qcompile.load(library)
    inputs = real_inputs("mnist", 50, start=2000)
    fp32 = onnxruntime_outputs("mnist", inputs)
    assert np.mean([model(x)[0].argmax() == f.argmax() for x, f in zip(inputs, fp32)]) >= 0.98


def test_eval_command_prints_fp32_and_int8_side_by_side(capsys):
    mnist = model_path("mnist").parents[1] / "data/mnist"
    images = mnist / "t10k-images-idx3-ubyte.gz"
    assert run_cli("eval", model_path("mnist"), "--data", images, "--labels", mnist / "t10k-labels-idx1-ubyte.gz",
                   "--calib", images, "--count", 300, "-q") == 0
    out = capsys.readouterr().out
    assert "300 samples" in out and "leaving out the 100 that calibrated" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| fp32") or line.startswith("| int8")}
    assert set(rows) == {"fp32", "int8"}
    assert float(rows["int8"].split("|")[4]) >= 0.98  # top-1 agreement column


def test_report_may_not_overwrite_the_sidecar(capsys, tmp_path):
    code = run_cli("build", model_path("mnist"), "-o", tmp_path / "m.so", "--report", tmp_path / "m.md",
                   "--calib-random", "-q")
    assert code == 2 and "would overwrite the sidecar" in capsys.readouterr().err
    assert not (tmp_path / "m.so").exists()


def test_eval_reads_text_lines_as_paddleocr_does_and_scores_the_recognizer_by_exact_text(capsys):
    lines = model_path("mnist").parents[1] / "data/text/lines"
    recognizer = model_path("mnist").parent / "ch_PP-OCRv4_rec_infer.onnx"
    assert run_cli("eval", recognizer, "--data", lines, "--labels", lines / "labels.tsv", "--calib", lines,
                   "--calib-count", 8, "--count", 40, "--fit", "pad", "--preprocess", "tf",
                   "--input-shape", "x:1x3x48x320", "-q") == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:]] for line in out.splitlines()
            if line.startswith("| fp32") or line.startswith("| int8")}
    # ../shared/README.md: onnxruntime FP32 reads 38 of the first 40 lines exactly
    assert float(rows["fp32"][0]) >= 0.9
    assert float(rows["int8"][0]) >= float(rows["fp32"][0]) - 0.1 and float(rows["int8"][1]) >= 0.85
