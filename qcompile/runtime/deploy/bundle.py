"""--bundle DIR: the model library, the TVM runtime for the target's CPU, a C++ runner (source and binary), a README."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from ... import paths
from ...progress import SILENT, Reporter
from .. import artifact
from ...errors import QcompileError
from ...targets import TargetSpec

PROGRAMS = {"qcompile-runner": Path(__file__).with_name("runner.cc"),
            "qcompile-rpc-server": Path(__file__).with_name("rpc_server.cc")}
RUNTIME_LIBS = {"apache-tvm": "tvm/lib/libtvm_runtime.so", "apache-tvm-ffi": "tvm_ffi/lib/libtvm_ffi.so"}
WHEEL_GLIBC = "2.28"  # both wheels are manylinux_2_28 for aarch64


def architecture(spec: TargetSpec) -> str:
    return str(spec.target.get("mtriple", "x86_64")).split("-")[0]


def runtime_libraries(arch: str, reporter: Reporter = SILENT) -> Path:
    """A folder with libtvm_runtime.so and libtvm_ffi.so for `arch`, of the versions installed here.

    x86_64: the installed wheels' own. aarch64: extracted from PyPI's manylinux aarch64 wheels of the same versions
    (downloaded once, then cached).
    """
    versions = {name: metadata.version(name) for name in RUNTIME_LIBS}
    if arch == "x86_64":
        folder = paths.cache() / "runtime" / f"x86_64-{versions['apache-tvm']}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, member in RUNTIME_LIBS.items():
            installed = Path(metadata.distribution(name).locate_file(member))
            shutil.copy2(installed, folder / Path(member).name)
        return folder
    if arch != "aarch64":
        raise QcompileError(f"no TVM runtime is published for {arch}; bundles exist for x86_64 and aarch64")
    folder = paths.cache() / "runtime" / f"aarch64-tvm{versions['apache-tvm']}-ffi{versions['apache-tvm-ffi']}"
    if all((folder / Path(m).name).is_file() for m in RUNTIME_LIBS.values()):
        return folder
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with reporter.step("downloading the aarch64 TVM runtime wheels from PyPI (once)"):
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "--implementation", "cp",
                   "--dest", str(wheels)] + [f"{name}=={version}" for name, version in versions.items()]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise QcompileError(f"could not download the aarch64 TVM runtime: {lines[-1] if lines else 'pip failed'}")
    for name, member in RUNTIME_LIBS.items():
        wheel = next(wheels.glob(name.replace("-", "_") + "-*.whl"))
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
            (folder / Path(member).name).write_bytes(src.read())
    shutil.rmtree(wheels)
    return folder


def build_program(source: Path, spec: TargetSpec, runtime: Path, output: Path) -> None:
    """Compile a C++ program for the target's CPU, linked to the runtime in `runtime`, found in ./lib at run time."""
    import tvm_ffi

    include = Path(tvm_ffi.__file__).parent / "include"
    compiler = spec.cc or "g++"
    if shutil.which(compiler) is None:
        raise QcompileError(f"C++ compiler '{compiler}' not found; install it (apt-get install g++-aarch64-linux-gnu)")
    command = [compiler, "-std=c++17", "-O2", "-o", str(output), str(source), f"-I{include}", f"-L{runtime}",
               "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN/lib"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise QcompileError(f"building {output.name} failed: {result.stderr.strip().splitlines()[-1]}")


def _version_key(version: str) -> tuple:
    return tuple(int(p) for p in version.split("."))


def minimum_glibc(binary: Path, spec: TargetSpec) -> str:
    """The newest GLIBC_x.y symbol version a program needs, or the wheels' 2.28 if that is newer."""
    objdump = (spec.cc or "g++").replace("g++", "objdump")
    if shutil.which(objdump) is None:
        objdump = "objdump"
    listing = subprocess.run([objdump, "-T", str(binary)], capture_output=True, text=True).stdout
    found = re.findall(r"GLIBC_(\d+(?:\.\d+)+)", listing)
    return max(found + [WHEEL_GLIBC], key=_version_key)


def write_bundle(library: Path, spec: TargetSpec, folder: Path, reporter: Reporter = SILENT) -> None:
    """Write the deploy kit for `library` into `folder`, all or nothing."""
    sidecar = artifact.read_sidecar(library)
    arch = architecture(spec)
    runtime = runtime_libraries(arch, reporter)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise QcompileError(f"bundle folder {folder} exists and is not empty")
    with reporter.step(f"writing the {arch} deploy kit {folder}"):
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            (scratch / "lib").mkdir(parents=True)
            (scratch / "src").mkdir()
            for lib in RUNTIME_LIBS.values():
                shutil.copy2(runtime / Path(lib).name, scratch / "lib")
            shutil.copy2(library, scratch / "model.so")
            shutil.copy2(artifact.sidecar_path(library), scratch / "model.json")
            for program, source in PROGRAMS.items():
                shutil.copy2(source, scratch / "src" / source.name)
                build_program(source, spec, scratch / "lib", scratch / program)
            glibc = max((minimum_glibc(scratch / p, spec) for p in PROGRAMS), key=_version_key)
            (scratch / "README.md").write_text(_readme(sidecar, spec, arch, glibc))
            if folder.exists():
                folder.rmdir()
            scratch.rename(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _readme(sidecar, spec: TargetSpec, arch: str, glibc: str) -> str:
    inputs = ", ".join(f"`{s.name}` {s.dtype}{list(s.shape)}" for s in sidecar.inputs)
    outputs = ", ".join(f"`{s.name}` {s.dtype}{list(s.shape)}" for s in sidecar.outputs)
    tvm_version = sidecar.versions["apache-tvm"]
    return f"""# qcompile deploy kit: {spec.name} ({arch})

`model.so` is the compiled model ({sidecar.precision}, target `{spec.key()}`); `model.json` describes it.
Inputs: {inputs}. Outputs: {outputs}.

Needs a 64-bit Linux with glibc {glibc} or newer (`ldd --version` tells), and nothing else: `lib/` holds the TVM
runtime ({tvm_version}) for {arch}.

## Run with the C++ runner

    ./qcompile-runner $PWD/model.so out_ input.npy      # writes out_0.npy, out_1.npy, ... (one per output)

Inputs are `.npy` files (NumPy's format, C order) in the order of `model.json`; give the model's path absolute.
Both programs' sources are in `src/`; they need only the tvm-ffi headers (`pip install apache-tvm-ffi`, then
`python -c "import tvm_ffi, os; print(os.path.dirname(tvm_ffi.__file__) + '/include')"`) to rebuild.

## Run and time it from the host, over TVM RPC

On the board: `./qcompile-rpc-server --port 9090` (TVM's standard RPC protocol; `--key K` to require a key).
On the host: `qcompile run model.so --rpc BOARD:9090 -i input.npy` uploads the library, runs it on the board
and prints the outputs.

## Or from Python on the board

    pip install apache-tvm=={tvm_version} apache-tvm-ffi=={sidecar.versions['apache-tvm-ffi']} numpy
    python -c "import tvm, numpy as np; from tvm import relax; \\
      vm = relax.VirtualMachine(tvm.runtime.load_module('model.so'), tvm.cpu()); \\
      print(vm['main'](tvm.runtime.tensor(np.load('input.npy'))).numpy())"
"""
