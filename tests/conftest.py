"""Shared fixtures: the real models and data in ../shared/, and artifacts built once per session."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qcompile.data import datasets
from qcompile.cli import main

SHARED = Path(os.environ.get("QCOMPILE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MODELS = SHARED / "models"
IMAGES = SHARED / "data" / "imagenet-sample"
SYNSETS = SHARED / "data" / "imagenet_synsets.txt"
MNIST = SHARED / "data" / "mnist"

# name → (ONNX file, how its real inputs are made)
SHARED_MODELS = {
    "mobilenet": ("mobilenet_v1_0.75_224_keras.onnx", "tf"),
    "squeezenet": ("squeezenet1.1_caffe2_fp32_op13.onnx", "caffe"),
    "mnist": ("mnist-cntk-opset7.onnx", "mnist"),
}


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_MODEL = EXAMPLES / "tiny_cnn.onnx"  # input 'image' [N,3,32,32], output 'probs' [N,10]
EXAMPLE_SAMPLES = EXAMPLES / "samples.npz"


def pytest_configure(config):
    # the fast tier (-m "not slow") needs nothing beside the checkout; the full suite needs ../shared/
    if not MODELS.is_dir() and "not slow" not in (config.option.markexpr or ""):
        raise pytest.UsageError(f"shared test material not found at {SHARED} (set QCOMPILE_SHARED, or run the "
                                f"fast tier: pytest -m 'not slow')")


def model_path(name: str) -> Path:
    return MODELS / SHARED_MODELS[name][0]


def real_inputs(name: str, count: int, start: int = 0) -> list[np.ndarray]:
    """`count` real preprocessed inputs of batch 1 for a shared model, from image `start` on."""
    kind = SHARED_MODELS[name][1]
    if kind == "mnist":
        images = datasets.read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[start:start + count]
        return [img[None, None].astype(np.float32) for img in images]
    files = datasets.image_files(IMAGES)[start:start + count]
    return [datasets.load_image(f, datasets.PREPROCESS_PRESETS[kind]) for f in files]


def held_out_inputs(name: str, count: int, calibration_count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """`count` real inputs and labels that the `calibration_count` calibration samples (spread) do not include."""
    from qcompile.data.calibdata import spread

    total = 10000 if SHARED_MODELS[name][1] == "mnist" else len(datasets.image_files(IMAGES))
    calibration = set(spread(total, calibration_count))
    indices = [i for i in range(total) if i not in calibration][:count]
    if SHARED_MODELS[name][1] == "mnist":
        images = datasets.read_idx(MNIST / "t10k-images-idx3-ubyte.gz")
        labels = datasets.read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
        return [images[i][None, None].astype(np.float32) for i in indices], labels[indices]
    files = datasets.image_files(IMAGES)
    chosen = [files[i] for i in indices]
    preprocess = datasets.PREPROCESS_PRESETS[SHARED_MODELS[name][1]]
    return [datasets.load_image(f, preprocess) for f in chosen], datasets.imagenet_labels(chosen, SYNSETS)


def calibration_args(name: str, count: int) -> list:
    """The `qcompile build` options that calibrate a shared model on its real data."""
    kind = SHARED_MODELS[name][1]
    if kind == "mnist":
        return ["--calib", MNIST / "t10k-images-idx3-ubyte.gz", "--calib-count", count]
    return ["--calib", IMAGES, "--calib-count", count, "--preprocess", kind]


def onnxruntime_outputs(name: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return [session.run(None, {input_name: x})[0] for x in inputs]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def fails_cleanly(capsys, tmp_path, *args, code=2) -> str:
    """Run a qcompile command writing into tmp_path/out.so: one line on stderr, exit `code`, nothing written."""
    output = tmp_path / "out.so"
    assert run_cli(*args, "-o", output, "-q") == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qcompile: error: "), err
    assert "Traceback" not in err
    assert not output.exists() and not output.with_suffix(".json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".qcompile-")] == []
    return err


def build_shared_models(out: Path, options) -> dict[str, Path]:
    """Build every shared model into `out` with the x86 preset and `options(name, out)`: name → library."""
    libraries = {}
    for name in SHARED_MODELS:
        library = out / f"{name}.so"
        assert run_cli("build", model_path(name), "--target", "x86", "-o", library, "-q", *options(name, out)) == 0
        libraries[name] = library
    return libraries


@pytest.fixture(scope="session")
def fp32_x86_libraries(tmp_path_factory):
    """Every shared model built once for the x86 preset in FP32."""
    return build_shared_models(tmp_path_factory.mktemp("fp32_x86"), lambda name, out: ["--precision", "fp32"])


CALIBRATION_COUNT = {"mobilenet": 32, "squeezenet": 32, "mnist": 100}


@pytest.fixture(scope="session")
def int8_x86_libraries(tmp_path_factory):
    """Every shared model quantized once (calibrated on its real data) and built for x86, with its report."""
    return build_shared_models(tmp_path_factory.mktemp("int8_x86"), lambda name, out: [
        "--report", out / f"{name}_report.md", *calibration_args(name, CALIBRATION_COUNT[name])])


@pytest.fixture(scope="session")
def tracker_with_board():
    """A TVM RPC tracker on loopback with one x86 RPC server registered under the key test-board: its port."""
    port = free_port()
    # port_end defaults to 9199: below a free port found by the OS it would leave no port to try
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                                str(port), "--port-end", str(port + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        time.sleep(2)
        server_port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                                   "--key", "test-board", "--host", "127.0.0.1", "--port", str(server_port),
                                   "--port-end", str(server_port + 1)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from tvm import rpc

        deadline = time.time() + 60
        while "test-board" not in rpc.connect_tracker("127.0.0.1", port).text_summary():
            assert time.time() < deadline, "the RPC server did not register with the tracker"
            time.sleep(1)
        yield port
    finally:
        for process in (server, tracker):
            if process is not None:
                process.kill()
                process.wait(timeout=30)
