"""A mergeable quantile sketch with a fixed memory bound (numpy only).

The sketch is a stack of *compactors* (Karnin, Lang and Liberty's KLL design): level ``h`` holds
values that each stand for ``2**h`` rows. New values go to level 0. When a level holds more
values than its capacity it is *compacted*: sorted, and every second value (offset 0 or 1 by a
coin flip) moves up a level with twice the weight; with an odd count the largest value stays.
Capacities shrink geometrically downwards from the top, ``cap(h) = max(MIN_CAPACITY,
ceil(k * (2/3) ** (H - 1 - h)))`` for ``H`` levels, and level 0 holds at least
:data:`EXACT_POINTS` values. Merging two sketches concatenates their levels and compacts.

**Memory bound.** At rest a sketch holds at most ``memory_bound(k)`` =
``EXACT_POINTS + 3 k + 64 (MIN_CAPACITY + 1)`` values (float64, 8 bytes each; at most 64 levels
as weights are below 2**64), whatever the number of rows. Adding ``x`` or merging needs that
plus ``x`` (or the other sketch) transiently.

**Exact path.** Until a sketch has seen more than ``max(EXACT_POINTS, k)`` finite values nothing
is compacted: it holds every value, and its quantiles are exact and independent of how the rows
were chunked or merged.

**Rank error.** A compaction of level ``h`` changes the estimated rank of any value by ``0`` or
``+-2**h``, each sign with probability 1/2 given everything before it. Every unit of weight
enters each level once, so level ``h`` is compacted at most ``N / (cap(h) 2**h)`` times, and the
top level exists only after ``N >= k 2**(H-2)`` rows: the squared error terms sum to at most
``6 N**2 / k**2``. By Azuma-Hoeffding a fixed value's rank is off by ``t`` with probability at
most ``2 exp(-t**2 k**2 / (12 N**2))``; :func:`k_for` picks ``k`` so that, with probability at
least ``1 - FAILURE_PROBABILITY``, every one of up to ``2**18`` queried quantiles is within
``0.9 relative_error`` of its rank (two fixed values per query), plus at most
``2 N / k < 0.1 relative_error`` for the weight of one retained value.

**Determinism.** The coins are a counter hashed with the sketch's ``seed`` (splitmix64): the
same values added and merged in the same order with the same seeds give the same sketch, bit
for bit. Sketches that are merged must have been built with different seeds (a partition index,
say), so their coins are independent.

Sorting in numpy is what makes this fast: measured against Spark's Greenwald-Khanna
``approxQuantile`` (which ``QuantileDiscretizer`` uses) in ``benchmarks/bench_features.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_POINTS = 1 << 16
MIN_CAPACITY = 8
FAILURE_PROBABILITY = 1e-9
MAX_QUERIES = 1 << 18  # a 16-bit quantile fit asks for 2 * 2**16 + 1
_DECAY = 2.0 / 3.0
_MASK = (1 << 64) - 1
# k * relative_error: sqrt(12 ln(2 * 2 * MAX_QUERIES / FAILURE_PROBABILITY)) / 0.9 (module doc).
_K_TIMES_ERROR = math.sqrt(12.0 * math.log(4 * MAX_QUERIES / FAILURE_PROBABILITY)) / 0.9


def k_for(relative_error: float) -> int:
    """The top capacity ``k`` that keeps every quantile within ``relative_error`` of its rank
    (module docstring); ``relative_error`` in (0, 1)."""
    if not 0.0 < relative_error < 1.0:
        raise ValueError(f"relative_error must be in (0, 1), got {relative_error!r}")
    return int(math.ceil(_K_TIMES_ERROR / relative_error))


def memory_bound(k: int, exact_points: int = EXACT_POINTS) -> int:
    """Most values a sketch of top capacity ``k`` holds at rest (module docstring)."""
    return exact_points + 3 * k + 64 * (MIN_CAPACITY + 1)


def _capacity(s: Sketch, h: int, levels: int) -> int:
    cap = max(MIN_CAPACITY, int(math.ceil(s.k * _DECAY ** (levels - 1 - h))))
    return max(cap, s.exact_points) if h == 0 else cap


def _coin(seed: int, flip: int) -> int:
    """Bit ``flip`` of the coin stream of ``seed``: the top bit of splitmix64."""
    z = (seed * 0x9E3779B97F4A7C15 + (flip + 1) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) >> 63


@dataclass(frozen=True)
class Sketch:
    """Sketch state. ``levels[h]`` holds the values of weight ``2**h``, sorted ascending for
    ``h >= 1`` and in arrival order for level 0 (sorted only when compacted, so adding a batch
    costs a copy, not a sort of the level); ``lo``/``hi`` are the exact minimum and maximum
    (``None`` while empty); ``flips`` counts coins used so far. Build with :func:`new`,
    :func:`add` and :func:`merge`; never mutated."""

    k: int
    seed: int
    levels: tuple[np.ndarray, ...]
    lo: float | None = None
    hi: float | None = None
    flips: int = 0
    # Level-0 values added since its last compaction, as the chunks came: concatenated only
    # when the level is compacted or read, so adding a batch copies the batch, not the level.
    pending: tuple[np.ndarray, ...] = ()
    exact_points: int = EXACT_POINTS

    @property
    def count(self) -> int:
        """Rows summarised (the total weight)."""
        return sum(int(v.size) << h for h, v in enumerate(self.levels)) + \
            sum(int(c.size) for c in self.pending)

    @property
    def points(self) -> int:
        """Values held: what :func:`memory_bound` bounds."""
        return sum(int(v.size) for v in self.levels) + sum(int(c.size) for c in self.pending)

    @property
    def exact(self) -> bool:
        """True while nothing was compacted: every value is held with weight 1."""
        return len(self.levels) <= 1

    def weighted(self) -> tuple[np.ndarray, np.ndarray]:
        """(values ascending, weights): the weighted sample the sketch stands for."""
        levels = _levels(self)
        if not levels:
            return np.empty(0), np.empty(0)
        values = np.concatenate(levels)
        weights = np.concatenate([np.full(v.size, float(1 << h))
                                  for h, v in enumerate(levels)])
        order = np.argsort(values, kind="stable")
        return values[order], weights[order]


def new(k: int, seed: int = 0, *, exact_points: int = EXACT_POINTS) -> Sketch:
    """An empty sketch of top capacity ``k`` (>= 1; see :func:`k_for`) and coin ``seed``.

    ``exact_points`` (>= 0) is level 0's least capacity, :data:`EXACT_POINTS` by default: up to
    ``max(exact_points, k)`` values are kept exactly; the memory bound grows by as much."""
    for name, v, least in (("k", k, 1), ("exact_points", exact_points, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise ValueError(f"{name} must be an int >= {least}, got {v!r}")
    return Sketch(int(k), int(seed) & _MASK, (), exact_points=int(exact_points))


def _levels(s: Sketch) -> list[np.ndarray]:
    """The levels with the pending chunks joined to level 0."""
    levels = list(s.levels)
    if s.pending:
        levels[:1] = [np.concatenate([*levels[:1], *s.pending])]
    return levels


def _compact(s: Sketch, levels: list[np.ndarray]) -> tuple[list, int]:
    """Compact the lowest level over capacity until none is, with the coins of ``s``; returns
    the levels and the new coin count."""
    seed, flips = s.seed, s.flips
    h = 0
    while h < len(levels):
        v = levels[h]
        if v.size <= _capacity(s, h, len(levels)):
            h += 1
            continue
        if h == 0:
            v = np.sort(v)
        m = v.size - (v.size & 1)  # with an odd count the largest value stays
        up = v[_coin(seed, flips):m:2]
        flips += 1
        levels[h] = v[m:]
        if h + 1 == len(levels):
            levels.append(up)
        else:
            levels[h + 1] = np.sort(np.concatenate([levels[h + 1], up]), kind="stable")
        h = 0  # a new level shrinks every capacity below it
    return levels, flips


def add(s: Sketch, x: np.ndarray) -> Sketch:
    """``s`` with the finite values of ``x`` added (NaN and infinities are skipped; ``x`` is
    not modified)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    x = x[np.isfinite(x)].astype(np.float64)
    if not x.size:
        return s
    lo = float(x.min()) if s.lo is None else min(s.lo, float(x.min()))
    hi = float(x.max()) if s.hi is None else max(s.hi, float(x.max()))
    pending = s.pending + (x,)
    if len(pending) > 64:  # tiny batches: join them now and then, not on every add
        pending = (np.concatenate(pending),)
    level0 = (s.levels[0].size if s.levels else 0) + sum(int(c.size) for c in pending)
    if level0 <= _capacity(s, 0, max(1, len(s.levels))):
        return Sketch(s.k, s.seed, s.levels, lo, hi, s.flips, pending, s.exact_points)
    levels, flips = _compact(s, _levels(Sketch(s.k, s.seed, s.levels, pending=pending)))
    return Sketch(s.k, s.seed, tuple(levels), lo, hi, flips, (), s.exact_points)


def merge(a: Sketch, b: Sketch) -> Sketch:
    """One sketch of the rows of ``a`` and ``b``; compactions use ``a``'s coin stream, so ``b``
    must come from another seed. Raises ``ValueError`` when their ``k`` differ."""
    if (a.k, a.exact_points) != (b.k, b.exact_points):
        raise ValueError(f"cannot merge sketches of k={a.k}, exact_points={a.exact_points} and "
                         f"k={b.k}, exact_points={b.exact_points}")
    if b.lo is None:
        return a
    if a.lo is None:
        return Sketch(a.k, a.seed, b.levels, b.lo, b.hi, a.flips, b.pending, a.exact_points)
    la, lb = _levels(a), _levels(b)
    n = max(len(la), len(lb))
    levels = []
    for h in range(n):
        parts = [ls[h] for ls in (la, lb) if h < len(ls) and ls[h].size]
        if not parts:
            levels.append(np.empty(0))
        elif h == 0:
            levels.append(np.concatenate(parts))
        else:  # two sorted runs: the stable sort (timsort) merges them in linear time
            levels.append(np.sort(np.concatenate(parts), kind="stable"))
    levels, flips = _compact(a, levels)
    return Sketch(a.k, a.seed, tuple(levels), min(a.lo, b.lo), max(a.hi, b.hi), flips, (),
                  a.exact_points)


def from_levels(k: int, seed: int, values: np.ndarray, sizes, lo: float | None,
                hi: float | None, flips: int = 0, *,
                exact_points: int = EXACT_POINTS) -> Sketch:
    """The sketch whose levels are ``values`` cut into consecutive runs of ``sizes`` (each run
    sorted), as :func:`to_levels` gives them. Raises ``ValueError`` if they do not fit."""
    values = np.asarray(values, dtype=np.float64)
    sizes = [int(n) for n in sizes]
    if sum(sizes) != values.size or any(n < 0 for n in sizes):
        raise ValueError(f"level sizes {sizes} do not cover {values.size} values")
    ends = np.cumsum(sizes)
    levels = tuple(values[e - n:e] for n, e in zip(sizes, ends))
    if any(np.any(np.diff(v) < 0) for v in levels):
        raise ValueError("each level must be sorted ascending")
    return Sketch(int(k), int(seed) & _MASK, levels, lo, hi, int(flips), (), int(exact_points))


def to_levels(s: Sketch) -> tuple[np.ndarray, list[int]]:
    """(the levels concatenated, each sorted, and their sizes): what :func:`from_levels` takes
    back."""
    levels = _levels(s)
    if not levels:
        return np.empty(0), []
    return (np.concatenate([np.sort(levels[0]), *levels[1:]]), [int(v.size) for v in levels])


def quantiles(s: Sketch, probs) -> np.ndarray:
    """Weighted inverted-CDF quantiles: for each ``p``, the smallest value whose cumulative
    weight reaches ``p`` of the total; ``p = 0`` gives the exact minimum, ``p = 1`` the exact
    maximum. On an exact sketch these are numpy's ``method="inverted_cdf"`` quantiles."""
    probs = np.asarray(probs, dtype=np.float64)
    if s.lo is None:
        raise ValueError("no values to take quantiles of")
    values, weights = s.weighted()
    cum = np.cumsum(weights)
    target = probs * cum[-1]
    # A relative tolerance keeps p = k/n on the exact order statistic despite float sums.
    idx = np.searchsorted(cum, target * (1 - 1e-12), side="left")
    out = values[np.clip(idx, 0, values.size - 1)]
    return np.where(probs <= 0.0, s.lo, np.where(probs >= 1.0, s.hi, out))
