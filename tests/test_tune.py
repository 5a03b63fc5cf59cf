"""`qcompile tune` on one small int8 convolution: records stored, reused by build, tensorized with VNNI."""

import json
import os

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from conftest import run_cli
from qcompile.tune import search as tune
from qcompile import driver, targets
from qcompile.lower import intrinsics
from qcompile.tune import records, transfer
from qcompile.data.calibdata import DataSource
from qcompile.lower.passes import pack_conv
from qcompile.progress import Reporter
from qcompile.tune.records import RecordSource

TRIALS = 12  # a handful: enough for every kernel of the model to get a measured, tensorized schedule
# the VNNI kernels these tests are about: this machine's preset, less AMX's tiles where its CPU has them
TARGET = "x86" if not targets.host_has_amx() else json.dumps(
    {**targets.resolve("x86").target, "mattr": ["-amx-int8", "-amx-tile"]})

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not tvm.target.codegen.target_has_features("avx512vnni", targets.resolve(TARGET).tvm_target()),
    reason="this machine's CPU has no AVX-512 VNNI")]


def _write_conv_model(folder, activation="Relu"):
    """Conv 16→32 3×3 + `activation` on 1×16×28×28, random weights (the same for every activation)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32), "w"),
               numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node(activation, ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])], weights)
    model = folder / f"conv_{activation.lower()}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    return model


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    """The conv model with a ReLU, and 8 random calibration inputs."""
    folder = tmp_path_factory.mktemp("conv")
    calib = folder / "calib.npy"
    np.save(calib, np.random.default_rng(3).standard_normal((8, 1, 16, 28, 28)).astype(np.float32))
    return _write_conv_model(folder), calib


@pytest.fixture(scope="module")
def tuned(conv_model, tmp_path_factory):
    """The conv model tuned for TRIALS trials into a fresh tuning_logs root: (model, calib, records folder)."""
    model, calib = conv_model
    root = tmp_path_factory.mktemp("tuning_logs")
    log = root / "conv"
    assert run_cli("tune", model, "--target", TARGET, "--calib", calib, "--trials", TRIALS, "--batch", 4,
                   "--tuning-log", log) == 0
    return model, calib, log


def _config(model, calib, records=RecordSource()):
    return driver.CompileRequest(model=model, target=targets.resolve(TARGET), calib=DataSource(calib, count=8),
                                records=records)


def _outputs(executable, x):
    return relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_tune_stores_a_metaschedule_database_with_its_target(tuned):
    _, _, log = tuned
    assert records.count(log) >= TRIALS
    assert (log / records.WORKLOADS).stat().st_size > 0
    assert json.loads((log / "target.json").read_text())["target"] == targets.resolve(TARGET).target


def _stored(folder):
    """The records of a JSON database folder: [workload index, [trace, run seconds, ...]] each."""
    return [json.loads(line) for line in (folder / records.RECORDS).read_text().splitlines()]


def test_tune_re_times_the_best_schedules_cold_with_the_hand_written_ones(tuned):
    _, _, log = tuned
    picks = _stored(log / records.PICKS)
    # the conv's 4 best of the search and its register-tiled templates (which tensorize into local sums)
    templates = [r for r in picks if intrinsics.VNNI_LOCAL in json.dumps(r[1][0])]
    assert len(picks) > len(templates) > 0
    assert all(len(r[1][1]) == 10 and 0 < min(r[1][1]) < 1 for r in picks)  # ten single runs each
    assert not any(intrinsics.VNNI_LOCAL in json.dumps(r[1][0]) for r in _stored(log))


def test_build_takes_a_kernels_pick_before_the_searchs_best(tuned, tmp_path):
    model, calib, log = tuned
    spec = targets.resolve(TARGET)
    target = spec.tvm_target()
    copy = _copy_of_records(log, tmp_path)
    mod = driver.lower_model(_config(model, calib)).mod
    from qcompile.lower import compiler, conv_templates
    from tvm.s_tir import meta_schedule as ms

    kernels = [tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
               for _, func in compiler.lower_kernels(mod, spec).functions_items()
               if isinstance(func, tvm.tirx.PrimFunc)]
    vnni = conv_templates.REGISTER_FILES[intrinsics.VNNI]
    conv, template = next((kernel, found[0]) for kernel in kernels if (found := vnni.candidates(kernel)))
    picks = records.open_database(copy / records.PICKS, spec, create=True)
    # timed a second: slower than anything the search stored, and still what the build takes, as picks are
    # timed cold and never compared with the search's warm times
    picks.commit_tuning_record(ms.database.TuningRecord(
        template.trace, picks.commit_workload(conv), [1.0], target, ms.arg_info.ArgInfo.from_prim_func(conv["main"])))
    assert str(records.load(copy, spec).query_tuning_record(conv, target, "main").trace) == str(template.trace)
    search_best = records.open_database(copy, spec, create=False).query_tuning_record(conv, target, "main")
    assert str(search_best.trace) != str(template.trace)


def test_tuned_records_are_applied_to_every_kernel(tuned):
    model, calib, log = tuned
    mod = driver.lower_model(_config(model, calib)).mod
    spec = targets.resolve(TARGET)
    from qcompile.lower import compiler

    kernels = compiler.lower_kernels(mod, spec)
    _, found, total = records.apply(kernels, records.open_database(log, spec, create=False), spec.tvm_target())
    assert total > 0 and found == total


def test_build_from_the_log_runs_the_conv_on_vpdpbusd_and_computes_the_default_builds_integers(tuned):
    model, calib, log = tuned
    tuned_exe = driver.compile_model(_config(model, calib, RecordSource(folder=log))).executable
    default_exe = driver.compile_model(_config(model, calib)).executable
    assert "vpdpbusd" in tuned_exe.mod.imports[0].inspect_source("asm")
    x = np.random.default_rng(1).standard_normal((1, 16, 28, 28)).astype(np.float32)
    # same integers; the final dequantize multiply may round differently once vectorized (which is faster is
    # benchmarks/latency.py's question: the default schedules are tensorized templates too)
    np.testing.assert_allclose(_outputs(tuned_exe, x), _outputs(default_exe, x), rtol=1e-6, atol=1e-6)


def test_build_finds_records_under_the_tuning_logs_root(tuned, tmp_path, capsys):
    model, calib, log = tuned
    sidecar_config = _config(model, calib)
    sidecar = driver.lower_model(sidecar_config).sidecar
    folder = records.folder(tmp_path, model, sidecar.model_sha256, sidecar.precision, sidecar_config.target)
    folder.parent.mkdir(parents=True)
    folder.symlink_to(log, target_is_directory=True)
    found = driver.find_records(_config(model, calib, RecordSource(roots=(tmp_path,))), sidecar, Reporter())
    assert found is not None
    assert str(folder) in capsys.readouterr().err


def _records_measured_on(log, root, model, sidecar, mcpu):
    """A copy of `log` under `root` as if tuned on the x86 CPU `mcpu`: its folder and its target.json."""
    spec = targets.resolve(json.dumps({"kind": "llvm", "mcpu": mcpu}))
    folder = records.folder(root, model, sidecar.model_sha256, sidecar.precision, spec)
    folder.mkdir(parents=True)
    for name in (records.WORKLOADS, records.RECORDS):
        (folder / name).write_bytes((log / name).read_bytes())
    records.write_target(folder, spec)
    return folder


def test_build_falls_back_to_records_of_another_vnni_cpu(tuned, tmp_path, capsys):
    model, calib, log = tuned
    config = _config(model, calib, RecordSource(roots=(tmp_path,)))
    sidecar = driver.lower_model(config).sidecar
    other = "cascadelake" if config.target.target["mcpu"] != "cascadelake" else "sapphirerapids"
    folder = _records_measured_on(log, tmp_path, model, sidecar, other)
    assert driver.find_records(config, sidecar, Reporter()) is not None
    err = capsys.readouterr().err
    assert "measured on a compatible target" in err and str(folder) in err


def test_build_ignores_records_of_a_cpu_without_vnni(tuned, tmp_path, capsys):
    model, calib, log = tuned
    config = _config(model, calib, RecordSource(roots=(tmp_path,)))
    sidecar = driver.lower_model(config).sidecar
    _records_measured_on(log, tmp_path, model, sidecar, "haswell")  # AVX2 only: its schedules name no vpdpbusd
    assert driver.find_records(config, sidecar, Reporter()) is None
    assert "no tuning records" in capsys.readouterr().err


def _copy_of_records(log, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in (records.WORKLOADS, records.RECORDS, "target.json"):
        (copy / name).write_bytes((log / name).read_bytes())
    return copy


def test_tune_again_continues_from_the_stored_records_and_stops_on_time(tuned, tmp_path, capsys):
    model, calib, log = tuned
    copy = _copy_of_records(log, tmp_path)
    before = records.count(copy)
    # a budget of under a second ends the run after its first batch
    assert run_cli("tune", model, "--target", TARGET, "--calib", calib, "--trials", 100, "--batch", 4,
                   "--minutes", 0.01, "--tuning-log", copy) == 0
    out = capsys.readouterr()
    assert f"continuing from {before} stored" in out.err
    assert "stopped early" in out.out
    assert before < records.count(copy) < before + 100


def test_tune_untuned_only_leaves_kernels_that_have_records(tuned, tmp_path, capsys):
    model, calib, log = tuned
    copy = _copy_of_records(log, tmp_path)
    before = records.count(copy)
    assert run_cli("tune", model, "--target", TARGET, "--calib", calib, "--trials", 100, "--batch", 4, "--untuned-only",
                   "--tuning-log", copy) == 0
    assert "every kernel has a tuning record" in capsys.readouterr().err
    assert records.count(copy) == before


def test_tune_gives_a_kernel_with_no_record_the_schedule_of_a_same_shaped_kernel(tuned, tmp_path, capsys,
                                                                                  monkeypatch):
    model, calib, log = tuned
    # the conv's input as an earlier qcompile laid it out, NCHW4c: same parameters, other indices, no record
    monkeypatch.setattr(pack_conv, "input_block", lambda channels, oc_block, depth=4, row=None: depth)
    _assert_tune_transfers_a_schedule(model, calib, log, tmp_path, capsys)


def test_tune_gives_a_kernel_with_another_epilogue_the_schedule_of_the_same_conv(tuned, tmp_path, capsys):
    _, calib, log = tuned
    # the tuned conv followed by a sigmoid, which stays FP32: the conv's epilogue dequantizes instead of
    # requantizing, so the kernel has other blocks after the same conv
    model = _write_conv_model(tmp_path, "Sigmoid")
    _assert_tune_transfers_a_schedule(model, calib, log, tmp_path, capsys)


def _assert_tune_transfers_a_schedule(model, calib, log, tmp_path, capsys):
    """`tune --untuned-only` on a copy of `log` gives the model's conv a stored schedule without searching, and
    the build with it has `vpdpbusd` and computes what the untuned build does."""
    copy = _copy_of_records(log, tmp_path)
    before = records.count(copy)
    assert run_cli("tune", model, "--target", TARGET, "--calib", calib, "--trials", 100, "--untuned-only",
                   "--tuning-log", copy) == 0
    err = capsys.readouterr().err
    assert "1 of them got a record from a same-shaped kernel's schedule" in err
    assert "every kernel has a tuning record" in err  # so no search was needed
    assert before < records.count(copy) <= before + transfer.CANDIDATES
    transferred_exe = driver.compile_model(_config(model, calib, RecordSource(folder=copy))).executable
    untuned_exe = driver.compile_model(_config(model, calib)).executable
    assert "vpdpbusd" in transferred_exe.mod.imports[0].inspect_source("asm")
    x = np.random.default_rng(1).standard_normal((1, 16, 28, 28)).astype(np.float32)
    # the replayed schedule computes the new kernel: the untuned kernel's outputs
    np.testing.assert_allclose(_outputs(transferred_exe, x), _outputs(untuned_exe, x), rtol=1e-6, atol=1e-6)


def test_bench_compares_tuned_with_untuned_builds(tuned, tmp_path):
    model, calib, log = tuned
    assert run_cli("bench", model, "--target", TARGET, "--precision", "int8", "--calib", calib, "--calib-count", 8,
                   "--tuning-log", log, "--compare", "untuned", "--repeat", 5, "-q",
                   "--output", tmp_path / "t.json") == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    kernels = [r["tuned kernels"] for r in rows]
    assert kernels[1] == "untuned" and kernels[0].split("/")[0] == kernels[0].split("/")[1] != "0"


def test_bench_times_a_second_records_folder_for_the_precision_it_holds(tuned, tmp_path):
    model, calib, log = tuned
    assert run_cli("bench", model, "--target", TARGET, "--precision", "fp32,int8", "--calib", calib,
                   "--calib-count", 8, "--untuned", "--compare-tuning-log", log, "--repeat", 3, "-q",
                   "--output", tmp_path / "t.json") == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    # the log holds int8 records only: its FP32 build found none and is left out
    assert [(r["precision"], r["tuned kernels"]) for r in rows] == [
        ("fp32", "untuned"), ("int8", "untuned"), ("int8", f"{rows[2]['tuned kernels'].split()[0]} (conv)")]
    found, total = rows[2]["tuned kernels"].split()[0].split("/")
    assert found == total != "0"
    assert rows[2]["speedup vs FP32"] == pytest.approx(rows[0]["median ms"] / rows[2]["median ms"])


def test_tune_measures_on_a_board_behind_an_rpc_tracker(conv_model, tracker_with_board, tmp_path):
    model, calib = conv_model
    assert run_cli("tune", model, "--target", TARGET, "--calib", calib, "--trials", 4, "--batch", 4,
                   "--tuning-log", tmp_path, "--rpc-tracker", f"127.0.0.1:{tracker_with_board}",
                   "--rpc-key", "test-board") == 0
    assert records.count(tmp_path) >= 4


@pytest.mark.parametrize("cores", [1, 2])
def test_tune_measures_candidates_on_the_cores_asked_for(cores):
    # TVM's own default is half the logical CPUs on x86, so on 2 CPUs or more one of the two differs from it;
    # TVM never runs more threads than there are CPUs
    if cores > os.cpu_count():
        pytest.skip(f"this machine has fewer than {cores} CPUs")
    runner = tune._runner(None, cores)
    in_worker = runner.pool.submit(lambda: __import__("tvm").get_global_func("runtime.NumThreads")()).result()
    assert in_worker == cores


def test_tune_for_a_board_without_a_tracker_is_a_one_line_error(conv_model, capsys):
    model, calib = conv_model
    assert run_cli("tune", model, "--target", "rpi5", "--calib", calib) == 2
    err = capsys.readouterr().err
    assert "--rpc-tracker" in err and len(err.strip().splitlines()) == 1


def test_tune_rejects_a_non_positive_budget(conv_model, capsys):
    model, calib = conv_model
    assert run_cli("tune", model, "--target", TARGET, "--calib", calib, "--trials", 0) == 2
    assert "--trials must be positive" in capsys.readouterr().err


def test_tune_writes_into_the_records_root_asked_for(conv_model, tmp_path):
    model, calib = conv_model
    assert run_cli("tune", model, "--target", TARGET, "--calib", calib, "--trials", 4, "--batch", 4,
                   "--records", tmp_path, "-q") == 0
    folders = [p.parent for p in tmp_path.glob("*/int8/*/target.json")]
    assert len(folders) == 1 and records.count(folders[0]) >= 4


@pytest.fixture(scope="module")
def residual_model(tmp_path_factory):
    """Conv → Add(input) → ReLU, its result concatenated with a 1×1 conv of it, averaged: every kind of merge."""
    folder = tmp_path_factory.mktemp("residual")
    rng = np.random.default_rng(2)
    weights = [numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)
               for name, shape in (("w1", (16, 16, 3, 3)), ("b1", (16,)), ("w2", (16, 16, 1, 1)), ("b2", (16,)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c1", "x"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
         helper.make_node("Conv", ["r", "w2", "b2"], ["c2"]), helper.make_node("Concat", ["r", "c2"], ["cat"], axis=1),
         helper.make_node("GlobalAveragePool", ["cat"], ["y"])],
        "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 14, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 1, 1])], weights)
    model = folder / "residual.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    return model


def _kernel_workloads(model, calib) -> set[int]:
    """The structural hashes of the model's kernels as tuning records key them."""
    from qcompile.lower import compiler

    mod = driver.lower_model(_config(model, calib)).mod
    kernels = compiler.lower_kernels(mod, targets.resolve(TARGET))
    return {tvm_ffi.structural_hash(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}))
            for f in kernels.functions.values() if isinstance(f, tvm.tirx.PrimFunc)}


def test_kernel_workloads_do_not_depend_on_the_calibration(residual_model, tmp_path):
    # records tuned with one calibration set must apply to a build calibrated on another: scales and zero points
    # are kernel parameters, not constants folded into the kernels
    x = np.random.default_rng(3).standard_normal((8, 1, 16, 14, 14)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", 3 * x + 1)
    assert _kernel_workloads(residual_model, tmp_path / "a.npy") == _kernel_workloads(residual_model, tmp_path / "b.npy")
