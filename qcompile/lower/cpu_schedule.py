"""A fixed schedule for CPU kernels with nothing to tune: injective ones (layout packing, requantize chains), max
pooling and depthwise convolutions in blocked layouts.

MetaSchedule's CPU space for such a kernel holds one or two candidates and vectorizes only loops of at most 64
iterations, so a 112-wide image row stays scalar: on MobileNet the packing and requantize kernels cost several
times the (tensorized) convolutions. Here every injective kernel is fused to one loop, vectorized 64 bytes
wide and run in parallel, except the packed convs' layout kernels, which get a loop nest per tile; the kernels are
marked scheduled, so tuning skips them and builds reuse the rule.
"""

from __future__ import annotations

import math

from .kernels import CONV_PAD, DEPTHWISE_BLOCK, PACK, POOL_BLOCK, POOL_PAD, UNPACK

VECTOR_BYTES = 64  # one AVX-512 register
GATHER_LANES = 16  # lanes of a vectorized lookup: the 32-bit lanes of one AVX-512 register of indices
MAX_VECTOR_LOOP = 256  # longest loop vectorized whole (LLVM splits it into registers)
_SPATIAL = 0  # IterVar.DataPar


def ScheduleFixed():  # noqa: N802 - a pass, named like one
    """The pass giving every unscheduled kernel this module covers its fixed schedule, under the current target;
    the kernels it leaves are MetaSchedule's to tune."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(_Injective())


def schedule_injective(mod, target):
    """Schedule every unscheduled, purely spatial PrimFunc of `mod` for a CPU target."""
    with target:
        return ScheduleFixed()(mod)


def _rule_base():
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    return CPUScheduleRule


class _Injective(_rule_base()):
    def apply(self, func, target, tunable):
        from tvm import s_tir

        rows = _row_normalization(func) or _row_reduction(func)
        if rows is not None:
            return rows
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if _blocked_pool(sch, blocks) or _blocked_depthwise(sch, blocks) or _across_channels(sch, blocks):
            return sch
        if any(iv.iter_type != _SPATIAL for block in blocks for iv in sch.get(block).iter_vars):
            return None  # a reduction: MetaSchedule's to tune
        for block in blocks[:-1]:
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - a producer that cannot be inlined keeps its own loop nest
                pass
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            loops = sch.get_loops(block)
            if not loops or _layout_change(sch, block, loops):
                continue
            lanes = max(1, VECTOR_BYTES // max(1, _widest_bytes(sch.get(block))))
            if _looks_up(sch.get(block)):
                # a gather: each lane's index is widened to 64 bits and loaded alone, so a vector of 64 bytes
                # would be 64 scalar loads in 16 registers of indices (PP-OCRv4 det's tables: 0.07 → 0.32 ms)
                lanes = min(lanes, GATHER_LANES)
            extent = _extent(sch, loops)
            if extent is None:  # a loop whose length is known only at run time (NonMaxSuppression's outputs)
                continue
            if _transposes(sch.get(block)) and _tile_transpose(sch, loops):
                continue
            gathers = _gathers(sch.get(block))
            run = gathers and _lane_run(sch.get(block), _extent(sch, loops[-1:]))
            if run:
                # an operand in a blocked layout read into rows (NCHW[k]c into a sequence's rows or heads): a
                # vector of its k lanes is one load; the whole row would be gathered lane by lane
                *outer, _, lane = *loops[:-1], *sch.split(loops[-1], factors=[None, run])
                if outer:
                    sch.parallel(sch.fuse(*outer))
                sch.vectorize(lane)
                continue
            if extent % lanes or gathers:
                # a ragged split would leave a predicate in the vector loop, which LLVM then runs lane by lane
                # (a padded 225×225 image: ~30× slower); a kernel reading another shape than it writes (pad,
                # resize, concat) would compute every lane's indices from the flat one (divisions and remainders
                # per lane, and a gather: PP-OCRv4's detector head, 2-6× slower per kernel). The innermost axis,
                # whole, vectorizes without either
                *outer, inner = loops
                if outer:
                    sch.parallel(sch.fuse(*outer))
                if int(sch.get(inner).extent) <= MAX_VECTOR_LOOP:
                    sch.vectorize(inner)
                continue
            suffix = _contiguous_suffix(sch.get(block), len(loops))
            if suffix < len(loops) and _extent(sch, loops[-suffix:]) >= lanes // 2:
                # an operand broadcast along the outer axes only (a per-row scale, a per-channel bias): vectorized
                # over the inner axes it is one value (or one contiguous vector) per step; over the flat loop every
                # lane would compute its index by division and gather it
                outer, inner = loops[:-suffix], sch.fuse(*loops[-suffix:])
                if outer:
                    sch.parallel(sch.fuse(*outer))
                if _extent(sch, [inner]) > MAX_VECTOR_LOOP and _extent(sch, [inner]) % lanes == 0:
                    _, inner = sch.split(inner, factors=[None, lanes])
                if _extent(sch, [inner]) <= MAX_VECTOR_LOOP:
                    sch.vectorize(inner)
                continue
            outer, inner = sch.split(sch.fuse(*loops), factors=[None, lanes])
            sch.parallel(outer)
            sch.vectorize(inner)
        return sch


TRANSPOSE_TILE = 8  # rows × columns of a transpose's tile: 8 float32 lanes, 8 rows of a cache line each


def _transposes(block) -> bool:
    """Whether the block reads an operand across the output's innermost axis: that axis moves one of the
    operand's outer indices and not its last one (a transpose: attention's heads, a conv's output as rows)."""
    import tvm
    from tvm.tirx.analysis import undefined_vars

    analyzer = tvm.sym.Analyzer()
    for iv in block.iter_vars:  # the indices simplified within the axes' ranges: (x // 256) of x < 256 is 0
        analyzer.bind(iv.var, iv.dom)
    inner = block.iter_vars[-1].var
    for read in block.reads:
        uses = [any(v.same_as(inner) for v in undefined_vars(analyzer.simplify(r.min))) for r in read.region]
        if len(uses) > 1 and not uses[-1] and any(uses[:-1]):
            return True
    return False


def _tile_transpose(sch, loops) -> bool:
    """Schedule a transpose in square tiles: the output's last two axes split by TRANSPOSE_TILE, a tile's rows
    unrolled over a vector of its columns, so that the operand read across is gathered from the 8 cache lines
    of one tile, not from a column as long as the row (a cache line for every element); False where the last two
    axes do not divide by the tile."""
    if len(loops) < 2 or any(_extent(sch, [loop]) % TRANSPOSE_TILE for loop in loops[-2:]):
        return False
    *outer, rows, columns = loops
    row_tiles, row = sch.split(rows, factors=[None, TRANSPOSE_TILE])
    column_tiles, column = sch.split(columns, factors=[None, TRANSPOSE_TILE])
    sch.reorder(row_tiles, column_tiles, row, column)
    sch.parallel(sch.fuse(*outer, row_tiles))
    sch.unroll(row)
    sch.vectorize(column)
    return True


def _contiguous_suffix(block, axes: int) -> int:
    """How many innermost axes of the output every operand reads either along (the same extents) or not at all
    (extents of 1): over them, each operand is one contiguous run or one value."""
    out = [int(d) for d in block.writes[0].source.shape]
    suffix = axes
    for read in block.reads:
        shape = [int(d) for d in read.source.shape]
        if len(shape) != len(out):
            continue  # a scalar parameter (one value)
        for k in range(1, suffix + 1):
            tail, full = shape[-k:], out[-k:]
            if tail != full and any(d != 1 for d in tail):
                suffix = k - 1
                break
    return suffix


def _lane_run(block, extent: int) -> int | None:
    """The longest run of the output's innermost axis, dividing it, over which every operand is read contiguously
    along its own last axis (or is one value); None where there is none or it is the whole axis."""
    import tvm

    inner = block.iter_vars[-1].var
    for run in (d for d in range(extent, 1, -1) if extent % d == 0 and (d == extent or d <= MAX_VECTOR_LOOP)):
        analyzer = tvm.sym.Analyzer()
        for iv in block.iter_vars[:-1]:
            analyzer.bind(iv.var, iv.dom)
        step, lane = tvm.tirx.Var("step", inner.ty), tvm.tirx.Var("lane", inner.ty)
        analyzer.bind(step, tvm.ir.Range(0, extent // run))
        analyzer.bind(lane, tvm.ir.Range(0, run))
        analyzer.bind(inner, step * run + lane)
        if all(_along_last(analyzer, read, lane) for read in block.reads):
            return run if run < extent else None
    return None


def _along_last(analyzer, read, lane) -> bool:
    """Whether `lane` moves the read's last index by one a step and no other index."""
    from tvm.tirx.analysis import undefined_vars

    def uses(index):
        return any(v.same_as(lane) for v in undefined_vars(index))

    if not read.region:
        return True  # a scalar
    *outer, last = [analyzer.simplify(r.min) for r in read.region]
    return not any(uses(index) for index in outer) and not (uses(last) and uses(analyzer.simplify(last - lane)))


def _layout_change(sch, block, loops) -> bool:
    """Schedule a packed conv's layout kernel (NCHW → NCHW4c, NCHW[k]c → NCHW4c, NCHW[k]c → NCHW); False if
    `block` is none.

    Both are transposes of small tiles: one flat vectorized loop computes a division and a remainder per lane and
    gathers bytes one by one (0.3-0.7 ms a kernel on MobileNet, a third of its INT8 time). Here the loops follow
    the tile instead: rows in parallel, the channel lanes and (unpacking) a row segment as long as a channel block
    unrolled, which LLVM compiles to code 3-8× faster (measured per kernel on MobileNet)."""

    name = sch.get(block).name_hint
    if name == PACK and len(loops) == 5:
        batch, chunk, y, x, lane = loops
        if _reblock(sch, block, loops):
            return True
        lanes = int(sch.get(lane).extent)
        if any(len(r.source.shape) == 5 and int(r.source.shape[-1]) == lanes for r in sch.get(block).reads):
            # the source's own blocks, padded (a conv's result padded for the next conv): a pixel's lanes are
            # one vector, and the padding test is the same for all of them (PP-OCRv4 rec's: 0.12 → 0.02 ms)
            sch.parallel(sch.fuse(batch, chunk, y))
            sch.vectorize(lane)
            return True
    elif name == UNPACK and len(loops) == 4:
        batch, channel, y, x = loops
        block_size = int(sch.get(block).reads[0].source.shape[-1])
        chunk, lane = sch.split(channel, factors=[None, block_size])
        x, segment = sch.split(x, factors=[None, block_size])
        sch.reorder(batch, chunk, y, x, lane, segment)
        sch.unroll(segment)
    else:
        return False
    sch.parallel(sch.fuse(batch, chunk, y))
    sch.unroll(lane)
    return True


def _reblock(sch, block, loops) -> bool:
    """Schedule a pack from larger blocks (NCHW16c → NCHW4c, a blocked concat's parts included) source block by
    source block; False if the source is not blocked that way.

    Each source vector (16 channels of one pixel) is read once and written as 4 lane groups to 4 output blocks;
    the concat's choice of input is then the same for a whole row. 2-4× faster than the output-ordered loop
    on MobileNet's and SqueezeNet's re-blocking kernels (concats: 0.08 → 0.03 ms)."""
    batch, chunk, y, x, lane = loops
    lanes = int(sch.get(lane).extent)
    source = max((int(r.source.shape[-1]) for r in sch.get(block).reads if len(r.source.shape) == 5), default=0)
    parts = source // lanes
    if parts < 2 or source % lanes or int(sch.get(chunk).extent) % parts:
        return False
    source_chunk, part = sch.split(chunk, factors=[None, parts])
    sch.reorder(batch, source_chunk, y, x, part, lane)
    sch.parallel(sch.fuse(batch, source_chunk, y))
    sch.unroll(part)
    sch.vectorize(lane)
    return True


def _blocked_pool(sch, blocks) -> bool:
    """Schedule max pooling in a blocked layout (NCHW[k]c, `BlockedEpilogue`), its padding inlined; False if
    `blocks` are not that.

    The window's max runs per vector of k lanes, rows in parallel: nothing is left to tune."""
    *pads, block = blocks
    loops = sch.get_loops(block)
    if (sch.get(block).name_hint != POOL_BLOCK or len(loops) != 7
            or any(sch.get(pad).name_hint != POOL_PAD for pad in pads)):
        return False
    for pad in pads:
        sch.compute_inline(pad)
    batch, chunk, y, x, lane, ry, rx = loops
    sch.reorder(batch, chunk, y, x, ry, rx, lane)
    sch.parallel(sch.fuse(batch, chunk, y))
    sch.decompose_reduction(block, ry)
    # `vectorize` refuses a spatial loop under the window's reduction loops; innermost and contiguous, LLVM's
    # loop vectorizer takes it
    sch.unroll(ry)
    sch.unroll(rx)
    return True


def _blocked_depthwise(sch, blocks) -> bool:
    """Schedule a packed depthwise conv (`pack_conv`, NCHW[k]c) with its padding and requantize epilogue; False if
    `blocks` are not that.

    Each output lane sums its own channel's window, so a block's k lanes are one vector of int32 sums: a row
    segment of such vectors is accumulated in registers over the unrolled window, then requantized and stored
    before the next segment. MetaSchedule found schedules from 1× to 5× slower than this one for MobileNet's
    depthwise convs within its 30-minute budget (~16-32 candidates each), so they are no longer tuned."""

    names = [sch.get(block).name_hint for block in blocks]
    if names.count(DEPTHWISE_BLOCK) != 1:
        return False
    at = names.index(DEPTHWISE_BLOCK)
    conv, pads, epilogue = blocks[at], blocks[:at], blocks[at + 1:]
    loops = sch.get_loops(conv)
    out_shape = [int(d) for d in sch.get(conv).writes[0].source.shape]
    if (len(loops) != 7 or any(name != CONV_PAD for name in names[:at])
            or any(iv.iter_type != _SPATIAL for block in epilogue for iv in sch.get(block).iter_vars)
            or (epilogue and [int(d) for d in sch.get(epilogue[-1]).writes[0].source.shape] != out_shape)):
        return False
    for block in [*pads, *epilogue[:-1]]:
        sch.compute_inline(block)
    batch, chunk, y, x, lane, ry, rx = loops
    x, segment = sch.split(x, factors=[None, _segment(out_shape[3])])
    sch.reorder(batch, chunk, y, x, ry, rx, segment, lane)
    if epilogue:
        store = sch.cache_write(conv, 0, "local")
        sch.reverse_compute_at(store, x)
        sch.reverse_compute_at(epilogue[-1], x)
        sch.compute_inline(store)  # the epilogue reads the sums from registers
        sch.vectorize(sch.get_loops(epilogue[-1])[-1])
    sch.vectorize(lane)
    for loop in (ry, rx, segment):
        sch.unroll(loop)
    # channel blocks in parallel: a fused (chunk, row) loop is slower on one thread (LLVM reloads the weights)
    sch.parallel(sch.fuse(batch, chunk))
    sch.decompose_reduction(conv, ry)
    return True


def _across_channels(sch, blocks) -> bool:
    """A reduction over an outer axis, one result per position of the innermost one (int8-dynamic's row maxima in
    a conv's [1, C, 1, rows] layout): the rows as the vector loop inside the reduction, so that each step reads
    one contiguous row of positions; in loop order it read one value every `rows` elements."""
    reduction = sch.get(blocks[-1])
    iters = reduction.iter_vars
    spatial = [i for i, iv in enumerate(iters) if iv.iter_type == _SPATIAL]
    sources = _reduced_inputs(reduction)
    if (len(blocks) > 2 or not iters or iters[-1].iter_type == _SPATIAL or len(sources) != 1  # a matmul reads two
            or any(iv.iter_type != _SPATIAL for block in blocks[:-1] for iv in sch.get(block).iter_vars)
            or not spatial or spatial != list(range(len(spatial))) or int(iters[spatial[-1]].dom.extent) < 8
            # the input's innermost axis must be the results' (a mean over NCHW's H and W is not)
            or not sources[0].region[-1].min.same_as(iters[spatial[-1]].var)):
        return False
    if len(blocks) == 2:
        sch.compute_inline(blocks[0])  # the elementwise producer (abs) read where it is reduced
    loops = sch.get_loops(blocks[-1])
    inner, reduced = loops[len(spatial) - 1], loops[len(spatial):]
    sch.reorder(*reduced, inner)
    if int(sch.get(inner).extent) <= MAX_VECTOR_LOOP:
        sch.vectorize(inner)
    init = sch.decompose_reduction(blocks[-1], reduced[0])
    sch.vectorize(sch.get_loops(init)[-1])
    return True


def _reduced_inputs(reduction) -> list:
    """The regions a reduction block reads, but for its own accumulator."""
    written = {w.source for w in reduction.writes}
    return [r for r in reduction.reads if r.source not in written]


ROW_LANES = 16  # float32 lanes of one AVX-512 register: the partial sums a row's reductions keep
LONG_ROW = 1024  # a row this long is vectorized even in odd-sized pieces: scalar, it costs ~3 ns a value


def _row_reduction(func):
    """A schedule for a kernel that reduces each row along its input's innermost axes after elementwise producers
    (int8-dynamic's row maxima of |x|; a global pool's H × W, one row), or None: rows in parallel, each reduced as
    8-16 partial results in a vector (`rfactor`), then those; over NCHW[k]c's blocks and lanes,
    `_blocks_and_lanes`. TVM's untuned nest is scalar (BERT-like rows of 256: 11 → 1.4 µs; PP-OCRv4 det's
    squeeze-excite pools 0.43 → 0.08 ms)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    at = [i for i, b in enumerate(blocks) if any(iv.iter_type != _SPATIAL for iv in sch.get(b).iter_vars)][-1:]
    if not at:
        return None

    def written(block):
        return [_static(d) for d in sch.get(block).writes[0].source.shape]

    # elementwise work after the reduction on its one value a row (a mean's division) stays as it is
    if any(written(b) != written(blocks[at[0]]) for b in blocks[at[0] + 1:]):
        return None
    blocks = blocks[:at[0] + 1]
    reduction = sch.get(blocks[-1])
    iters = reduction.iter_vars
    sources = _reduced_inputs(reduction)
    spatial = [i for i, iv in enumerate(iters) if iv.iter_type == _SPATIAL]
    width = _static(iters[-1].dom.extent) if iters else None
    if (not iters or iters[-1].iter_type == _SPATIAL or spatial != list(range(len(spatial)))
            or not width or len(sources) != 1 or not sources[0].region[-1].min.same_as(iters[-1].var)
            or any(iv.iter_type != _SPATIAL for block in blocks[:-1] for iv in sch.get(block).iter_vars)):
        return None
    source = sources[0].region
    reduced = [i for i, r in enumerate(source) if any(r.min.same_as(iv.var) for iv in iters[len(spatial):])]
    # the innermost axes (a row; a global pool's H and W, read as one row), split into vectors; or a blocked
    # layout's lanes (at most a vector) reduced with its blocks, an outer axis (NCHW[k]c's channels)
    trailing = reduced == list(range(len(source) - len(reduced), len(source))) and all(
        source[i].min.same_as(iv.var) for i, iv in zip(reduced, iters[len(spatial):]))
    lanes = _partials(math.prod(int(iv.dom.extent) for iv in iters[len(spatial):]))
    lanes_of_blocks = width <= ROW_LANES and len(reduced) == 2 and reduced[0] < reduced[1] - 1
    if not (trailing and lanes) and not lanes_of_blocks:
        return None
    try:
        for block in blocks[:-1]:
            sch.compute_inline(block)  # |x| read where it is reduced
        loops = sch.get_loops(blocks[-1])
        rows, steps = loops[:len(spatial)], loops[len(spatial):]
        if lanes_of_blocks:
            return _blocks_and_lanes(sch, blocks[-1], steps[-1], len(rows))
        _, lanes = sch.split(sch.fuse(*steps), factors=[None, lanes])
        partial = sch.rfactor(lanes, factor_axis=len(rows))
        row = sch.fuse(*sch.get_loops(blocks[-1])[:len(rows)])
        sch.compute_at(partial, row)
        sch.parallel(row)
        _, lane_loop, *step_loops = sch.get_loops(partial)
        sch.reorder(*step_loops, lane_loop)  # the lanes as the vector, the steps outside
        sch.vectorize(lane_loop)
    except Exception:  # noqa: BLE001 - TVM's error for a kernel of another shape: left to the other rules
        return None
    return sch


def _blocks_and_lanes(sch, reduction, lanes, rows: int):
    """A reduction over NCHW[k]c's blocks and lanes: a vector of k partial results per position, computed for a
    tile of positions block by block, so that each step reads a contiguous run of the input (the blocks are far
    apart: a row's pass over them would jump a page at every step); then each position's k lanes."""
    partial = sch.rfactor(lanes, factor_axis=rows)
    *positions, block, lane = sch.get_loops(partial)
    position = sch.fuse(*positions)
    count = _static(sch.get(position).extent)
    tile = max(d for d in range(1, 17) if count % d == 0)
    tiles, inner = sch.split(position, factors=[None, tile])
    sch.reorder(tiles, block, inner, lane)
    sch.parallel(tiles)
    sch.vectorize(lane)
    init = sch.decompose_reduction(partial, block)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.parallel(sch.fuse(*sch.get_loops(reduction)[:-1]))
    return sch


def _row_normalization(func):
    """A schedule for a kernel that reduces each row of its output's innermost axis and then computes that row
    elementwise (layer norm: mean, variance; softmax: max, sum of exps), or None. Row by row, in parallel: each
    reduction as `_partials` partial results in a vector (`rfactor`), then reduced; the elementwise blocks as
    vector loops over the row (of that many lanes where 8 do not divide it), an elementwise step read by one
    block alone inlined into it (softmax's x - max: one pass over the row fewer). TVM's untuned loop nests are
    scalar (layer norm of 128 × 256 values 5× slower, softmax 2.6×); `dlight.cpu.Reduction` was slower."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    final = sch.get(blocks[-1])
    width = _static(final.iter_vars[-1].dom.extent) if final.iter_vars else None
    reductions = [b for b in blocks[:-1] if any(iv.iter_type != _SPATIAL for iv in sch.get(b).iter_vars)]
    lanes = _partials(width) if width else None
    if (len(blocks) < 2 or not reductions or not lanes
            or any(iv.iter_type != _SPATIAL for iv in final.iter_vars) or len(final.iter_vars) < 2
            or not all(_reduces_a_row(sch.get(b), final) for b in reductions)):
        return None
    def vector(loop):  # a row 8 lanes divide is vectorized whole (LLVM splits it), others in pieces of `lanes`
        return loop if width % (ROW_LANES // 2) == 0 else sch.split(loop, factors=[None, lanes])[1]

    try:
        for block in blocks[:-1]:
            if block not in reductions and len(sch.get_consumers(block)) == 1:
                sch.compute_inline(block)
        factored = []
        for block in reductions:
            _, partial = sch.split(sch.get_loops(block)[-1], factors=[None, lanes])
            factored.append(sch.rfactor(partial, factor_axis=len(sch.get_loops(block)) - 2))
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        loops = sch.get_loops(blocks[-1])
        row = sch.fuse(*loops[:-1])
        for block in reversed(blocks[:-1]):
            sch.compute_at(block, row)
        sch.parallel(row)
        sch.vectorize(vector(loops[-1]))
        partial = {sch.get(b) for b in factored}
        for block in blocks[:-1]:
            inner = sch.get_loops(block)[1:]
            if sch.get(block) in partial:  # (row, lanes, steps) → steps outside, the lanes as the vector
                sch.reorder(inner[-1], inner[-2])
                sch.vectorize(sch.get_loops(block)[-1])
            elif inner and all(iv.iter_type == _SPATIAL for iv in sch.get(block).iter_vars):
                sch.vectorize(vector(inner[-1]))
    except Exception:  # noqa: BLE001 - TVM's error for a kernel of another shape: left to the other rules
        return None
    return sch


def _partials(length: int) -> int | None:
    """The partial results a reduction along a row of `length` keeps in a vector: 16 or 8 where they divide it,
    else its largest divisor from 9 to 15 (a global pool over 13 × 13: 13); on a row of at least LONG_ROW values
    that none divides (a recognizer's 6625 classes), its divisor nearest 16 from 4 to 32 (25); else None."""
    preferred = (ROW_LANES, ROW_LANES // 2, *range(ROW_LANES - 1, ROW_LANES // 2, -1))
    found = next((n for n in preferred if length % n == 0), None)
    if found is None and length >= LONG_ROW:
        found = min((n for n in range(4, 2 * ROW_LANES + 1) if length % n == 0), key=lambda n: (abs(n - ROW_LANES), n),
                    default=None)
    return found


def _reduces_a_row(reduction, final) -> bool:
    """Whether the block reduces one axis, as wide as the final block's innermost, for each of its rows."""
    iters = reduction.iter_vars
    return (len(iters) == len(final.iter_vars) and iters[-1].iter_type != _SPATIAL
            and all(iv.iter_type == _SPATIAL for iv in iters[:-1])
            and _static(iters[-1].dom.extent) == _static(final.iter_vars[-1].dom.extent))


def _static(extent) -> int | None:
    """A loop's extent, or None where it is known only at run time."""
    from tvm import tirx

    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _segment(width: int) -> int:
    """The output pixels a depthwise conv accumulates at once: a divisor of the row width, 7-8 if there is one
    (fastest on MobileNet's rows, and 7-8 vector accumulators plus the 9 weight vectors fit in 32 registers)."""
    divisors = [d for d in range(1, min(width, 14) + 1) if width % d == 0]
    return min(divisors, key=lambda d: (abs(d - 7.5), d))


def _looks_up(block) -> bool:
    """Whether the block reads an operand at indices loaded from another (a lookup table, `take`)."""
    import tvm

    def loads(expr) -> bool:
        if isinstance(expr, tvm.ir.TensorLoad):  # what tirx.BufferLoad builds in TVM 0.27
            return True
        return any(loads(getattr(expr, field)) for field in ("a", "b", "value") if hasattr(expr, field))

    return any(loads(r.min) for read in block.reads for r in read.region)


def _gathers(block) -> bool:
    """Whether the block reads a tensor of another shape than it writes, other than by broadcasting (a dimension
    of 1): a pad, a resize, a concat, a reshape."""
    out = [int(d) for d in block.writes[0].source.shape]
    for read in block.reads:
        shape = [int(d) for d in read.source.shape]
        if len(shape) != len(out) and len(shape) > 1:
            return True
        if len(shape) == len(out) and any(d != o and d != 1 for d, o in zip(shape, out)):
            return True
    return False


def _extent(sch, loops) -> int | None:
    """The loops' iterations in all, or None where one's count is known only at run time."""
    extent = 1
    for loop in loops:
        length = _static(sch.get(loop).extent)
        if length is None:
            return None
        extent *= length
    return extent


def _widest_bytes(block) -> int:
    import tvm

    return max((tvm.DataType(str(r.source.dtype)).bits // 8 for r in [*block.reads, *block.writes]), default=4)
