"""Shared fixtures: the real models and data in ../shared/, and artifacts built once per session."""

import os
from pathlib import Path

import numpy as np
import pytest

from qcompile import datasets
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


def pytest_configure(config):
    if not MODELS.is_dir():
        raise pytest.UsageError(f"shared test material not found at {SHARED} (set QCOMPILE_SHARED)")


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


def onnxruntime_outputs(name: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return [session.run(None, {input_name: x})[0] for x in inputs]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="session")
def fp32_x86_libraries(tmp_path_factory):
    """Every shared model built once for the x86 preset in FP32."""
    out = tmp_path_factory.mktemp("fp32_x86")
    libraries = {}
    for name in SHARED_MODELS:
        library = out / f"{name}.so"
        assert run_cli("build", model_path(name), "--target", "x86", "--precision", "fp32", "-o", library, "-q") == 0
        libraries[name] = library
    return libraries
