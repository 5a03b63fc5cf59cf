"""Bad input gives one line on stderr, a non-zero exit, no traceback and no output file."""

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import EXAMPLE_MODEL, fails_cleanly, run_cli
from qcompile import targets


def build_fails(capsys, tmp_path, *args, precision="fp32") -> str:
    """Run `qcompile build`, expecting a clean failure; return its one line of stderr."""
    return fails_cleanly(capsys, tmp_path, "build", *args, "--precision", precision)


def save(model: onnx.ModelProto, path):
    onnx.save(model, path)
    return path


def tiny_model(op_type="Relu", dims=(1, 4)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))
    graph = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], name="the_node")], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_missing_model_file(capsys, tmp_path):
    assert "model file not found" in build_fails(capsys, tmp_path, tmp_path / "nope.onnx")


def test_non_onnx_bytes(capsys, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a protobuf\n" * 20)
    assert "is not a" in build_fails(capsys, tmp_path, path)


def test_truncated_model(capsys, tmp_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(EXAMPLE_MODEL.read_bytes()[:5000])
    err = build_fails(capsys, tmp_path, path)
    assert "truncated.onnx is not a" in err


def test_unsupported_operator_names_operator_and_node(capsys, tmp_path):
    path = save(tiny_model("Celu"), tmp_path / "celu.onnx")
    err = build_fails(capsys, tmp_path, path)
    assert "unsupported operator 'Celu' at node 'the_node'" in err


def test_dynamic_shape_without_input_shape(capsys, tmp_path):
    model = tiny_model(dims=(1, 4))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "width"
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "width"
    path = save(model, tmp_path / "dynamic.onnx")
    err = build_fails(capsys, tmp_path, path)
    assert "input 'x' has dynamic shape [1,?]" in err and "--input-shape x:1xN" in err


def test_dynamic_shape_with_input_shape_builds(tmp_path):
    model = tiny_model(dims=(1, 4))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "width"
    path = save(model, tmp_path / "dynamic.onnx")
    assert run_cli("build", path, "--input-shape", "x:1x7", "--precision", "fp32", "-o", tmp_path / "dyn.so", "-q") == 0
    assert (tmp_path / "dyn.so").exists()


def test_input_shape_for_unknown_input(capsys, tmp_path):
    assert "names no input" in build_fails(capsys, tmp_path, EXAMPLE_MODEL, "--input-shape", "nope:1x1")


def test_unknown_target(capsys, tmp_path):
    err = build_fails(capsys, tmp_path, EXAMPLE_MODEL, "--target", "pdp11")
    assert "unknown target 'pdp11'" in err and "rpi4" in err


def test_missing_cross_compiler(capsys, tmp_path):
    preset = tmp_path / "board.toml"
    preset.write_text('cc = "no-such-aarch64-g++"\n'
                      'target = { kind = "llvm", mtriple = "aarch64-linux-gnu", mcpu = "cortex-a72" }\n')
    err = build_fails(capsys, tmp_path, EXAMPLE_MODEL, "--target", preset)
    assert "cross compiler 'no-such-aarch64-g++'" in err and "apt-get install g++-aarch64-linux-gnu" in err


def test_run_without_sidecar(capsys, tmp_path):
    library = tmp_path / "lonely.so"
    library.write_bytes(b"\x7fELF")
    assert run_cli("run", library, "-i", tmp_path / "x.npy") == 2
    assert "sidecar" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["input", "input:1xAx3", "input:0x3", ":1x3"])
def test_malformed_input_shape(capsys, tmp_path, bad):
    assert "expected NAME:DIMS" in build_fails(capsys, tmp_path, EXAMPLE_MODEL, "--input-shape", bad)


def test_int8_without_calibration_data(capsys, tmp_path):
    err = build_fails(capsys, tmp_path, EXAMPLE_MODEL, precision="int8")
    assert "INT8 needs calibration data" in err


def test_missing_calibration_data(capsys, tmp_path):
    err = build_fails(capsys, tmp_path, EXAMPLE_MODEL, "--calib", tmp_path / "nothing", precision="int8")
    assert "calibration data not found" in err


def test_calibration_array_of_wrong_shape(capsys, tmp_path):
    import numpy as np

    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 3), np.float32))
    err = build_fails(capsys, tmp_path, EXAMPLE_MODEL, "--calib", tmp_path / "calib.npy", precision="int8")
    assert "does not fit input 'image'" in err


def test_bad_option_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("build", EXAMPLE_MODEL, "--calibration", "bogus")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'bogus'" in err


def test_missing_evaluation_data(capsys, tmp_path):
    assert run_cli("eval", EXAMPLE_MODEL, "--data", tmp_path / "none", "--labels", tmp_path / "l.npy") == 2
    assert "evaluation data not found" in capsys.readouterr().err


def test_a_missing_labels_file_is_named_as_missing(capsys, tmp_path):
    # a .txt that is not there is not taken for text labels (which would ask for a recognizer's character list)
    assert run_cli("eval", EXAMPLE_MODEL, "--data", tmp_path, "--labels", tmp_path / "synsets.txt") == 2
    err = capsys.readouterr().err
    assert "labels file not found" in err and "synsets.txt" in err and err.count("\n") == 1


@pytest.mark.skipif(targets.host_has_amx(), reason="this machine's CPU has AMX")
def test_tuning_for_a_cpu_with_instructions_this_one_lacks_is_one_line(capsys):
    assert run_cli("tune", EXAMPLE_MODEL, "--target", "x86-amx", "--precision", "fp32") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "amx-int8" in err and "which this machine's CPU lacks" in err, err
