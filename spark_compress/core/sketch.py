"""A mergeable quantile summary built from sorted chunks (numpy only).

Each chunk of data (an Arrow batch, a partition) is sorted and reduced to ``size + 1`` of its
order statistics, each standing for an equal share of the chunk's rows: a weighted sample.
Summaries merge by concatenation and are compressed again to ``size + 1`` points by weighted
quantiles. Every reduction moves any quantile by at most ``1 / size`` of the rows it covers, so
after a chunk level and a merge level the rank error is at most ``2 / size``. Repeated values
(point masses) stay exact, and the minimum and maximum are always kept.

Sorting in numpy is what makes this fast: measured against Spark's Greenwald-Khanna
``approxQuantile`` (which ``QuantileDiscretizer`` uses) in ``benchmarks/bench_features.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """A weighted sample: ``values`` sorted ascending, ``weights`` (rows each value stands for).

    ``count`` is the number of rows summarised (the sum of the weights).
    """

    values: np.ndarray
    weights: np.ndarray

    @property
    def count(self) -> float:
        return float(self.weights.sum())


EMPTY = Summary(np.empty(0), np.empty(0))


def summarize(x: np.ndarray, size: int) -> Summary:
    """Summary of the finite values of ``x``: all of them when there are at most ``size + 1``,
    else ``size + 1`` order statistics at evenly spaced ranks (minimum and maximum included).
    The input is not modified."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    x = np.sort(x[np.isfinite(x)])  # in the input's precision: float32 sorts faster
    n = x.size
    if n <= size + 1:
        return Summary(x.astype(np.float64), np.ones(n))
    pos = np.rint(np.linspace(0, n - 1, size + 1)).astype(np.int64)
    return Summary(x[pos].astype(np.float64), np.full(size + 1, n / (size + 1)))


def merge(summaries: list[Summary], size: int) -> Summary:
    """Merge summaries and compress the result back to at most ``size + 1`` points."""
    parts = [s for s in summaries if s.values.size]
    if not parts:
        return EMPTY
    values = np.concatenate([s.values for s in parts])
    weights = np.concatenate([s.weights for s in parts])
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    if values.size <= size + 1:
        return Summary(values, weights)
    total = weights.sum()
    picked = quantiles(Summary(values, weights), np.linspace(0.0, 1.0, size + 1))
    return Summary(picked, np.full(size + 1, total / (size + 1)))


def quantiles(s: Summary, probs) -> np.ndarray:
    """Weighted inverted-CDF quantiles: for each ``p``, the smallest value whose cumulative
    weight reaches ``p`` of the total (``p = 0`` gives the minimum, ``p = 1`` the maximum)."""
    probs = np.asarray(probs, dtype=np.float64)
    if s.values.size == 0:
        raise ValueError("no values to take quantiles of")
    cum = np.cumsum(s.weights)
    target = probs * cum[-1]
    # A relative tolerance keeps p = k/n on the exact order statistic despite float sums.
    idx = np.searchsorted(cum, target * (1 - 1e-12), side="left")
    return s.values[np.clip(idx, 0, s.values.size - 1)]
