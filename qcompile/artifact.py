"""The deployable artifact: one shared library plus a JSON sidecar describing it; written atomically, loaded by `load`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import QcompileError
from .importer import TensorSig


@dataclasses.dataclass(frozen=True)
class Sidecar:
    inputs: list[TensorSig]
    outputs: list[TensorSig]
    target_name: str
    target: dict
    precision: str
    model_sha256: str
    versions: dict
    tuned_kernels: list | None = None  # [kernels given tuned schedules, kernels]; None: built without records

    def to_json(self) -> dict:
        return {
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "target_name": self.target_name,
            "target": self.target,
            "precision": self.precision,
            "model_sha256": self.model_sha256,
            "versions": self.versions,
            "tuned_kernels": self.tuned_kernels,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Sidecar":
        return cls(
            inputs=[TensorSig.from_json(s) for s in data["inputs"]],
            outputs=[TensorSig.from_json(s) for s in data["outputs"]],
            **{k: data[k] for k in ("target_name", "target", "precision", "model_sha256", "versions")},
            tuned_kernels=data.get("tuned_kernels"),
        )


def sidecar_path(library: Path) -> Path:
    return Path(library).with_suffix(".json")


@contextlib.contextmanager
def atomic_outputs(*paths: Path):
    """Yield temporary paths to write; move them all into place only if the block succeeds."""
    paths = [Path(p) for p in paths]
    parent = paths[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".qcompile-", dir=parent))
    try:
        temps = [scratch / p.name for p in paths]
        yield temps
        for temp, final in zip(temps, paths):
            os.replace(temp, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write(executable_writer, sidecar: Sidecar, library: Path) -> None:
    """Write library and sidecar together: `executable_writer(tmp_path)` exports the library."""
    library = Path(library)
    if library.suffix != ".so":
        raise QcompileError(f"output must be a .so file, got {library}")
    with atomic_outputs(library, sidecar_path(library)) as (tmp_lib, tmp_json):
        executable_writer(tmp_lib)
        tmp_json.write_text(json.dumps(sidecar.to_json(), indent=2) + "\n")


def read_sidecar(library: Path) -> Sidecar:
    path = sidecar_path(library)
    if not path.is_file():
        raise QcompileError(f"sidecar {path} not found; it is written by 'qcompile build' beside the library")
    try:
        return Sidecar.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise QcompileError(f"sidecar {path} is malformed: {err}") from None


class CompiledModel:
    """A built model loaded for execution: call it with arrays (positionally or by input name)."""

    def __init__(self, module, sidecar: Sidecar, name: str = "the model", device=None):
        """`module`: a relax.Executable or a loaded library (local, or on an RPC session with its `device`)."""
        # the runtime's VM, not tvm.relax's alias of it: a library then loads where only the TVM runtime is
        # installed (TVM_USE_RUNTIME_LIB=1), as on a deployment machine
        from tvm.runtime.vm import VirtualMachine

        self.sidecar = sidecar
        self.device = device if device is not None else _local_device(sidecar, name)
        self._vm = VirtualMachine(module, self.device)

    @property
    def inputs(self) -> list[TensorSig]:
        return self.sidecar.inputs

    @property
    def outputs(self) -> list[TensorSig]:
        return self.sidecar.outputs

    def __call__(self, *args: np.ndarray, **named: np.ndarray) -> list[np.ndarray]:
        import tvm

        arrays = self._arrange(args, named)
        result = self._vm["main"](*[tvm.runtime.tensor(a, self.device) for a in arrays])
        return [np.asarray(r.numpy()) for r in _flatten(result)]

    def timer(self, *args: np.ndarray, number: int = 1, repeat: int = 1):
        """A callable timing `main` on these inputs, put on the device once (transfers are not timed): each call
        returns, for each of `repeat` repeats, the mean seconds of `number` runs (TVM's time evaluator)."""
        import tvm

        inputs = [tvm.runtime.tensor(a, self.device) for a in self._arrange(args, {})]
        evaluator = self._vm.time_evaluator("main", self.device, number=number, repeat=repeat)
        return lambda: [float(t) for t in evaluator(*inputs).results]

    def _arrange(self, args, named) -> list[np.ndarray]:
        if args and named:
            raise QcompileError("give the inputs either positionally or by name, not both")
        if named:
            missing = [s.name for s in self.inputs if s.name not in named]
            extra = sorted(set(named) - {s.name for s in self.inputs})
            if missing or extra:
                raise QcompileError(f"inputs missing: {missing or 'none'}; unknown: {extra or 'none'}")
            args = [named[s.name] for s in self.inputs]
        if len(args) != len(self.inputs):
            raise QcompileError(f"the model takes {len(self.inputs)} input(s), got {len(args)}")
        arrays = []
        for sig, value in zip(self.inputs, args):
            value = np.asarray(value)
            if tuple(value.shape) != tuple(sig.shape):
                raise QcompileError(f"input '{sig.name}' must have shape {list(sig.shape)}, got {list(value.shape)}")
            arrays.append(np.ascontiguousarray(value, dtype=sig.dtype))
        return arrays


def _local_device(sidecar: Sidecar, name: str):
    """The device of this machine the artifact runs on; an error if it is built for another machine."""
    import tvm

    target = sidecar.target
    triple = target.get("mtriple", "x86_64")
    if target["kind"] == "llvm" and not triple.startswith("x86_64"):
        raise QcompileError(f"{name} is built for {triple}; it runs on that machine, not this one")
    if target["kind"] == "cuda":
        _prepare_cuda(target["arch"])
    device = tvm.cuda(0) if target["kind"] == "cuda" else tvm.cpu(0)
    if target["kind"] == "cuda" and not device.exist:
        raise QcompileError(f"{name} is built for CUDA and this machine has no CUDA GPU")
    return device


def _prepare_cuda(arch: str) -> None:
    """Make CUDA libraries loadable here, also where only the TVM runtime is installed (TVM_USE_RUNTIME_LIB=1).

    A library built where no GPU driver is holds its kernels as CUDA C, which TVM 0.27 compiles when it is loaded,
    through the `tvm_callback_cuda_compile` function. TVM's own asks the compiler for the current target, which
    runtime-only TVM does not have: there, one that is told the library's architecture replaces it. And
    runtime-only TVM loads no device backend: CUDA's lives beside libtvm_runtime.
    """
    import ctypes
    import importlib.util

    import tvm
    import tvm_ffi
    from tvm.support import nvcc

    with contextlib.suppress(OSError):  # no CUDA driver here: tvm.cuda(0).exist then says so
        ctypes.CDLL(str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"))
    if tvm_ffi.get_global_func("target.TargetCurrent", allow_missing=True) is not None:
        return  # the full TVM: its own callback works
    if importlib.util.find_spec("cuda") is not None:  # NVRTC, from the cuda-bindings package
        options = {"compiler": "nvrtc", "target_format": "cubin", "arch": arch}
    else:
        sm = arch.removeprefix("sm_")
        options = {"compiler": "nvcc", "target_format": "fatbin", "arch": ["-gencode", f"arch=compute_{sm},code=sm_{sm}"]}

    @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
    def compile_kernels(code):
        return nvcc.compile_cuda(code, **options)


def _flatten(result):
    import tvm

    if isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [t for item in result for t in _flatten(item)]


def load(library: str | Path) -> CompiledModel:
    """Load a library written by `qcompile build` (its .json sidecar beside it)."""
    import tvm

    library = Path(library)
    if not library.is_file():
        raise QcompileError(f"library not found: {library}")
    sidecar = read_sidecar(library)
    _local_device(sidecar, str(library))
    try:
        module = tvm.runtime.load_module(str(library))
    except RuntimeError as err:
        if sidecar.target["kind"] != "cuda":
            raise
        raise QcompileError(f"cannot compile the CUDA kernels of {library} on this machine (they are compiled when "
                            f"loaded): install cuda-bindings (pip) or CUDA's nvcc "
                            f"({str(err).strip().splitlines()[-1]})") from None
    return CompiledModel(module, sidecar, name=str(library))
