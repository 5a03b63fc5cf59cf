"""How `qcompile tune --minutes` spends a short budget: which kernels the search takes."""

import dataclasses

import tvm
from tvm import te

from qcompile.tune import search


@dataclasses.dataclass
class _Task:  # what the search reads of MetaSchedule's ExtractedTask
    name: str
    dispatched: list
    weight: int


def _matmul(name, n, weight=1):
    a, b = te.placeholder((n, n), name="a"), te.placeholder((n, n), name="b")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return _Task(name, [tvm.IRModule({"main": te.create_prim_func([a, b, c])})], weight)


def test_without_a_deadline_every_kernel_is_searched():
    tasks = [_matmul(f"k{i}", 8) for i in range(40)]
    assert search._worth_searching(tasks, None, 2) == tasks


def test_a_budget_too_short_for_a_round_over_all_kernels_searches_the_most_work_first():
    # 5 minutes on 2 cores pay for a first round over 7 kernels (40 core-seconds each, in half the budget)
    sizes = [8, 64, 16, 32, 128, 8, 48, 24, 96, 40]
    tasks = [_matmul(f"k{i}", n) for i, n in enumerate(sizes)]
    tasks.append(_matmul("small, called often", 56, weight=20))  # 20 calls of 56³ outweigh one 128³
    chosen = search._worth_searching(tasks, 5, 2)
    assert [t.name for t in chosen] == ["k1", "k3", "k4", "k6", "k8", "k9", "small, called often"]  # graph order
    assert len(search._worth_searching(tasks, 30, 2)) == len(tasks)  # 30 minutes: a round over all 11 fits
    assert len(search._worth_searching(tasks, 0.01, 2)) == 1  # never none
