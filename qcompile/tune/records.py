"""Tuning records on disk: one MetaSchedule JSON database per (model, precision, whole target), and applying them.

Layout under a root folder (the user's records folder, `paths.user_records()`, where `qcompile tune` writes by
default; the records shipped in the repository's `tuning_logs/`, installed read-only with the package):

    <model stem>-<first 12 hex of the ONNX file's sha256>/<precision>/<target folder>/
        database_workload.json, database_tuning_record.json   (MetaSchedule's JSONDatabase)
        target.json                                          (the whole target the records were measured on)
        tuning.json                                          (candidates measured and time spent, all runs)
        picks/database_workload.json, picks/database_tuning_record.json
                                                             (each kernel's finalists re-timed cold: `pick.py`)

The target folder is `<kind>-<mcpu or arch>-<first 10 hex of sha256(canonical target JSON)>`: two targets that
differ in any attribute (CPU, features, triple, core count) never share a folder. When building for a target that
has no folder of its own, `find` falls back to records measured on a compatible one (same kind, triple and GPU
arch, and the same int8 dot-product intrinsic, which is the only instruction a schedule names): a schedule tuned on
one AVX-512 VNNI CPU is valid on another, if not the best one there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .. import paths
from ..errors import QcompileError
from ..targets import TargetSpec

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
PICKS = "picks"


@dataclasses.dataclass(frozen=True)
class RecordSource:
    """Which tuning records a build applies: exactly one records folder, or the first folder for the model and
    target found under some roots; neither: none (untuned)."""

    folder: Path | None = None
    roots: tuple[Path, ...] = ()

    @classmethod
    def default(cls, root: Path | None = None) -> "RecordSource":
        """`root` (if given), then the user's records, then the shipped ones."""
        return cls(roots=tuple(r for r in (root, paths.user_records(), paths.shipped_records()) if r is not None))

    @property
    def untuned(self) -> bool:
        return self.folder is None and not self.roots


def folder(root: Path, model: Path, model_sha256: str, precision: str, spec: TargetSpec) -> Path:
    """Where the records of this model, precision and target live under `root`."""
    cpu = spec.target.get("mcpu") or spec.target.get("arch") or "generic"
    target_hash = hashlib.sha256(spec.key().encode()).hexdigest()[:10]
    return root / f"{model.stem}-{model_sha256[:12]}" / precision / f"{spec.kind}-{cpu}-{target_hash}"


def find(roots, model: Path, model_sha256: str, precision: str, spec: TargetSpec) -> Path | None:
    """The records folder to build with: this target's own under the first root that has one, else one measured
    on a compatible target, else None."""
    own = [folder(root, model, model_sha256, precision, spec) for root in roots]
    for candidate in own:
        if count(candidate):
            return candidate
    for path in own:
        for candidate in sorted(p.parent for p in path.parent.glob("*/target.json")):
            if count(candidate) and _compatible(measured_on(candidate), spec.target):
                return candidate
    return None


def measured_on(path: Path) -> dict:
    """The target a records folder was measured on."""
    return json.loads((path / "target.json").read_text())["target"]


def _compatible(recorded: dict, target: dict) -> bool:
    import tvm

    from ..lower import intrinsics

    same = all(recorded.get(key) == target.get(key) for key in ("kind", "mtriple", "arch"))
    return same and (intrinsics.for_target(tvm.target.Target(recorded))
                     == intrinsics.for_target(tvm.target.Target(target)))


def open_database(path: Path, spec: TargetSpec, create: bool):
    """The JSON database in `path` (made when `create`). Its schedules name the target's tensor intrinsics,
    which must be registered before they are read."""
    from tvm.s_tir import meta_schedule as ms

    from ..lower import intrinsics

    intrinsics.for_target(spec.tvm_target())
    if not create and not (path / RECORDS).is_file():
        raise QcompileError(f"no tuning records in {path} (expected {RECORDS} and {WORKLOADS})")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(str(path / WORKLOADS), str(path / RECORDS), allow_missing=create)


def load(path: Path, spec: TargetSpec):
    """The records to build with: each kernel's pick (`pick.py`) where it has one, else the search's best."""
    from tvm.s_tir import meta_schedule as ms

    search = open_database(path, spec, create=False)
    if not (path / PICKS / RECORDS).is_file():
        return search
    return ms.database.OrderedUnionDatabase(open_database(path / PICKS, spec, create=False), search)


def write_target(path: Path, spec: TargetSpec) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "target.json").write_text(json.dumps({"name": spec.name, "target": spec.target}, indent=2) + "\n")


def add_tuning_time(path: Path, measured: int, seconds: float) -> dict:
    """Add one tuning run to the folder's running totals (what the benchmark tables report as tuning time)."""
    history = path / "tuning.json"
    totals = json.loads(history.read_text()) if history.is_file() else {"runs": 0, "measured": 0, "seconds": 0.0}
    totals = {"runs": totals["runs"] + 1, "measured": totals["measured"] + measured,
              "seconds": round(totals["seconds"] + seconds, 1)}
    history.write_text(json.dumps(totals) + "\n")
    return totals


def count(path: Path) -> int:
    """Number of measured candidates stored in `path` (0 if none)."""
    records = path / RECORDS
    return sum(1 for line in records.read_text().splitlines() if line.strip()) if records.is_file() else 0


def apply(mod, database, target):
    """Replace each PrimFunc of `mod` that the database has a schedule for by its best measured schedule.

    MetaSchedule's own ApplyDatabase pass finds nothing in TVM 0.27: tasks are stored as a module holding the
    function as `main` (with that global symbol), and the pass looks the bare function up. Here the lookup uses
    the same wrapping as task extraction. Returns (module, functions scheduled, functions looked up).
    """
    return schedule_kernels(mod, lambda task: database.query_schedule(task, target=target, workload_name="main"))


def schedule_kernels(mod, schedule_of):
    """Replace each PrimFunc of `mod` not yet scheduled by `schedule_of(task)` (an `s_tir.Schedule` of the task,
    the function as `main` as tuning tasks hold it; None: leave it), marked scheduled. Returns (module, functions
    scheduled, functions looked up)."""
    import tvm
    from tvm import tirx

    total = 0
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or func.attrs and func.attrs.get("tirx.is_scheduled", False):
            continue
        total += 1
        sch = schedule_of(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}))
        if sch is not None:
            scheduled = sch.mod["main"].with_attr("global_symbol", gvar.name_hint)
            updates[gvar] = scheduled.with_attr("tirx.is_scheduled", True)
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod, len(updates), total


def measure(mod, schedules, database, target, builder, runner) -> tuple[int, bool]:
    """Build and measure `schedules` of the kernel `mod["main"]` and store each one that runs as a record of it.
    Returns (candidates measured, whether any was stored)."""
    import os
    import shutil

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    if not schedules:
        return 0, False
    device = "cuda" if target.kind.name == "cuda" else "cpu"  # the runner's device name, not the target kind
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch in schedules])
    args = ArgInfo.from_prim_func(mod["main"])
    runs = [(sch, b) for sch, b in zip(schedules, built) if b.error_msg is None]
    results = runner.run([ms.runner.RunnerInput(b.artifact_path, device, args) for _, b in runs])
    workload = database.commit_workload(mod)
    stored = False
    for (sch, b), future in zip(runs, results):
        result = future.result()
        shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
        if result.error_msg is None and result.run_secs:
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, [float(s) for s in result.run_secs], target, args))
            stored = True
    return len(runs), stored
