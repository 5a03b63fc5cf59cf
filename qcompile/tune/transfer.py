"""Schedule transfer: a kernel with no tuning record gets the measured best schedules of a kernel with its loop nest.

A compiler change that only moves data (another layout of a conv's input) or changes what follows the anchor (a
conv's requantize epilogue) turns every affected kernel into a new MetaSchedule workload, and records apply to the
exact workload they were measured on: without this step, a model's whole tuning would have to be redone. Two
kernels whose anchor blocks (the reduction a kernel is built around) have the same iteration space and read the
same numbers of elements of the same types share the loop nest that tuning schedules. A stored schedule (a trace
of loop transformations) is then replayed on the new kernel, its steps on the donor's own epilogue swapped for
inlining the new kernel's, and where it applies it is measured there and stored as the new kernel's record. A
replay that does not apply is skipped, and every stored time is a measurement of the new kernel.
"""

from __future__ import annotations

import dataclasses
import math

CANDIDATES = 3  # a donor kernel's best schedules that apply, measured on each new kernel


@dataclasses.dataclass(frozen=True)
class TransferResult:
    kernels: int  # kernels that got a record
    measured: int  # candidates measured


def transfer(kernels, databases, target, builder, runner) -> TransferResult:
    """Give each kernel of `kernels` (tuning tasks' modules, the kernel as `main`, none with a record in the
    first of `databases`, where records are stored) the measured replays of the best schedules stored in
    `databases` (the model's own, then libraries: `library.py`) for kernels with its signature."""
    from . import records

    donors_by = {}
    for database in databases:
        for key, found in donors(database).items():
            donors_by.setdefault(key, found)
    recorded = measured = 0
    for mod in kernels:
        schedules = []
        for record in donors_by.get(signature(mod["main"]), []):
            if len(schedules) == CANDIDATES:
                break
            sch = replay(mod, record)
            if sch is not None:
                schedules.append(sch)
        count, stored = records.measure(mod, schedules, databases[0], target, builder, runner)
        measured += count
        recorded += stored
    return TransferResult(recorded, measured)


def replay(mod, record):
    """The kernel `mod["main"]` scheduled by `record`'s trace, the steps on the donor's epilogue swapped for
    inlining this kernel's; None where the trace does not apply (it names blocks or loops this kernel lacks)."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    try:
        _inline_epilogue(sch)
        _without_epilogue_steps(record).apply_to_schedule(sch, remove_postproc=False)
    except Exception:  # noqa: BLE001 - TVM's error for a trace that does not fit this kernel
        return None
    return sch


def donors(database) -> dict:
    """The database's successfully measured records by kernel signature, fastest first."""
    found = {}
    signatures = {}  # by workload: records share a few (ResNet-50's 1334 records, 87 workloads)
    for record in database.get_all_tuning_records():
        if record.workload not in signatures:
            signatures[record.workload] = signature(record.workload.mod["main"])
        key, seconds = signatures[record.workload], mean_seconds(record)
        if key and seconds is not None:
            found.setdefault(key, []).append((seconds, record))
    return {key: [record for _, record in sorted(pairs, key=lambda pair: pair[0])] for key, pairs in found.items()}


def mean_seconds(record) -> float | None:
    """A record's mean measured time; None for a candidate that failed (stored as 1e10 s) or was not run."""
    seconds = [float(s) for s in record.run_secs or []]
    if not seconds or not all(math.isfinite(s) and s < 1e9 for s in seconds):
        return None
    return sum(seconds) / len(seconds)


def signature(func) -> tuple | None:
    """The anchor block's name and iteration space, and the element count and type of each buffer it reads: equal
    for kernels that share the loop nest tuning schedules, whatever their epilogue or data layout."""
    _, blocks = _blocks(func)
    anchor = _anchor(blocks)
    if anchor is None:
        return None
    block = blocks[anchor]
    return (block.name_hint, tuple(int(iv.dom.extent) for iv in block.iter_vars),
            tuple((math.prod(int(d) for d in r.source.shape), str(r.source.dtype)) for r in block.reads))


def _blocks(func) -> tuple:
    """(root block, the blocks of an unscheduled kernel in order: all are the root's children)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    return sch.get(root), [sch.get(b) for b in sch.get_child_blocks(root)]


def _anchor(blocks) -> int | None:
    """Index of the first block with a reduction axis: the conv, matmul or pooling a kernel is built around."""
    from tvm import tirx

    reduce = tirx.IterVar.CommReduce
    return next((i for i, b in enumerate(blocks) if any(iv.iter_type == reduce for iv in b.iter_vars)), None)


def _epilogue(func) -> list[str]:
    """Names of the blocks after the anchor that write an intermediate buffer: what tuning's AutoInline inlines
    into the block that writes the kernel's output."""
    root, blocks = _blocks(func)
    intermediate = {buffer.name for buffer in root.alloc_buffers}
    return [b.name_hint for b in blocks[_anchor(blocks) + 1:] if b.writes[0].source.name in intermediate]


def _inline_epilogue(sch) -> None:
    """Inline the kernel's epilogue blocks into the block that writes its output, last first, as AutoInline does."""
    for name in reversed(_epilogue(sch.mod["main"])):
        sch.compute_inline(sch.get_sblock(name))


def _without_epilogue_steps(record):
    """The record's trace without its look-ups and inlining of the blocks after its kernel's anchor (the donor's
    epilogue, which `_inline_epilogue` replaces): what is left schedules the anchor and the one block after it."""
    from tvm.s_tir.schedule import Trace

    epilogue = set(_epilogue(record.workload.mod["main"]))
    trace = record.trace
    dropped = {inst for inst in trace.insts
               if inst.kind.name == "GetSBlock" and str(inst.attrs[0]) in epilogue}
    dropped |= {inst for inst in trace.insts if inst.kind.name == "ComputeInline"
                and any(inst.inputs[0].same_as(d.outputs[0]) for d in dropped)}
    kept = [inst for inst in trace.insts if inst not in dropped]
    return Trace(kept, {inst: decision for inst, decision in trace.decisions.items() if inst not in dropped})
