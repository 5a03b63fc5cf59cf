"""AMX-INT8 kernels (the x86-amx target): on every CPU, their integers with the tile instructions emulated in C
(`amx_emulator.c`: the kernels' tiles, strides and tile configuration) and the instructions in the code of an
x86-amx build; on a CPU with AMX, the real instructions against the emulated integers' reference."""

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import te

import qcompile
from conftest import calibration_args, model_path, real_inputs, run_cli
from qcompile import targets
from qcompile.lower import amx, intrinsics
from qcompile.lower.kernels import PACKINGS
from qcompile.lower.passes.pack_conv import _conv_blocked, input_block, pack_kernel
from test_conv_templates import _blocked, _reference

HOST = targets.resolve("x86")
LANES = amx.LANES
SCALE = 2.0 ** -7  # a power of two: the epilogue's floats are exact, fused or not


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The emulated instructions, loaded so that kernels calling them find them."""
    library = tmp_path_factory.mktemp("amx") / "libamx_emulator.so"
    subprocess.run([shutil.which("cc") or "gcc", "-O2", "-shared", "-fPIC", "-o", str(library),
                    str(Path(__file__).with_name("amx_emulator.c"))], check=True)
    return ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def _case(in_c, size, stride, pad, width, residual):
    """(kernel module, its arguments, the expected output) of an in_c → 64 channel conv as lowering packs it for
    AMX (input blocks of `input_block` channels), with a requantize epilogue adding a residual, or none."""
    rng = np.random.default_rng(in_c + size + stride)
    block = input_block(in_c, LANES, row=64)
    padded_c = -(-in_c // block) * block
    data = np.zeros((1, padded_c, width, width), np.uint8)
    data[:, :in_c] = rng.integers(0, 256, (1, in_c, width, width))
    kernel = rng.integers(-128, 128, (LANES, in_c, size, size)).astype(np.int8)
    acc = _reference(data[:, :in_c], kernel, stride, pad)
    placeholder = te.placeholder((1, padded_c // block, width, width, block), "uint8", name="data")
    weights = te.placeholder((1, padded_c // 4, size, size, 1, LANES, 4), "int8", name="weight")
    out = _conv_blocked(placeholder, weights, (stride, stride), (pad,) * 4, (1, 1))
    args = [_blocked(data, block), pack_kernel(kernel, PACKINGS[intrinsics.AMX])]
    expected = _blocked(acc, LANES)
    if residual:
        other = te.placeholder(out.shape, "uint8", name="other")
        out = te.compute(out.shape, lambda *i: te.max(te.min(te.floor(
            out(*i).astype("float32") * SCALE + other(*i).astype("float32") * 0.5 + 0.5), 255.0), 0.0).astype("uint8"))
        residual_nchw = rng.integers(0, 256, acc.shape).astype(np.uint8)
        args.append(_blocked(residual_nchw, LANES))
        requantized = np.floor(acc.astype(np.float32) * SCALE + residual_nchw.astype(np.float32) * 0.5 + 0.5)
        expected = _blocked(np.clip(requantized, 0, 255).astype(np.uint8), LANES)
        func = te.create_prim_func([placeholder, weights, other, out])
    else:
        func = te.create_prim_func([placeholder, weights, out])
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), args, expected


@pytest.mark.parametrize("in_c,size,stride,pad,width,residual", [
    (128, 3, 1, 1, 14, True),  # 64-channel input rows, 14-pixel tiles
    (48, 1, 1, 0, 32, False),  # a 48-channel block: a shorter K; two 16-pixel tiles
    (96, 3, 2, 1, 14, True),  # stride 2: input rows two pixels apart; two 48-channel blocks
    (3, 3, 2, 0, 15, False),  # an image's 3 channels: one group of 4, its loop of one; 7-pixel rows
], ids=["3x3-64c-residual", "1x1-48c", "3x3-stride2-96c-residual", "3x3-stride2-3c"])
def test_every_amx_register_tile_computes_the_conv_with_the_instructions_emulated(
        emulator, in_c, size, stride, pad, width, residual):
    mod, args, expected = _case(in_c, size, stride, pad, width, residual)
    schedules = amx.candidates(mod, emulate=True)
    assert len(schedules) >= 2
    for sch in schedules:
        library = tvm.tirx.build(sch.mod, target=HOST.tvm_target())
        out = tvm.runtime.tensor(np.zeros(expected.shape, expected.dtype))
        library["main"](*[tvm.runtime.tensor(a) for a in args], out)
        np.testing.assert_array_equal(out.numpy(), expected)


def test_the_amx_tile_configuration_matches_the_tiles_shapes():
    config = amx.Tile(rows=14, pixel_tiles=2, lane_tiles=2, groups=12).config()
    data = b"".join(word.to_bytes(8, "little") for word in config)
    assert data[0] == 1 and data[1:16] == bytes(15)  # palette 1, no restart row
    widths = [int.from_bytes(data[16 + 2 * t:18 + 2 * t], "little") for t in range(16)]
    assert widths == [64] * 4 + [48] * 2 + [64] * 2 + [0] * 8  # sums: 16 int32; inputs: 12 groups of 4 bytes
    assert list(data[48:64]) == [14] * 6 + [12] * 2 + [0] * 8  # weights: one row per group


def _patched_for_amx(monkeypatch):
    """This machine's target lowered as an AMX target, the tile instructions emulated."""
    for_target, register = intrinsics.for_target, amx.register
    monkeypatch.setattr(intrinsics, "for_target", lambda target, tiles=True: (
        intrinsics.AMX if tiles and target.kind.name == "llvm" else for_target(target, tiles)))
    monkeypatch.setattr(amx, "register", lambda tile, emulate=False: register(tile, True))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet", "squeezenet"])
def test_an_amx_build_computes_the_integers_of_the_host_build_with_the_instructions_emulated(
        emulator, monkeypatch, name):
    """The whole model: input blocks of 3 to 64 channels, 64-lane outputs feeding depthwise convs and concats."""
    from tvm.runtime.vm import VirtualMachine

    from qcompile import driver
    from qcompile.lower import compiler

    request = driver.CompileRequest(model=model_path(name), target=HOST, precision="int8",
                                    calib=_calibration(name))
    mod = driver.lower_model(request).mod

    def run(executable, x):
        return VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    host = compiler.compile_kernels(compiler.lower_kernels(mod, HOST), HOST)
    with monkeypatch.context() as patch:
        _patched_for_amx(patch)
        kernels = compiler.lower_kernels(mod, HOST)
        convs = [gv.name_hint for gv, f in kernels.functions_items() if "conv2d_NCHWc_int8" in gv.name_hint]
        kernels = compiler.schedule_defaults(kernels, HOST)
        # every conv on AMX's tiles, but MobileNet's classifier (a 1×1 output: one pixel a row) on the host's dot
        # product (VNNI's vpdpbusd, else AVX2's vpmaddwd)
        kinds = ["amx" if "qcompile_amx_tdpbusd" in code else "dot" if "vpdpbusd" in code or "pmadd.wd" in code
                 else "untensorized" for code in (kernels[conv].script() for conv in convs)]
        assert kinds.count("amx") == len(convs) - (name == "mobilenet") and kinds.count("dot") == (name == "mobilenet")
        emulated = compiler.compile_kernels(kernels, HOST)
    for x in real_inputs(name, 2, start=400):
        np.testing.assert_allclose(run(emulated, x), run(host, x), rtol=1e-5, atol=1e-7)


def _calibration(name):
    from qcompile.data.calibdata import DataSource
    from qcompile.data.datasets import PREPROCESS_PRESETS

    args = calibration_args(name, 8)
    return DataSource(path=args[1], count=8, preprocess=PREPROCESS_PRESETS[args[-1]])


@pytest.mark.slow
def test_an_x86_amx_build_has_tile_instructions_and_runs_only_where_the_cpu_has_amx(tmp_path):
    library = tmp_path / "squeezenet_amx.so"
    assert run_cli("build", model_path("squeezenet"), "--target", "x86-amx", "-o", library, "-q",
                   *calibration_args("squeezenet", 8)) == 0
    code = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "ldtilecfg" in code and "tdpbusd" in code and "tilestored" in code
    if not targets.host_has_amx():
        with pytest.raises(qcompile.QcompileError, match="built for a CPU with .*amx-int8.*this machine's lacks"):
            qcompile.load(library)  # one line, not an illegal instruction
        pytest.skip("this machine's CPU has no AMX: the x86-amx build is checked, not run")
    assert targets.request_amx_permission()
    # on an AMX CPU the real instructions compute what the host build (VNNI or AVX2 kernels) computes
    host = tmp_path / "squeezenet_host.so"
    assert run_cli("build", model_path("squeezenet"), "--target", "x86-avx2", "-o", host, "-q",
                   *calibration_args("squeezenet", 8)) == 0
    for x in real_inputs("squeezenet", 2, start=400):
        np.testing.assert_allclose(qcompile.load(library)(x)[0], qcompile.load(host)(x)[0], rtol=1e-5, atol=1e-7)


def test_the_amx_self_check_runs_where_the_cpu_has_amx():
    if not targets.host_has_amx():
        pytest.skip("this machine's CPU has no AMX")
    result = subprocess.run([sys.executable, "-m", "qcompile.lower.amx"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert amx.trusted()


def test_tuning_records_of_amx_and_vnni_cpus_never_stand_in_for_each_other(monkeypatch):
    from qcompile.tune import records

    monkeypatch.setattr(amx, "trusted", lambda: True)  # as on a machine where AMX is used (or none, like this one)
    amx_cpu, vnni_cpu, other_vnni_cpu = ({"kind": "llvm", "mcpu": cpu} for cpu in
                                         ("sapphirerapids", "cascadelake", "icelake-server"))
    assert records._compatible(vnni_cpu, other_vnni_cpu)
    assert not records._compatible(amx_cpu, vnni_cpu) and not records._compatible(vnni_cpu, amx_cpu)
