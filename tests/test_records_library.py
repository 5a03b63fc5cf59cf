"""The records library (`qcompile/tune/library.py`): a kernel tuned in one model schedules the same kernel of
another model that has no records of its own, and the result computes what the default schedules compute."""

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi
from onnx import TensorProto, helper, numpy_helper

from qcompile import driver, targets
from qcompile.data.calibdata import DataSource
from qcompile.lower import compiler, conv_templates
from qcompile.runtime import artifact
from qcompile.tune import library, records
from qcompile.tune.records import RecordSource

HOST = targets.resolve("x86")
pytestmark = pytest.mark.skipif(not conv_templates.register_files(HOST.tvm_target()),
                                reason="no packed int8 conv kernel class on this CPU")


def _model(folder, name, pool):
    """Conv 16→32 3×3 + ReLU on 1×16×28×28 (fixed random weights), then a max pool in one of the two models:
    the conv kernels are the same, the models are not."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32), "w"),
               numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r" if pool else "y"])]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2]))
    side = 14 if pool else 28
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, side, side])], weights)
    path = folder / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _request(model, calib, roots=()):
    return driver.CompileRequest(model=model, target=HOST, calib=DataSource(calib, count=8),
                                 records=RecordSource(roots=tuple(roots)))


def _conv_kernel(kernels):
    return next((gvar, func) for gvar, func in kernels.functions_items()
                if isinstance(func, tvm.tirx.PrimFunc) and "conv2d_NCHWc_int8" in gvar.name_hint)


@pytest.fixture(scope="module")
def tuned_elsewhere(tmp_path_factory):
    """A records root whose library holds the conv of model A with a register tile the defaults would not pick
    (a record as `qcompile tune` stores one; its time is the fixture's, not a measurement), and model B, which
    has the same conv kernel."""
    from tvm.s_tir import meta_schedule as ms

    folder = tmp_path_factory.mktemp("models")
    calib = folder / "calib.npy"
    np.save(calib, np.random.default_rng(3).standard_normal((8, 1, 16, 28, 28)).astype(np.float32))
    model_a, model_b = _model(folder, "a", pool=False), _model(folder, "b", pool=True)
    kernels = compiler.lower_kernels(driver.lower_model(_request(model_a, calib)).mod, HOST)
    _, func = _conv_kernel(kernels)
    task = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    file, default = next((f, sch.mod) for f in conv_templates.register_files(HOST.tvm_target())
                         if (sch := conv_templates.default_schedule(task, f)) is not None)
    sch = next(c for c in conv_templates.candidates(task, file)  # a register tile the defaults do not pick
               if not tvm_ffi.structural_equal(c.mod, default))
    root = tmp_path_factory.mktemp("records")
    source = records.folder(root, model_a, "0" * 64, "int8", HOST)
    records.write_target(source, HOST)
    database = records.open_database(source, HOST, create=True)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(task), [1e-4], HOST.tvm_target(),
        ms.arg_info.ArgInfo.from_prim_func(task["main"])))
    assert library.add(library.folder(root, HOST), source, HOST) == 1
    return root, model_b, calib, sch.mod["main"]


def test_a_model_without_records_gets_the_library_schedule_of_its_same_kernel(tuned_elsewhere):
    root, model_b, calib, scheduled = tuned_elsewhere
    kernels = compiler.lower_kernels(driver.lower_model(_request(model_b, calib)).mod, HOST)
    kernels, lent = library.lend(kernels, [root], HOST)
    assert lent == 1
    _, func = _conv_kernel(kernels)
    assert func.attrs["tirx.is_scheduled"]
    tvm.ir.assert_structural_equal(func.with_attr("global_symbol", "main").without_attr("tirx.is_scheduled"),
                                   scheduled)


def test_a_build_with_the_library_computes_what_the_default_schedules_compute(tuned_elsewhere):
    root, model_b, calib, _ = tuned_elsewhere
    lent = driver.compile_model(_request(model_b, calib, [root]))
    default = driver.compile_model(_request(model_b, calib))
    assert lent.sidecar.library_kernels == 1 and default.sidecar.library_kernels == 0
    x = np.random.default_rng(7).standard_normal((1, 16, 28, 28)).astype(np.float32)
    outputs = [artifact.CompiledModel(c.executable, c.sidecar)(x)[0] for c in (lent, default)]
    np.testing.assert_array_equal(outputs[0], outputs[1])  # the same integers, whatever the schedule


def test_untuned_builds_borrow_nothing(tuned_elsewhere):
    _, model_b, calib, _ = tuned_elsewhere
    assert driver.compile_model(_request(model_b, calib, ())).sidecar.library_kernels == 0
