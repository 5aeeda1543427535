"""The mergeable compacting quantile sketch: exact path, rank error, memory bound, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_compress.core import sketch

pytestmark = pytest.mark.unit


def _rank_error(x: np.ndarray, probs: np.ndarray, got: np.ndarray) -> np.ndarray:
    """For each answer, how far (as a fraction of the rows) its rank interval is from ``p``."""
    xs = np.sort(x)
    lo = np.searchsorted(xs, got, side="left") / xs.size
    hi = np.searchsorted(xs, got, side="right") / xs.size
    return np.maximum(lo - probs, probs - hi).clip(min=0)


def _build(chunks, k, seed=1, **kw) -> tuple[sketch.Sketch, int]:
    """A sketch of ``chunks`` added in order, and the most values it held between adds."""
    s, most = sketch.new(k, seed, **kw), 0
    for c in chunks:
        s = sketch.add(s, c)
        most = max(most, s.points)
    return s, most


def test_small_inputs_are_kept_exactly():
    s = sketch.add(sketch.new(10), np.array([3.0, np.nan, 1.0, np.inf, 2.0, -np.inf]))
    assert s.exact and s.count == 3 and (s.lo, s.hi) == (1.0, 3.0)
    values, weights = s.weighted()
    assert values.tolist() == [1.0, 2.0, 3.0] and weights.tolist() == [1.0, 1.0, 1.0]
    assert sketch.quantiles(s, [0, 0.34, 0.5, 1]).tolist() == [1.0, 2.0, 2.0, 3.0]


def test_input_is_not_modified():
    x = np.arange(101, dtype=np.float64)[::-1].copy()
    before = x.copy()
    sketch.add(sketch.new(4, exact_points=0), x)
    np.testing.assert_array_equal(x, before)


def test_exact_quantiles_equal_numpy_inverted_cdf_whatever_the_chunking():
    x = np.random.default_rng(3).normal(size=5000)
    probs = np.linspace(0, 1, 257)
    want = np.quantile(x, probs, method="inverted_cdf")
    results = []
    for parts in (1, 3, 7):
        sketches = [_build(np.array_split(p, 4), k=100, seed=j)[0]
                    for j, p in enumerate(np.array_split(x, parts))]
        merged = sketch.new(100, 99)
        for s in sketches:
            merged = sketch.merge(merged, s)
        assert merged.exact  # 5000 values < EXACT_POINTS: nothing was compacted
        results.append(sketch.quantiles(merged, probs))
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_compaction_keeps_every_second_value_with_twice_the_weight():
    # No exact floor, level 0 holds MIN_CAPACITY = 8: 9 values overflow it, the 8 smallest are
    # compacted (the largest stays), and every second of them moves up with weight 2.
    x = np.array([5.0, 1.0, 9.0, 4.0, 2.0, 8.0, 3.0, 7.0, 6.0])
    s = sketch.add(sketch.new(4, 0, exact_points=0), x)
    assert [v.tolist() for v in s.levels] in ([[9.0], [1.0, 3.0, 5.0, 7.0]],
                                              [[9.0], [2.0, 4.0, 6.0, 8.0]])
    assert s.count == 9 and not s.exact and (s.lo, s.hi) == (1.0, 9.0)
    assert s.weighted()[1].tolist().count(2.0) == 4
    assert sketch.quantiles(s, [0.0, 1.0]).tolist() == [1.0, 9.0]  # min/max stay exact


def test_k_for_the_documented_constant():
    # sqrt(12 ln(4 * 2**18 / 1e-9)) / 0.9 = 22.64...
    assert sketch.k_for(1e-3) == math.ceil(math.sqrt(12 * math.log(4 * 2 ** 18 / 1e-9)) / 0.9
                                           / 1e-3)
    assert 22_600 < sketch.k_for(1e-3) < 22_700
    assert sketch.memory_bound(1000) == sketch.EXACT_POINTS + 3000 + 64 * 9
    with pytest.raises(ValueError, match="relative_error must be in"):
        sketch.k_for(0.0)


def test_16_bits_on_4m_rows_stays_within_the_memory_bound_and_the_rank_error():
    # The 16-bit quantile fit's default: relative_error 1e-5 and 65537 probabilities.
    rel = 1e-5
    k = sketch.k_for(rel)
    rng = np.random.default_rng(7)
    x = rng.lognormal(sigma=2.0, size=4_000_000)
    s, most = _build(np.array_split(x, 400), k)  # 10 000-row batches, as Arrow sends them
    bound = sketch.memory_bound(k)
    assert not s.exact and s.count == x.size
    assert most <= bound and s.points <= bound
    assert s.points < x.size  # compacted: it does not hold the data
    probs = np.arange(65537) / 65536
    got = sketch.quantiles(s, probs)
    assert _rank_error(x, probs, got).max() <= rel
    assert got[0] == x.min() and got[-1] == x.max()


def test_memory_is_bounded_however_many_rows_and_error_holds_with_many_levels():
    # A small k makes many levels quickly: 2M rows through k = k_for(1e-2) (about 2240).
    rel = 1e-2
    k = sketch.k_for(rel)
    x = np.random.default_rng(5).normal(size=2_000_000)
    s, most = _build(np.array_split(x, 500), k, exact_points=0)
    assert len(s.levels) >= 8
    assert most <= sketch.memory_bound(k, exact_points=0) < 4 * k
    probs = np.linspace(0, 1, 1025)
    assert _rank_error(x, probs, sketch.quantiles(s, probs)).max() <= rel


@pytest.mark.parametrize("dist", ["normal", "lognormal", "mass"])
def test_merged_rank_error_is_bounded(dist):
    rng = np.random.default_rng(11)
    n = 400_000
    x = {"normal": rng.normal(size=n), "lognormal": rng.lognormal(sigma=2, size=n),
         "mass": np.where(rng.random(n) < 0.6, 0.0, rng.normal(size=n))}[dist]
    rel = 2e-3
    k = sketch.k_for(rel)
    # Batches -> partitions -> one merge in partition order: what the Spark fit does.
    parts = [_build(np.array_split(p, 20), k, seed=j, exact_points=1000)[0]
             for j, p in enumerate(np.array_split(x, 7))]
    merged = sketch.new(k, 1000, exact_points=1000)
    for p in parts:
        merged = sketch.merge(merged, p)
    assert merged.count == n and not merged.exact
    probs = np.linspace(0, 1, 257)
    got = sketch.quantiles(merged, probs)
    assert _rank_error(x, probs, got).max() <= rel
    if dist == "mass":
        # 60 % of the rows are exactly 0: the middle quantiles are exactly 0, not near it.
        assert np.all(got[(probs > 0.3) & (probs < 0.75)] == 0.0)


def test_same_input_and_chunking_give_the_same_sketch_bit_for_bit():
    x = np.random.default_rng(2).normal(size=300_000)
    a, _ = _build(np.array_split(x, 30), 500, seed=4, exact_points=0)
    b, _ = _build(np.array_split(x, 30), 500, seed=4, exact_points=0)
    c, _ = _build(np.array_split(x, 30), 500, seed=5, exact_points=0)
    fa, fb, fc = sketch.to_levels(a), sketch.to_levels(b), sketch.to_levels(c)
    assert fa[0].tobytes() == fb[0].tobytes() and fa[1] == fb[1]
    assert fa[0].tobytes() != fc[0].tobytes()  # the coins matter: a seed is not decoration


def test_levels_round_trip():
    x = np.random.default_rng(8).normal(size=50_000)
    s, _ = _build(np.array_split(x, 9), 300, exact_points=0)
    flat, sizes = sketch.to_levels(s)
    back = sketch.from_levels(300, 0, flat, sizes, s.lo, s.hi, exact_points=0)
    assert back.count == s.count == x.size
    probs = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(sketch.quantiles(back, probs), sketch.quantiles(s, probs))
    with pytest.raises(ValueError, match="do not cover"):
        sketch.from_levels(300, 0, flat, [1], s.lo, s.hi)
    with pytest.raises(ValueError, match="sorted"):
        sketch.from_levels(300, 0, np.array([2.0, 1.0]), [2], 1.0, 2.0)


def test_merge_of_nothing_is_empty_and_errors():
    empty = sketch.merge(sketch.new(5), sketch.add(sketch.new(5, 1), np.array([np.nan])))
    assert empty.count == 0 and empty.lo is None
    with pytest.raises(ValueError, match="no values"):
        sketch.quantiles(empty, [0.5])
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        sketch.new(0)
    with pytest.raises(ValueError, match="cannot merge sketches of k=5"):
        sketch.merge(sketch.new(5), sketch.new(6))
