"""`qcompile eval`: FP32 and INT8 side by side on labelled data, scored by the labels' kind (`task.py`): top-1,
top-5 and top-1 agreement for classes, exact text and text as FP32's for a recognizer's text lines."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..data import calibdata, datasets
from ..data.calibdata import DataSource
from ..errors import QcompileError
from ..progress import SILENT, Reporter
from . import task


@dataclasses.dataclass(frozen=True)
class EvalData:
    """Labelled evaluation data: images in a folder, or an array/IDX file, with labels from a file."""

    source: DataSource  # path, count and preprocessing of the inputs
    labels: Path  # synsets list (one wnid per line, for <wnid>_*.JPEG files), .npy, IDX, or text (.txt, .tsv)
    calibration_count: int = 0  # the data also calibrated this many samples (calibdata.spread): leave them out


def load(data: EvalData, inputs, characters: tuple[str, ...] = ()) -> tuple[calibdata.Samples,
                                                                             task.Classes | task.Texts]:
    """(samples, read when used, and their labels), without the samples that calibrated the model.
    `characters`: a text recognizer's character list, which text labels need (`task.characters`)."""
    if not Path(data.labels).is_file():
        raise QcompileError(f"labels file not found: {data.labels}")
    text = task.is_text(data.labels)
    if text and not characters:
        raise QcompileError(f"text labels ({data.labels.name}) are for a text recognizer with a character list")
    if data.source.is_folder:
        files = datasets.image_files(data.source.path)
        files = [files[i] for i in _kept(len(files), data)]
        labels = (task.Texts(task.read_texts(data.labels, files), characters) if text
                  else task.Classes(datasets.imagenet_labels(files, data.labels)))
        preprocess = data.source.preprocess
        return calibdata.Samples(len(files), lambda i: [calibdata.image(files[i], preprocess, inputs[0])]), labels
    arrays = calibdata.load_arrays(Path(data.source.path), inputs)
    if text:
        all_labels = np.asarray(task.read_texts(data.labels), dtype=object)
    else:
        all_labels = np.load(data.labels) if Path(data.labels).suffix == ".npy" else datasets.read_idx(data.labels)
    kept = _kept(min(len(all_labels), *(len(a) for a in arrays.values())), data)
    samples = calibdata.Samples(len(kept), lambda i: [calibdata.fit(arrays[s.name][kept[i]], s) for s in inputs])
    if text:
        return samples, task.Texts(tuple(all_labels[kept]), characters)
    return samples, task.Classes(np.asarray(all_labels[kept]).astype(np.int64))


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


def table(results: dict[str, np.ndarray], labels: task.Classes | task.Texts) -> tuple[list[str], list[tuple]]:
    """(headers, rows): each evaluated variant's scores against the labels and its agreement with FP32."""
    reference = results.get("fp32")
    columns = {name: labels.columns(s, reference) for name, s in results.items()}
    headers = list(next(iter(columns.values())))
    return ["precision", *headers], [(name, *c.values()) for name, c in columns.items()]
