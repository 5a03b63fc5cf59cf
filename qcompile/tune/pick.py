"""Tuning's last step on CPUs: each kernel's best schedules re-timed with its weights out of the caches.

The search times each candidate several times in a row, so a layer's weights are in the caches for all but the first
run. In the running network they never are: every layer's weights come back from L3 or memory, and schedules that
read them out of storage order lose up to 2× there (one of ResNet-50's convs: 0.26 ms timed warm, 0.65 ms cold)
while others barely move. Timing the few best of the search once more, cold, together with the hand-written
packed-conv schedules (`conv_templates`), and building with the fastest of those, made ResNet-50 about 3 % faster
than building with the search's own best (benchmarks/RESULTS.md). The cold timings live in their own database
(`records.PICKS`), as they cannot be compared with the search's warm ones.
"""

from __future__ import annotations

import dataclasses

CANDIDATES = 4  # the search's best schedules of a kernel that are re-timed


@dataclasses.dataclass(frozen=True)
class PickResult:
    kernels: int  # kernels that got a pick
    measured: int  # candidates timed


def pick(kernels, search, picks, target, builder, runner) -> PickResult:
    """Time the best `CANDIDATES` records in `search` of each kernel of `kernels` (tuning tasks' modules, the kernel
    as `main`) and, for packed convs on CPUs, its hand-written schedules, with `runner` (a cold one); store
    them in `picks`. A kernel with fewer than two candidates is left to the search's record."""
    from tvm import s_tir

    from ..lower import conv_templates
    from . import records

    files = conv_templates.register_files(target)
    picked = measured = 0
    for mod in kernels:
        schedules = []
        if search.has_workload(mod):
            for record in search.get_top_k(search.commit_workload(mod), CANDIDATES):
                sch = s_tir.Schedule(mod)
                record.trace.apply_to_schedule(sch, remove_postproc=False)
                schedules.append(sch)
        for file in files:
            schedules += file.candidates(mod)
        if len(schedules) < 2:
            continue
        count, stored = records.measure(mod, schedules, picks, target, builder, runner)
        measured += count
        picked += stored
    return PickResult(picked, measured)
