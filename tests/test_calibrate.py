"""Calibration's range methods on known distributions, and the adaptive choice among them per tensor."""

import numpy as np
import pytest

from qcompile.quantize.calibrate import RANGE_METHODS, CalibrationConfig, TensorStats, choose_range
from qcompile.quantize.qparams import activation_params

RNG = np.random.default_rng(3)


def _stats(values) -> TensorStats:
    stats = TensorStats()
    for v in values:
        stats.update(v)
    return stats


def _draws(name, inputs):
    return [DISTRIBUTIONS[name]().astype(np.float32) for _ in range(inputs)]


def _error(values, lo, hi, dtype):
    params = activation_params(lo, hi, dtype)
    return float(np.mean((params.dequantize(params.quantize(values)) - values) ** 2))


DISTRIBUTIONS = {
    "after ReLU": lambda: np.maximum(RNG.standard_normal(40000), 0),
    "heavy-tailed": lambda: RNG.standard_t(2, 40000),
    "one outlier in a narrow body": lambda: np.append(RNG.normal(0, 0.1, 40000), 25.0),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_adaptive_calibration_picks_the_method_whose_range_quantizes_the_values_best(name):
    values = _draws(name, 20)
    stats = _stats(values)
    levels = 256 if stats.min >= 0 else 128
    lo, hi, method = choose_range(stats, CalibrationConfig(method="adaptive"), levels, "uint8")
    assert method in RANGE_METHODS
    assert (lo, hi) == choose_range(stats, CalibrationConfig(method=method), levels, "uint8")[:2]
    everything = np.concatenate(values)
    errors = {m: _error(everything, *choose_range(stats, CalibrationConfig(method=m), levels, "uint8")[:2], "uint8")
              for m in RANGE_METHODS}
    assert errors[method] <= min(errors.values()) * 1.1, errors  # the histogram's estimate is within ~5 %


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_the_histogram_estimate_of_the_quantization_error_matches_the_measured_one(name):
    values = _draws(name, 5)
    stats = _stats(values)
    everything = np.concatenate(values)
    for lo, hi in ((stats.min, stats.max), (stats.min / 4, stats.max / 4)):  # all within; most clipped
        measured = _error(everything, lo, hi, "uint8")
        assert stats.squared_error(lo, hi, "uint8") == pytest.approx(measured, rel=0.05)


def test_percentile_clips_an_outlier_that_minmax_keeps():
    stats = _stats(_draws("one outlier in a narrow body", 20))
    assert choose_range(stats, CalibrationConfig(method="minmax"), 128, "uint8")[1] == pytest.approx(25.0)
    assert choose_range(stats, CalibrationConfig(method="percentile"), 128, "uint8")[1] < 1.0


def test_adaptive_calibration_names_each_tensors_method_in_the_report(tmp_path):
    import json

    from conftest import EXAMPLE_MODEL, EXAMPLE_SAMPLES, run_cli

    assert run_cli("build", EXAMPLE_MODEL, "--calib", EXAMPLE_SAMPLES, "--calibration", "adaptive", "-q", "-o",
                   tmp_path / "m.so", "--report", tmp_path / "report.md") == 0
    points = json.loads((tmp_path / "report.json").read_text())["points"]
    assert points and all(p["method"] in RANGE_METHODS for p in points)
    assert "range by" in (tmp_path / "report.md").read_text()
