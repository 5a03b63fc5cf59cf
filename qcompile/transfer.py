"""Schedule transfer: a kernel with no tuning record gets the measured best schedules of a kernel with its loop nest.

A compiler change that only moves data (another layout of a conv's input, say) turns every affected kernel into a
new MetaSchedule workload, and records apply to the exact workload they were measured on: without this step, a
model's whole tuning would have to be redone. Two kernels whose parameters hold the same numbers of elements of the
same types usually share their loop nest; a stored schedule (a trace of loop transformations) is then replayed on
the new kernel and, where it applies, measured there and stored as the new kernel's record. A replay that does not
apply is skipped, and every stored time is a measurement of the new kernel.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil

CANDIDATES = 3  # a donor kernel's best schedules tried on each new kernel


@dataclasses.dataclass(frozen=True)
class TransferResult:
    kernels: int  # kernels that got a record
    measured: int  # candidates measured


def transfer(kernels, database, target, builder, runner) -> TransferResult:
    """Give each kernel of `kernels` (tuning tasks' modules, the kernel as `main`, none with a record in `database`)
    the measured replays of the best schedules stored for kernels with its signature."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    donors = _donors(database)
    device = "cuda" if target.kind.name == "cuda" else "cpu"  # the runner's device name, not the target kind
    recorded = measured = 0
    for mod in kernels:
        schedules = []
        for record in donors.get(_signature(mod["main"]), [])[:CANDIDATES]:
            sch = s_tir.Schedule(mod)
            try:
                record.trace.apply_to_schedule(sch, remove_postproc=False)
            except Exception:  # noqa: BLE001 - TVM's error for a trace that names blocks or loops this kernel lacks
                continue
            schedules.append(sch)
        if not schedules:
            continue
        built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch in schedules])
        args = ArgInfo.from_prim_func(mod["main"])
        runs = [(sch, b) for sch, b in zip(schedules, built) if b.error_msg is None]
        results = runner.run([ms.runner.RunnerInput(b.artifact_path, device, args) for _, b in runs])
        workload = database.commit_workload(mod)
        committed = False
        for (sch, b), future in zip(runs, results):
            result = future.result()
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
            measured += 1
            if result.error_msg is None and result.run_secs:
                database.commit_tuning_record(ms.database.TuningRecord(
                    sch.trace, workload, [float(s) for s in result.run_secs], target, args))
                committed = True
        recorded += committed
    return TransferResult(recorded, measured)


def _donors(database) -> dict:
    """The database's successfully measured records by kernel signature, fastest first."""
    donors = {}
    for record in database.get_all_tuning_records():
        seconds = [float(s) for s in record.run_secs or []]
        if seconds and all(math.isfinite(s) and s < 1e9 for s in seconds):  # failed runs are stored as 1e10 s
            donors.setdefault(_signature(record.workload.mod["main"]), []).append((sum(seconds) / len(seconds),
                                                                                   record))
    return {key: [record for _, record in sorted(found, key=lambda pair: pair[0])] for key, found in donors.items()}


def _signature(func) -> tuple:
    """Element count and type of each parameter: equal for kernels that differ only in how data is laid out."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return tuple((math.prod(int(d) for d in info.shape), str(info.dtype)) for info in ArgInfo.from_prim_func(func))
