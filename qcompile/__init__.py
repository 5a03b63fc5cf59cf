"""qcompile: ONNX → INT8 quantized, tuned TVM shared libraries for x86, 64-bit ARM and CUDA."""

from .artifact import CompiledModel, load
from .errors import QcompileError

__all__ = ["CompiledModel", "QcompileError", "load"]
