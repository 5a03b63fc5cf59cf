"""The records library: every tuned model's best schedule per kernel, lent to kernels of other models that share
their anchor.

A model's records (`records.py`) apply to that model only: MetaSchedule keys a record by the kernel's whole
TIR, epilogue and data layout included. But the loop nest tuning schedules is the anchor's (the conv or matmul a
kernel is built around), and a ResNet's 3×3 conv on 56×56×64 is the same anchor in every model that has one.
The library keeps, for each kernel a model was tuned on, its best schedule (the cold re-timing's pick where
there is one, else the search's fastest), one database per kind of target (kind, triple, GPU arch and int8
dot-product instruction: what decides whether a schedule applies and runs). `build` gives a kernel that has no
record of its own the library's record of the same kernel (another model had it), else the schedule of a
library kernel with its signature (`transfer.signature`), replayed with this kernel's epilogue
(`transfer.replay`); `tune` starts its search from those replays, measured.

Layout under a records root: `library/<kind>-<instruction>-<hash>/` holding MetaSchedule's two JSON files (the
search's fastest record of each kernel), `picks/` (the picks) and `target.json` (the first target it was filled
from). `qcompile tune` adds what it tuned to the library of the records root it writes under; the shipped one is
made from the shipped INT8 records (the FP32 ones predate the packed float convs and match almost no kernel now)
with `python -m qcompile.tune.library tuning_logs tuning_logs/*/int8/*`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from ..targets import TargetSpec
from . import records, transfer

LIBRARY = "library"


def folder(root: Path, spec: TargetSpec) -> Path:
    """The library folder of `spec`'s kind of target under `root`."""
    from ..lower import intrinsics

    instruction = intrinsics.for_target(spec.tvm_target()) or "none"
    key = json.dumps([spec.target.get(k) for k in ("kind", "mtriple", "arch")] + [instruction])
    return root / LIBRARY / f"{spec.kind}-{instruction}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def add(library: Path, source: Path, spec: TargetSpec) -> int:
    """Add the best record of each workload of the records folder `source` to `library`: its pick to the
    library's picks, the search's fastest to its search records, so that the library is read as a model's
    folder is (`records.load`: picks first). Returns the number of workloads; a record already there is kept."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    added = set()
    for part in ("", records.PICKS):
        if not records.count(source / part):
            continue
        fastest: dict = {}
        for record in records.open_database(source / part, spec, create=False).get_all_tuning_records():
            seconds, key = transfer.mean_seconds(record), tvm_ffi.structural_hash(record.workload.mod)
            if seconds is not None and (key not in fastest or fastest[key][0] > seconds):
                fastest[key] = (seconds, record)
        if not (library / "target.json").is_file():
            records.write_target(library, spec)
        into = records.open_database(library / part, spec, create=True)
        stored = {(tvm_ffi.structural_hash(r.workload.mod), _times(r)) for r in into.get_all_tuning_records()}
        for key, (_, record) in fastest.items():
            added.add(key)
            if (key, _times(record)) not in stored:  # added by an earlier run
                into.commit_tuning_record(ms.database.TuningRecord(
                    record.trace, into.commit_workload(record.workload.mod), record.run_secs, record.target,
                    record.args_info))
    return len(added)


def lend(mod, roots, spec: TargetSpec) -> tuple[object, int]:
    """Schedule each kernel of `mod` that has no schedule yet from the libraries under `roots`, in order: the
    record of its own workload where one is there (another model with this very kernel), else the replay of a
    record of a kernel with its signature (picks first, then the fastest). Returns (module, kernels scheduled)."""
    lent = 0
    for path in found(roots, spec):
        database, donors = _opened(path, spec, (path / records.RECORDS).stat().st_mtime_ns)

        def replayed(task, donors=donors):
            replays = (transfer.replay(task, record) for record in donors.get(transfer.signature(task["main"]), []))
            return next((sch for sch in replays if sch is not None), None)

        mod, exact, _ = records.apply(mod, database, spec.tvm_target())
        mod, replays, _ = records.schedule_kernels(mod, replayed)
        lent += exact + replays
    return mod, lent


def found(roots, spec: TargetSpec) -> list[Path]:
    """The libraries of `spec`'s kind of target under `roots` that hold records, in the roots' order."""
    return [path for path in (folder(root, spec) for root in roots) if records.count(path)]


def _opened(path: Path, spec: TargetSpec, modified: int):
    """(the library's records as a build reads them, picks first; its donors by kernel signature): read once a
    process while the files stay as they are (`modified`), as the library is several MB of JSON."""
    key = (str(path), spec.key(), modified)
    if key not in _OPENED:
        _OPENED[key] = _open(path, spec)
    return _OPENED[key]


_OPENED: dict = {}


def _open(path: Path, spec: TargetSpec):
    donors: dict = {}
    for part in (records.PICKS, ""):
        if records.count(path / part):
            for key, ranked in transfer.donors(records.open_database(path / part, spec, False)).items():
                donors.setdefault(key, []).extend(ranked)
    return records.load(path, spec), donors


def _times(record) -> tuple[float, ...]:
    return tuple(float(s) for s in record.run_secs)


def main(argv: list[str]) -> int:
    """`python -m qcompile.tune.library ROOT [FOLDER ...]`: (re)make ROOT's libraries from the records folders
    named (default: every one under ROOT)."""
    import shutil

    from .. import targets

    if not argv or not Path(argv[0]).is_dir():
        print("usage: python -m qcompile.tune.library RECORDS_ROOT [RECORDS_FOLDER ...]", file=sys.stderr)
        return 2
    root = Path(argv[0])
    shutil.rmtree(root / LIBRARY, ignore_errors=True)
    for source in [Path(a) for a in argv[1:]] or sorted(p.parent for p in root.glob("*/*/*/target.json")):
        spec = targets.resolve(json.dumps(records.measured_on(source)))
        library = folder(root, spec)
        print(f"{source}: {add(library, source, spec)} kernels → {library}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
