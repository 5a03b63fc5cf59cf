"""Running a built library on a board over TVM RPC: directly (`--rpc HOST:PORT`) or through a tracker."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import artifact
from ...errors import QcompileError


@dataclasses.dataclass(frozen=True)
class RemoteSpec:
    """Where the board is: an RPC server's address, or a tracker's address and the key the boards registered."""

    host: str
    port: int
    key: str = ""
    tracker: bool = False

    @classmethod
    def parse(cls, rpc: str | None, tracker: str | None, key: str | None) -> "RemoteSpec | None":
        if rpc and tracker:
            raise QcompileError("give either {rpc} HOST:PORT or {rpc_tracker} HOST:PORT, not both")
        address = rpc or tracker
        if address is None:
            if key:
                raise QcompileError("{rpc_key} needs {rpc_tracker} (or {rpc})")
            return None
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise QcompileError(f"expected HOST:PORT, got {address!r}")
        if tracker and not key:
            raise QcompileError("{rpc_tracker} needs {rpc_key}, the key the boards registered with")
        return cls(host, int(port), key or "", tracker=bool(tracker))

    def connect(self):
        from tvm import rpc

        try:
            if self.tracker:
                return rpc.connect_tracker(self.host, self.port).request(self.key, session_timeout=0)
            return rpc.connect(self.host, self.port, key=self.key)
        except Exception as err:  # TVM raises TVMError/RuntimeError with a long message
            text = str(err).strip().splitlines()
            raise QcompileError(f"cannot reach the RPC {'tracker' if self.tracker else 'server'} at "
                                f"{self.host}:{self.port}: {text[-1] if text else type(err).__name__}") from None


def load(library: str | Path, remote: RemoteSpec, session=None) -> artifact.CompiledModel:
    """Upload `library` to the board, load it there, and return a model whose calls run on the board.

    Pass an open `session` to load several libraries over one connection (a server serves one at a time).
    """
    library = Path(library)
    if not library.is_file():
        raise QcompileError(f"library not found: {library}")
    sidecar = artifact.read_sidecar(library)
    session = session if session is not None else remote.connect()
    session.upload(str(library), library.name)
    module = session.load_module(library.name)
    device = session.cuda(0) if sidecar.target["kind"] == "cuda" else session.cpu(0)
    model = artifact.CompiledModel(module, sidecar, name=str(library), device=device)
    model.session = session  # keep the connection open as long as the model lives
    return model
