"""Int8 dot-product tensor intrinsics: which one a target has, registered so that schedules can tensorize with it.

TVM 0.27 registers `dot_16x4_vnni` with operands LLVM 22 rejects: `llvm.x86.avx512.vpdpbusd.512` is declared
`<16 x i32>(<16 x i32>, <64 x i8>, <64 x i8>)`, but TVM passes the two byte operands as `<16 x i32>`, so every
tensorized candidate fails LLVM's verifier. qcompile registers the same description with the operands
reinterpreted as 64 bytes (u8 activations broadcast four at a time, s8 weights packed [16][4]), under the name
MetaSchedule's x86 rules look up.

CUDA's `dp4a` is defined here too: TVM's own `dp4a_s8s8s32` wants both operands staged in shared memory, while
qcompile's CUDA convolution schedule (`gpu_schedule`) reads the packed weights straight from global memory.

Importing `tvm.s_tir.tensor_intrin` whole (every target's intrinsics, 15-80 s) is avoided: the x86 and CUDA ones
are defined here, the ARM ones are loaded from their own module only, within `light_package()`.

This is qcompile's one setup of TVM's process-wide state, done when a target asks for an intrinsic (`for_target`)
and once per process: the registrations below, nothing else. The replaced `dot_16x4_vnni` computes what TVM's
does (TVM's fails LLVM's verifier); TVM's own x86 module is loaded first, so that importing
`tvm.s_tir.tensor_intrin` later, in code of the process that asks for it, finds the name taken and works.
"""

from __future__ import annotations

import contextlib
import functools

VNNI = "dot_16x4_vnni"  # u8[4] · s8[16][4] → i32[16], one vpdpbusd
VNNI_LOCAL = "qcompile_dot_16x4_vnni_local"  # the same, summing into a local buffer (registers)
AVX2 = "qcompile_dot_8x4_avx2_wide"  # i16[4] (u8 widened) · s8[2][8][2] → i32[8] in registers, two vpmaddwd
AVX2_W16 = "qcompile_dot_8x4_avx2_w16"  # the same with the weights stored widened: i16[2][8][2]
ARM_SDOT = "dot_4x4_i8i8s32_sdot"  # s8[4] · s8[4][4] → i32[4], one sdot
ARM_SDOT_LOCAL = "qcompile_dot_4x4_sdot_local"  # the same, summing into a local buffer (registers)
I8MM = "qcompile_mmla_2x2x8_i8mm_local"  # s8[2 pixels][8] · s8[2 lanes][8] → i32[2][2] in registers, one smmla
I8MM_SINGLE = "qcompile_mmla_1x2x8_i8mm_local"  # s8[8] (one pixel, twice) · s8[2][8] → i32[2], one smmla
DP4A = "qcompile_dp4a_s8s8s32"  # s8[4] (registers) · s8[4] (global) → i32, one __dp4a
DP4A_MIN_ARCH = 61  # __dp4a exists from sm_61 (Pascal) on
AMX = "qcompile_amx_int8"  # u8[rows][64] · s8[16][16][4] → i32[rows][16], one tdpbusd: `amx.py`, a family of them


def for_target(target, tiles: bool = True) -> str | None:
    """The int8 dot-product intrinsic the target's CPU has (None: no tensorized int8 path); with `tiles=False`
    its dot-product instruction, not AMX's tiles."""
    from tvm.target import codegen

    if target.kind.name == "cuda":
        arch = str(target.attrs.get("arch", ""))
        if arch.startswith("sm_") and arch[3:].isdigit() and int(arch[3:]) >= DP4A_MIN_ARCH:
            register_dp4a()
            return DP4A
        return None
    if target.kind.name != "llvm":
        return None
    if tiles and codegen.target_has_features("amx-int8", target):
        from . import amx

        if amx.trusted():
            return AMX
    if codegen.target_has_features("avx512vnni", target):
        register_vnni()
        return VNNI
    if codegen.target_has_features("avx2", target):
        register_avx2()
        return AVX2
    if codegen.target_has_features("i8mm", target):
        register_i8mm()
        return I8MM
    if codegen.target_has_features("dotprod", target):
        register_arm()
        return ARM_SDOT
    return None


def register(intrinsic: str) -> None:
    """Register `intrinsic` (one of this module's names) with TVM, once."""
    {VNNI: register_vnni, AVX2: register_avx2, AVX2_W16: register_avx2, ARM_SDOT: register_arm, DP4A: register_dp4a,
     I8MM: register_i8mm, I8MM_SINGLE: register_i8mm}[intrinsic]()


def float_lanes(target) -> int | None:
    """float32 lanes of the CPU's FMA vectors (x86: 16 with AVX-512, 8 with AVX2; 64-bit ARM: NEON's 4); None
    where float convs are not packed (other CPUs, GPUs)."""
    from tvm.target import codegen

    if target.kind.name != "llvm":
        return None
    if str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return 4
    if not codegen.target_has_features("fma", target):
        return None
    if codegen.target_has_features("avx512f", target):
        return 16
    return 8 if codegen.target_has_features("avx2", target) else None


@functools.cache
def register_vnni() -> None:
    _load_intrinsic_module("x86")  # TVM's own first: ours replace its broken VNNI intrinsic, not the other way
    _register_vnni(VNNI, "global")
    _register_vnni(VNNI_LOCAL, "local")


def _register_vnni(name: str, scope: str) -> None:
    from tvm.s_tir import TensorIntrin

    desc, impl = _dot4(16, "uint8", scope, "llvm.x86.avx512.vpdpbusd.512")
    TensorIntrin.register(name, desc, impl, override=True)


@functools.cache
def register_avx2() -> None:
    """The int8 dot product of x86 CPUs without VNNI, exact: AVX2's byte multiply-add (vpmaddubsw) saturates
    its 16-bit pair sums (255·127 + 255·127 does not fit), so here both operands are 16 bits and vpmaddwd sums
    each pair of products into 32 bits. The input comes widened (the conv kernel widens its input once, not
    every reduction step): two adjacent 16-bit channels, broadcast as one 32-bit word, meet the weights stored
    [2][8][2] (channels 0 and 1, then 2 and 3, for 8 output lanes), so that each vpmaddwd gives 8 lanes' sums in
    order, with no horizontal add. The weights are widened as they are loaded (`AVX2`) or stored widened
    (`AVX2_W16`, twice the bytes, no widening instruction)."""
    _register_avx2(AVX2, "int8")
    _register_avx2(AVX2_W16, "int16")


def _register_avx2(name: str, weight_dtype: str) -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    def weights(B, group):
        if weight_dtype == "int16":
            return B.vload([group, 0, 0], "int16x16")
        return T.Cast("int16x16", B.vload([group, 0, 0], "int8x16"))

    def pair(A, group):  # channels 2·group and 2·group + 1, as 8 copies of one 32-bit word
        return T.reinterpret(T.broadcast(T.reinterpret(A.vload([group * 2], "int16x2"), dtype="int32"), 8),
                             dtype="int16x16")

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "int16", offset_factor=1),
        B: T.Buffer((2, 8, 2), weight_dtype, offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:2, 0:8, 0:2])
            T.writes(C[0:8])
            for i, g, j in T.grid(8, 2, 2):
                with T.sblock("update"):
                    vi, vg, vj = T.axis.remap("SRR", [i, g, j])
                    C[vi] = C[vi] + T.cast(A[vg * 2 + vj], "int32") * T.cast(B[vg, vi, vj], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "int16", offset_factor=1),
        B: T.Buffer((2, 8, 2), weight_dtype, offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:2, 0:8, 0:2])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 8)] = (
                C.vload([0], dtype="int32x8")
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), weights(B, 0),
                                          pair(A, 0), dtype="int32x8")
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), weights(B, 1),
                                          pair(A, 1), dtype="int32x8")
            )

    TensorIntrin.register(name, desc, impl, override=True)


@functools.cache
def register_dp4a() -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="local"),
        B: T.Buffer((4,), "int8", offset_factor=1, align=4),
        C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + T.cast(A[vk], "int32") * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="local"),
        B: T.Buffer((4,), "int8", offset_factor=1, align=4),
        C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            C[0] = C[0] + T.call_pure_extern(
                "int32", "__dp4a", A.vload([0], "int8x4"), B.vload([0], "int8x4"), T.int32(0))

    TensorIntrin.register(DP4A, desc, impl, override=True)


@functools.cache
def register_arm() -> None:
    """TVM's sdot (what MetaSchedule's ARM rules tensorize with) and its variant summing into registers (what the
    conv templates tensorize with)."""
    from tvm.s_tir import TensorIntrin

    _load_intrinsic_module("arm_cpu")

    desc, impl = _dot4(4, "int8", "local", "llvm.aarch64.neon.sdot.v4i32.v16i8")
    TensorIntrin.register(ARM_SDOT_LOCAL, desc, impl, override=True)


@functools.cache
def register_i8mm() -> None:
    """ARM's int8 matrix multiply (FEAT_I8MM: Neoverse V1/N2/V2, Cortex-A710 and later): smmla sums 8 products
    into each of a 2×2 block of int32 — rows: 2 pixels' 8 input channels, columns: 2 output channels' 8 weights —
    twice sdot's work per instruction. The sums of a register tile are [pixels][channels] in a local buffer; the
    two pixel rows are loaded and stored as halves (LLVM keeps the 2×2 block in one register across the
    reduction). A conv whose pixel pairs are not adjacent in memory (stride 2) or whose rows are odd takes the
    single-pixel form: the pixel's 8 bytes in both rows, half the work of an smmla, as fast as sdot."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    smmla = "llvm.aarch64.neon.smmla.v4i32.v16i8"

    @T.prim_func(s_tir=True)
    def pair_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2, 8), "int8", offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2, 2), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            for i, j, k in T.grid(2, 2, 8):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], "int32") * T.cast(B[vj, vk], "int32")

    @T.prim_func(s_tir=True)
    def pair_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2, 8), "int8", offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2, 2), "int32", offset_factor=1, scope="local", strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            block = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(smmla),
                T.vectorcombine("int32x4", C.vload([0, 0], "int32x2"), C.vload([1, 0], "int32x2")),
                T.vectorcombine("int8x16", A.vload([0, 0], "int8x8"), A.vload([1, 0], "int8x8")),
                B.vload([0, 0], "int8x16"), dtype="int32x4")
            C[0, T.ramp(0, 1, 2)] = T.Shuffle([block], [0, 1])
            C[1, T.ramp(0, 1, 2)] = T.Shuffle([block], [2, 3])

    @T.prim_func(s_tir=True)
    def single_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8,), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:2], A[0:8], B[0:2, 0:8])
            T.writes(C[0:2])
            for j, k in T.grid(2, 8):
                with T.sblock("update"):
                    vj, vk = T.axis.remap("SR", [j, k])
                    C[vj] = C[vj] + T.cast(A[vk], "int32") * T.cast(B[vj, vk], "int32")

    @T.prim_func(s_tir=True)
    def single_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8,), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:2], A[0:8], B[0:2, 0:8])
            T.writes(C[0:2])
            sums = C.vload([0], "int32x2")
            pixel = A.vload([0], "int8x8")
            block = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(smmla), T.vectorcombine("int32x4", sums, sums),
                T.vectorcombine("int8x16", pixel, pixel),
                B.vload([0, 0], "int8x16"), dtype="int32x4")
            C[T.ramp(0, 1, 2)] = T.Shuffle([block], [0, 1])

    TensorIntrin.register(I8MM, pair_desc, pair_impl, override=True)
    TensorIntrin.register(I8MM_SINGLE, single_desc, single_impl, override=True)


def _dot4(lanes: int, input_dtype: str, scope: str, instruction: str):
    """(description, implementation) of a 4-byte dot product per output lane, `input_dtype`[4] · s8[lanes][4] →
    i32[lanes] (C in `scope`), as one LLVM `instruction` taking the sums, the 4 input bytes broadcast to every
    lane, and the weights: VNNI's vpdpbusd, ARM's sdot."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), input_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), input_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a_i32 = T.reinterpret(A.vload([0], f"{input_dtype}x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(instruction),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(a_i32, lanes), dtype=f"{input_dtype}x{4 * lanes}"),
                B.vload([0, 0], dtype=f"int8x{4 * lanes}"),
                dtype=f"int32x{lanes}",
            )

    return desc, impl


def _load_intrinsic_module(name: str):
    import importlib

    with light_package():
        return importlib.import_module(f"tvm.s_tir.tensor_intrin.{name}")


@contextlib.contextmanager
def light_package():
    """Within: a stand-in for the `tvm.s_tir.tensor_intrin` package, so that its modules load one at a time and
    importing the package itself is free; after: the real package for whoever imports it.

    The package's __init__ loads every target's intrinsics (CUDA's alone take most of its 15-80 s).
    MetaSchedule's TuneContext imports it: tuning runs within this."""
    import sys
    import types
    from pathlib import Path

    import tvm.s_tir

    package = "tvm.s_tir.tensor_intrin"
    if package in sys.modules:  # the real one, or a stand-in of an enclosing call
        yield
        return
    stub = types.ModuleType(package)
    stub.__path__ = [str(Path(tvm.s_tir.__file__).parent / "tensor_intrin")]
    sys.modules[package] = stub
    try:
        yield
    finally:
        if sys.modules.get(package) is stub:
            del sys.modules[package]
            if getattr(tvm.s_tir, "tensor_intrin", None) is stub:
                del tvm.s_tir.tensor_intrin
