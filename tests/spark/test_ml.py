"""FeatureQuantizer / FeatureQuantizerModel / FeatureDequantizer as pyspark.ml pipeline stages."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.spark

from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.feature import VectorAssembler  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

from spark_compress.core import quantize as Q  # noqa: E402
from spark_compress.errors import (  # noqa: E402
    ConfigError,
    FormatError,
    NotFittedError,
    SchemaError,
)
from spark_compress.io.codebook import Codebook, ColumnCodebook, parse_codebook  # noqa: E402
from spark_compress.io.config import parse_feature_config  # noqa: E402
from spark_compress.spark.ml import (  # noqa: E402
    FeatureDequantizer,
    FeatureQuantizer,
    FeatureQuantizerModel,
)

N = 30
SCHEMA = T.StructType([
    T.StructField("id", T.LongType()),
    T.StructField("x", T.DoubleType()),
    T.StructField("y", T.FloatType()),
    T.StructField("junk", T.StringType()),
    T.StructField("city", T.StringType()),
    T.StructField("k", T.IntegerType()),
    T.StructField("label", T.DoubleType()),
])
CITIES = ["Paris"] * 12 + ["Lyon"] * 10 + ["Nice"] * 7 + [None]  # 30 values


def _rows() -> list[tuple]:
    rows = []
    for i in range(N):
        x = i * 0.5 - 2.0  # finite range [-2.0, 12.5]
        x = {3: None, 5: math.nan, 7: math.inf, 9: -math.inf}.get(i, x)
        y = None if i == 4 else math.nan if i == 6 else float((i * 7) % 11)
        k = None if i == 10 else i % 5  # counts 0:5, 1..4:6 each
        rows.append((i, x, y, f"j{i}", CITIES[(i * 7) % N], k, float(i % 2)))
    return rows


COLUMN_SETTINGS = {
    "y": {"method": "quantile", "bits": 4},
    "city": {"method": "dictionary"},
    "k": {"method": "dictionary", "max_categories": 3},
}


def _quantizer() -> FeatureQuantizer:
    return FeatureQuantizer(passthroughCols=["id", "label"], dropCols=["junk"],
                            columnSettings=json.dumps(COLUMN_SETTINGS))


@pytest.fixture(scope="module")
def df(spark):
    frame = spark.createDataFrame(_rows(), SCHEMA).repartition(3).cache()
    yield frame
    frame.unpersist()


@pytest.fixture(scope="module")
def fitted(df) -> PipelineModel:
    assembler = VectorAssembler(inputCols=["x", "y", "city", "k"], outputCol="features",
                                handleInvalid="keep")
    return Pipeline(stages=[_quantizer(), assembler]).fit(df)


@pytest.fixture(scope="module")
def encoded(df, fitted) -> list:
    """The fitted pipeline's output rows, by id."""
    return _by_id(fitted.transform(df))


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("ml") / "pipeline")
    fitted.save(path)
    return path


def _by_id(frame) -> list:
    return sorted(frame.collect(), key=lambda r: r["id"])


def _plain(v):
    """Row values made comparable with ==: vectors to lists, NaN to a marker."""
    if hasattr(v, "toArray"):
        return [_plain(float(e)) for e in v.toArray()]
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


def _table(rows) -> list[tuple]:
    return [tuple(_plain(v) for v in r) for r in rows]


def _core_codes(enc, values: list) -> list:
    """The numpy core's codes of ``values`` (None stays None)."""
    present = [v for v in values if v is not None]
    if isinstance(enc, Q.DictionaryEncoder):
        codes = Q.encode_dictionary(enc, np.array(present))
    else:
        codes = Q.encode(enc, np.array(present, dtype=np.float64))
    it = iter(codes.tolist())
    return [None if v is None else next(it) for v in values]


# --------------------------------------------------------------------------- fit + transform


def test_pipeline_codes_equal_numpy_core(df, fitted, encoded):
    qm = fitted.stages[0]
    assert isinstance(qm, FeatureQuantizerModel)
    codebook = qm.codebook
    assert [c.name for c in codebook.columns] == ["x", "y", "city", "k"]
    assert codebook.passthrough == ("id", "label")
    assert [c.method for c in codebook.columns] == ["minmax", "quantile", "dictionary",
                                                    "dictionary"]

    out = fitted.transform(df)
    # Encoded columns replaced in place, junk dropped, the assembler's column appended.
    assert out.columns == ["id", "x", "y", "city", "k", "label", "features"]
    types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    assert types == {"id": "bigint", "x": "smallint", "y": "tinyint", "city": "tinyint",
                     "k": "tinyint", "label": "double", "features": "vector"}

    got = encoded
    inp = sorted(_rows(), key=lambda r: r[0])
    names = [f.name for f in SCHEMA.fields]
    for name in ("x", "y", "city", "k"):
        values = [r[names.index(name)] for r in inp]
        expected = _core_codes(codebook.column(name).encoder, values)
        assert [r[name] for r in got] == expected, name
    assert [(r["id"], r["label"]) for r in got] == [(r[0], r[6]) for r in inp]

    # Hand-computed: x spans [-2.0, 12.5] -> codes 0..255, specials get sentinels, null stays.
    x = codebook.column("x").encoder
    assert (x.lo, x.hi, x.scale) == (-2.0, 12.5, 14.5 / 255)
    assert [got[i]["x"] for i in (0, 29, 3, 5, 7, 9)] == [0, 255, None, -1, -2, -3]
    # city: Paris 12, Lyon 10, Nice 7 -> codes 0, 1, 2 by frequency; one null.
    assert codebook.column("city").encoder.vocabulary == ("Paris", "Lyon", "Nice")
    assert [got[i]["city"] for i in (0, 2, 4, 17)] == [0, 1, 2, None]  # Paris, Lyon, Nice, null
    assert [r["city"] for r in got].count(None) == 1
    # k: 0 has 5 (one null), 1..4 have 6 each: the cap of 3 keeps 1, 2, 3 (ties by value).
    assert codebook.column("k").encoder.vocabulary == (1, 2, 3)
    assert [got[i]["k"] for i in (0, 1, 2, 3, 4, 10)] == [-4, 0, 1, 2, -4, None]
    # y: nulls and NaN as for x, through the Arrow (table lookup) path.
    assert (got[4]["y"], got[6]["y"]) == (None, -1)

    # The standard stage downstream sees the codes; null becomes NaN with handleInvalid=keep.
    for r in got:
        expected = [float("nan") if r[n] is None else float(r[n]) for n in ("x", "y", "city", "k")]
        assert _plain(r["features"]) == [_plain(v) for v in expected]


def test_model_keeps_columns_it_never_saw(df, fitted):
    qm = fitted.stages[0]
    out = qm.transform(df.withColumn("extra", F.lit("e")).drop("junk"))
    assert out.columns == ["id", "x", "y", "city", "k", "label", "extra"]


# --------------------------------------------------------------------------- persistence


def test_pipeline_model_save_load_identical(df, fitted, encoded, saved):
    loaded = PipelineModel.load(saved)

    assert [type(s).__name__ for s in loaded.stages] == ["FeatureQuantizerModel",
                                                         "VectorAssembler"]
    original_json = fitted.stages[0].getCodebookJson()
    assert loaded.stages[0].getCodebookJson() == original_json
    assert loaded.stages[0].getDropCols() == ["junk"]
    assert parse_codebook(original_json) == loaded.stages[0].codebook
    assert _table(_by_id(loaded.transform(df))) == _table(encoded)


def test_unfitted_pipeline_and_stages_save_load(df, fitted, tmp_path):
    fq = _quantizer().setRelativeError(0.01)
    Pipeline(stages=[fq]).save(str(tmp_path / "p"))
    loaded = Pipeline.load(str(tmp_path / "p")).getStages()[0]
    assert isinstance(loaded, FeatureQuantizer)
    assert loaded.uid == fq.uid
    assert {p.name: loaded.getOrDefault(p) for p in loaded.params} == {
        "passthroughCols": ["id", "label"], "dropCols": ["junk"], "method": "minmax",
        "bits": 8, "clip": 0.001, "maxCategories": 1000, "strings": "error",
        "columnSettings": json.dumps(COLUMN_SETTINGS), "relativeError": 0.01}
    assert FeatureQuantizer.load(_saved(FeatureQuantizer(), tmp_path / "fq")
                                 ).getRelativeError() is None

    qm = fitted.stages[0]
    qm2 = FeatureQuantizerModel.load(_saved(qm, tmp_path / "qm"))
    assert (qm2.uid, qm2.getCodebookJson(), qm2.getDropCols()) == (
        qm.uid, qm.getCodebookJson(), ["junk"])
    dq = FeatureDequantizer.load(_saved(qm.inverse(), tmp_path / "dq"))
    assert dq.getCodebookJson() == qm.getCodebookJson()


def _saved(stage, path) -> str:
    stage.write().overwrite().save(str(path))
    return str(path)


def test_tampered_saved_pipeline_raises_format_error(df, saved, tmp_path):
    path = str(tmp_path / "pipeline")
    shutil.copytree(saved, path)
    [meta_dir] = glob.glob(os.path.join(path, "stages", "0_*", "metadata"))
    [part] = glob.glob(os.path.join(meta_dir, "part-*"))
    meta = json.loads(open(part, encoding="utf-8").read())
    cb = meta["paramMap"]["codebookJson"]
    tampered = re.sub(r'"scale": [0-9.e-]+', '"scale": 1.0', cb, count=1)
    assert tampered != cb
    meta["paramMap"]["codebookJson"] = tampered
    with open(part, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta) + "\n")
    for crc in glob.glob(os.path.join(meta_dir, ".*.crc")):
        os.remove(crc)  # Hadoop's local file system would reject the edit before we see it

    loaded = PipelineModel.load(path)
    with pytest.raises(FormatError, match="codebook checksum mismatch"):
        loaded.transform(df)


# --------------------------------------------------------------------------- decode


def test_dequantizer_round_trip(df, fitted):
    qm = fitted.stages[0]
    codebook = qm.codebook
    decoded = qm.inverse().transform(qm.transform(df))
    types = {f.name: f.dataType.simpleString() for f in decoded.schema.fields}
    assert types == {"id": "bigint", "x": "double", "y": "float", "city": "string", "k": "int",
                     "label": "double"}
    got = _by_id(decoded)
    inp = sorted(_rows(), key=lambda r: r[0])

    scale = codebook.column("x").encoder.scale
    for r, (_, x, *_rest) in zip(got, inp):
        if x is None:
            assert r["x"] is None
        elif math.isnan(x):
            assert math.isnan(r["x"])
        elif math.isinf(x):
            assert r["x"] == x
        else:
            assert abs(r["x"] - x) <= scale / 2 * (1 + 1e-9), (x, r["x"])
    assert [got[i]["x"] for i in (0, 29)] == pytest.approx([-2.0, 12.5], abs=1e-12)

    y = codebook.column("y").encoder
    ys = [r[2] for r in inp]
    y_codes = _core_codes(y, ys)
    expected_y = [None if c is None else float(np.float32(Q.decode(y, np.array([c]))[0]))
                  for c in y_codes]
    assert [_plain(r["y"]) for r in got] == [_plain(v) for v in expected_y]
    assert got[4]["y"] is None and math.isnan(got[6]["y"])

    assert [r["city"] for r in got] == [r[4] for r in inp]  # every city is in the vocabulary
    # k: 0 and 4 are out of the 3-value vocabulary and come back as null.
    assert [r["k"] for r in got] == [None if v in (0, 4, None) else v for v in (r[5] for r in inp)]
    assert [(r["id"], r["label"]) for r in got] == [(r[0], r[6]) for r in inp]


# --------------------------------------------------------------------------- errors


def test_bad_bits_raises_config_error(df):
    with pytest.raises(ConfigError, match=re.escape(
            "FeatureQuantizer: [defaults] bits: bits must be one of 2, 4, 8, 16. Got 3.")):
        _quantizer().setBits(3).fit(df)


def test_bad_column_settings_raise_config_error(df):
    with pytest.raises(ConfigError, match=re.escape(
            "FeatureQuantizer: [columns.y] bits: bits must be one of 2, 4, 8, 16. Got 3.")):
        _quantizer().setColumnSettings(json.dumps({"y": {"bits": 3}})).fit(df)
    with pytest.raises(ConfigError, match="unknown key 'bitz' in \\[columns.y\\]"):
        _quantizer().setColumnSettings('{"y": {"bitz": 4}}').fit(df)
    with pytest.raises(ConfigError, match="columnSettings is not valid JSON"):
        _quantizer().setColumnSettings("{y: 4}").fit(df)
    with pytest.raises(ConfigError, match="columnSettings must be a JSON object"):
        _quantizer().setColumnSettings("[1]").fit(df)


def test_unknown_passthrough_column_raises_schema_error(df):
    with pytest.raises(SchemaError, match="FeatureQuantizer: column\\(s\\) 'nope' not found"):
        _quantizer().setPassthroughCols(["id", "label", "nope"]).fit(df)


def test_unconfigured_string_column_raises_schema_error(df):
    with pytest.raises(SchemaError, match="string column 'city' is not configured"):
        _quantizer().setColumnSettings("{}").fit(df)


def test_unfitted_stages_raise(df):
    with pytest.raises(NotFittedError, match="FeatureQuantizerModel .* has no codebook"):
        FeatureQuantizerModel().transform(df)
    with pytest.raises(NotFittedError, match="FeatureQuantizerModel .* has no codebook"):
        FeatureQuantizerModel().codebook
    with pytest.raises(NotFittedError, match="FeatureDequantizer .* has no codebook"):
        FeatureDequantizer().transform(df)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError, match="keyword arguments"):
        FeatureQuantizer(["id"])


def test_from_config_round_trip():
    cfg = parse_feature_config({
        "job": {"passthrough": ["id"], "drop": ["junk"]},
        "defaults": {"method": "percentile", "bits": 4, "clip": 0.01, "strings": "dictionary"},
        "columns": {"k": {"method": "dictionary", "max_categories": 3}},
        "fit": {"relative_error": 0.001},
    }, source="features.toml")
    fq = FeatureQuantizer.fromConfig(cfg)
    assert (fq.getMethod(), fq.getBits(), fq.getPassthroughCols()) == ("percentile", 4, ["id"])
    assert fq.toConfig() == dataclasses.replace(cfg, source="FeatureQuantizer")


def test_dequantizer_null_code_of_empty_vocabulary(spark):
    codebook = Codebook((ColumnCodebook("s", "string", Q.DictionaryEncoder((), 1000)),))
    codes = spark.createDataFrame([(None,), (-4,)], "s tinyint")
    decoded = FeatureDequantizer(codebookJson=codebook.to_json()).transform(codes)
    assert [r["s"] for r in decoded.collect()] == [None, None]
