"""A model quantized by onnxruntime (QDQ) compiles to integer kernels and matches onnxruntime's INT8 outputs."""

import numpy as np
import pytest

import qcompile
from conftest import IMAGES, model_path, run_cli
from qcompile.data import datasets
from qcompile.frontend import importer
from qcompile.quantize.pipeline import qdq_import_pipeline
from qcompile.quantize.report import count_ops

pytestmark = pytest.mark.slow  # the real models in ../shared/


@pytest.fixture(scope="module")
def ort_quantized_mobilenet(tmp_path_factory):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    files = datasets.image_files(IMAGES)
    preprocess = datasets.PREPROCESS_PRESETS["tf"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": datasets.load_image(files[i], preprocess)} for i in range(0, 1000, 100)])

        def get_next(self):
            return next(self.items, None)

    path = tmp_path_factory.mktemp("qdq") / "mobilenet_qdq.onnx"
    quantize_static(str(model_path("mobilenet")), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


def test_qdq_model_realizes_to_integer_kernels(ort_quantized_mobilenet):
    model = importer.load(ort_quantized_mobilenet)
    realized = qdq_import_pipeline()(importer.to_relax(model, importer.static_inputs(model, {})))
    integer_anchors, float_anchors, _ = count_ops(realized)
    assert (integer_anchors, float_anchors) == (28, 0)


def test_qdq_model_matches_onnxruntime_int8_within_a_few_output_steps(ort_quantized_mobilenet, tmp_path):
    import onnxruntime as ort

    library = tmp_path / "qdq.so"
    assert run_cli("build", ort_quantized_mobilenet, "-o", library, "-q") == 0
    model = qcompile.load(library)
    assert model.sidecar.precision == "int8-qdq"
    # onnxruntime with its graph optimizations off runs the QDQ graph as written (dequantize, float op, quantize):
    # the model's exact meaning on any CPU. Its fused integer kernels are not a reference on every CPU: on AVX2
    # without VNNI its u8×s8 kernels sum pairs of products in saturating int16 (vpmaddubsw), and on this MobileNet
    # they moved outputs by up to 176 steps and changed the class of 2 of these 6 images (measured 2026-11-30).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(ort_quantized_mobilenet), options, providers=["CPUExecutionProvider"])
    files = datasets.image_files(IMAGES)
    for i in (1, 2, 5, 250, 555, 777):
        x = datasets.load_image(files[i], datasets.PREPROCESS_PRESETS["tf"])
        ours, theirs = model(x)[0], session.run(None, {"input": x})[0]
        assert ours.argmax() == theirs.argmax()
        # The softmax output is itself quantized to uint8 over [0, 1]: one step is 1/255. The reference convolves
        # in float32, qcompile sums integers exactly, and the two round half differently when requantizing, so
        # over 28 layers a last bit may differ; a one-step change of a logit moves a probability near ½ by several
        # output steps (at most 6 measured on these images).
        step = 1 / 255
        assert np.abs(ours - theirs).max() <= 8 * step + 1e-6
        assert np.mean(np.abs(ours - theirs) > step / 2) < 0.02  # almost every class score identical
