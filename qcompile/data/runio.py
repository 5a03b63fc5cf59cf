"""Reading model inputs from .npy/.npz files and presenting or saving outputs, for `qcompile run`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import QcompileError
from ..frontend.importer import TensorSig


def read_inputs(items: list[str], inputs: list[TensorSig]) -> dict[str, np.ndarray]:
    """Map input names to arrays from `FILE.npy`, `NAME=FILE.npy` or `FILE.npz` arguments."""
    if not items:
        raise QcompileError(f"no input given; the model takes: {', '.join(s.name for s in inputs)} (use {{inputs}})")
    arrays: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep:
            name, file = None, item
        path = Path(file)
        if not path.is_file():
            raise QcompileError(f"input file not found: {path}")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise QcompileError(f"{path} is not a .npy/.npz file: {err}") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            arrays.update({key: loaded[key] for key in loaded.files})
        elif name is not None:
            arrays[name] = loaded
        elif len(inputs) == 1:
            arrays[inputs[0].name] = loaded
        else:
            raise QcompileError(f"{path}: the model has {len(inputs)} inputs; name it as NAME={path} or use an .npz")
    return arrays


def summarize(outputs: dict[str, np.ndarray]) -> str:
    lines = []
    for name, value in outputs.items():
        lines.append(f"{name}: shape {list(value.shape)} {value.dtype}, min {value.min():.6g}, max {value.max():.6g}, "
                     f"mean {value.mean():.6g}")
        flat = value.reshape(value.shape[0], -1) if value.ndim >= 2 else value.reshape(1, -1)
        if flat.shape[1] > 1:
            for row, scores in enumerate(flat[:4]):
                top = np.argsort(scores)[::-1][:5]
                lines.append(f"  [{row}] top-5: " + ", ".join(f"{i} ({scores[i]:.4g})" for i in top))
    return "\n".join(lines)


def save_outputs(outputs: dict[str, np.ndarray], path: Path) -> None:
    if path.suffix != ".npz":
        raise QcompileError(f"{{output}} must end in .npz, got {path}")
    np.savez(path, **outputs)
