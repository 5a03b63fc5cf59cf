"""ExposeQuantPoints: drop the markers and return every marked activation as an extra output, for calibration."""

import tvm
from tvm import relax
from tvm.relax import PyExprMutator, expr_functor

from ..markers import QUANT_POINT, marker


def quant_points(mod) -> list[tuple[int, str]]:
    """(point id, label) of every quant_point marker in `main`, in order; tensors sharing parameters share an id."""
    points = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            found = marker(b.value)
            if found and found[0] == QUANT_POINT:
                points.append((int(found[1][1]), found[1][2].value))
    return points


def point_keys(mod) -> list[int]:
    """For every quant_point marker in `main` (in quant_points order), the position of the tensor it marks among
    the function's parameters and unmarked bindings. Annotating one imported module with different exclusions
    marks different tensors but keeps these positions, so statistics keyed by them carry from one annotation to
    the next (the accuracy-control search calibrates once)."""
    func = mod["main"]
    position = {v: i for i, v in enumerate(func.params)}
    keys = []
    for block in func.body.blocks:
        for b in block.bindings:
            found = marker(b.value)
            if found is None:
                position[b.var] = len(position)
            elif found[0] == QUANT_POINT:
                keys.append(position[found[1][0]])
    return keys


@expr_functor.mutator
class _Unmark(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.exposed = []

    def visit_call_(self, op):
        call = super().visit_call_(op)
        found = marker(call)
        if found is None:
            return call
        kind, args = found
        if kind == QUANT_POINT:
            self.exposed.append(self.builder_.emit_output(args[0]))
        return args[0]


@tvm.transform.module_pass(opt_level=0, name="qcompile.ExposeQuantPoints")
class ExposeQuantPoints:
    """main(x) → (its result, the value at each quant point marker, in the order of quant_points).

    The result stays one element even when it is a tuple: whether the body returns a tuple literal or a variable
    bound to one, the exposed values then start at index 1."""

    def transform_module(self, mod, ctx):
        mutator = _Unmark(mod)
        func = mutator.visit_expr(mod["main"])
        seq = func.body
        results = [seq.body] + mutator.exposed
        new_func = relax.Function(func.params, relax.SeqExpr(seq.blocks, relax.Tuple(results)),
                                  relax.TupleType([r.ty for r in results]), attrs=func.attrs)
        mutator.builder_.update_func(mod.get_global_var("main"), new_func)
        return relax.transform.Normalize()(mutator.builder_.get())
