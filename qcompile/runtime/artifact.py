"""The deployable artifact: one shared library plus a JSON sidecar describing it; written atomically, loaded by `load`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import QcompileError
from ..frontend.importer import TensorSig
from ..targets import TargetSpec, request_amx_permission


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
    verification: dict | None = None  # the build's outputs beside onnxruntime's (`verify.py`); None: older builds
    index_bounds: dict | None = None  # integer input → [lowest, highest] index of the table it looks up (Gather)
    accuracy_control: dict | None = None  # --max-accuracy-drop's plan: layers left in FP32, metric before/after
    library_kernels: int = 0  # kernels given the records library's schedule of a same-shaped kernel (tune/library.py)

    def tuning(self) -> str:
        """The kernels' schedules in words: "untuned", or tuned of all, and those the records library lent."""
        tuned = "untuned" if self.tuned_kernels is None else "{} of {} tuned".format(*self.tuned_kernels)
        return tuned + (f", {self.library_kernels} from the records library" if self.library_kernels else "")

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
            "verification": self.verification,
            "index_bounds": self.index_bounds,
            "accuracy_control": self.accuracy_control,
            "library_kernels": self.library_kernels,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Sidecar":
        return cls(
            inputs=[TensorSig.from_json(s) for s in data["inputs"]],
            outputs=[TensorSig.from_json(s) for s in data["outputs"]],
            **{k: data[k] for k in ("target_name", "target", "precision", "model_sha256", "versions")},
            tuned_kernels=data.get("tuned_kernels"),
            verification=data.get("verification"),
            index_bounds=data.get("index_bounds"),
            accuracy_control=data.get("accuracy_control"),
            library_kernels=data.get("library_kernels", 0),
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


def write(executable_writer, sidecar: Sidecar, library: Path, verified=None) -> Sidecar:
    """Write library and sidecar together: `executable_writer(tmp_path)` exports the library; `verified(tmp_path)`,
    if given, checks it where it was written (raising stops everything) and returns its figures for the sidecar.
    Returns the sidecar written."""
    library = Path(library)
    if library.suffix != ".so":
        raise QcompileError(f"output must be a .so file, got {library}")
    with atomic_outputs(library, sidecar_path(library)) as (tmp_lib, tmp_json):
        executable_writer(tmp_lib)
        if verified is not None:
            sidecar = dataclasses.replace(sidecar, verification=verified(tmp_lib))
        tmp_json.write_text(json.dumps(sidecar.to_json(), indent=2) + "\n")
    return sidecar


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
        self.sidecar = sidecar
        self.device = device if device is not None else _local_device(sidecar, name)
        self._module = module
        self._local = threading.local()
        self._machine()  # made now, so that a library that cannot run here fails at load

    def _machine(self):
        """This thread's virtual machine: a VM keeps the state of the call it runs, so threads calling at once
        each get their own (the library, its weights included, is shared)."""
        vm = getattr(self._local, "vm", None)
        if vm is None:
            # the runtime's VM, not tvm.relax's alias of it: a library then loads where only the TVM runtime is
            # installed (TVM_USE_RUNTIME_LIB=1), as on a deployment machine
            from tvm.runtime.vm import VirtualMachine

            vm = self._local.vm = VirtualMachine(self._module, self.device)
        return vm

    @property
    def inputs(self) -> list[TensorSig]:
        return self.sidecar.inputs

    @property
    def outputs(self) -> list[TensorSig]:
        return self.sidecar.outputs

    def __call__(self, *args: np.ndarray, **named: np.ndarray) -> list[np.ndarray]:
        import tvm

        arrays = self._arrange(args, named)
        result = self._machine()["main"](*[tvm.runtime.tensor(a, self.device) for a in arrays])
        return [np.asarray(r.numpy()) for r in _flatten(result)]

    def timer(self, *args: np.ndarray, number: int = 1, repeat: int = 1):
        """A callable timing `main` on these inputs, put on the device once (transfers are not timed): each call
        returns, for each of `repeat` repeats, the mean seconds of `number` runs (TVM's time evaluator)."""
        import tvm

        inputs = [tvm.runtime.tensor(a, self.device) for a in self._arrange(args, {})]
        evaluator = self._machine().time_evaluator("main", self.device, number=number, repeat=repeat)
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
            if value.dtype != np.dtype(sig.dtype):  # a silent cast could change the values (float64, int64)
                raise QcompileError(f"input '{sig.name}' must be {sig.dtype}, got {value.dtype} "
                                    f"(convert it with .astype(numpy.{sig.dtype}))")
            bounds = (self.sidecar.index_bounds or {}).get(sig.name)
            if bounds is not None and value.size and (value.min() < bounds[0] or value.max() > bounds[1]):
                bad = value.min() if value.min() < bounds[0] else value.max()
                raise QcompileError(f"input '{sig.name}' holds index {bad}, outside [{bounds[0]}, {bounds[1]}] of "
                                    f"the table it looks up")
            arrays.append(np.ascontiguousarray(value))
        return arrays


def _local_device(sidecar: Sidecar, name: str):
    """The device of this machine the artifact runs on; an error if it is built for another machine."""
    import tvm

    target = sidecar.target
    triple = target.get("mtriple", "x86_64")
    if target["kind"] == "llvm" and not triple.startswith("x86_64"):
        raise QcompileError(f"{name} is built for {triple}; it runs on that machine, not this one")
    spec = TargetSpec(name, target)
    if missing := spec.missing_here():
        raise QcompileError(f"{name} is built for a CPU with {missing}; this machine's lacks them")
    if spec.may_use_amx_here():
        request_amx_permission()  # the tile state, which Linux grants a process only when asked
    if target["kind"] == "cuda":
        _load_cuda_backend()
    device = tvm.cuda(0) if target["kind"] == "cuda" else tvm.cpu(0)
    if target["kind"] == "cuda" and not device.exist:
        raise QcompileError(f"{name} is built for CUDA and this machine has no CUDA GPU")
    return device


def _load_cuda_backend() -> None:
    """Runtime-only TVM (TVM_USE_RUNTIME_LIB=1, as on a deployment machine) loads no device backend: CUDA's lives
    beside libtvm_runtime."""
    import ctypes

    import tvm

    with contextlib.suppress(OSError):  # no CUDA driver here: tvm.cuda(0).exist then says so
        ctypes.CDLL(str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"))


def _cuda_compiler(arch: str) -> None:
    """Make CUDA libraries loadable where only the TVM runtime is installed.

    A library built where no GPU driver is holds its kernels as CUDA C, which TVM 0.27 compiles when it is loaded,
    through the `tvm_callback_cuda_compile` function. TVM's own asks the compiler for the current target, which
    runtime-only TVM does not have, so it cannot work there: only there, and only when a CUDA library is loaded,
    one that is told the library's architecture takes its place (kernels may be compiled after the load too).
    """
    import importlib.util

    import tvm_ffi
    from tvm.support import nvcc

    if tvm_ffi.get_global_func("target.TargetCurrent", allow_missing=True) is not None:
        return  # the full TVM: its own callback works
    if importlib.util.find_spec("cuda") is not None:  # NVRTC, from the cuda-bindings package
        options = {"compiler": "nvrtc", "target_format": "cubin", "arch": arch}
    else:
        sm = arch.removeprefix("sm_")
        options = {"compiler": "nvcc", "target_format": "fatbin", "arch": ["-gencode", f"arch=compute_{sm},code=sm_{sm}"]}
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", lambda code: nvcc.compile_cuda(code, **options),
                                 override=True)


def _flatten(result):
    import tvm

    if isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [t for item in result for t in _flatten(item)]


_LOADED: dict[str, tuple] = {}  # path → (mtime, size, inode) of the file the dynamic loader loaded from it


def _load_module(library: Path):
    """`tvm.runtime.load_module`, of the file as it is now. The dynamic loader hands back the library it already
    loaded from a path, even after the file there was replaced (a rebuild): the new sidecar would then describe the
    old code. A file at a path loaded before is loaded from a copy of its own, removed once loaded."""
    import tvm

    key = str(library.resolve())
    stat = library.stat()
    signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if _LOADED.setdefault(key, signature) == signature:
        return tvm.runtime.load_module(key)
    with tempfile.TemporaryDirectory(prefix="qcompile-load-") as folder:
        copy = Path(folder) / library.name
        shutil.copy2(library, copy)
        return tvm.runtime.load_module(str(copy))


def load(library: str | Path) -> CompiledModel:
    """Load a library written by `qcompile build` (its .json sidecar beside it)."""
    library = Path(library)
    if not library.is_file():
        raise QcompileError(f"library not found: {library}")
    sidecar = read_sidecar(library)
    _local_device(sidecar, str(library))
    cuda = sidecar.target["kind"] == "cuda"
    if cuda:
        _cuda_compiler(sidecar.target["arch"])
    try:
        module = _load_module(library)
    except RuntimeError as err:
        if not cuda:
            raise
        raise QcompileError(f"cannot compile the CUDA kernels of {library} on this machine (they are compiled when "
                            f"loaded): install cuda-bindings (pip) or CUDA's nvcc "
                            f"({str(err).strip().splitlines()[-1]})") from None
    return CompiledModel(module, sidecar, name=str(library))
