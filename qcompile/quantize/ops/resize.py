"""Resize (and Upsample) on 8-bit codes: the output keeps the input's scale. Nearest picks codes as they are;
linear interpolates the codes in float32 and rounds once (half up), which is the float resize of the dequantized
input requantized to the same scale."""

from tvm.relax import op as R

from .registry import Role, Rule, register


def _resize(ctx, call, inputs, out, clamp, bias):
    (x,) = inputs
    a = call.attrs
    if x.params.per_channel or a.method not in ("nearest_neighbor", "linear"):
        return None

    def resize(data, dtype):
        return R.image.resize2d(data, call.args[1], roi=[float(v) for v in a.roi], layout=a.layout, method=a.method,
                                coordinate_transformation_mode=a.coordinate_transformation_mode,
                                rounding_method=a.rounding_method, cubic_alpha=float(a.cubic_alpha),
                                cubic_exclude=int(a.cubic_exclude),
                                extrapolation_value=float(a.extrapolation_value), out_dtype=dtype)

    if a.method == "nearest_neighbor":
        return ctx.emit(resize(x.q, x.params.dtype))
    interpolated = ctx.emit(resize(ctx.emit(R.astype(x.q, "float32")), "float32"))
    rounded = R.floor(R.add(interpolated, ctx.const([0.5], "float32")))
    return ctx.emit(R.astype(rounded, x.params.dtype))  # a weighted mean of codes stays within their range


register(Rule(ops=("relax.image.resize2d",), onnx_types=("Resize", "Upsample"), role=Role.PASS_THROUGH,
              activations=lambda call: [0], realize=_resize))
