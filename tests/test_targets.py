"""Target presets and --target parsing."""

import json

import pytest

from qcompile import targets
from qcompile.errors import QcompileError


def test_every_preset_is_a_valid_tvm_target():
    names = targets.preset_names()
    assert {"x86", "x86-avx2", "arm64", "rpi4", "rpi5", "jetson-orin", "cuda"} <= set(names)
    for spec in targets.load_presets():
        assert spec.tvm_target().kind.name == spec.kind


def test_x86_preset_names_this_machines_cpu():
    from tvm.target import codegen

    assert targets.resolve("x86").target["mcpu"] == codegen.llvm_get_system_cpu()


def test_arm_presets_cross_compile_for_aarch64():
    for name in ("arm64", "rpi4", "rpi5", "jetson-orin", "arm64-i8mm"):
        spec = targets.resolve(name)
        assert spec.target["mtriple"] == "aarch64-linux-gnu" and spec.cc == "aarch64-linux-gnu-g++"
    assert "+dotprod" in targets.resolve("rpi5").target["mattr"]
    assert "+dotprod" not in targets.resolve("rpi4").target["mattr"]
    assert "+i8mm" in targets.resolve("arm64-i8mm").target["mattr"]
    assert "+i8mm" not in targets.resolve("rpi5").target["mattr"]  # Cortex-A76: sdot, no smmla


def test_cuda_arch_override():
    assert targets.resolve("cuda:sm_80").target["arch"] == "sm_80"
    with pytest.raises(QcompileError, match="unknown CUDA arch"):
        targets.resolve("cuda:ampere")


def test_raw_target_dict():
    spec = targets.resolve(json.dumps({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55"}))
    assert spec.cc == "aarch64-linux-gnu-g++"


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"kind": "opencl"}', "kind must be"),
    ('{"kind": "llvm", "mcpu": "pentium9000"}', "knows no CPU"),
    ("missing.toml", "not found"),
])
def test_bad_targets_are_rejected(text, message):
    with pytest.raises(QcompileError, match=message):
        targets.resolve(text)
