"""Target presets (TOML files in the repository's targets/, installed as package data) resolved to TVM dict targets."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tomllib
from pathlib import Path

from . import paths
from .errors import QcompileError


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """A compilation target: TVM's dict form plus what exporting the library needs."""

    name: str
    target: dict
    description: str = ""
    cc: str | None = None  # cross compiler used to link the library; None = the host's

    @property
    def kind(self) -> str:
        return self.target["kind"]

    @property
    def is_cross(self) -> bool:
        return self.cc is not None

    @property
    def activation_dtype(self) -> str:
        """The INT8 activation type the target's dot-product instructions take with int8 weights:
        x86 VNNI multiplies u8×s8; ARM sdot and CUDA dp4a multiply s8×s8."""
        if self.kind == "cuda" or str(self.target.get("mtriple", "")).startswith("aarch64"):
            return "int8"
        return "uint8"

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.target)

    def key(self) -> str:
        """Canonical JSON of the whole target, e.g. for keying tuning records."""
        return json.dumps(self.target, sort_keys=True, separators=(",", ":"))

    def missing_here(self) -> str | None:
        """The instruction-set extensions a library for this x86 target may use that this machine's CPU lacks
        (AVX-512, VNNI, AMX, ...), the first four listed for a message: it would stop with an illegal instruction
        here. None where nothing is missing, for other targets, and where only the TVM runtime is installed (no
        LLVM to ask)."""
        import tvm
        from tvm.target import codegen

        if self.kind != "llvm" or self.is_cross or not _llvm_here():
            return None
        host = codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}))
        wanted = codegen.llvm_get_cpu_features(self.tvm_target())
        missing = sorted(f for f in set(wanted) - set(host) if f.startswith(_INSTRUCTION_SETS))
        return f"{', '.join(missing[:4])}{' ...' * (len(missing) > 4)}" if missing else None

    def may_use_amx_here(self) -> bool:
        """Whether a library for this target may run AMX instructions on this machine: the CPU has AMX and the
        target does (where only the TVM runtime is installed, any x86 target may)."""
        from tvm.target import codegen

        if self.kind != "llvm" or self.is_cross or not host_has_amx():
            return False
        return not _llvm_here() or codegen.target_has_features("amx-tile", self.tvm_target())

    def check_toolchain(self) -> None:
        """Fail early, before compiling, when the cross compiler is not installed."""
        if self.cc and shutil.which(self.cc) is None:
            raise QcompileError(
                f"cross compiler '{self.cc}' for target '{self.name}' not found on PATH; "
                f"install it (Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu)"
            )


ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, SYS_ARCH_PRCTL = 0x1023, 18, 158  # Linux x86-64


@functools.cache
def host_has_amx() -> bool:
    """Whether this machine's CPU has AMX-INT8 (Linux: the flags in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_int8" in flags and "amx_tile" in flags


def request_amx_permission() -> bool:
    """Ask Linux for the AMX tile state for this process (once; every thread): without it the first tile
    instruction faults. False where it is refused or there is nothing to ask (no AMX, not Linux)."""
    return host_has_amx() and _request_amx()


@functools.cache
def _request_amx() -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0


def _llvm_here() -> bool:
    """Whether TVM's LLVM is installed (not so with TVM_USE_RUNTIME_LIB, as on a deployment machine)."""
    import tvm

    return tvm.get_global_func("target.llvm_get_system_cpu", allow_missing=True) is not None


_INSTRUCTION_SETS = ("avx", "amx", "fma", "sse", "bmi", "f16c", "gfni", "vaes", "vpclmulqdq")


def preset_names() -> list[str]:
    return sorted(p.stem for p in paths.presets().glob("*.toml"))


def load_presets() -> list[TargetSpec]:
    return [_from_file(paths.presets() / f"{name}.toml") for name in preset_names()]


def resolve(text: str) -> TargetSpec:
    """Resolve --target: a preset name (optionally `cuda:sm_80`), a preset file, or a raw TVM target dict."""
    text = text.strip()
    if text.startswith("{"):
        try:
            target = json.loads(text)
        except json.JSONDecodeError as err:
            raise QcompileError(f"{{target}}: not valid JSON ({err.msg} at column {err.colno})") from None
        return _validated(TargetSpec(name="custom", target=target))
    path = Path(text)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise QcompileError(f"target preset file not found: {text}")
        return _from_file(path)
    name, _, arch = text.partition(":")
    if name not in preset_names():
        raise QcompileError(f"unknown target '{text}'; presets: {', '.join(preset_names())} (or a .toml file, or a TVM target dict)")
    spec = _from_file(paths.presets() / f"{name}.toml")
    if arch:
        if spec.kind != "cuda":
            raise QcompileError(f"target '{name}' takes no ':{arch}' suffix (only cuda:sm_XX does)")
        if not arch.startswith("sm_") or not arch[3:].isdigit():
            raise QcompileError(f"unknown CUDA arch '{arch}'; expected e.g. sm_75, sm_80, sm_86, sm_89, sm_90")
        spec = dataclasses.replace(spec, name=text, target={**spec.target, "arch": arch})
    return spec


def _from_file(path: Path) -> TargetSpec:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise QcompileError(f"target preset {path}: {err}") from None
    if not isinstance(data.get("target"), dict):
        raise QcompileError(f"target preset {path}: needs a [target] table with at least 'kind'")
    spec = TargetSpec(name=path.stem, target=data["target"], description=data.get("description", ""), cc=data.get("cc"))
    return _validated(spec)


def _validated(spec: TargetSpec) -> TargetSpec:
    """Resolve "host" and reject what TVM would accept silently (an unknown kind or CPU)."""
    import tvm
    from tvm.target import codegen

    target = dict(spec.target)
    kind = target.get("kind")
    if kind not in ("llvm", "cuda"):
        raise QcompileError(f"target '{spec.name}': kind must be 'llvm' or 'cuda', not {kind!r}")
    if target.get("mcpu") == "host":
        target["mcpu"] = codegen.llvm_get_system_cpu()
    if kind == "llvm" and "mcpu" in target:
        triple = target.get("mtriple", "x86_64-linux-gnu")
        if not codegen.llvm_is_valid_cpu(target["mcpu"], triple):
            raise QcompileError(f"target '{spec.name}': LLVM knows no CPU '{target['mcpu']}' for {triple}")
    cc = spec.cc
    if kind == "llvm" and cc is None and not str(target.get("mtriple", "x86_64")).startswith("x86_64"):
        cc = f"{target['mtriple']}-g++"  # Debian's naming of cross compilers
    try:
        tvm.target.Target(target)
    except Exception as err:  # TVM reports bad attributes through several exception types
        raise QcompileError(f"target '{spec.name}': TVM rejects it: {str(err).splitlines()[0]}") from None
    return dataclasses.replace(spec, target=target, cc=cc)
