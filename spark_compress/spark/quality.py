"""Input data quality: per column, the counts of what makes rows unusable, in one pass.

Every job reports these in its ``report.json`` under ``input_quality`` (quantize_features: per
encoded column; dequantize_features and score: per code or feature column; compress_model: the
evaluation data's features and label), counted in the same aggregation that counts the rows.
"""

from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_compress.core import quantize as Q
from spark_compress.io.codebook import Codebook
from spark_compress.spark.features import col

# Every count kind; each one makes a row unusable for a model.
BAD_KEYS = ("null", "nan", "posinf", "neginf", "non_finite", "out_of_range")


def input_quality(df: DataFrame, features: Sequence[str] | str,
                  codebook: Codebook | None = None, *, also: Sequence[str] = (),
                  ) -> tuple[int, dict[str, dict[str, int]]]:
    """Row count and, per column, what makes rows unscorable, in one aggregation pass.

    Float columns (``features`` and ``also``, e.g. a label): ``null``, ``nan``, ``posinf``,
    ``neginf`` counts. Code columns (``features`` with ``codebook``): ``null``, ``nan``,
    ``posinf``, ``neginf`` (the special codes) and ``out_of_range`` (codes above the codebook's
    range). One array column (``features`` a string): ``null`` arrays and ``non_finite`` arrays
    (holding a null, NaN or infinite element).
    """
    def count(cond: Column) -> Column:
        return F.sum(F.when(cond, F.lit(1)).otherwise(F.lit(0)))

    aggs = [F.count(F.lit(1)).alias("__rows")]
    keys: list[tuple[str, str]] = []

    def add(name: str, conds: list[tuple[str, Column]]) -> None:
        for k, cond in conds:
            keys.append((name, k))
            aggs.append(count(cond).alias(f"__q{len(keys)}"))

    def floats(name: str) -> list[tuple[str, Column]]:
        c = col(name)
        d = c.cast("double")
        return [("null", c.isNull()), ("nan", F.isnan(d)), ("posinf", d == F.lit(float("inf"))),
                ("neginf", d == F.lit(float("-inf")))]

    if isinstance(features, str):
        c = col(features)
        bad = F.exists(c, lambda v: v.isNull() | F.isnan(v.cast("double"))
                       | (F.abs(v.cast("double")) == F.lit(float("inf"))))
        add(features, [("null", c.isNull()), ("non_finite", c.isNotNull() & bad)])
    else:
        for name in features:
            if codebook is None:
                add(name, floats(name))
                continue
            c = col(name)
            q = codebook.column(name).encoder
            add(name, [("null", c.isNull()), ("nan", c == Q.CODE_NAN),
                       ("posinf", c == Q.CODE_POSINF), ("neginf", c == Q.CODE_NEGINF),
                       ("out_of_range", (c > q.qmax) | (c < Q.CODE_NEGINF))])
    for name in also:
        add(name, floats(name))
    row = df.agg(*aggs).first()
    quality: dict[str, dict[str, int]] = {}
    for i, (name, k) in enumerate(keys, start=1):
        quality.setdefault(name, {})[k] = int(row[f"__q{i}"] or 0)
    return int(row["__rows"]), quality


def problems(quality: dict[str, dict[str, int]]) -> list[str]:
    """One phrase per column with unusable rows, e.g. ``"'x2': 3 null, 1 nan"``, in column
    order; empty when every row is usable."""
    out = []
    for name, counts in quality.items():
        bad = [f"{counts[k]} {k}" for k in BAD_KEYS if counts.get(k)]
        if bad:
            out.append(f"{name!r}: {', '.join(bad)}")
    return out
