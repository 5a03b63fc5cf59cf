"""The Python API mirrors the command line; qcompile changes nothing process-wide that was not asked for."""

import os
import subprocess
import sys

import numpy as np
import pytest

import qcompile
from conftest import EXAMPLE_MODEL, EXAMPLE_SAMPLES, run_cli
from qcompile.quantize.report import count_ops


@pytest.fixture(scope="module")
def api_library(tmp_path_factory):
    library = tmp_path_factory.mktemp("api") / "tiny.so"
    sidecar = qcompile.build(EXAMPLE_MODEL, library, calib=EXAMPLE_SAMPLES, records=None)
    return library, sidecar


def test_build_writes_the_library_the_cli_writes(api_library, tmp_path):
    library, sidecar = api_library
    assert sidecar.precision == "int8" and sidecar.inputs[0].name == "image"
    cli_library = tmp_path / "cli.so"
    assert run_cli("build", EXAMPLE_MODEL, "--calib", EXAMPLE_SAMPLES, "-o", cli_library, "-q") == 0
    assert cli_library.read_bytes() == library.read_bytes()


def test_load_runs_the_library_close_to_onnxruntime(api_library):
    import onnxruntime as ort

    library, _ = api_library
    x = np.load(EXAMPLE_SAMPLES)["image"][0]  # samples × [1, 3, 32, 32]
    (probs,) = qcompile.load(library)(image=x)
    (expected,) = ort.InferenceSession(str(EXAMPLE_MODEL), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    # INT8 against FP32: softmax probabilities within 0.05, same class
    np.testing.assert_allclose(probs, expected, atol=0.05)
    assert probs.argmax() == expected.argmax()


def test_quantize_returns_the_integer_module_without_compiling():
    quantized = qcompile.quantize(EXAMPLE_MODEL, EXAMPLE_SAMPLES, calib_count=8)
    integer, floating, _ = count_ops(quantized.mod)
    assert (integer, floating) == (4, 0)  # 3 convs and the Gemm
    assert len(quantized.points) >= 4 and all(p.scale > 0 for p in quantized.params.values())


def test_api_errors_name_the_parameter_not_the_flag(tmp_path):
    with pytest.raises(qcompile.QcompileError, match="INT8 needs calibration data: calib "):
        qcompile.build(EXAMPLE_MODEL, tmp_path / "x.so")
    with pytest.raises(qcompile.QcompileError, match="must be a .so file"):
        qcompile.build(EXAMPLE_MODEL, tmp_path / "x.dll", calib=EXAMPLE_SAMPLES)


def _in_fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout


def test_loading_intrinsics_leaves_the_process_as_it_was():
    out = _in_fresh_python(
        "import os, sys, logging\n"
        "from qcompile.lower import intrinsics\n"
        "intrinsics.register_arm()  # loads one module of TVM's intrinsics package\n"
        "print('tvm.s_tir.tensor_intrin' in sys.modules, 'TVM_NUM_THREADS' in os.environ,"
        " logging.getLogger('tvm.s_tir.meta_schedule').level)\n")
    # no stand-in for TVM's intrinsics package is left behind (importing it gives the real one), no thread
    # setting and no logger level
    assert out.split() == ["False", "False", "0"]


def test_a_library_rebuilt_at_the_same_path_loads_as_rebuilt(tmp_path):
    from test_frontend import _reshape_by_computed_shape

    library = tmp_path / "model.so"
    qcompile.build(EXAMPLE_MODEL, library, precision="fp32")
    first = qcompile.load(library)
    # the dynamic loader would hand back the first library for this path: another model now lives there
    qcompile.build(_reshape_by_computed_shape(tmp_path / "other.onnx"), library, precision="fp32")
    second = qcompile.load(library)
    assert second(np.zeros((1, 8, 4, 4), np.float32))[0].shape == (1, 3)
    assert first(np.zeros((1, 3, 32, 32), np.float32))[0].shape == (1, 10)
