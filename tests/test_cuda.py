"""CUDA target: INT8 builds compile on a machine without a GPU; running them needs one (skipped here if none)."""

import re

import numpy as np
import pytest

import qcompile
from conftest import IMAGES, calibration_args, model_path, real_inputs, run_cli
from qcompile import driver, targets
from qcompile.data.calibdata import DataSource
from qcompile.data.datasets import PREPROCESS_PRESETS
from qcompile.quantize.quantizer import QuantConfig

pytestmark = pytest.mark.slow  # the real models in ../shared/


@pytest.fixture(scope="module")
def mobilenet_cuda_int8(tmp_path_factory):
    library = tmp_path_factory.mktemp("cuda") / "mobilenet_cuda_int8.so"
    assert run_cli("build", model_path("mobilenet"), "--target", "cuda:sm_80", "-o", library, "-q",
                   *calibration_args("mobilenet", 8)) == 0
    return library


def test_int8_cuda_build_compiles_without_a_gpu(mobilenet_cuda_int8):
    sidecar = qcompile.runtime.artifact.read_sidecar(mobilenet_cuda_int8)
    assert sidecar.precision == "int8" and sidecar.target["arch"] == "sm_80"
    assert mobilenet_cuda_int8.stat().st_size > 1_000_000  # the int8 weights are in it


@pytest.fixture(scope="module")
def mobilenet_cuda_source(tmp_path_factory):
    """The CUDA C that TVM generated for MobileNet's INT8 build (int8 activations, as the cuda preset picks)."""
    spec = targets.resolve("cuda:sm_80")
    request = driver.CompileRequest(model=model_path("mobilenet"), target=spec,
                                   quant=QuantConfig(activation_dtype=spec.activation_dtype),
                                   calib=DataSource(IMAGES, count=8, preprocess=PREPROCESS_PRESETS["tf"]))
    executable = driver.compile_model(request).executable
    (device_code,) = executable.mod.imports[0].imports
    return device_code.inspect_source("cuda")


def kernel_bodies(source: str) -> dict[str, str]:
    """Each __global__ kernel's name → its body, from generated CUDA C."""
    starts = [(m.group(1), m.end()) for m in re.finditer(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\([^)]*\) \{",
                                                         source)]
    ends = [start for _, start in starts[1:]] + [len(source)]
    return {name: source[start:end] for (name, start), end in zip(starts, ends)}


def test_every_packed_int8_convolution_runs_on_dp4a(mobilenet_cuda_source):
    kernels = kernel_bodies(mobilenet_cuda_source)
    convs = {name: body for name, body in kernels.items() if "conv2d_NCHWc_int8" in name}
    # MobileNet v1's 15 full convolutions (its 13 depthwise ones are grouped and stay on dlight's schedules);
    # identical layers share one kernel
    assert len(convs) >= 8
    assert all("__dp4a(" in body for body in convs.values())
    assert not any("__dp4a(" in body for name, body in kernels.items() if name not in convs)


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
