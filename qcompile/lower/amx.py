"""The packed int8 conv on x86 AMX-INT8 (Sapphire Rapids and later): its tile intrinsics, its schedule, and the
check that lets a machine with AMX use them.

One `tdpbusd` multiplies a tile of u8 inputs — `rows` pixels × 64 bytes (16 groups of 4 input channels) — by a
tile of s8 weights — 16 groups × 64 bytes (16 output channels × 4 channels) — into a tile of `rows` × 16 int32
sums: 16 K multiply-adds, 16 VNNI instructions' work. The conv's layouts are VNNI's made wider: its input
NCHW[64]c (a tile row is one pixel's 64 channels, read with the row stride of the conv's x-stride) and its weights
VNNI's [O/k][I/4][ky][kx][k lanes × 4] with k = 64 output channels (a weight tile is 16 of the lanes for 16
consecutive channel groups, its row stride one channel group's), its output NCHW[64]c, the next conv's input as
it is. A conv whose input channels do not fill 64-blocks reads blocks of fewer (a shorter K: `Tile.groups`).

A register tile (`Tile`) holds up to 2 × 2 sum tiles — tiles 0-3; the input tiles 4-5 and weight tiles 6-7 are
loaded once per reduction step and each used twice. Three intrinsics per tile shape: `zero` (load the tile
configuration, zero the sums; the configuration is per thread, and the conv's parallel tasks run on any thread),
`update` (one reduction step) and `store` (the sums into the local buffer the epilogue reads). Tile numbers are
instruction immediates: the intrinsics cover the whole register tile, so each is a constant.

TVM 0.27 has no AMX intrinsic and does not request the OS permission the kernels need;
`targets.request_amx_permission` does (Linux: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) before an AMX
library runs, and so does the deploy kit's runner, in C. `emulate=True` builds the same kernels calling C
functions with the instructions' semantics (`tests/amx_emulator.c`) instead: how the tiles, strides and
configuration are checked on CPUs without AMX.
"""

from __future__ import annotations

import dataclasses
import functools

from .. import targets
from . import intrinsics
from .kernels import CONV_BLOCK, IC_BLOCK, PACKINGS

LANES = PACKINGS[intrinsics.AMX].lanes  # output channels of a packed block: 4 tiles of 16 sums wide
TILE_LANES = 16  # int32 sums of a tile row
ROW_BYTES = PACKINGS[intrinsics.AMX].row  # bytes of a tile row: 64
MAX_ROWS = 16


@dataclasses.dataclass(frozen=True)
class Tile:
    """A register tile: `pixel_tiles` × `lane_tiles` sum tiles of `rows` pixels × 16 output channels, over input
    rows of `groups` × 4 channels (K = 4·groups bytes per instruction) `stride` pixels apart."""

    rows: int
    pixel_tiles: int
    lane_tiles: int
    groups: int
    stride: int = 1  # the conv's x-stride: input rows of a tile are this many pixels apart

    @property
    def pixels(self) -> int:
        return self.rows * self.pixel_tiles

    @property
    def lanes(self) -> int:
        return TILE_LANES * self.lane_tiles

    def config(self) -> list[int]:
        """The 64-byte tile configuration (palette 1) as 8 little-endian 64-bit words: sum tiles rows × 64 bytes,
        input tiles rows × 4·groups bytes, weight tiles groups × 64 bytes."""
        data = bytearray(64)
        data[0] = 1
        shapes = {**{t: (self.rows, ROW_BYTES) for t in range(4)}, **{4 + i: (self.rows, 4 * self.groups)
                                                                     for i in range(2)},
                  **{6 + j: (self.groups, ROW_BYTES) for j in range(2)}}
        for tile, (rows, width) in shapes.items():
            data[16 + 2 * tile:18 + 2 * tile] = width.to_bytes(2, "little")
            data[48 + tile] = rows
        return [int.from_bytes(data[i:i + 8], "little") for i in range(0, 64, 8)]

    def names(self, emulate: bool = False) -> tuple[str, str, str]:
        """The (zero, update, store) intrinsics' names."""
        suffix = f"r{self.rows}m{self.pixel_tiles}n{self.lane_tiles}g{self.groups}s{self.stride}"
        suffix += "_emulated" * emulate
        return tuple(f"qcompile_amx_{op}_{suffix}" for op in ("zero", "update", "store"))


def tiles_for(width: int, groups: int, stride: int = 1) -> list[Tile]:
    """The register tiles of a conv whose output rows are `width` pixels, whose input blocks hold `groups` × 4
    channels and whose x-stride is `stride`, best first: the most pixels a tile (a divisor of the row: a ragged
    tile would need a predicate), two pixel tiles where they fit, two lane tiles."""
    found = []
    for rows in row_tiles(width)[:2]:
        for pixel_tiles in (2, 1):
            if width % (rows * pixel_tiles) == 0:
                found += [Tile(rows, pixel_tiles, lane_tiles, groups, stride) for lane_tiles in (2, 1)]
    return found


def row_tiles(width: int) -> list[int]:
    """The pixels a sum tile can hold of an output row `width` pixels wide, most first: the divisors of the row
    up to 16 (a ragged tile would need a predicate)."""
    return [rows for rows in range(min(width, MAX_ROWS), 0, -1) if width % rows == 0]


@functools.cache
def register(tile: Tile, emulate: bool = False) -> tuple[str, str, str]:
    """Register the (zero, update, store) intrinsics of `tile` with TVM, once; returns their names."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    names = tile.names(emulate)
    P, L, G, R, N = tile.pixels, tile.lanes, tile.groups, tile.rows, tile.lane_tiles
    M, S = tile.pixel_tiles, tile.stride
    span = (P - 1) * S + 1  # input pixels the tile's rows lie in
    words = tile.config()

    def op(name, *args):
        if emulate:
            return T.call_extern("int32", f"qcompile_amx_{name}", *args)
        return T.call_llvm_intrin("void", f"llvm.x86.{name}", *args)

    def tmm(index):
        return T.Cast("int8", index) if not emulate else index

    @T.prim_func(s_tir=True)
    def zero_desc(c: T.handle) -> None:
        C = T.match_buffer(c, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:P, 0:L])
            for p, lane in T.grid(P, L):
                with T.sblock("init"):
                    vp, vl = T.axis.remap("SS", [p, lane])
                    C[vp, vl] = T.int32(0)

    @T.prim_func(s_tir=True)
    def zero_impl(c: T.handle) -> None:
        C = T.match_buffer(c, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:P, 0:L])
            config = T.alloc_buffer((8,), "uint64", scope="local")
            config[0] = T.uint64(words[0])
            config[1] = T.uint64(words[1])
            config[2] = T.uint64(words[2])
            config[3] = T.uint64(words[3])
            config[4] = T.uint64(words[4])
            config[5] = T.uint64(words[5])
            config[6] = T.uint64(words[6])
            config[7] = T.uint64(words[7])
            T.evaluate(op("ldtilecfg", T.address_of(config[0])))
            for t in T.unroll(M * N):
                T.evaluate(op("tilezero", tmm(t)))

    @T.prim_func(s_tir=True)
    def update_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (span, 4 * G), "uint8", offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (G, 1, 1, 1, L, 4), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), 1])
        C = T.match_buffer(c, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:P, 0:L], A[0:span, 0:4 * G], B[0:G, 0, 0, 0, 0:L, 0:4])
            T.writes(C[0:P, 0:L])
            for p, lane, g, k in T.grid(P, L, G, 4):
                with T.sblock("update"):
                    vp, vl, vg, vk = T.axis.remap("SSRR", [p, lane, g, k])
                    C[vp, vl] = C[vp, vl] + (T.cast(A[vp * S, vg * 4 + vk], "int32")
                                             * T.cast(B[vg, 0, 0, 0, vl, vk], "int32"))

    @T.prim_func(s_tir=True)
    def update_desc_one_group(a: T.handle, b: T.handle, c: T.handle) -> None:
        # the same for an input of one group (4 channels): the conv's block has no iterator for its loop of one
        A = T.match_buffer(a, (span, 4), "uint8", offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (1, 1, 1, 1, L, 4), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), 1])
        C = T.match_buffer(c, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:P, 0:L], A[0:span, 0:4], B[0, 0, 0, 0, 0:L, 0:4])
            T.writes(C[0:P, 0:L])
            for p, lane, g, k in T.grid(P, L, 1, 4):  # noqa: B007 - g: the loop of one
                with T.sblock("update"):
                    vp, vl, vk = T.axis.remap("SSR", [p, lane, k])
                    C[vp, vl] = C[vp, vl] + T.cast(A[vp * S, vk], "int32") * T.cast(B[0, 0, 0, 0, vl, vk], "int32")

    @T.prim_func(s_tir=True)
    def update_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (span, 4 * G), "uint8", offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (G, 1, 1, 1, L, 4), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), 1])
        C = T.match_buffer(c, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:P, 0:L], A[0:span, 0:4 * G], B[0:G, 0, 0, 0, 0:L, 0:4])
            T.writes(C[0:P, 0:L])
            for i in T.unroll(M):
                T.evaluate(op("tileloadd64", tmm(4 + i), A.access_ptr("r", offset=i * R * S * A.strides[0]),
                              T.int64(A.strides[0] * S)))
            for j in T.unroll(N):
                T.evaluate(op("tileloadd64", tmm(6 + j),
                              B.access_ptr("r", offset=j * TILE_LANES * B.strides[4]), T.int64(B.strides[0])))
            for i in T.unroll(M):
                for j in T.unroll(N):
                    T.evaluate(op("tdpbusd", tmm(i * N + j), tmm(4 + i), tmm(6 + j)))

    @T.prim_func(s_tir=True)
    def store_desc(c: T.handle, d: T.handle) -> None:
        C = T.match_buffer(c, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        D = T.match_buffer(d, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:P, 0:L])
            T.writes(D[0:P, 0:L])
            for p, lane in T.grid(P, L):
                with T.sblock("store"):
                    vp, vl = T.axis.remap("SS", [p, lane])
                    D[vp, vl] = C[vp, vl]

    @T.prim_func(s_tir=True)
    def store_impl(c: T.handle, d: T.handle) -> None:
        C = T.match_buffer(c, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        D = T.match_buffer(d, (P, L), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:P, 0:L])
            T.writes(D[0:P, 0:L])
            for i in T.unroll(M):
                for j in T.unroll(N):
                    T.evaluate(op("tilestored64", tmm(i * N + j),
                                  D.access_ptr("w", offset=i * R * D.strides[0] + j * TILE_LANES),
                                  T.int64(D.strides[0] * 4)))

    descs = (zero_desc, update_desc if G > 1 else update_desc_one_group, store_desc)
    for name, desc, impl in zip(names, descs, (zero_impl, update_impl, store_impl)):
        TensorIntrin.register(name, desc, impl, override=True)
    return names


def conv_shape(sch) -> tuple[int, int, int] | None:
    """(output width, channel groups of an input block, x-stride) of the kernel's packed conv, or None if the
    kernel is no packed int8 conv of 64-lane blocks over input blocks of at most 64 channels."""
    import tvm
    from tvm.sym import pattern

    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    if names.count(CONV_BLOCK) != 1:
        return None
    conv = sch.get(blocks[names.index(CONV_BLOCK)])
    # b, oc, y, x, [64 lanes], ky, kx, ic/4, [4 channels]
    extents = [int(iv.dom.extent) for iv in conv.iter_vars]
    data = conv.reads[0]
    block = int(data.source.shape[-1])
    if (len(extents) != 9 or extents[4] != LANES or extents[8] != IC_BLOCK or block % IC_BLOCK
            or block > ROW_BYTES or str(data.source.dtype) != "uint8"):
        return None
    # the input column of output column x and kernel column kx: stride·x + kx
    stride = pattern.detect_linear_equation(data.region[3].min, [conv.iter_vars[3].var])
    if len(stride) != 2 or not isinstance(stride[0], tvm.tirx.IntImm):
        return None
    return extents[3], block // IC_BLOCK, int(stride[0])


def schedule(sch, tile: Tile, emulate: bool = False) -> None:
    """Schedule the packed conv kernel in `sch` on AMX with register tile `tile`: pixel and lane tiles over the
    reduction (channel blocks, kernel rows and columns) in the sum tiles, then stored for the epilogue."""
    from .conv_templates import split_kernel, sums_at

    zero, update, store = register(tile, emulate)
    conv, epilogue = split_kernel(sch, CONV_BLOCK)
    batch, oc, y, x, lane, ky, kx, ic, channels = sch.get_loops(conv)
    x_outer, x_inner = sch.split(x, factors=[None, tile.pixels])
    lane_outer, lane_inner = sch.split(lane, factors=[None, tile.lanes])
    ic_outer, ic_inner = sch.split(ic, factors=[None, tile.groups])
    sch.reorder(batch, oc, y, x_outer, lane_outer, ic_outer, ky, kx, x_inner, lane_inner, ic_inner, channels)
    sums_at(sch, conv, epilogue, x_outer)
    tiles = sch.cache_write(conv, 0, "local")  # the sum tiles: never in memory, stored by `store`
    sch.reverse_compute_at(tiles, lane_outer)
    sch.parallel(sch.fuse(batch, oc, y))
    init = sch.decompose_reduction(conv, ic_outer)
    sch.tensorize(sch.get_loops(init)[-2], zero)
    sch.tensorize(x_inner, update)
    sch.tensorize(sch.get_loops(tiles)[-2], store)


def candidates(mod, emulate: bool = False) -> list:
    """Schedules (`s_tir.Schedule`) of the kernel `mod["main"]`, one per register tile of `tiles_for`, best
    first; none if it is not a packed conv of this class (`conv_shape`)."""
    return list(_schedules(mod, emulate))


def default_schedule(mod, emulate: bool = False):
    """The schedule of the kernel `mod["main"]` with the first register tile that fits; None if it is not a
    packed conv of this class with an elementwise epilogue."""
    return next(_schedules(mod, emulate), None)


def _schedules(mod, emulate: bool):
    from tvm import s_tir

    shape = conv_shape(s_tir.Schedule(mod))
    for tile in tiles_for(*shape) if shape else ():
        sch = s_tir.Schedule(mod)
        try:
            schedule(sch, tile, emulate)
        except Exception:  # noqa: BLE001 - TVM's error for an epilogue that cannot be fused into the tile
            continue
        yield sch


class KernelClass:
    """The packed convs AMX computes, as `conv_templates.register_files` lists kernel classes."""

    def default_schedule(self, mod):
        return default_schedule(mod)

    def candidates(self, mod):
        return candidates(mod)


@functools.cache
def trusted() -> bool:
    """Whether AMX kernels are used where a target has AMX: on a machine without AMX yes (they are built, not run
    here; `tests/test_amx.py` checks their integers with the instructions emulated); on one with AMX only once
    `self_check` has passed here (in a child process, so that a fault cannot end this one; the verdict is kept
    in the user cache, per CPU and versions)."""
    if not targets.host_has_amx():
        return True
    import hashlib
    import importlib.metadata
    import json
    import subprocess
    import sys

    import tvm

    from .. import paths

    versions = f"{_cpu_name()} {tvm.__version__} {importlib.metadata.version('qcompile')}"
    verdict = paths.cache() / f"amx-check-{hashlib.sha256(versions.encode()).hexdigest()[:16]}.json"
    if verdict.is_file():
        return bool(json.loads(verdict.read_text())["passed"])
    try:
        passed = subprocess.run([sys.executable, "-m", "qcompile.lower.amx"], capture_output=True,
                                timeout=600).returncode == 0
    except subprocess.TimeoutExpired:
        passed = False
    try:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        verdict.write_text(json.dumps({"passed": passed}))
    except OSError:  # an unwritable cache: checked again by the next process
        pass
    return passed


def _cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")


def self_check() -> None:
    """Build the AMX conv kernels of a few shapes (3×3 and 1×1, strides 1 and 2, input blocks of 64 and 48
    channels) for this CPU, run them, and compare with numpy; AssertionError on a difference."""
    import numpy as np
    import tvm
    from tvm import te
    from tvm.target import codegen

    from .passes.pack_conv import _conv_blocked, pack_kernel

    assert targets.request_amx_permission(), "Linux refused the AMX tile state (arch_prctl)"
    target = tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})
    rng = np.random.default_rng(0)
    for in_c, size, stride, block in ((128, 3, 1, 64), (48, 1, 1, 48), (64, 3, 2, 64), (64, 1, 2, 64)):
        data = rng.integers(0, 256, (1, in_c, 14, 14)).astype(np.uint8)
        kernel = rng.integers(-128, 128, (LANES, in_c, size, size)).astype(np.int8)
        pad = size // 2
        padded = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out_hw = (14 + 2 * pad - size) // stride + 1
        expected = np.zeros((LANES, out_hw, out_hw), np.int64)
        for ry in range(size):
            for rx in range(size):
                window = padded[0, :, ry:ry + stride * out_hw:stride, rx:rx + stride * out_hw:stride]
                expected += np.einsum("chw,oc->ohw", window, kernel[:, :, ry, rx].astype(np.int64))
        placeholder = te.placeholder((1, in_c // block, 14, 14, block), "uint8", name="data")
        weights = te.placeholder((1, in_c // IC_BLOCK, size, size, 1, LANES, IC_BLOCK), "int8", name="weight")
        acc = _conv_blocked(placeholder, weights, (stride, stride), (pad,) * 4, (1, 1))
        mod = tvm.IRModule({"main": te.create_prim_func([placeholder, weights, acc]).with_attr(
            "global_symbol", "main")})
        blocked = data.reshape(1, in_c // block, block, 14, 14).transpose(0, 1, 3, 4, 2)
        for sch in candidates(mod):
            library = tvm.tirx.build(sch.mod, target=target)
            out = tvm.runtime.tensor(np.zeros((1, 1, out_hw, out_hw, LANES), np.int32))
            library["main"](tvm.runtime.tensor(np.ascontiguousarray(blocked)),
                            tvm.runtime.tensor(pack_kernel(kernel, PACKINGS[intrinsics.AMX])), out)
            assert np.array_equal(out.numpy()[0, 0].transpose(2, 0, 1), expected), f"{in_c}, {size}, {stride}"


if __name__ == "__main__":
    self_check()
