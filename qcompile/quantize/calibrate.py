"""Calibration: statistics of every quantization point over real inputs, and the ranges each method picks."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import QcompileError
from .qparams import activation_params

METHODS = ("minmax", "percentile", "entropy", "mse", "adaptive")
RANGE_METHODS = METHODS[:-1]  # what "adaptive" chooses among, per tensor
BINS = 2048
WIDER_PERCENTILE = 99.999  # the alternative to a lower percentile that accuracy control measures


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    method: str = "percentile"
    percentile: float = 99.99

    def __post_init__(self):
        if self.method not in METHODS:
            raise QcompileError(f"calibration method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise QcompileError(f"percentile must be in (50, 100], got {self.percentile}")

    def alternatives(self) -> list[CalibrationConfig]:
        """This choice of ranges, then the others accuracy control also measures: a percentile clipping ten times
        fewer values (`WIDER_PERCENTILE`). Which clips best depends on the model, and the statistics are the same,
        so trying one costs a build and no calibration."""
        if self.method == "percentile" and self.percentile < WIDER_PERCENTILE:
            return [self, dataclasses.replace(self, percentile=WIDER_PERCENTILE)]
        return [self]

    def describe(self) -> str:
        return f"percentile {self.percentile:g}" if self.method == "percentile" else self.method


class TensorStats:
    """Running min/max and a histogram of |x| (and of the negative values' |x|) whose range doubles as larger
    values arrive.

    Memory is constant in the number of samples: 2 × BINS counts per tensor, whatever the data.
    """

    def __init__(self):
        self.min = np.inf
        self.max = -np.inf
        self.hist = np.zeros(BINS, dtype=np.int64)
        self.negative = np.zeros(BINS, dtype=np.int64)  # the same bins, counting only the negative values
        self.zeros = 0  # exact zeros (ReLU outputs), which quantize without error
        self.limit = 0.0  # the histogram covers [0, limit]
        self.total = None  # running sum of samples (one tensor's size), for the mean bias correction needs
        self.count = 0

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        self.total = x.astype(np.float64) if self.total is None else self.total + x
        self.count += 1
        x = x.ravel()
        if x.size == 0:
            return
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        magnitude = np.abs(x)
        top = float(magnitude.max())
        if self.limit == 0.0:
            self.limit = top if top > 0 else 1e-8
        while top > self.limit:  # merge pairs of bins: exact, no re-binning of past data needed
            self.hist, self.negative = (np.concatenate([h.reshape(-1, 2).sum(axis=1), np.zeros(BINS // 2, np.int64)])
                                        for h in (self.hist, self.negative))
            self.limit *= 2
        # bin index by one multiply (np.histogram's edge search is ~3× slower on a feature map)
        bins = np.minimum((magnitude * np.float32(BINS / self.limit)).astype(np.int32), BINS - 1)
        self.hist += np.bincount(bins, minlength=BINS)
        self.negative += np.bincount(bins[x < 0], minlength=BINS)
        self.zeros += int(np.count_nonzero(x == 0))

    @property
    def bin_width(self) -> float:
        return self.limit / BINS

    def squared_error(self, lo: float, hi: float, dtype: str) -> float:
        """The mean squared error of quantizing the values seen to `dtype` codes over [lo, hi], from the
        histograms: values beyond the range are clipped to it, values within it rounded to the step."""
        params = activation_params(lo, hi, dtype)
        step, zero_point = float(params.scale), float(params.zero_point)
        low, high = (params.qmin - zero_point) * step, (params.qmax - zero_point) * step
        centers = (np.arange(BINS) + 0.5) * self.bin_width
        # within half a step of zero (which is exact) a value rounds to it; further in, the error is uniform
        within = np.where(centers < step / 2, centers ** 2, step ** 2 / 12)
        error, positive = 0.0, self.hist - self.negative
        positive[0] -= self.zeros  # exact zeros: no error
        for counts, bound in ((positive, high), (self.negative, -low)):
            error += float(np.sum(counts * np.where(centers > bound, (centers - bound) ** 2, within)))
        return error / max(1, int(self.hist.sum()))


def choose_range(stats: TensorStats, config: CalibrationConfig, levels: int, dtype: str) -> tuple[float, float, str]:
    """(lo, hi, method): the range to quantize a tensor over as `dtype` codes, and the method that chose it:
    minmax, [min, max] clipped to a threshold on |x|, or ("adaptive") whichever of those ranges quantizes the
    values seen with the least squared error (`TensorStats.squared_error`)."""
    if stats.min == np.inf:
        raise QcompileError("calibration saw no data for a quantization point")
    if config.method == "adaptive":
        errors = {}
        for method in RANGE_METHODS:
            lo, hi, _ = choose_range(stats, dataclasses.replace(config, method=method), levels, dtype)
            # equal ranges: the first method named keeps it
            errors.setdefault((lo, hi), (stats.squared_error(lo, hi, dtype), method))
        (lo, hi), (_, method) = min(errors.items(), key=lambda item: item[1][0])
        return lo, hi, method
    return (*_threshold_range(stats, config, levels), config.method)


def _threshold_range(stats: TensorStats, config: CalibrationConfig, levels: int) -> tuple[float, float]:
    if config.method == "minmax":
        return stats.min, stats.max
    if config.method == "percentile":
        threshold = _percentile_threshold(stats, config.percentile)
    elif config.method == "entropy":
        threshold = _entropy_threshold(stats, levels)
    else:
        threshold = _mse_threshold(stats, levels)
    return max(stats.min, -threshold), min(stats.max, threshold)


def _percentile_threshold(stats: TensorStats, percentile: float) -> float:
    cdf = np.cumsum(stats.hist) / stats.hist.sum()
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return (min(index, BINS - 1) + 1) * stats.bin_width


def _entropy_threshold(stats: TensorStats, levels: int) -> float:
    """TensorRT's KL-divergence calibration: the threshold whose quantized distribution loses least information."""
    hist = stats.hist.astype(np.float64)
    # ReLU outputs are mostly exact zeros; that spike would dominate both distributions and make any clipping
    # look cheap (NVIDIA's pytorch-quantization does the same)
    hist[0] = hist[1]
    best_kl, best_i = np.inf, BINS
    for i in range(levels, BINS + 1, 16):
        reference = hist[:i].copy()
        reference[-1] += hist[i:].sum()  # clipped outliers collapse into the last bin
        if reference.sum() == 0:
            continue
        # quantize the first i bins into `levels` buckets, spreading each bucket's mass over its non-empty bins
        edges = np.linspace(0, i, levels + 1).astype(int)
        candidate = np.zeros(i)
        for lo, hi in zip(edges[:-1], edges[1:]):
            chunk = hist[lo:hi]
            nonzero = chunk > 0
            if nonzero.any():
                candidate[lo:hi][nonzero] = chunk.sum() / nonzero.sum()
        kl = _kl_divergence(reference, candidate)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * stats.bin_width


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum() if q.sum() > 0 else q
    mask = p > 0
    if np.any(q[mask] == 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _mse_threshold(stats: TensorStats, levels: int) -> float:
    """The threshold minimizing expected squared error: rounding noise inside it, clipping error outside."""
    centers = (np.arange(BINS) + 0.5) * stats.bin_width
    thresholds = np.arange(1, BINS + 1)[BINS // 64:] * stats.bin_width
    step = thresholds / levels
    clip_err = np.maximum(centers[None, :] - thresholds[:, None], 0.0) ** 2
    round_err = (step ** 2 / 12.0)[:, None] * (centers[None, :] <= thresholds[:, None])
    errors = ((clip_err + round_err) * stats.hist[None, :]).sum(axis=1)
    return float(thresholds[int(np.argmin(errors))])
