"""What labels score a model's outputs by: class indices (top-1, top-5), or text lines for a sequence recognizer
whose output is per-step class scores (greedy CTC decoding, exact match).

`evaluate.load` picks the kind by the labels file (`is_text`): a text file (`.txt`, one line a sample; `.tsv`, the
text after the first tab, matched to image files by name where the data is a folder) gives `Texts`, anything else
`Classes` (a `.txt` of WordNet ids too: a synsets list). Both answer the same questions, so `qcompile eval` and
accuracy control need no per-kind branch.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ..errors import QcompileError

TEXT_SUFFIXES = (".txt", ".tsv")
_SYNSET = re.compile(r"n\d{8}(\s|$)")  # a WordNet id, as ImageNet's synsets lists begin each line
CHARACTER_KEY = "character"  # PaddleOCR's metadata: the character list, one per line; class k is line k-1


@dataclasses.dataclass(frozen=True)
class Classes:
    """Integer class labels, one a sample; outputs [samples, classes]."""

    labels: np.ndarray
    metric = "top-1"

    def correct(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.argmax(1) == self.labels[:len(outputs)]

    def columns(self, outputs: np.ndarray, reference: np.ndarray | None) -> dict:
        agreement = "" if reference is None else f"{np.mean(outputs.argmax(1) == reference.argmax(1)):.4f}"
        return {"top-1": f"{top_k(outputs, self.labels, 1):.4f}", "top-5": f"{top_k(outputs, self.labels, 5):.4f}",
                "top-1 agreement": agreement}

    def __getitem__(self, index) -> "Classes":
        return dataclasses.replace(self, labels=self.labels[index])


@dataclasses.dataclass(frozen=True)
class Texts:
    """Text lines, one a sample, for outputs of per-step scores over the blank, the characters and a space
    ([samples, steps × (len(characters) + 2)]): the best class a step, repeats merged, the blank (class 0)
    dropped; class k is `characters[k - 1]`, the last a space (PaddleOCR's convention). Spaces are ignored in the
    comparison."""

    labels: tuple[str, ...]
    characters: tuple[str, ...]
    metric = "exact text"

    def decode(self, output: np.ndarray) -> str:
        best = output.reshape(-1, len(self.characters) + 2).argmax(-1)
        kept = best[np.r_[True, best[1:] != best[:-1]]]
        return "".join(self.characters[k - 1] if k - 1 < len(self.characters) else " " for k in kept if k)

    def correct(self, outputs: np.ndarray) -> np.ndarray:
        return np.array([_bare(self.decode(o)) == _bare(t) for o, t in zip(outputs, self.labels)])

    def columns(self, outputs: np.ndarray, reference: np.ndarray | None) -> dict:
        same = "" if reference is None else \
            f"{np.mean([_bare(self.decode(o)) == _bare(self.decode(r)) for o, r in zip(outputs, reference)]):.4f}"
        return {"exact text": f"{np.mean(self.correct(outputs)):.4f}", "text as FP32's": same}

    def __getitem__(self, index) -> "Texts":
        return dataclasses.replace(self, labels=tuple(np.asarray(self.labels, dtype=object)[index]))


def top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose label is among their `k` highest scores."""
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([label in row for row, label in zip(top, labels)]))


def _bare(text: str) -> str:
    return "".join(text.split())


def is_text(path: Path) -> bool:
    """Whether `path` holds text lines: a .tsv, or a .txt other than a synsets list (every line a WordNet id)."""
    suffix = Path(path).suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        return False
    if suffix == ".tsv" or not Path(path).is_file():
        return True
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return not (lines and all(_SYNSET.match(line) for line in lines))


def read_texts(path: Path, files: list[Path] | None = None) -> tuple[str, ...]:
    """The text of each sample: a `.txt`'s lines in order; a `.tsv`'s text after the first tab, in order, or,
    with `files` (the images of a folder), the line naming each file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if Path(path).suffix.lower() != ".tsv":
        return tuple(lines)  # an empty line is a sample without text
    rows = [line.split("\t", 1) for line in lines if line.strip()]
    if any(len(row) != 2 for row in rows):
        raise QcompileError(f"{path}: every line should be FILE<tab>TEXT")
    if files is None:
        return tuple(text for _, text in rows)
    by_name = dict(rows)
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        raise QcompileError(f"{path} has no text for {missing[0]} ({len(missing)} images without one)")
    return tuple(by_name[f.name] for f in files)


def characters(proto, classes: int) -> tuple[str, ...]:
    """A text recognizer's character list from its ONNX metadata (PaddleOCR's `character` key), checked against
    the `classes` its output scores (the blank, the characters, a space)."""
    value = next((p.value for p in proto.metadata_props if p.key == CHARACTER_KEY), None)
    if value is None:
        raise QcompileError(f"text labels need the model's character list: it has no '{CHARACTER_KEY}' metadata "
                            "(PaddleOCR's exports carry one)")
    found = tuple(value.split("\n"))
    if len(found) + 2 != classes:
        raise QcompileError(f"the model's output scores {classes} classes per step, its character list has "
                            f"{len(found)} (expected {classes - 2}: the blank and a space besides)")
    return found
