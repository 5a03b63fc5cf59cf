"""The default schedule of a matmul kernel that is not packed as a conv: a (batched) matmul of two activations
(attention's Q·Kᵀ and A·V, int8 or int16 codes into int32, or float), with its elementwise epilogue.

MetaSchedule leaves such a kernel as TE wrote it without tuning: one scalar multiply-add at a time (BERT-like
encoder: 1 ms for 4 heads × 128 × 128 × 64). Here a register tile of `ROWS` rows × two vectors of columns is
summed over the whole reduction, the right operand read along its rows (contiguous in the columns), the left one
broadcast, then the epilogue runs on the tile before it is stored; the other rows and batch dimensions are the
parallel loop. It applies only where the columns are the right operand's innermost axis.
"""

from __future__ import annotations

from . import intrinsics

ROWS = 4  # rows of the register tile; with two vectors of columns, 8 sums (AVX2: half of its 16 registers)
VECTORS = 2  # vectors of columns in the register tile
_SPATIAL, _REDUCE = 0, 2  # IterVar.DataPar, IterVar.CommReduce


def default_schedule(func, lanes: int):
    """The schedule (`s_tir.Schedule`) of the PrimFunc `func` if it is a matmul this template covers, else None.
    `lanes`: 32-bit lanes of the CPU's vectors."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [b for b in blocks if any(iv.iter_type != _SPATIAL for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    matmul = reductions[0]
    at = blocks.index(matmul)
    producers, epilogue = blocks[:at], blocks[at + 1:]
    try:  # elementwise work on an operand (ExactFloatMatmul's casts) is done as the operand is read
        for producer in producers:
            sch.compute_inline(producer)
    except Exception:  # noqa: BLE001 - TVM's error for a producer that is no elementwise map
        return None
    block = sch.get(matmul)
    kinds = [iv.iter_type for iv in block.iter_vars]
    loops = sch.get_loops(matmul)
    if (len(kinds) < 3 or kinds[-1] != _REDUCE or any(k != _SPATIAL for k in kinds[:-1])
            or len(loops) != len(kinds)
            or any(iv.iter_type != _SPATIAL for b in epilogue for iv in sch.get(b).iter_vars)):
        return None
    column, depth = block.iter_vars[-2].var, block.iter_vars[-1].var
    # the columns must be some operand's innermost axis, the reduction not: the right operand, read along a row
    if not any(r.region[-1].min.same_as(column) for r in block.reads[1:]) or not any(
            r.region[-1].min.same_as(depth) for r in block.reads):
        return None
    *outer, row, col, k = loops
    rows, columns = int(sch.get(row).extent), int(sch.get(col).extent)
    # a row of columns no vector width divides (an attention head of 15) is one vector loop whole, if it fits the
    # tile's registers: LLVM covers it with full and partial vectors, no predicate in the loop
    width = next((w for w in (lanes * VECTORS, lanes) if columns % w == 0),
                 columns if columns < lanes * VECTORS else None)
    height = next(h for h in (ROWS, 2, 1) if rows % h == 0)
    if width is None:
        return None
    try:
        _schedule(sch, matmul, epilogue, outer, row, col, k, height, width)
    except Exception:  # noqa: BLE001 - TVM's error for an epilogue that cannot follow the tile
        return None
    return sch


def _schedule(sch, matmul, epilogue, outer, row, col, k, height, width):
    row_outer, row_inner = sch.split(row, factors=[None, height])
    col_outer, col_inner = sch.split(col, factors=[None, width])
    sch.reorder(*outer, row_outer, col_outer, k, row_inner, col_inner)
    sums = sch.cache_write(matmul, 0, "local")
    sch.reverse_compute_at(sums, col_outer)
    if epilogue:
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        sch.reverse_compute_at(epilogue[-1], col_outer)
        sch.compute_inline(sums)  # the epilogue reads the sums from registers
        sch.vectorize(sch.get_loops(epilogue[-1])[-1])
    else:
        sch.vectorize(sch.get_loops(sums)[-1])
    sch.parallel(sch.fuse(*outer, row_outer))
    sch.vectorize(col_inner)  # while the block still has its init
    init = sch.decompose_reduction(matmul, k)
    *_, init_row, init_col = sch.get_loops(init)
    sch.vectorize(init_col)
    sch.unroll(init_row)
    sch.unroll(row_inner)


def _rule_base():
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    return CPUScheduleRule


class DefaultMatmul(_rule_base()):
    """dlight rule: the default schedule of a matmul kernel (`default_schedule`) under the current target."""

    def apply(self, func, target, tunable):
        lanes = intrinsics.float_lanes(target)
        return default_schedule(func, lanes) if lanes else None
