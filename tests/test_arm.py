"""Cross-compiled ARM builds run under qemu-aarch64 through the deploy kit, and match the x86 build."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import qcompile
from conftest import calibration_args, free_port, model_path, real_inputs, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("qemu-aarch64-static") is None,
    reason="needs g++-aarch64-linux-gnu and qemu-user-static (setup.sh installs them)",
)]
QEMU = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"]


@pytest.fixture(scope="module")
def mobilenet_builds(tmp_path_factory):
    """MobileNet for rpi4 and rpi5 (with deploy kits) and for x86 with the same int8 activations, FP32 and INT8;
    INT8 for an i8mm CPU (arm64-i8mm)."""
    out = tmp_path_factory.mktemp("arm")
    calib = calibration_args("mobilenet", 16)
    builds = {}
    for target in ("rpi4", "rpi5", "arm64-i8mm", "x86"):
        for precision in ("fp32", "int8") if target != "arm64-i8mm" else ("int8",):
            name = f"{target}_{precision}"
            args = ["build", model_path("mobilenet"), "--target", target, "--precision", precision, "-q",
                    "-o", out / f"{name}.so", *calib]
            if target == "x86":
                # int8 activations as the ARM presets use, so the integers can match; untuned, so that the float
                # tail (dequantize, softmax) is lowered as on ARM and rounds the same
                args += ["--activation-dtype", "int8", "--untuned"]
            else:
                args += ["--bundle", out / name]
            assert run_cli(*args) == 0
            builds[name] = out / (name if target != "x86" else f"{name}.so")
    return builds


def run_under_qemu(kit, cpu, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([*QEMU, "-cpu", cpu, str(kit / "qcompile-runner"), str((kit / "model.so").resolve()),
                             str(tmp_path / "y"), str(tmp_path / "x.npy")], capture_output=True, text=True,
                            timeout=600)
    return result, (np.load(tmp_path / "y0.npy") if result.returncode == 0 else None)


@pytest.mark.parametrize("target, cpu", [("rpi4", "cortex-a72"), ("rpi5", "cortex-a76")])
def test_int8_arm_build_computes_the_integers_of_the_x86_build(mobilenet_builds, target, cpu, tmp_path):
    x86 = qcompile.load(mobilenet_builds["x86_int8"])
    for x in real_inputs("mobilenet", 2, start=300):
        result, y = run_under_qemu(mobilenet_builds[f"{target}_int8"], cpu, x, tmp_path)
        assert result.returncode == 0, result.stderr
        # the same integers; the float tail (the classifier's dequantize epilogue, in rpi5's sdot template and in
        # x86's generic kernel) may round differently in the last bits: 1e-5 relative, where one integer step of
        # the logits moves the probabilities by percents
        np.testing.assert_allclose(y, x86(x)[0], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("target, cpu", [("rpi4", "cortex-a72"), ("rpi5", "cortex-a76")])
def test_fp32_arm_build_matches_x86(mobilenet_builds, target, cpu, tmp_path):
    x86 = qcompile.load(mobilenet_builds["x86_fp32"])
    for x in real_inputs("mobilenet", 2, start=400):
        result, y = run_under_qemu(mobilenet_builds[f"{target}_fp32"], cpu, x, tmp_path)
        assert result.returncode == 0, result.stderr
        reference = x86(x)[0]
        np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_rpi5_int8_uses_dot_product_instructions(mobilenet_builds):
    listing = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(mobilenet_builds["rpi5_int8"] / "model.so")],
                             capture_output=True, text=True, check=True).stdout
    assert "sdot" in listing


def test_rpi5_int8_build_is_not_for_a_cortex_a72(mobilenet_builds, tmp_path):
    """The dot-product instructions are really the board's: a Pi 4's CPU cannot run them."""
    x = real_inputs("mobilenet", 1)[0]
    result, _ = run_under_qemu(mobilenet_builds["rpi5_int8"], "cortex-a72", x, tmp_path)
    assert result.returncode != 0


def test_i8mm_build_computes_the_sdot_builds_outputs_bit_for_bit(mobilenet_builds, tmp_path):
    for x in real_inputs("mobilenet", 2, start=500):
        result, y = run_under_qemu(mobilenet_builds["arm64-i8mm_int8"], "max", x, tmp_path)  # qemu's max has i8mm
        assert result.returncode == 0, result.stderr
        sdot, reference = run_under_qemu(mobilenet_builds["rpi5_int8"], "cortex-a76", x, tmp_path)
        assert sdot.returncode == 0, sdot.stderr
        np.testing.assert_array_equal(y, reference)


def test_i8mm_build_multiplies_with_smmla_which_a_cortex_a76_cannot_run(mobilenet_builds, tmp_path):
    kit = mobilenet_builds["arm64-i8mm_int8"]
    listing = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(kit / "model.so")], capture_output=True,
                             text=True, check=True).stdout
    assert "smmla" in listing and "sdot" not in listing
    result, _ = run_under_qemu(kit, "cortex-a76", real_inputs("mobilenet", 1)[0], tmp_path)
    assert result.returncode != 0  # the Pi 5's CPU has sdot, not i8mm


def test_deploy_kit_holds_runtime_runner_and_readme(mobilenet_builds):
    kit = mobilenet_builds["rpi4_int8"]
    names = {p.relative_to(kit).as_posix() for p in kit.rglob("*")}
    assert {"model.so", "model.json", "qcompile-runner", "qcompile-rpc-server", "src/runner.cc", "src/rpc_server.cc",
            "README.md", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"} <= names
    elf_header = (kit / "lib" / "libtvm_runtime.so").read_bytes()[:20]
    assert elf_header[:4] == b"\x7fELF" and int.from_bytes(elf_header[18:20], "little") == 183  # EM_AARCH64
    readme = (kit / "README.md").read_text()
    assert "glibc" in readme and "pip install apache-tvm==" in readme


@pytest.mark.parametrize("name", ["rpi4_fp32", "rpi5_int8"])
def test_arm_builds_were_verified_under_qemu_before_they_were_written(mobilenet_builds, name):
    verification = json.loads((mobilenet_builds[name] / "model.json").read_text())["verification"]
    assert verification["verified"] and "qemu" in verification["ran"]
    (probs,) = verification["outputs"]
    assert probs["cosine"] > (0.9999 if name.endswith("fp32") else 0.99)


def test_loading_an_arm_library_on_x86_says_why_it_cannot_run(mobilenet_builds):
    with pytest.raises(qcompile.QcompileError, match="built for aarch64-linux-gnu"):
        qcompile.load(mobilenet_builds["rpi4_int8"] / "model.so")



def test_rpc_round_trip_to_an_aarch64_server_under_qemu(mobilenet_builds, tmp_path):
    """The kit's RPC server runs as aarch64 code under qemu on loopback; the host uploads, runs, gets outputs; the
    server removes what was uploaded when it exits."""
    kit = mobilenet_builds["rpi4_int8"]
    port = free_port()
    work_folders = set(Path("/tmp").glob("qcompile-rpc-*"))
    server = subprocess.Popen([*QEMU, "-cpu", "cortex-a72", str(kit / "qcompile-rpc-server"), "--host", "127.0.0.1",
                               "--port", str(port), "--once"], stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in server.stdout.readline()
        x = real_inputs("mobilenet", 1, start=600)[0]
        np.save(tmp_path / "x.npy", x)
        assert run_cli("run", kit / "model.so", "--rpc", f"127.0.0.1:{port}", "-i", tmp_path / "x.npy",
                       "-o", tmp_path / "y.npz") == 0
        remote = np.load(tmp_path / "y.npz")["probs"]
        # what the same library computes run on the board itself (the x86 build's floats may differ in the last
        # bits: test_int8_arm_build_computes_the_integers_of_the_x86_build)
        result, local = run_under_qemu(kit, "cortex-a72", x, tmp_path)
        assert result.returncode == 0, result.stderr
        np.testing.assert_array_equal(remote, local)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert set(Path("/tmp").glob("qcompile-rpc-*")) == work_folders


def test_unreachable_rpc_server_is_one_line(mobilenet_builds, capsys):
    assert run_cli("run", mobilenet_builds["rpi4_int8"] / "model.so", "--rpc", f"127.0.0.1:{free_port()}",
                   "-i", "x.npy") == 2
    assert "cannot reach the RPC server" in capsys.readouterr().err


def test_bench_times_both_precisions_on_the_board_over_rpc(mobilenet_builds, tmp_path):
    """The benchmark's table, measured through RPC on the aarch64 server (emulated: the numbers mean nothing)."""
    import json

    examples = Path(__file__).resolve().parents[1] / "examples"
    kit = mobilenet_builds["rpi4_int8"]
    port = free_port()
    server = subprocess.Popen([*QEMU, "-cpu", "cortex-a72", str(kit / "qcompile-rpc-server"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in server.stdout.readline()
        assert run_cli("bench", examples / "tiny_cnn.onnx", "--target", "rpi4", "--rpc", f"127.0.0.1:{port}",
                       "--calib", examples / "samples.npz", "--repeat", 3, "--warmup", 1, "-q",
                       "--output", tmp_path / "board.json") == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = json.loads((tmp_path / "board.json").read_text())
    assert [(r["target"], r["precision"]) for r in rows] == [("rpi4", "fp32"), ("rpi4", "int8")]
    assert all(0 < r["min ms"] <= r["median ms"] for r in rows)
