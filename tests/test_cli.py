"""Commands other than build: inspect, targets, help, and a CUDA build without a GPU."""


import qcompile
from conftest import EXAMPLE_MODEL, run_cli


def test_inspect_lists_operators_and_signature(capsys):
    assert run_cli("inspect", EXAMPLE_MODEL) == 0
    out = capsys.readouterr().out
    assert "image" in out and "?x3x32x32" in out and "probs" in out
    assert "| Conv              |       3 | yes         | yes    |" in out
    assert "| Softmax           |       1 | yes         | fp32   |" in out


def test_targets_lists_presets(capsys):
    assert run_cli("targets") == 0
    out = capsys.readouterr().out
    for name in ("x86", "rpi4", "rpi5", "jetson-orin", "cuda"):
        assert f"| {name} " in out


def test_help_explains_every_option():
    import argparse

    from qcompile.cli import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"build", "run", "inspect", "targets"}
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"qcompile {name} {action.dest} has no help text"


def test_cuda_build_compiles_without_a_gpu(tmp_path):
    library = tmp_path / "tiny_cuda.so"
    assert run_cli("build", EXAMPLE_MODEL, "--target", "cuda:sm_80", "--precision", "fp32", "-o", library, "-q") == 0
    sidecar = qcompile.runtime.artifact.read_sidecar(library)
    assert sidecar.target["kind"] == "cuda" and sidecar.target["arch"] == "sm_80"
