"""Spark fit/encode/decode/evaluate equal the numpy core on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import types as T

from spark_compress.core import quantize as Q
from spark_compress.errors import DataError, SchemaError
from spark_compress.io.codebook import parse_codebook
from spark_compress.io.config import parse_feature_config
from spark_compress.io.output import parquet_column_bytes
from spark_compress.spark import features as FT

pytestmark = pytest.mark.spark

N = 600


def _data():
    """Rows with nulls, NaN, infinities, a skewed column, strings and integer ids."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=N)
    y = rng.lognormal(size=N).astype(np.float32)
    rows = []
    for i in range(N):
        xi = None if i % 11 == 0 else float(x[i])
        if i % 37 == 5:
            xi = math.nan
        if i == 8:
            xi = math.inf
        if i == 9:
            xi = -math.inf
        yi = None if i % 13 == 1 else float(y[i])
        s = None if i % 17 == 2 else ["red", "green", "blue", "cyan", "ink"][(i * i) % 5]
        rows.append((i, xi, yi, s, int(i % 7) * 100, i % 2))
    schema = "id int, x double, y float, s string, k bigint, label int"
    return rows, schema


@pytest.fixture(scope="module")
def df(spark):
    rows, schema = _data()
    return spark.createDataFrame(rows, schema).repartition(4)


def _arrays(df):
    pdf = df.orderBy("id").toPandas()
    return pdf


def _fit(df, columns, bits=8, method="minmax"):
    cfg = parse_feature_config({"job": {"passthrough": ["id", "label"]},
                                "defaults": {"method": method, "bits": bits},
                                "columns": columns})
    plan = FT.plan_features(df.schema, cfg)
    return FT.fit_codebook(df, plan)


def _expected_codes(values, enc):
    """The numpy core's codes for a pandas column (None/NaN-as-null handled by the caller)."""
    return Q.encode(enc, np.asarray(values, dtype=np.float64))


@pytest.mark.parametrize("method,bits", [("minmax", 2), ("minmax", 4), ("minmax", 8),
                                         ("minmax", 16), ("symmetric", 8), ("percentile", 4),
                                         ("quantile", 2), ("quantile", 8)])
def test_encode_decode_equal_numpy_core(df, method, bits):
    cb, rows = _fit(df, {"s": {"method": "dictionary", "max_categories": 4},
                         "k": {"method": "dictionary"}}, bits=bits, method=method)
    assert rows == N
    native = FT.encode_features(df, cb, engine="auto").orderBy("id").toPandas()
    for engine in ("arrow", "auto"):
        _check_engine(df, cb, bits, engine)
        if engine == "arrow":
            arrow = FT.encode_features(df, cb, engine="arrow").orderBy("id").toPandas()
            assert arrow.equals(native)


def _check_engine(df, cb, bits, engine):
    enc = FT.encode_features(df, cb, engine=engine)
    assert enc.columns == ["id", "x", "y", "s", "k", "label"]
    assert dict(enc.dtypes)["x"] == {2: "tinyint", 4: "tinyint", 8: "smallint", 16: "int"}[bits]
    got = enc.orderBy("id").toPandas()
    src = [r for r in _data()[0]]
    for name, idx in (("x", 1), ("y", 2)):
        c = cb.column(name)
        vals = [r[idx] for r in src]
        nulls = np.array([v is None for v in vals])
        xv = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
        if name == "y":
            xv = xv.astype(np.float32).astype(np.float64)
        want = _expected_codes(xv, c.encoder)
        col = got[name]
        assert col.isna().to_numpy().tolist() == nulls.tolist()
        np.testing.assert_array_equal(col[~nulls].to_numpy().astype(np.int64), want[~nulls])
        assert set(want[~nulls]) >= ({-1, -2, -3} if name == "x" else set()) - {None}
    # Dictionary columns: codes equal the core's dictionary encoding.
    s_vals = np.array([r[3] for r in src], dtype=object)
    s_null = np.array([v is None for v in s_vals])
    want_s = Q.encode_dictionary(cb.column("s").encoder, s_vals[~s_null].astype(str))
    np.testing.assert_array_equal(got["s"][~s_null].to_numpy().astype(np.int64), want_s)
    assert got["s"][s_null].isna().all()
    # Passthrough columns are unchanged.
    assert got["id"].tolist() == list(range(N))
    assert got["label"].tolist() == [i % 2 for i in range(N)]

    dec = FT.decode_features(enc, cb, engine=engine).orderBy("id").toPandas()
    assert dict(FT.decode_features(enc, cb).dtypes) == {
        "id": "int", "x": "double", "y": "float", "s": "string", "k": "bigint", "label": "int"}
    for name in ("x", "y"):
        c = cb.column(name)
        codes = got[name]
        ok = ~codes.isna().to_numpy()
        want = Q.decode(c.encoder, codes[ok].to_numpy().astype(np.int64))
        if c.source_type == "float":
            want = want.astype(np.float32)
        np.testing.assert_array_equal(dec[name][ok].to_numpy(), want)
    assert dec["s"][~s_null & (got["s"] >= 0)].isin(["red", "green", "blue", "cyan", "ink"]).all()


def test_fit_statistics_equal_numpy(df):
    cb, rows = _fit(df, {"s": {"method": "dictionary", "max_categories": 3},
                         "k": {"method": "dictionary"}})
    src = _data()[0]
    x = np.array([np.nan if r[1] is None else r[1] for r in src])
    finite = x[np.isfinite(x)]
    fit = cb.column("x").fit
    assert fit["count"] == N
    assert fit["null_count"] == sum(r[1] is None for r in src)
    assert fit["nan_count"] == sum(r[1] is not None and math.isnan(r[1]) for r in src)
    assert (fit["posinf_count"], fit["neginf_count"]) == (1, 1)
    assert (fit["min"], fit["max"]) == (finite.min(), finite.max())
    enc = cb.column("x").encoder
    assert (enc.lo, enc.hi) == (finite.min(), finite.max())
    # Dictionary: frequency-ranked, ties by value, capped.
    words = [r[3] for r in src if r[3] is not None]
    counts = {w: words.count(w) for w in set(words)}
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[:3]
    assert cb.column("s").encoder.vocabulary == tuple(ranked)
    assert cb.column("k").encoder.vocabulary == (0, 100, 200, 300, 400, 500, 600)
    assert cb.column("k").code_type == "tinyint"


def test_quantile_fit_close_to_numpy(df):
    cb, _ = _fit(df, {"s": {"method": "dictionary"}, "k": {"method": "dictionary"}},
                 bits=4, method="quantile")
    src = _data()[0]
    y = np.array([r[2] for r in src if r[2] is not None], dtype=np.float32).astype(np.float64)
    exact = Q.choose_quantile(np.quantile(y, Q.quantile_probabilities(4), method="inverted_cdf"),
                              bits=4)
    got = cb.column("y").encoder
    # approxQuantile's rank error is at most relative_error * n = 1e-3 * 550 < 1 rank: the
    # edges are exact order statistics within one position of numpy's.
    ys = np.sort(y)
    for e_got, e_exact in zip(got.edges, exact.edges):
        r_got, r_exact = np.searchsorted(ys, e_got), np.searchsorted(ys, e_exact)
        assert abs(int(r_got) - int(r_exact)) <= 1


def test_evaluate_equals_numpy_error_stats(df):
    cb, _ = _fit(df, {"s": {"method": "dictionary", "max_categories": 2},
                      "k": {"method": "dictionary"}}, bits=4)
    got = FT.evaluate_features(df, cb)
    src = _data()[0]
    x = np.array([np.nan if r[1] is None else r[1] for r in src])
    want = Q.error_stats(x, Q.decode(cb.column("x").encoder, Q.encode(cb.column("x").encoder, x)))
    assert got["x"]["rmse"] == pytest.approx(want["rmse"], rel=1e-12)
    assert got["x"]["max_abs_error"] == want["max_abs_error"]
    assert got["x"]["max_abs_error"] <= cb.column("x").encoder.scale / 2 * (1 + 1e-9)
    assert got["x"]["clipped_count"] == 0
    words = [r[3] for r in src if r[3] is not None]
    assert got["s"]["oov_count"] == sum(w not in cb.column("s").encoder.vocabulary for w in words)


def test_percentile_counts_clipped_values(df):
    cb, _ = _fit(df, {"s": {"method": "dictionary"}, "k": {"method": "dictionary"},
                      "y": {"method": "percentile", "clip": 0.05}})
    enc = cb.column("y").encoder
    y = np.array([r[2] for r in _data()[0] if r[2] is not None], np.float32).astype(np.float64)
    got = FT.evaluate_features(df, cb)["y"]
    assert got["clipped_count"] == int(((y < enc.lo) | (y > enc.hi)).sum())
    assert 0.06 * len(y) < got["clipped_count"] < 0.14 * len(y)


def test_codebook_is_deterministic_across_partitionings(spark):
    rows, schema = _data()
    a = spark.createDataFrame(rows, schema).repartition(3)
    b = spark.createDataFrame(rows[::-1], schema).repartition(5)
    cols = {"s": {"method": "dictionary", "max_categories": 3}, "k": {"method": "dictionary"},
            "y": {"method": "quantile", "bits": 4}}
    ja, jb = _fit(a, cols)[0].to_json(), _fit(b, cols)[0].to_json()
    assert ja == jb
    assert parse_codebook(ja) == _fit(a, cols)[0]


def test_empty_and_all_null_columns(spark):
    schema = T.StructType([T.StructField("id", T.IntegerType()),
                           T.StructField("label", T.IntegerType()),
                           T.StructField("z", T.DoubleType())])
    df = spark.createDataFrame([(i, 0, None) for i in range(5)], schema)
    with pytest.warns(Q.ConstantColumnWarning):
        cb, rows = _fit(df, {})
    assert rows == 5 and cb.column("z").fit["null_count"] == 5
    out = FT.decode_features(FT.encode_features(df, cb), cb).collect()
    assert [r["z"] for r in out] == [None] * 5
    with pytest.warns(Q.ConstantColumnWarning):
        cb0, rows0 = _fit(df.limit(0), {})
    assert rows0 == 0


def test_plan_errors_name_the_column(spark):
    df = spark.createDataFrame([(1, "a", [1.0], 2.0)], "id int, s string, v array<double>, x double")
    cfg = parse_feature_config({"job": {"passthrough": ["id", "v"]}}, source="c.toml")
    with pytest.raises(SchemaError, match=r"string column 's' is not configured.*dictionary"):
        FT.plan_features(df.schema, cfg)
    cfg = parse_feature_config({"job": {"passthrough": ["id"], "drop": ["s"]}}, source="c.toml")
    with pytest.raises(SchemaError, match=r"column 'v' has type array<double>.*passthrough or drop"):
        FT.plan_features(df.schema, cfg)
    cfg = parse_feature_config({"job": {"passthrough": ["ID"]}}, source="c.toml")
    with pytest.raises(SchemaError, match=r"'ID' not found.*did you mean 'id'"):
        FT.plan_features(df.schema, cfg)
    cfg = parse_feature_config({"job": {"passthrough": ["id", "v"]},
                                "columns": {"s": {"method": "minmax"}}}, source="c.toml")
    with pytest.raises(SchemaError, match=r"column 's' has type string.*dictionary"):
        FT.plan_features(df.schema, cfg)
    cfg = parse_feature_config({"job": {"passthrough": ["id", "v"]},
                                "defaults": {"strings": "dictionary"}}, source="c.toml")
    plan = FT.plan_features(df.schema, cfg)
    assert [(p.name, p.method) for p in plan.encode] == [("s", "dictionary"), ("x", "minmax")]


def test_decode_rejects_codes_outside_the_codebook(spark, df):
    cb, _ = _fit(df, {"s": {"method": "dictionary"}, "k": {"method": "dictionary"}}, bits=4)
    bad = FT.encode_features(df, cb).withColumn("x", FT.F.lit(99).cast("tinyint"))
    with pytest.raises(Exception, match=r"column 'x': code 99 is not valid"):
        FT.decode_features(bad, cb).collect()
    with pytest.raises(SchemaError, match="column 'x' has type double"):
        FT.decode_features(df, cb)


def test_check_rows():
    FT.check_rows(3, 3, "job")
    with pytest.raises(DataError, match="3 rows in but 2 rows out"):
        FT.check_rows(3, 2, "job")


@pytest.mark.parametrize("bits", [2, 4])
def test_sub_byte_codes_cost_about_bits_over_8_bytes(spark, tmp_path, bits):
    """Parquet's dictionary encoding bit-packs small code ranges: no explicit packing needed."""
    n, ncols = 200_000, 4
    F = FT.F
    df = spark.range(n, numPartitions=1).select(
        *[F.floor(F.rand(seed=j) * (1 << bits)).cast("tinyint").alias(f"c{j}")
          for j in range(ncols)])
    df.write.parquet(str(tmp_path / "codes"))
    sizes = parquet_column_bytes(tmp_path / "codes")
    for j in range(ncols):
        # Uniform random codes are incompressible: the floor is exactly bits/8 bytes per value.
        assert sizes[f"c{j}"] <= n * bits / 8 * 1.05 + 2048, sizes


def test_wide_input_fits_in_chunked_passes(spark):
    """150 columns need several agg passes (AGG_CHUNK); every column's stats stay right."""
    ncols = 150
    rng = np.random.default_rng(5)
    data = rng.normal(size=(40, ncols))
    data[3, 7] = math.nan
    data[4, 140] = math.inf
    rows = [tuple(float(v) for v in r) for r in data]
    df = spark.createDataFrame(rows, ", ".join(f"c{j} double" for j in range(ncols)))
    cfg = parse_feature_config({"defaults": {"bits": 4}})
    cb, n = FT.fit_codebook(df, FT.plan_features(df.schema, cfg))
    assert n == 40 and len(cb.columns) == ncols > FT.AGG_CHUNK / 3
    for j in (0, 7, 99, 140, 149):
        x = data[:, j]
        fit = cb.column(f"c{j}").fit
        assert (fit["min"], fit["max"]) == (x[np.isfinite(x)].min(), x[np.isfinite(x)].max())
        assert (fit["nan_count"], fit["posinf_count"]) == (int(j == 7), int(j == 140))


# --- the quantile sketch in the fit: partitionings, exact path, bound -------------------------

SKETCH_ROWS = 60_000


@pytest.fixture(scope="module")
def sketch_rows():
    """60k rows: a skewed double (with NaN and nulls), a float with a point mass at 0."""
    rng = np.random.default_rng(21)
    p = rng.lognormal(sigma=1.5, size=SKETCH_ROWS)
    q = np.where(rng.random(SKETCH_ROWS) < 0.3, 0.0, rng.normal(size=SKETCH_ROWS))
    q = q.astype(np.float32)
    rows = [(i, None if i % 101 == 3 else (math.nan if i % 997 == 5 else float(p[i])),
             float(q[i])) for i in range(SKETCH_ROWS)]
    return rows, "id int, p double, q float"


def _sketch_fit(spark, rows, schema, parts, columns, passthrough=("id",), **kw):
    df = spark.createDataFrame(rows, schema).repartition(parts)
    cfg = parse_feature_config({"job": {"passthrough": list(passthrough)}, "columns": columns})
    plan = FT.plan_features(df.schema, cfg)
    return FT.fit_codebook(df, plan, **kw)[0]


@pytest.fixture()
def big_batches(spark):
    # The session's 7-row batches would make 60k rows 8 600 Arrow round trips per fit.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "5000")
    yield
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")


def _finite(rows, j):
    return np.array([r[j] for r in rows if r[j] is not None and math.isfinite(r[j])])


def test_codebook_identical_across_partitionings_through_the_sketch(spark, sketch_rows,
                                                                    big_batches):
    # Under the exact cap every partitioning gives the exact quantiles: byte-identical
    # codebooks for 1, 3 and 5 partitions, equal to numpy's.
    rows, schema = sketch_rows
    cols = {"p": {"method": "percentile", "bits": 8, "clip": 0.01},
            "q": {"method": "quantile", "bits": 8}}
    books = [_sketch_fit(spark, rows, schema, n, cols) for n in (1, 3, 5)]
    assert books[0].to_json() == books[1].to_json() == books[2].to_json()
    p = _finite(rows, 1)
    q = _finite(rows, 2).astype(np.float32).astype(np.float64)
    lo, hi = np.quantile(p, [0.01, 0.99], method="inverted_cdf")
    assert Q.choose_affine(lo, hi, bits=8, method="percentile") == books[0].column("p").encoder
    exact = Q.choose_quantile(np.quantile(q, Q.quantile_probabilities(8), method="inverted_cdf"),
                              bits=8)
    assert books[0].column("q").encoder == exact


def test_above_the_exact_cap_same_partitioning_is_identical_others_within_the_error(
        spark, sketch_rows, big_batches, monkeypatch, caplog):
    # No exact floor and relative_error 1e-3 (k = 22 636 < 60k rows): the sketch compacts.
    from spark_compress.core import sketch

    monkeypatch.setattr(FT, "SKETCH_EXACT_POINTS", 0)
    rows, schema = sketch_rows
    rel = 1e-3
    cols = {"q": {"method": "quantile", "bits": 16}}
    kw = {"passthrough": ("id", "p"), "relative_error": rel}
    with caplog.at_level("INFO", logger=FT.__name__):
        a = _sketch_fit(spark, rows, schema, 3, cols, **kw)
        # Only the first fit's records: an earlier job in the session may have left the
        # package logger at INFO, and then the fits below would log too.
        fit_a = list(caplog.records)
    b = _sketch_fit(spark, rows, schema, 3, cols, **kw)
    c = _sketch_fit(spark, rows, schema, 5, cols, **kw)
    assert a.to_json() == b.to_json()
    held = [r.getMessage() for r in fit_a if "approximate quantiles from" in r.message]
    assert len(held) == 1  # it really compacted, and held at most the bound
    points = int(held[0].split("from ")[1].split()[0])
    assert points <= sketch.memory_bound(sketch.k_for(rel), 0) and points < SKETCH_ROWS // 2
    q = np.sort(_finite(rows, 2).astype(np.float32).astype(np.float64))
    probs = np.asarray(Q.quantile_probabilities(16))[2:-2:2]  # the bin edges' probabilities
    for book in (a, c):
        edges = np.asarray(book.column("q").encoder.edges)
        lo = np.searchsorted(q, edges, side="left") / q.size
        hi = np.searchsorted(q, edges, side="right") / q.size
        assert np.maximum(lo - probs, probs - hi).clip(min=0).max() <= rel
