"""Running an aarch64 library on this x86 machine: the deploy kit's C++ runner under qemu's user-mode emulation,
with the TVM runtime of the deploy kit. Build verification runs cross-compiled builds this way."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ...errors import QcompileError
from ...progress import SILENT, Reporter
from ...targets import TargetSpec
from . import bundle

QEMU = "qemu-aarch64-static"
SYSROOT = "/usr/aarch64-linux-gnu"  # Debian's aarch64 C library, which the cross compiler's programs load


def unavailable(spec: TargetSpec) -> str | None:
    """Why `spec`'s libraries cannot be run here under qemu, or None."""
    if bundle.architecture(spec) != "aarch64":
        return f"no emulator for {bundle.architecture(spec)}"
    for tool in (QEMU, spec.cc or "g++"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (setup.sh installs it)"
    if not Path(SYSROOT).is_dir():
        return f"{SYSROOT} is missing (Debian's libc6-arm64-cross)"
    return None


@functools.cache
def _qemu_cpus() -> frozenset:
    listing = subprocess.run([QEMU, "-cpu", "help"], capture_output=True, text=True).stdout
    return frozenset(listing.split())


def run(library: Path, spec: TargetSpec, samples, output_count: int,
        reporter: Reporter = SILENT) -> list[list[np.ndarray]]:
    """The library's outputs on each sample (a list of input arrays), run by the C++ runner under qemu emulating
    the target's CPU (or qemu's `max` CPU where it has no model of it)."""
    runtime = bundle.runtime_libraries("aarch64", reporter)
    cpu = spec.target.get("mcpu", "max")
    cpu = cpu if cpu in _qemu_cpus() else "max"
    with tempfile.TemporaryDirectory(prefix="qcompile-qemu-") as folder:
        work = Path(folder)
        shutil.copytree(runtime, work / "lib", ignore=shutil.ignore_patterns("wheels"))
        runner = work / "qcompile-runner"
        bundle.build_program(bundle.PROGRAMS["qcompile-runner"], spec, work / "lib", runner)
        outputs = []
        for i, sample in enumerate(samples):
            inputs = []
            for k, array in enumerate(sample):
                inputs.append(work / f"in{i}_{k}.npy")
                np.save(inputs[-1], array)
            command = [QEMU, "-L", SYSROOT, "-cpu", cpu, str(runner), str(Path(library).resolve()),
                       str(work / f"out{i}_"), *map(str, inputs)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
                raise QcompileError(f"the library does not run under {QEMU} -cpu {cpu}: {last}")
            outputs.append([np.load(work / f"out{i}_{k}.npy") for k in range(output_count)])
        return outputs
