"""CUDA target: INT8 builds compile on a machine without a GPU; running them needs one (skipped here if none)."""

import numpy as np
import pytest

import qcompile
from conftest import calibration_args, model_path, real_inputs, run_cli


@pytest.fixture(scope="module")
def mobilenet_cuda_int8(tmp_path_factory):
    library = tmp_path_factory.mktemp("cuda") / "mobilenet_cuda_int8.so"
    assert run_cli("build", model_path("mobilenet"), "--target", "cuda:sm_80", "-o", library, "-q",
                   *calibration_args("mobilenet", 8)) == 0
    return library


def test_int8_cuda_build_compiles_without_a_gpu(mobilenet_cuda_int8):
    sidecar = qcompile.artifact.read_sidecar(mobilenet_cuda_int8)
    assert sidecar.precision == "int8" and sidecar.target["arch"] == "sm_80"
    assert mobilenet_cuda_int8.stat().st_size > 1_000_000  # the int8 weights are in it


def has_gpu() -> bool:
    import tvm

    return tvm.cuda(0).exist


@pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU on this machine")
def test_int8_cuda_build_agrees_with_x86(mobilenet_cuda_int8, tmp_path):
    x86 = tmp_path / "x86.so"
    assert run_cli("build", model_path("mobilenet"), "--activation-dtype", "int8", "-o", x86, "-q",
                   *calibration_args("mobilenet", 8)) == 0
    gpu, cpu = qcompile.load(mobilenet_cuda_int8), qcompile.load(x86)
    for x in real_inputs("mobilenet", 4, start=100):
        np.testing.assert_allclose(gpu(x)[0], cpu(x)[0], atol=1e-4)


def test_running_a_cuda_build_without_a_gpu_says_so(mobilenet_cuda_int8):
    if has_gpu():
        pytest.skip("this machine has a GPU")
    with pytest.raises(qcompile.QcompileError, match="no CUDA GPU"):
        qcompile.load(mobilenet_cuda_int8)
