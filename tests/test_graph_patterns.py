"""Graph patterns beyond the shared models: batch norm to fold, a residual Add, Concat of differing scales."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile
from conftest import run_cli
from qcompile.frontend import importer
from qcompile.frontend.prepare import Prepare
from qcompile.quantize.report import count_ops

RNG = np.random.default_rng(7)


def weight(name, *shape, scale=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def save_model(nodes, inits, path, out_shape):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def residual_model(tmp_path_factory):
    """conv → BN → relu → conv → (+ skip) → relu → concat(·, branch) → GAP → flatten → Gemm."""
    inits = [weight("w1", 8, 4, 3, 3), weight("w2", 8, 8, 3, 3), weight("w3", 8, 8, 1, 1), weight("fc", 5, 16),
             numpy_helper.from_array(RNG.uniform(0.5, 2, 8).astype(np.float32), "gamma"),
             numpy_helper.from_array(RNG.normal(0, 0.2, 8).astype(np.float32), "beta"),
             numpy_helper.from_array(RNG.normal(0, 0.2, 8).astype(np.float32), "mean"),
             numpy_helper.from_array(RNG.uniform(0.5, 2, 8).astype(np.float32), "var")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["b1"], name="bn1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r1", "w3"], ["c3"], name="branch"),
        helper.make_node("Concat", ["r2", "c3"], ["cat"], name="concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], name="fc", transB=1),
    ]
    return save_model(nodes, inits, tmp_path_factory.mktemp("residual") / "residual.onnx", [1, 5])


def calibration_file(tmp_path):
    path = tmp_path / "calib.npy"
    np.save(path, RNG.uniform(-1, 1, (64, 1, 4, 12, 12)).astype(np.float32))
    return path


def test_prepare_folds_batch_norm_into_the_conv(residual_model):
    model = importer.load(residual_model)
    prepared = Prepare()(importer.to_relax(model, importer.static_inputs(model, {})))
    _, float_anchors, ops = count_ops(prepared)
    assert "relax.nn.batch_norm" not in ops["float"] and float_anchors == 4


def test_residual_add_and_concat_run_in_integers(residual_model, tmp_path):
    import onnxruntime as ort

    library = tmp_path / "residual.so"
    assert run_cli("build", residual_model, "--calib", calibration_file(tmp_path), "-o", library, "-q",
                   "--report", tmp_path / "residual_report.md") == 0
    counts = json.loads((tmp_path / "residual_report.json").read_text())
    assert counts["integer_anchors"] == 4 and counts["float_anchors"] == 0
    # the concat and the pooling's sum run on integers; float32 is only the arithmetic of the requantizes (the
    # residual add's among them: its operands' rescale and sum) and the Gemm's output scale
    assert set(counts["ops"]["float"]) == {"relax.astype", "relax.multiply", "relax.add", "relax.floor",
                                           "relax.maximum", "relax.minimum"}
    assert {"relax.concat", "relax.sum"} <= set(counts["ops"]["integer"])
    model = qcompile.load(library)
    session = ort.InferenceSession(str(residual_model), providers=["CPUExecutionProvider"])
    for x in RNG.uniform(-1, 1, (8, 1, 4, 12, 12)).astype(np.float32):
        ours, reference = model(x)[0], session.run(None, {"x": x})[0]
        # 8-bit activations and weights: a few percent of the output's range
        np.testing.assert_allclose(ours, reference, atol=0.05 * np.abs(reference).max())


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh"])
def test_a_nonlinearity_between_convs_stays_8_bit(activation, tmp_path):
    import onnxruntime as ort

    inits = [weight("w1", 8, 4, 3, 3), weight("b1", 8, scale=0.1), weight("w2", 8, 8, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node(activation, ["c1"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["y"])]
    model = save_model(nodes, inits, tmp_path / "act.onnx", [1, 8, 12, 12])
    library = tmp_path / "act.so"
    assert run_cli("build", model, "--calib", calibration_file(tmp_path), "-o", library, "-q",
                   "--report", tmp_path / "report.md") == 0
    counts = json.loads((tmp_path / "report.json").read_text())
    # the activation is a table lookup on the integers; float32 is only the requantizes' arithmetic
    assert f"relax.{activation.lower()}" not in counts["ops"]["float"] and "relax.take" in counts["ops"]["integer"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for x in RNG.uniform(-1, 1, (4, 1, 4, 12, 12)).astype(np.float32):
        ours, reference = qcompile.load(library)(x)[0], session.run(None, {"x": x})[0]
        np.testing.assert_allclose(ours, reference, atol=0.05 * np.abs(reference).max())


def depthwise_block(path):
    """conv 4→16 → relu → depthwise 3×3 → relu → conv 1×1 → relu: a MobileNet block."""
    inits = [weight("w1", 16, 4, 3, 3), weight("dw", 16, 1, 3, 3), weight("w2", 16, 16, 1, 1),
             weight("b1", 16, scale=0.1), weight("bdw", 16, scale=0.1), weight("b2", 16, scale=0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw", "bdw"], ["d"], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["d"], ["r2"]),
        helper.make_node("Conv", ["r2", "w2", "b2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    return save_model(nodes, inits, path, [1, 16, 12, 12])


def fire_block(path):
    """conv 4→16 → relu → max pool 3×3/2 (padded) → (conv 1×1, conv 3×3) → relu → concat → conv 1×1: a SqueezeNet
    block (with ResNet's padded pooling)."""
    inits = [weight("w1", 16, 4, 3, 3), weight("e1", 16, 16, 1, 1), weight("e3", 16, 16, 3, 3),
             weight("w2", 16, 32, 1, 1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p", "e1"], ["x1"]),
        helper.make_node("Relu", ["x1"], ["y1"]),
        helper.make_node("Conv", ["p", "e3"], ["x3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["x3"], ["y3"]),
        helper.make_node("Concat", ["y1", "y3"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["y"]),
    ]
    return save_model(nodes, inits, path, [1, 16, 6, 6])


def bottleneck_block(path):
    """conv 4→16 → relu → (conv 3×3 → relu → conv 1×1 16→32, projection conv 1×1 16→32) → add → relu → conv 1×1:
    a ResNet block whose shortcut is a conv, and the next block's first conv."""
    inits = [weight("w1", 16, 4, 3, 3), weight("w2", 16, 16, 3, 3), weight("w3", 32, 16, 1, 1),
             weight("ws", 32, 16, 1, 1), weight("w4", 16, 32, 1, 1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("Conv", ["r1", "ws"], ["s"]),
        helper.make_node("Add", ["c3", "s"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4"], ["y"]),
    ]
    return save_model(nodes, inits, path, [1, 16, 12, 12])


BLOCKS = {"depthwise": depthwise_block, "fire": fire_block, "bottleneck": bottleneck_block}


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    return {name: make(folder / f"{name}.onnx") for name, make in BLOCKS.items()}


# an AVX-512 VNNI CPU, whatever this machine's: kernels are lowered for it, not run
VNNI_TARGET = '{"kind": "llvm", "mcpu": "cascadelake"}'


# x86-64 without AVX2: no int8 dot product, so nothing is packed; the integer arithmetic is the same
PLAIN_TARGET = '{"kind": "llvm", "mcpu": "x86-64"}'


def lowered_kernels(model, tmp_path, target=VNNI_TARGET, precision="int8"):
    """The block's graph of fused kernels, as `qcompile build` compiles it (by default for an AVX-512 VNNI CPU)."""
    from qcompile import driver, targets
    from qcompile.lower import compiler
    from qcompile.data.calibdata import DataSource

    spec = targets.resolve(target)
    from qcompile.quantize.quantizer import QuantConfig

    request = driver.CompileRequest(model=model, target=spec, precision=precision,
                                    quant=QuantConfig(activation_dtype=spec.activation_dtype),
                                    calib=DataSource(calibration_file(tmp_path), count=64))
    return compiler.lower_kernels(driver.lower_model(request).mod, spec)


# target → (precision, the call its packed convs' default schedule must make)
DEFAULT_FORMS = {
    (VNNI_TARGET, "int8"): "llvm.x86.avx512.vpdpbusd.512",
    ("x86-avx2", "int8"): "llvm.x86.avx2.pmadd.wd",
    ("rpi5", "int8"): "llvm.aarch64.neon.sdot",
    ("x86-avx2", "fp32"): "T.vectorized",  # FMA on the 8 lanes
}


@pytest.mark.parametrize("target, precision", list(DEFAULT_FORMS))
@pytest.mark.parametrize("name", list(BLOCKS))
def test_without_tuning_records_every_packed_conv_gets_its_tensorized_default_schedule(name, target, precision,
                                                                                        blocks, tmp_path):
    from qcompile import targets
    from qcompile.lower import compiler
    from qcompile.lower.kernels import CONV_BLOCK, FLOAT_CONV_BLOCK

    scheduled = compiler.schedule_defaults(lowered_kernels(blocks[name], tmp_path, target, precision),
                                           targets.resolve(target))
    convs = {gvar.name_hint: func for gvar, func in scheduled.functions_items()
             if CONV_BLOCK in gvar.name_hint or FLOAT_CONV_BLOCK in gvar.name_hint}
    assert convs
    for func in convs.values():
        assert func.attrs and func.attrs.get("tirx.is_scheduled", False)
        # no untuned loop nest: the sums are computed by the instruction (or the vector FMA) in registers
        script = func.script()
        assert DEFAULT_FORMS[target, precision] in script and 'scope="local"' in script


@pytest.mark.parametrize("name", list(BLOCKS))
def test_activations_stay_blocked_from_conv_to_conv(name, blocks, tmp_path):
    kernels = {gvar.name_hint: func for gvar, func in lowered_kernels(blocks[name], tmp_path).functions_items()}
    # convs, depthwise conv, max pool and concat run on NCHW16c blocks: the one pack left is the model's input, the
    # one unpack its output
    from qcompile.lower.kernels import DEPTHWISE_BLOCK, PACK, UNPACK, is_kernel

    assert sum(PACK in k for k in kernels) == 1  # alone, or fused with the input's quantize
    assert sum(is_kernel(k, UNPACK) for k in kernels) == 1
    assert name != "depthwise" or any(DEPTHWISE_BLOCK in k for k in kernels)
    # blocked pooling has a fixed schedule: no tuning record is needed for it to be fast
    pools = [func for k, func in kernels.items() if "max_pool2d" in k]
    assert name != "fire" or pools and all(func.attrs["tirx.is_scheduled"] for func in pools)


def packed_and_plain(model, tmp_path):
    """The model built for this machine (packed for VNNI or AVX2) and for plain x86-64, where nothing is packed.
    Both calibrated on the same data, and loaded."""
    libraries, calib = {}, calibration_file(tmp_path)
    for name, target in (("packed", "x86"), ("plain", PLAIN_TARGET)):
        libraries[name] = tmp_path / f"{name}.so"
        assert run_cli("build", model, "--target", target, "--calib", calib, "-o", libraries[name], "-q") == 0
    return qcompile.load(libraries["packed"]), qcompile.load(libraries["plain"])


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocked_kernels_compute_the_integers_of_plain_nchw_ones(name, blocks, tmp_path):
    packed, plain = packed_and_plain(blocks[name], tmp_path)
    for x in RNG.uniform(-1, 1, (4, 1, 4, 12, 12)).astype(np.float32):
        # the same integers, dequantized by the same float epilogue (up to how LLVM contracts it: 1e-6, where one
        # quantization step is ~1e-2)
        np.testing.assert_allclose(packed(x)[0], plain(x)[0], rtol=1e-6, atol=1e-6)


def test_a_projection_shortcut_reaches_the_residual_add_as_8_bit_values(blocks, tmp_path):
    from tvm import relax

    crossing = []

    def collect(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == "relax.call_tir":
            crossing.append(str(expr.ty.dtype))

    relax.analysis.post_order_visit(lowered_kernels(blocks["bottleneck"], tmp_path)["main"], collect)
    # the shortcut conv's kernel ends at its uint8 output; the rescale of that operand runs in the add's kernel
    assert crossing and set(crossing) <= {"uint8", "float32"}, crossing


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """conv 4→16 → relu → GAP → flatten → Gemm 16→10 with bias: a classifier head, the Gemm an int8 GEMV."""
    inits = [weight("w1", 16, 4, 3, 3), weight("fc", 10, 16), weight("fc_bias", 10, scale=0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fc_bias"], ["y"], transB=1),
    ]
    return save_model(nodes, inits, tmp_path_factory.mktemp("classifier") / "classifier.onnx", [1, 10])


def test_an_integer_matmul_is_compiled_as_a_packed_conv(classifier, tmp_path):
    from qcompile.lower.kernels import CONV_BLOCK

    kernels = [gvar.name_hint for gvar, _ in lowered_kernels(classifier, tmp_path).functions_items()]
    assert not any("matmul" in k for k in kernels), kernels
    assert sum(CONV_BLOCK in k for k in kernels) == 2, kernels  # the model's conv and the Gemm


def test_a_matmul_compiled_as_a_packed_conv_computes_what_the_matmul_does(classifier, tmp_path):
    packed, plain = packed_and_plain(classifier, tmp_path)  # on plain x86-64 the Gemm stays a matmul
    for x in RNG.uniform(-1, 1, (4, 1, 4, 12, 12)).astype(np.float32):
        # the same int32 sums, then the same FP32 rescale and bias (up to how LLVM contracts them)
        np.testing.assert_allclose(packed(x)[0], plain(x)[0], rtol=1e-6, atol=1e-6)
