"""Trustworthy builds: bad input of every kind is one line and a non-zero exit, never a traceback, a crash or a
file; a library is written only after it ran beside onnxruntime; a loaded model is safe to call from threads."""

import signal
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import EXAMPLE_MODEL, EXAMPLE_SAMPLES, fails_cleanly, run_cli
from qcompile.runtime import verify


def calibration_with(tmp_path, value, at=(3, 0, 1, 5, 7)) -> str:
    samples = np.load(EXAMPLE_SAMPLES)["image"].copy()
    samples[at] = value
    path = tmp_path / "calib.npy"
    np.save(path, samples)
    return path


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_calibration_data_with_nan_or_inf_is_refused_naming_the_sample(capsys, tmp_path, value, word):
    err = fails_cleanly(capsys, tmp_path, "build", EXAMPLE_MODEL, "--calib", calibration_with(tmp_path, value))
    assert f"sample 3 of calib.npy has {word} values in input 'image'" in err


def test_empty_calibration_data_is_refused(capsys, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 3, 32, 32), np.float32))
    assert "no calibration samples" in fails_cleanly(capsys, tmp_path, "build", EXAMPLE_MODEL,
                                                     "--calib", tmp_path / "empty.npy")


def test_a_model_path_that_is_a_folder_says_so(capsys, tmp_path):
    assert "is a folder; give the model's .onnx file" in fails_cleanly(capsys, tmp_path, "build", tmp_path,
                                                                       "--precision", "fp32")


def test_an_output_that_cannot_be_written_fails_before_compiling(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_cli("build", EXAMPLE_MODEL, "--precision", "fp32", "-o", blocker / "x.so", "-q") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err
    assert run_cli("build", EXAMPLE_MODEL, "--precision", "fp32", "-o", tmp_path / "x.dylib", "-q") == 2
    assert "must be a .so file" in capsys.readouterr().err


def _nms_model(path):
    inits = [numpy_helper.from_array(np.array([10], np.int64), "max_boxes"),
             numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
             numpy_helper.from_array(np.array([0.1], np.float32), "score")]
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_boxes", "iou", "score"], ["selected"])],
        "nms", [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 20, 4]),
                helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 20])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, ["n", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_model_with_non_max_suppression_builds_and_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    model = _nms_model(tmp_path / "nms.onnx")
    assert run_cli("build", model, "--precision", "fp32", "-o", tmp_path / "nms.so", "-q") == 0
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1, (1, 20, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(0.1, 0.5, (1, 20, 2)).astype(np.float32)], axis=2)
    scores = rng.uniform(0, 1, (1, 1, 20)).astype(np.float32)
    (ours,) = qcompile.load(tmp_path / "nms.so")(boxes, scores)
    (theirs,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"boxes": boxes, "scores": scores})
    np.testing.assert_array_equal(ours, theirs)


def _embedding_model(path, rows=100):
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((rows, 16)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
         helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0)], "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def embedding_library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedding")
    assert run_cli("build", _embedding_model(folder / "emb.onnx"), "--precision", "fp32", "-o", folder / "emb.so",
                   "-q") == 0
    return folder / "emb.so"


def test_an_index_past_the_table_is_an_error_not_a_crash(embedding_library, tmp_path):
    model = qcompile.load(embedding_library)
    ids = np.arange(8, dtype=np.int64).reshape(1, 8)
    assert model(ids)[0].shape == (1, 16)
    for bad in (100, 40000, -101):
        ids[0, 3] = bad
        with pytest.raises(qcompile.QcompileError, match=rf"holds index {bad}, outside \[-100, 99\]"):
            model(ids)
    # the command line, in a process of its own: an error line, not a segmentation fault
    np.save(tmp_path / "ids.npy", ids)
    result = subprocess.run([sys.executable, "-m", "qcompile", "run", embedding_library, "-i", tmp_path / "ids.npy"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "outside [-100, 99]" in result.stderr


def test_the_library_itself_clamps_indices_for_callers_that_skip_the_check(embedding_library):
    import tvm

    model = qcompile.load(embedding_library)
    table = onnx.numpy_helper.to_array(onnx.load(embedding_library.with_name("emb.onnx")).graph.initializer[0])
    ids = np.array([[0, 1, 2, 40000, 4, 5, 6, 7]], np.int64)
    raw = model._machine()["main"](tvm.runtime.tensor(ids)).numpy()  # as the C++ runner calls it: no check
    np.testing.assert_allclose(raw, table[np.clip(ids, 0, 99)].mean(axis=1), rtol=1e-6)


@pytest.fixture(scope="module")
def example_library(tmp_path_factory):
    library = tmp_path_factory.mktemp("example") / "tiny.so"
    qcompile.build(EXAMPLE_MODEL, library, calib=EXAMPLE_SAMPLES, calib_count=8)
    return library


def test_inputs_of_another_dtype_are_refused_not_cast(example_library):
    with pytest.raises(qcompile.QcompileError, match="must be float32, got float64"):
        qcompile.load(example_library)(np.zeros((1, 3, 32, 32)))


def test_a_loaded_model_called_from_four_threads_gives_the_serial_outputs(example_library):
    model = qcompile.load(example_library)
    inputs = np.random.default_rng(1).standard_normal((40, 1, 3, 32, 32)).astype(np.float32)
    serial = [model(x)[0] for x in inputs]
    results = [None] * len(inputs)
    errors = []

    def worker(first):
        try:
            for i in range(first, len(inputs), 4):
                results[i] = model(inputs[i])[0]
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("precision, distort, message", [
    ("fp32", lambda r: r * 1.01, "differs from onnxruntime's by up to"),
    ("int8", lambda r: -r, "has collapsed: cosine -1.000"),
])
def test_a_build_that_disagrees_with_onnxruntime_is_not_written(capsys, tmp_path, monkeypatch, precision, distort,
                                                                message):
    # a wrong lowering or calibration, simulated by distorting the reference the build is checked against
    reference = verify.onnxruntime_outputs
    monkeypatch.setattr(verify, "onnxruntime_outputs",
                        lambda *a, **kw: [[distort(o) for o in outputs] for outputs in reference(*a, **kw)])
    err = fails_cleanly(capsys, tmp_path, "build", EXAMPLE_MODEL, "--precision", precision,
                        "--calib", EXAMPLE_SAMPLES, "--calib-count", 8)
    assert "the build does not compute the model" in err and message in err and "--no-verify" in err
    assert run_cli("build", EXAMPLE_MODEL, "--precision", precision, "--calib", EXAMPLE_SAMPLES, "--calib-count", 8,
                   "--no-verify", "-o", tmp_path / "unchecked.so", "-q") == 0
    assert qcompile.runtime.artifact.read_sidecar(tmp_path / "unchecked.so").verification == {
        "verified": False, "reason": "verification was turned off"}


def test_the_verification_figures_are_kept_in_the_sidecar_and_shown(capsys, tmp_path):
    library = tmp_path / "tiny.so"
    assert run_cli("build", EXAMPLE_MODEL, "--calib", EXAMPLE_SAMPLES, "--calib-count", 8, "-o", library, "-q") == 0
    figures = qcompile.load(library).sidecar.verification
    assert figures["verified"] and figures["samples"] == 4 and figures["inputs"] == "held-out calibration samples"
    (probs,) = figures["outputs"]
    assert probs["output"] == "probs" and probs["cosine"] > 0.99 and probs["top1_agreement"] >= 0.75
    assert run_cli("inspect", library) == 0
    assert "verified against onnxruntime FP32 on 4 held-out calibration samples" in capsys.readouterr().out


def test_ctrl_c_while_compiling_exits_130_and_writes_nothing(tmp_path):
    output = tmp_path / "out.so"
    process = subprocess.Popen([sys.executable, "-m", "qcompile", "build", EXAMPLE_MODEL, "--calib", EXAMPLE_SAMPLES,
                                "-o", output], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if line.startswith("[qcompile] compiling for"):
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130
    assert "qcompile: interrupted" in rest and "Traceback" not in rest
    assert list(tmp_path.iterdir()) == []


CORRUPTIONS = [("truncated", lambda b, rng: b[:len(b) // 3]),
               ("bytes flipped", lambda b, rng: bytes(x ^ 0xFF if rng.random() < 0.02 else x for x in b)),
               ("empty", lambda b, rng: b""),
               ("a text file", lambda b, rng: b"name,value\n" * 50)]


@pytest.mark.parametrize("kind, corrupt", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
@pytest.mark.parametrize("seed", range(3))
def test_fuzz_corrupted_model_files(capsys, tmp_path, kind, corrupt, seed):
    path = tmp_path / "model.onnx"
    path.write_bytes(corrupt(EXAMPLE_MODEL.read_bytes(), np.random.default_rng(seed)))
    err = fails_cleanly(capsys, tmp_path, "build", path, "--precision", "fp32")
    assert "model.onnx" in err


@pytest.mark.parametrize("target", ["pdp11", '{"kind": "llvm", "mcpu": "nosuchcpu"}', '{"kind": "opencl"}',
                                    "{not json", "cuda:sm_xx", "x86:sm_80", "missing.toml"])
def test_fuzz_odd_targets(capsys, tmp_path, target):
    fails_cleanly(capsys, tmp_path, "build", EXAMPLE_MODEL, "--precision", "fp32", "--target", target)


@pytest.mark.parametrize("seed", range(6))
def test_fuzz_run_inputs_of_random_shapes_and_dtypes(capsys, tmp_path, example_library, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 5, size=rng.integers(1, 5)))
    dtype = rng.choice(["float64", "int32", "uint8", "float16", "bool"])
    np.save(tmp_path / "x.npy", rng.standard_normal(shape).astype(dtype))
    assert run_cli("run", example_library, "-i", tmp_path / "x.npy") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qcompile: error: input 'image' must")
