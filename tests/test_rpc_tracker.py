"""Through a TVM RPC tracker on loopback: a board (here an x86 RPC server) registered under a key."""

import pytest

import numpy as np

import qcompile
from conftest import real_inputs, run_cli

pytestmark = pytest.mark.slow  # the real models in ../shared/


def test_run_through_the_tracker_gives_the_local_outputs(tracker_with_board, fp32_x86_libraries, tmp_path):
    x = real_inputs("mnist", 1, start=42)[0]
    np.save(tmp_path / "x.npy", x)
    library = fp32_x86_libraries["mnist"]
    assert run_cli("run", library, "--rpc-tracker", f"127.0.0.1:{tracker_with_board}", "--rpc-key", "test-board",
                   "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npz") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["Plus214_Output_0"], qcompile.load(library)(x)[0])


def test_tracker_without_key_is_rejected(capsys):
    assert run_cli("run", "m.so", "--rpc-tracker", "127.0.0.1:9190", "-i", "x.npy") == 2
    assert "--rpc-tracker needs --rpc-key" in capsys.readouterr().err
