"""Calibration and evaluation inputs: image folders, .npy/.npz arrays or IDX files, as lists of input arrays."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import datasets
from .datasets import ImagePreprocess
from ..errors import QcompileError
from ..frontend.importer import TensorSig


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where inputs come from: a folder of images (with preprocessing) or an array file."""

    path: Path | None
    count: int = 100
    preprocess: ImagePreprocess = ImagePreprocess()
    random: bool = False  # explicit opt-in: random inputs calibrate badly

    def __post_init__(self):
        if self.count <= 0:
            raise QcompileError(f"sample count must be positive, got {self.count}")
        if self.path is not None and not Path(self.path).exists():
            raise QcompileError(f"calibration data not found: {self.path}")

    @property
    def is_folder(self) -> bool:
        return self.path is not None and Path(self.path).is_dir()

    def same_data(self, path: Path | None) -> bool:
        """Whether `path` names this source's data (so samples drawn from both can collide)."""
        return self.path is not None and path is not None and Path(self.path).resolve() == Path(path).resolve()


def spread(n_total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n_total): a calibration set covering every part of a folder."""
    if count >= n_total:
        return list(range(n_total))
    return sorted(set(np.linspace(0, n_total - 1, count).round().astype(int).tolist()))


def held_out(n_total: int, avoid: int) -> list[int]:
    """Indices of range(n_total) without the `avoid` ones that spread(n_total, avoid) gives: the samples a
    calibration set of that size drawn from the same data does not use."""
    excluded = set(spread(n_total, avoid)) if avoid else set()
    return [i for i in range(n_total) if i not in excluded]


def pick(n_total: int, count: int, avoid: int = 0) -> list[int]:
    """`count` indices spread over the samples held out from a calibration set of `avoid` (see held_out)."""
    rest = held_out(n_total, avoid)
    return [rest[i] for i in spread(len(rest), count)] if rest else []


class Samples(Sequence):
    """Samples read when indexed, so that a large calibration set never sits in memory all at once."""

    def __init__(self, count: int, load, name=lambda i: f"sample {i}"):
        self._count, self._load, self.name = count, load, name  # name(i): where sample i comes from, for errors

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._load(i) for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._load(index % self._count)


def samples(source: DataSource | None, inputs: list[TensorSig], avoid: int = 0) -> Samples:
    """The samples, each a list with one array per model input, shaped as the model wants, read lazily.

    `avoid`: leave out the samples a calibration set of that size drawn from the same data would use.
    """
    if source is None or (source.path is None and not source.random):
        raise QcompileError("INT8 needs calibration data: {calib} DIR|FILE.npy|FILE.npz (or {precision} fp32)")
    if source.random:
        print("qcompile: WARNING: calibrating on RANDOM inputs; the INT8 model's accuracy means nothing",
              file=sys.stderr)
        return Samples(source.count, lambda i: [np.random.default_rng(i).standard_normal(s.shape).astype(s.dtype)
                                                for s in inputs])
    if source.is_folder:
        if len(inputs) != 1:
            raise QcompileError("an image folder can calibrate only a one-input model; use an .npz keyed by input")
        all_files = datasets.image_files(source.path)
        files = [all_files[i] for i in pick(len(all_files), source.count, avoid)]
        return Samples(len(files), lambda i: [image(files[i], source.preprocess, inputs[0])],
                       name=lambda i: f"image {files[i].name}")
    arrays = load_arrays(Path(source.path), inputs)
    chosen = pick(min(len(a) for a in arrays.values()), source.count, avoid)
    return Samples(len(chosen), lambda i: [fit(arrays[s.name][chosen[i]], s) for s in inputs],
                   name=lambda i: f"sample {chosen[i]} of {Path(source.path).name}")


def validate(samples: Samples, inputs: list[TensorSig], what: str = "calibration") -> None:
    """Read every sample once, before any expensive work: there is at least one, each fits the model's inputs
    (`fit`) and holds finite numbers; else a QcompileError naming the sample."""
    if len(samples) == 0:
        raise QcompileError(f"no {what} samples: the data is empty")
    for i in range(len(samples)):
        for sig, array in zip(inputs, samples[i]):
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = "NaN" if np.isnan(array).any() else "infinite"
                raise QcompileError(f"{what} data: {samples.name(i)} has {bad} values in input '{sig.name}'")


def load_arrays(path: Path, inputs: list[TensorSig]) -> dict[str, np.ndarray]:
    """Arrays with a leading sample axis, keyed by input name (.npz), or for the only input (.npy, IDX)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            missing = [s.name for s in inputs if s.name not in data.files]
            if missing:
                raise QcompileError(f"{path} has no array for input(s) {', '.join(missing)} (has: {', '.join(data.files)})")
            return {s.name: data[s.name] for s in inputs}
    if len(inputs) != 1:
        raise QcompileError(f"{path}: the model has {len(inputs)} inputs; give an .npz keyed by input name")
    if path.suffix == ".npy":
        return {inputs[0].name: np.load(path, allow_pickle=False, mmap_mode="r")}  # read sample by sample
    return {inputs[0].name: datasets.read_idx(path)}


def image(path: Path, preprocess: ImagePreprocess, sig: TensorSig) -> np.ndarray:
    """One image file as the input `sig` takes it."""
    shape = tuple(sig.shape)
    size = (shape[-2], shape[-1]) if preprocess.layout == "NCHW" else (shape[-3], shape[-2])
    return fit(datasets.load_image(path, preprocess, size if len(shape) == 4 else None), sig)


def fit(sample: np.ndarray, sig: TensorSig) -> np.ndarray:
    """One sample in the input's exact shape: as is, or with the batch axis of size 1 added."""
    shape = tuple(sig.shape)
    if sample.shape != shape and sample.size == int(np.prod(shape)):
        sample = sample.reshape(shape)
    if sample.shape != shape:
        raise QcompileError(f"a sample of shape {list(sample.shape)} does not fit input '{sig.name}' {list(shape)}")
    return np.ascontiguousarray(sample, dtype=sig.dtype)
