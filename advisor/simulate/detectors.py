"""CloudSim's host overload detectors (SETUP.md §5), vectorised over hosts.

`hist` rows are host utilisation histories, most recent first (column 0 is now), zero-padded at the old end;
`util` is each host's requested MIPS over its capacity now. Statistics run on the history with its zero tail
trimmed, as CloudSim's MathUtil does; the adaptive ones fall back to a static 0.7 threshold while the history
is too short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPS = 1e-12  # sums of non-negative histories: anything below is an exact zero lost to rounding
FALLBACK = 0.7
MIN_ADAPTIVE = 12  # IQR and MAD need this many non-zero samples, the most recent first
LR_LENGTH = 10

Detector = Callable[[np.ndarray, np.ndarray], np.ndarray]


def trimmed_length(hist: np.ndarray) -> np.ndarray:
    """Samples left after dropping the zero tail."""
    nz = hist > EPS
    last = hist.shape[1] - np.argmax(nz[:, ::-1], axis=1)
    return np.where(nz.any(axis=1), last, 0)


def leading_nonzero(hist: np.ndarray) -> np.ndarray:
    """Consecutive non-zero samples from the most recent one."""
    zero = hist <= EPS
    first = np.argmax(zero, axis=1)
    return np.where(zero.any(axis=1), first, hist.shape[1])


def _java_round(x: float) -> int:
    return int(np.floor(x + 0.5))


def iqr(values: np.ndarray) -> np.ndarray:
    """Interquartile range with CloudSim's quartile positions round(q (n+1)) - 1, per row of equal length."""
    n = values.shape[1]
    s = np.sort(values, axis=1)
    return s[:, _java_round(0.75 * (n + 1)) - 1] - s[:, _java_round(0.25 * (n + 1)) - 1]


def _median_sorted(s: np.ndarray) -> np.ndarray:
    n = s.shape[1]
    return (s[:, (n - 1) // 2] + s[:, n // 2]) / 2.0


def mad(values: np.ndarray) -> np.ndarray:
    """Median absolute deviation from the median, per row."""
    med = _median_sorted(np.sort(values, axis=1))
    return _median_sorted(np.sort(np.abs(values - med[:, None]), axis=1))


def _adaptive(stat: Callable[[np.ndarray], np.ndarray], safety: float) -> Detector:
    def detect(hist: np.ndarray, util: np.ndarray) -> np.ndarray:
        over = util > FALLBACK
        length = trimmed_length(hist)
        ok = leading_nonzero(hist) >= MIN_ADAPTIVE
        for n in np.unique(length[ok]):
            rows = np.flatnonzero(ok & (length == n))
            threshold = 1.0 - safety * stat(hist[rows, :n])
            over[rows] = util[rows] > threshold
        return over

    return detect


def _regression(safety: float) -> Detector:
    x = np.arange(1, LR_LENGTH + 1, dtype=float)
    xc = x - x.mean()

    def detect(hist: np.ndarray, util: np.ndarray) -> np.ndarray:
        over = util > FALLBACK
        ok = trimmed_length(hist) >= LR_LENGTH
        if ok.any():
            y = hist[ok, :LR_LENGTH][:, ::-1]  # oldest first, x = 1..10
            slope = (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
            intercept = y.mean(axis=1) - slope * x.mean()
            predicted = intercept + slope * (LR_LENGTH + 1)  # one 300 s step: every migration is shorter
            over[ok] = safety * predicted >= 1.0
        return over

    return detect


def _threshold(t: float) -> Detector:
    def detect(hist: np.ndarray, util: np.ndarray) -> np.ndarray:
        return util > t

    return detect


@dataclass(frozen=True)
class DetectorSpec:
    """A detector by name and parameter; `needs_history` says whether `hist` is read at all."""

    name: str
    parameter: float

    @property
    def needs_history(self) -> bool:
        return self.name != "thr"

    def build(self) -> Detector:
        if self.name == "thr":
            return _threshold(self.parameter)
        if self.name == "iqr":
            return _adaptive(iqr, self.parameter)
        if self.name == "mad":
            return _adaptive(mad, self.parameter)
        if self.name == "lr":
            return _regression(self.parameter)
        raise ValueError(f"unknown detector {self.name}")
