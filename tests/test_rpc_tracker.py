"""Through a TVM RPC tracker on loopback: a board (here an x86 RPC server) registered under a key."""

import subprocess
import sys
import time

import numpy as np
import pytest

import qcompile
from conftest import free_port, real_inputs, run_cli



@pytest.fixture(scope="module")
def tracker_with_board():
    port = free_port()
    # port_end defaults to 9199: below a free port found by the OS it would leave no port to try
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                                str(port), "--port-end", str(port + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        time.sleep(2)
        server_port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                                   "--key", "test-board", "--host", "127.0.0.1", "--port", str(server_port),
                                   "--port-end", str(server_port + 1)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from tvm import rpc

        deadline = time.time() + 60
        while "test-board" not in rpc.connect_tracker("127.0.0.1", port).text_summary():
            assert time.time() < deadline, "the RPC server did not register with the tracker"
            time.sleep(1)
        yield port
    finally:
        for process in (server, tracker):
            if process is not None:
                process.kill()
                process.wait(timeout=30)


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
