"""qcompile: ONNX → INT8 quantized, tuned TVM shared libraries for x86, 64-bit ARM and CUDA.

    import qcompile
    qcompile.build("model.onnx", "model.so", calib="images/")   # or quantize(...), tune(...)
    model = qcompile.load("model.so")
    (probs,) = model(x)
"""

# The stage subpackages `quantize` and `tune` share their names with the API functions below: imported first,
# so that the names bound last, the functions, are what `qcompile.quantize` and `qcompile.tune` are.
from . import quantize as _quantize_stage  # noqa: F401
from . import tune as _tune_stage  # noqa: F401
from .api import build, quantize, tune
from .errors import QcompileError
from .runtime.artifact import CompiledModel, load

__all__ = ["CompiledModel", "QcompileError", "build", "load", "quantize", "tune"]
