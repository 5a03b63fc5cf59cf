"""Small Relax helpers shared by the quantization and lowering passes: recognizing ops, constants and activation
epilogues, and rewriting `main`."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax import op as R

def op_name(expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def bound_value(mutator, expr):
    """What a variable is bound to in the function `mutator` is visiting, through aliases (`lv1 = lv`,
    `lv1 = metadata[...]`), or the expression itself."""
    while isinstance(expr, relax.Var) and mutator.lookup_binding(expr) is not None:
        expr = mutator.lookup_binding(expr)
    return expr


def readers(func) -> dict:
    """Each variable of `func` → the values that read it: the values bound in its blocks, and its result."""
    found = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            for var in relax.analysis.free_vars(binding.value):
                found.setdefault(var, []).append(binding.value)
    for var in relax.analysis.free_vars(func.body.body):
        found.setdefault(var, []).append(func.body.body)
    return found


def alias_root(lookup_binding, expr):
    """The last variable of `expr`'s aliases (`lv1 = lv`): the one bound to the call itself, which passes that
    record what they emitted key it by. `lookup_binding`: the visiting mutator's."""
    while isinstance(expr, relax.Var) and isinstance(lookup_binding(expr), relax.Var):
        expr = lookup_binding(expr)
    return expr


def out_dtype(call) -> str | None:
    """The output type a call's attributes name (conv2d, matmul, conv2d_transpose), or None where they leave it
    to the input's (`out_dtype=None`, printed "None", "" or "void")."""
    name = str(call.attrs.out_dtype)
    return None if name in ("None", "", "void") else name


def static_shape(expr) -> list[int] | None:
    """The shape of a tensor expression, if every dimension is known at compile time."""
    dims = expr.ty.shape
    return [int(d) for d in dims] if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


def constant_value(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def clamp_of(call) -> tuple[float, float] | None:
    """The [lo, hi] an activation op clamps to (relu, clip), else None."""
    name = op_name(call)
    if name == "relax.nn.relu":
        return 0.0, math.inf
    if name == "relax.clip":
        return float(call.args[1].value), float(call.args[2].value)
    return None


def bias_of(call) -> tuple[relax.Expr, np.ndarray] | None:
    """(other operand, constant) when `call` adds a constant to a tensor, else None."""
    if op_name(call) != "relax.add":
        return None
    a, b = call.args
    for operand, const in ((a, b), (b, a)):
        value = constant_value(const)
        if value is not None and constant_value(operand) is None:
            return operand, value
    return None


def is_upsampling_transpose(call) -> bool:
    """Whether a conv2d_transpose's kernel equals its stride, with no padding, groups or dilation (an upsampling
    head, DBNet's 2×2 stride-2 layers). Its windows do not overlap: output pixel (kh·y + dy, kw·x + dx) of
    channel o is input pixel (y, x)'s dot product with tap (dy, dx) of channel o, so it is a 1×1 conv to O·kh·kw
    channels (`pointwise_filters`) and a pixel shuffle (`pixel_shuffle`)."""
    a = call.attrs
    kernel = static_shape(call.args[1]) if call.args[1].ty.ndim == 4 else None
    return (kernel is not None and int(a.groups) == 1 and a.data_layout == "NCHW" and a.kernel_layout == "IOHW"
            and a.out_layout == "NCHW" and [int(s) for s in a.strides] == kernel[2:]
            and not any(int(p) for p in a.padding) and not any(int(p) for p in a.output_padding)
            and all(int(d) == 1 for d in a.dilation))


def pointwise_filters(kernel: np.ndarray) -> np.ndarray:
    """An upsampling transposed conv's IOHW kernel as the OIHW weights of its 1×1 conv: output channel
    (dy, dx, o) holds tap (dy, dx) of channel o. Tap-major, so that the shuffle reads a run of consecutive
    channels (a vector of a blocked layout's lanes) for consecutive output channels."""
    in_channels, out_channels, kh, kw = kernel.shape
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)).reshape(kh * kw * out_channels, in_channels, 1, 1)


def pixel_shuffle(pixels, kernel_hw: tuple[int, int]):
    """The 1×1 conv's result [n, kh·kw·O, h, w] (`pointwise_filters`) as the transposed conv's
    [n, O, kh·h, kw·w]."""
    (kh, kw), (n, channels, height, width) = kernel_hw, static_shape(pixels)
    taps = R.reshape(pixels, [n, kh, kw, channels // (kh * kw), height, width])
    return R.reshape(R.permute_dims(taps, [0, 3, 4, 1, 5, 2]), [n, channels // (kh * kw), height * kh, width * kw])


def rewrite_main(mutator, mod):
    """Run a PyExprMutator over `main` and return the module it builds."""
    func = mutator.visit_expr(mod["main"])
    mutator.builder_.update_func(mod.get_global_var("main"), func)
    return mutator.builder_.get()
