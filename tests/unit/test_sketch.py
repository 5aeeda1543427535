"""The mergeable sorted-chunk quantile summary."""

from __future__ import annotations

import numpy as np
import pytest

from spark_compress.core import sketch

pytestmark = pytest.mark.unit


def test_small_inputs_are_kept_exactly():
    s = sketch.summarize(np.array([3.0, np.nan, 1.0, np.inf, 2.0, -np.inf]), size=10)
    assert s.values.tolist() == [1.0, 2.0, 3.0]
    assert s.weights.tolist() == [1.0, 1.0, 1.0]
    assert sketch.quantiles(s, [0, 0.34, 0.5, 1]).tolist() == [1.0, 2.0, 2.0, 3.0]


def test_summarize_takes_evenly_spaced_order_statistics():
    x = np.arange(101, dtype=np.float64)[::-1].copy()
    before = x.copy()
    s = sketch.summarize(x, size=4)
    np.testing.assert_array_equal(x, before)  # input not mutated
    assert s.values.tolist() == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert s.weights.tolist() == [101 / 5] * 5
    assert s.count == pytest.approx(101)


def test_quantiles_match_numpy_inverted_cdf_when_exact():
    x = np.random.default_rng(3).normal(size=500)
    s = sketch.summarize(x, size=1000)
    probs = np.linspace(0, 1, 33)
    np.testing.assert_array_equal(sketch.quantiles(s, probs),
                                  np.quantile(x, probs, method="inverted_cdf"))


@pytest.mark.parametrize("dist", ["normal", "lognormal", "mass"])
def test_merged_rank_error_is_bounded(dist):
    rng = np.random.default_rng(11)
    n = 200_000
    x = {"normal": rng.normal(size=n), "lognormal": rng.lognormal(sigma=2, size=n),
         "mass": np.where(rng.random(n) < 0.6, 0.0, rng.normal(size=n))}[dist]
    size = 300
    # Batches -> partitions -> one merge: the three reductions the Spark fit does.
    parts = [sketch.merge([sketch.summarize(c, size) for c in np.array_split(p, 5)], size)
             for p in np.array_split(x, 7)]
    merged = sketch.merge(parts, size)
    assert merged.count == pytest.approx(n)
    probs = np.linspace(0, 1, 257)
    got = sketch.quantiles(merged, probs)
    xs = np.sort(x)
    lo = np.searchsorted(xs, got, side="left") / n   # rank interval of each answer
    hi = np.searchsorted(xs, got, side="right") / n
    err = np.maximum(lo - probs, probs - hi).clip(min=0)
    assert err.max() <= 3 / size
    assert got[0] == xs[0] and got[-1] == xs[-1]
    if dist == "mass":
        # 60 % of the rows are exactly 0: the middle quantiles are exactly 0, not near it.
        assert np.all(got[(probs > 0.3) & (probs < 0.75)] == 0.0)


def test_merge_of_nothing_is_empty_and_quantiles_of_empty_raise():
    assert sketch.merge([sketch.EMPTY, sketch.summarize(np.array([np.nan]), 5)], 5).values.size == 0
    with pytest.raises(ValueError, match="no values"):
        sketch.quantiles(sketch.EMPTY, [0.5])
    with pytest.raises(ValueError, match="size must be >= 1"):
        sketch.summarize(np.ones(3), 0)
