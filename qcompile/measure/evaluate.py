"""`qcompile eval`: top-1/top-5 of FP32 and INT8 side by side on labelled data, and their top-1 agreement."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..data import calibdata, datasets
from ..data.calibdata import DataSource
from ..errors import QcompileError
from ..progress import SILENT, Reporter


@dataclasses.dataclass(frozen=True)
class EvalData:
    """Labelled evaluation data: images in a folder, or an array/IDX file, with labels from a file."""

    source: DataSource  # path, count and preprocessing of the inputs
    labels: Path  # synsets list (one wnid per line, for <wnid>_*.JPEG files), .npy, or IDX file
    calibration_count: int = 0  # the data also calibrated this many samples (calibdata.spread): leave them out


def load(data: EvalData, inputs) -> tuple[calibdata.Samples, np.ndarray]:
    """(samples, read when used, and integer labels), without the samples that calibrated the model."""
    if not Path(data.labels).is_file():
        raise QcompileError(f"labels file not found: {data.labels}")
    if data.source.is_folder:
        files = datasets.image_files(data.source.path)
        files = [files[i] for i in _kept(len(files), data)]
        labels = datasets.imagenet_labels(files, data.labels)
        preprocess = data.source.preprocess
        return calibdata.Samples(len(files), lambda i: [calibdata.fit(datasets.load_image(files[i], preprocess),
                                                                      inputs[0])]), labels
    arrays = calibdata.load_arrays(Path(data.source.path), inputs)
    all_labels = np.load(data.labels) if Path(data.labels).suffix == ".npy" else datasets.read_idx(data.labels)
    kept = _kept(min(len(all_labels), *(len(a) for a in arrays.values())), data)
    samples = calibdata.Samples(len(kept), lambda i: [calibdata.fit(arrays[s.name][kept[i]], s) for s in inputs])
    return samples, np.asarray(all_labels[kept]).astype(np.int64)


def _kept(total: int, data: EvalData) -> list[int]:
    kept = calibdata.held_out(total, data.calibration_count)[: data.source.count]
    if not kept:
        raise QcompileError(f"no evaluation samples left in {data.source.path}")
    return kept


def scores(model, samples, desc: str, reporter: Reporter = SILENT) -> tuple[np.ndarray, float]:
    """The first output of `model` for each sample, flattened: [samples, classes]; and the mean seconds a call
    took (the reading of the samples not counted)."""
    import time

    outputs, spent = [], 0.0
    for sample in reporter.bar(samples, desc=desc, unit="sample"):
        start = time.perf_counter()
        outputs.append(model(*sample)[0].reshape(-1))
        spent += time.perf_counter() - start
    return np.stack(outputs), spent / max(len(outputs), 1)


def accuracy(scores_: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-scores_, axis=1)[:, :k]
    return float(np.mean([label in row for row, label in zip(top, labels)]))


def table(results: dict[str, np.ndarray], labels: np.ndarray) -> list[tuple]:
    """Rows (precision, top-1, top-5, top-1 agreement with FP32) for each evaluated variant."""
    reference = results.get("fp32")
    rows = []
    for name, s in results.items():
        agreement = "" if reference is None else f"{np.mean(s.argmax(1) == reference.argmax(1)):.4f}"
        rows.append((name, f"{accuracy(s, labels, 1):.4f}", f"{accuracy(s, labels, 5):.4f}", agreement))
    return rows
