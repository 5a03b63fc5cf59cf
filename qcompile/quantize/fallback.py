"""Accuracy control: the layers whose quantization costs the task metric most go back to FP32, one at a time,
until the INT8 metric is within a budget of the FP32 one.

The search is a pure function of a candidate ranking and an `evaluate(restored layers) → metric` callback, so
the driver decides how a candidate build is made and measured, and tests can drive it with a fake metric.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..errors import QcompileError


@dataclasses.dataclass(frozen=True)
class AccuracyConfig:
    """How much of the metric INT8 may lose, in points (the metric in percent), how many of the top-ranked
    layers have their one-layer-restored metric measured before the greedy restore orders them, and after how
    many restores in a row that gain nothing the search gives up (a budget out of reach would otherwise cost one
    build per layer of the model)."""

    max_drop: float
    measured: int = 6
    patience: int = 8

    def __post_init__(self):
        if not self.max_drop >= 0:
            raise QcompileError(f"{{max_accuracy_drop}} must be 0 or more points, not {self.max_drop}")
        if self.measured < 0:
            raise QcompileError(f"the number of layers measured one by one must be 0 or more, not {self.measured}")
        if self.patience < 1:
            raise QcompileError(f"the search's patience must be 1 or more restores, not {self.patience}")


@dataclasses.dataclass(frozen=True)
class Step:
    restored: tuple[str, ...]  # the layers in FP32 at this step
    metric: float


@dataclasses.dataclass(frozen=True)
class FallbackPlan:
    metric: str  # what was measured, e.g. "top-1 (%)"
    fp32: float
    max_drop: float
    probes: tuple[Step, ...]  # one layer restored at a time, for the ranking
    steps: tuple[Step, ...]  # the greedy restore: first step none restored, last step the plan
    rejected: tuple[Step, ...] = ()  # restores tried and dropped: the metric did not rise

    @property
    def restored(self) -> tuple[str, ...]:
        return self.steps[-1].restored

    @property
    def before(self) -> float:
        return self.steps[0].metric

    @property
    def after(self) -> float:
        return self.steps[-1].metric

    @property
    def met(self) -> bool:
        return self.fp32 - self.after <= self.max_drop

    def summary(self) -> str:
        kept = ", ".join(self.restored) if self.restored else "none"
        verdict = "met" if self.met else "NOT met"
        return (f"accuracy control: {self.metric} FP32 {self.fp32:.2f}, INT8 {self.before:.2f} → {self.after:.2f} "
                f"with {len(self.restored)} layer(s) in FP32 ({kept}); budget {self.max_drop:g} points {verdict}")

    def to_json(self, **extra) -> dict:
        return {"metric": self.metric, "fp32": self.fp32, "max_drop": self.max_drop, "before": self.before,
                "after": self.after, "met": self.met, "restored": list(self.restored),
                "probes": [{"restored": list(s.restored), "metric": s.metric} for s in self.probes],
                "steps": [{"restored": list(s.restored), "metric": s.metric} for s in self.steps],
                "rejected": [{"restored": list(s.restored), "metric": s.metric} for s in self.rejected], **extra}


def choose(candidates: list, evaluate: Callable[[object], float]) -> tuple[object, list[float]]:
    """The candidate (a whole-model setting, such as the calibration ranges) whose all-INT8 build scores best,
    the first of equals; and every candidate's score, in order."""
    scores = [evaluate(c) for c in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))], scores


def search(ranked: list[str], evaluate: Callable[[tuple[str, ...]], float], fp32: float, metric: str,
           config: AccuracyConfig, progress: Callable[[Step, str], None] = lambda step, kind: None,
           from_input: list[str] | None = None) -> FallbackPlan:
    """Restore layers to FP32 until `fp32 - evaluate(restored) <= config.max_drop`.

    `ranked`: the quantized layers, most suspect first (by their measured quantization error). The first
    `config.measured` of them are each evaluated restored alone; they are tried in the order of the metric that
    gained, then the rest in ranking order, one per step; a layer is kept in FP32 only if the metric rises with it
    (a restore that gains nothing costs FP32 time for noise), and the search stops at the first step within
    budget (at the latest with one layer left in INT8), or gives up after `config.patience` restores in a row
    that gained nothing.
    Where no single layer gains (the error is spread over many, each too small alone: an audio encoder whose every
    conv reads 8-bit magnitudes) and `from_input` gives the quantized layers in graph order, the search then
    bisects for the fewest layers nearest the input that, restored with those already kept, meet the budget
    (about log2(layers) more builds; the metric is taken to improve as the prefix grows); where even all but the
    last layer do not, the loss is at the output end (a classifier's last layer) and it bisects from there, then
    from both ends at once (the first and last layers, the ones quantization is known to hurt most).
    `progress(step, kind)` hears of every measurement; kind: "start", "probe", "kept", "rejected", "prefix",
    "suffix" or "ends".
    Deterministic: ties keep the ranking's order; no set of layers is evaluated twice."""
    known: dict[frozenset, float] = {}

    def measure(restored: tuple[str, ...]) -> float:
        key = frozenset(restored)
        if key not in known:
            known[key] = evaluate(restored)
        return known[key]

    steps = [Step((), measure(()))]
    progress(steps[0], "start")
    probes, rejected = (), []
    if fp32 - steps[0].metric > config.max_drop and ranked:
        probes = tuple(Step((layer,), measure((layer,))) for layer in ranked[:config.measured])
        for probe in probes:
            progress(probe, "probe")
        by_gain = sorted(range(len(probes)), key=lambda i: (-probes[i].metric, i))
        order = [ranked[i] for i in by_gain] + ranked[len(probes):]
        in_vain = 0
        for layer in order[:-1]:  # all of them restored is the FP32 build, not an INT8 one
            candidate = steps[-1].restored + (layer,)
            tried = Step(candidate, measure(candidate))
            if tried.metric <= steps[-1].metric:
                progress(tried, "rejected")
                rejected.append(tried)  # no gain: the layer stays INT8 (and costs no FP32 time)
                in_vain += 1
                if in_vain == config.patience:
                    break
                continue
            in_vain = 0
            progress(tried, "kept")
            steps.append(tried)
            if fp32 - tried.metric <= config.max_drop:
                break
        for kind, order in _end_orders(from_input or []):
            if fp32 - steps[-1].metric <= config.max_drop:
                break
            met, failed = _shortest_prefix(order, steps[-1].restored, measure, fp32, config.max_drop,
                                           lambda step, kind=kind: progress(step, kind))
            steps += met
            rejected += failed
    return FallbackPlan(metric=metric, fp32=fp32, max_drop=config.max_drop, probes=probes, steps=tuple(steps),
                        rejected=tuple(rejected))


def _end_orders(layers: list[str]) -> list[tuple[str, list[str]]]:
    """The orders `search` bisects along when no single layer gains: from the input, from the output, and from
    both ends alternately (first, last, second, second to last, …)."""
    ends = [layer for pair in zip(layers, layers[::-1]) for layer in pair][:len(layers)]
    return [("prefix", layers), ("suffix", layers[::-1]), ("ends", ends)] if layers else []


def _shortest_prefix(order: list[str], kept: tuple[str, ...], measure, fp32: float, max_drop: float,
                     progress) -> tuple[list[Step], list[Step]]:
    """A bisection for the shortest prefix of `order`'s layers not in `kept` that, restored with `kept`, meets
    the budget: (the steps that met it, longest prefix first; those that did not). Nothing met if not even all but
    the last layer (all of them is the FP32 build) do."""
    order = [layer for layer in order if layer not in kept]

    def tried(count: int) -> Step:
        restored = kept + tuple(order[:count])
        step = Step(restored, measure(restored))
        progress(step)
        return step

    met, failed = [], []
    low, high = 0, len(order) - 1  # the prefix of `low` layers is known to fail
    if high > low:
        (met if fp32 - (step := tried(high)).metric <= max_drop else failed).append(step)
    while met and high - low > 1:
        count = (low + high) // 2
        step = tried(count)
        if fp32 - step.metric <= max_drop:
            met.append(step)
            high = count
        else:
            failed.append(step)
            low = count
    return met, failed
