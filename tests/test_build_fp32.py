"""FP32 build of the shared models for x86: outputs, sidecar and reload in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import qcompile
from conftest import SHARED_MODELS, onnxruntime_outputs, real_inputs

pytestmark = pytest.mark.slow  # the real models in ../shared/

# Same arithmetic in another order: float32 results agree with onnxruntime to 1e-4 of the output's scale.
RTOL = 1e-4


@pytest.mark.parametrize("name", list(SHARED_MODELS))
def test_fp32_build_matches_onnxruntime_on_real_inputs(name, fp32_x86_libraries):
    model = qcompile.load(fp32_x86_libraries[name])
    inputs = real_inputs(name, count=4)
    for x, reference in zip(inputs, onnxruntime_outputs(name, inputs)):
        (out,) = model(x)
        assert out.shape == reference.shape
        np.testing.assert_allclose(out, reference, rtol=RTOL, atol=RTOL * np.abs(reference).max())


@pytest.mark.parametrize("name", list(SHARED_MODELS))
def test_sidecar_describes_the_library(name, fp32_x86_libraries):
    sidecar = json.loads(fp32_x86_libraries[name].with_suffix(".json").read_text())
    model = qcompile.load(fp32_x86_libraries[name])
    assert sidecar["precision"] == "fp32"
    assert sidecar["target_name"] == "x86" and sidecar["target"]["kind"] == "llvm"
    assert len(sidecar["model_sha256"]) == 64
    assert set(sidecar["versions"]) == {"qcompile", "apache-tvm", "apache-tvm-ffi", "onnx"}
    (x,) = real_inputs(name, count=1)
    (out,) = model(x)
    assert [i["shape"] for i in sidecar["inputs"]] == [list(x.shape)]
    assert [o["shape"] for o in sidecar["outputs"]] == [list(out.shape)]


def test_reloaded_library_in_fresh_process_gives_identical_outputs(fp32_x86_libraries, tmp_path):
    library = fp32_x86_libraries["mobilenet"]
    (x,) = real_inputs("mobilenet", count=1, start=10)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-m", "qcompile", "run", str(library), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "top-5" in result.stdout
    fresh = np.load(tmp_path / "y.npz")["probs"]
    (here,) = qcompile.load(library)(x)
    np.testing.assert_array_equal(fresh, here)


def test_inputs_can_be_given_by_name(fp32_x86_libraries):
    model = qcompile.load(fp32_x86_libraries["mnist"])
    (x,) = real_inputs("mnist", count=1)
    np.testing.assert_array_equal(model(Input3=x)[0], model(x)[0])


def test_wrong_input_shape_is_rejected(fp32_x86_libraries):
    model = qcompile.load(fp32_x86_libraries["mnist"])
    with pytest.raises(qcompile.QcompileError, match=r"must have shape \[1, 1, 28, 28\]"):
        model(np.zeros((1, 28, 28), np.float32))


def test_library_runs_where_only_the_tvm_runtime_is_installed(fp32_x86_libraries, tmp_path):
    library = fp32_x86_libraries["mobilenet"]
    (x,) = real_inputs("mobilenet", count=1, start=11)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, qcompile, tvm; assert tvm.base._RUNTIME_ONLY; "
              "np.save(sys.argv[2], qcompile.load(sys.argv[1])(np.load(sys.argv[3]))[0])")
    result = subprocess.run([sys.executable, "-c", script, str(library), str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
                            capture_output=True, text=True, env={**os.environ, "TVM_USE_RUNTIME_LIB": "1"})
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), qcompile.load(library)(x)[0])
