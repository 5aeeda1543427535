"""Bad input for every job, in process: each case exits 2 with one message on stderr that names
the culprit (file, column, key or type), prints nothing on stdout and leaves nothing at
``--output`` (no directory, no staging directory next to it).

``jobs/score.py`` is covered for its model file (truncated, foreign, empty, missing, and signed
with ``SPARK_COMPRESS_HMAC_KEY``: wrong key, unsigned, payload or header tampered).

The cases complement ``test_jobs.py`` (unknown ``[defaults]`` key, ``bits = 3``, a misspelt
column, an unconfigured string, a missing input, an empty Parquet file, a nested column, a missing
config, a bad ``--input-option``, an unfinished or checksum-broken codebook, Brotli input) and
``test_compress_job.py`` (``prune`` out of range, feature count, unknown feature column): none of
those is repeated here.

All-null columns are not bad input: a column whose values are all null is encoded with a
``ConstantColumnWarning`` ("no finite values"), counted in the report (``null_count`` = rows) and
comes back all null (see ``test_all_null_column_warns_and_round_trips``), like the constant
columns the house style says warn rather than fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_compress.core import quantize as Q

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
ROWS = 240
FEATURES = ["f0", "f1", "f2", "f3"]
BASE_CONF = ('[job]\npassthrough = ["id"]\n[defaults]\nmethod = "minmax"\nbits = 8\n'
             'strings = "dictionary"\n')
HMAC_ENV = "SPARK_COMPRESS_HMAC_KEY"
SIGNING_KEY = "the-right-key"
MODEL_CONF = ('[plan]\nquantize = "int8"\n[eval]\nlabel = "label"\n'
              'features = ["f0", "f1", "f2", "f3"]\n')


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"bad_job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Run(NamedTuple):
    rc: int
    out: str
    err: str


def _main(capsys, job: str, argv: list) -> Run:
    rc = _job(job).main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(rc, captured.out, captured.err)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _table(rows: int = ROWS) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({"id": np.arange(rows, dtype=np.int64), "a": rng.normal(size=rows),
                     "b": rng.uniform(0, 10, size=rows),
                     "city": rng.choice(["p", "q", "r"], size=rows)})


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory) -> dict[str, Path]:
    """Valid inputs of every kind, shared by the cases (which copy before they break anything):
    a Parquet table and its config, a finished quantize_features output, a scikit-learn
    logistic regression as .skops, the same model as .npz weights with a JSON spec and as a
    Spark MLlib LogisticRegressionModel directory, eval data and a model config."""
    import skops.io
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("bad_inputs_world")
    src = root / "in.parquet"
    pq.write_table(_table(), src, compression="zstd")
    conf = _write(root / "c.toml", BASE_CONF)
    q = root / "q"
    assert _job("quantize_features").main(["--input", str(src), "--config", str(conf),
                                           "--output", str(q)]) == 0

    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) > 0).astype(np.int32)
    est = LogisticRegression().fit(x, y)
    skops.io.dump(est, root / "lr.skops")
    eval_data = root / "eval.parquet"
    pq.write_table(pa.table({**{f: x[:, j] for j, f in enumerate(FEATURES)}, "label": y}),
                   eval_data)
    np.savez(root / "lr.npz", w=est.coef_.T.astype(np.float32),
             b=est.intercept_.astype(np.float32))
    _write(root / "lr.json", json.dumps({"task": "binary", "input_names": FEATURES,
                                         "layers": [{"weight": "w", "bias": "b",
                                                     "activation": "sigmoid"}]}))

    from pyspark.ml.classification import LogisticRegression as SparkLR
    from pyspark.ml.feature import VectorAssembler

    df = VectorAssembler(inputCols=FEATURES, outputCol="features").transform(
        spark.read.parquet(eval_data.as_uri()))
    SparkLR(maxIter=5).fit(df).write().save((root / "lr-mllib").as_uri())

    model_conf = _write(root / "m.toml", MODEL_CONF)
    compress = ["--model", str(root / "lr.skops"), "--config", str(model_conf), "--eval-data",
                str(eval_data), "--output"]
    previous = os.environ.pop(HMAC_ENV, None)
    try:
        assert _job("compress_model").main(compress + [str(root / "cm")]) == 0
        os.environ[HMAC_ENV] = SIGNING_KEY
        assert _job("compress_model").main(compress + [str(root / "cm-signed")]) == 0
    finally:
        os.environ.pop(HMAC_ENV, None)
        if previous is not None:
            os.environ[HMAC_ENV] = previous
    return {"src": src, "conf": conf, "q": q, "skops": root / "lr.skops", "npz": root / "lr.npz",
            "mllib": root / "lr-mllib", "eval": eval_data, "model_conf": model_conf,
            "compressed": root / "cm" / "model.safetensors",
            "signed": root / "cm-signed" / "model.safetensors"}


def _copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def _parquet(tmp: Path, table: pa.Table, name: str = "in.parquet") -> Path:
    path = tmp / name
    pq.write_table(table, path, compression="zstd")
    return path


# ------------------------------------------------------------------------ quantize_features
# A case returns (job, argv without --output, fragments the one stderr line must contain).

Case = Callable[[Path, dict], tuple[str, list, list[str]]]


def _q(src, conf) -> list:
    return ["--input", src, "--config", conf]


def q_not_parquet(tmp, w):
    bad = tmp / "garbage.parquet"
    bad.write_bytes(b"this is not a parquet file, only text" * 10)
    return "quantize_features", _q(bad, w["conf"]), ["garbage.parquet is not a Parquet file"]


def q_truncated_parquet(tmp, w):
    bad = tmp / "cut.parquet"
    data = w["src"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return "quantize_features", _q(bad, w["conf"]), ["cut.parquet is a truncated Parquet file"]


def q_object_store_uri(tmp, w):
    return ("quantize_features", _q("s3://bucket/table", w["conf"]),
            ["--input 's3://bucket/table'", "only local or shared-filesystem paths"])


def q_empty_directory(tmp, w):
    empty = tmp / "empty_dir"
    empty.mkdir()
    return ("quantize_features", _q(empty, w["conf"]),
            [f"--input {empty}: cannot read the input as parquet", "Unable to infer schema"])


def q_csv_header_only(tmp, w):
    csv = _write(tmp / "header.csv", "id,a,b,city\n")
    return ("quantize_features", _q(csv, w["conf"]) + ["--input-format", "csv"],
            [str(csv), "no rows"])


def q_numeric_method_on_string(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF + '[columns.city]\nmethod = "minmax"\n')
    return ("quantize_features", _q(w["src"], conf),
            [str(conf), "column 'city' has type string", "minmax", 'use method = "dictionary"'])


def q_dictionary_on_double(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF + '[columns.a]\nmethod = "dictionary"\n')
    return ("quantize_features", _q(w["src"], conf),
            [str(conf), "column 'a' has type double", "dictionary"])


def q_timestamp_column(tmp, w):
    t = _table().append_column("seen", pa.array(np.arange(ROWS) * 10**6, pa.timestamp("us")))
    return ("quantize_features", _q(_parquet(tmp, t), w["conf"]),
            ["column 'seen' has type timestamp", "passthrough or drop"])


def q_timestamp_nanos_column(tmp, w):
    """Spark cannot read Parquet TIMESTAMP(NANOS) at all (pandas writes it by default)."""
    t = _table().append_column("seen", pa.array(np.arange(ROWS) * 10**9, pa.timestamp("ns")))
    src = _parquet(tmp, t)
    return ("quantize_features", _q(src, w["conf"]),
            [f"--input {src}", "cannot read the input as parquet", "TIMESTAMP(NANOS"])


def q_boolean_column(tmp, w):
    t = _table().append_column("flag", pa.array(np.arange(ROWS) % 2 == 0))
    return ("quantize_features", _q(_parquet(tmp, t), w["conf"]),
            ["column 'flag' has type boolean", "passthrough or drop"])


def q_passthrough_column_missing(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF.replace('["id"]', '["id", "label"]'))
    return ("quantize_features", _q(w["src"], conf),
            [str(conf), "'label'", "not found in the input"])


def q_unknown_section(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF + '[colums.a]\nbits = 4\n')
    return "quantize_features", _q(w["src"], conf), [str(conf), "colums"]


def q_unknown_job_key(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF.replace("passthrough", "passthru"))
    return "quantize_features", _q(w["src"], conf), [str(conf), "passthru", "[job]"]


def q_unknown_column_key(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF + '[columns.a]\nbitz = 4\n')
    return "quantize_features", _q(w["src"], conf), [str(conf), "bitz", "[columns.a]"]


def q_unknown_method(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF + '[columns.a]\nmethod = "log"\n')
    return "quantize_features", _q(w["src"], conf), [str(conf), "[columns.a]", "'log'"]


def q_toml_syntax(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF + "[columns.a\nbits = 4\n")
    return "quantize_features", _q(w["src"], conf), [str(conf)]


def _bits_case(value: str, where: str = "defaults") -> Case:
    def case(tmp, w):
        text = (BASE_CONF.replace("bits = 8", f"bits = {value}") if where == "defaults"
                else BASE_CONF + f"[columns.b]\nbits = {value}\n")
        conf = _write(tmp / "c.toml", text)
        return ("quantize_features", _q(w["src"], conf),
                [str(conf), f"[{where if where == 'defaults' else 'columns.b'}] bits",
                 "must be one of 2, 4, 8, 16"])
    return case


def q_clip_out_of_range(tmp, w):
    conf = _write(tmp / "c.toml", BASE_CONF + '[columns.b]\nmethod = "percentile"\nclip = 0.7\n')
    return "quantize_features", _q(w["src"], conf), [str(conf), "[columns.b] clip"]


# ---------------------------------------------------------------------- dequantize_features


def _drop_checksums(directory: Path) -> None:
    """Remove Hadoop's ``.crc`` files, so Spark reads the edited bytes instead of stopping at a
    checksum mismatch."""
    for crc in directory.glob(".*.crc"):
        crc.unlink()


def d_codebook_truncated(tmp, w):
    q = _copy(w["q"], tmp / "q")
    book = q / "codebook.json"
    text = book.read_text()
    book.write_text(text[: len(text) // 2])
    return "dequantize_features", ["--input", q], [str(book), "corrupt or truncated"]


def d_codebook_binary(tmp, w):
    q = _copy(w["q"], tmp / "q")
    book = q / "codebook.json"
    book.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256)))
    return "dequantize_features", ["--input", q], [str(book)]


def d_codebook_missing(tmp, w):
    q = _copy(w["q"], tmp / "q")
    (q / "codebook.json").unlink()
    return "dequantize_features", ["--input", q], [str(q / "codebook.json")]


def d_codebook_not_an_object(tmp, w):
    q = _copy(w["q"], tmp / "q")
    _write(q / "codebook.json", "[1, 2, 3]\n")
    return "dequantize_features", ["--input", q], [str(q / "codebook.json")]


def d_data_part_corrupt(tmp, w):
    q = _copy(w["q"], tmp / "q")
    part = sorted((q / "data").glob("part-*.parquet"))[0]
    part.write_bytes(b"PAR1" + b"\x00" * 64)
    _drop_checksums(q / "data")
    return "dequantize_features", ["--input", q], ["cannot read the input", part.name]


def d_data_column_missing(tmp, w):
    """The codebook names column 'a'; the data lost it (rewritten without it)."""
    q = _copy(w["q"], tmp / "q")
    parts = sorted((q / "data").glob("part-*.parquet"))
    for part in parts:
        t = pq.read_table(part)
        # Without Spark's schema in the footer metadata, which still names 'a'.
        pq.write_table(t.drop_columns(["a"]).replace_schema_metadata(None), part)
    _drop_checksums(q / "data")
    return "dequantize_features", ["--input", q], ["'a'"]


def d_input_missing(tmp, w):
    missing = tmp / "nope"
    return "dequantize_features", ["--input", missing], [f"--input {missing}", "_SUCCESS"]


# --------------------------------------------------------------------------- compress_model


def _c(model, w, conf=None, data=None, *extra) -> list:
    return ["--model", model, "--config", conf or w["model_conf"], "--eval-data",
            data or w["eval"], *extra]


def c_model_missing(tmp, w):
    missing = tmp / "nope.skops"
    return "compress_model", _c(missing, w), [f"--model {missing}", "no such file"]


def c_skops_garbage(tmp, w):
    bad = tmp / "m.skops"
    bad.write_bytes(b"not a zip archive" * 20)
    return "compress_model", _c(bad, w), [str(bad), "not a readable skops file"]


def c_skops_truncated(tmp, w):
    bad = tmp / "m.skops"
    data = w["skops"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return "compress_model", _c(bad, w), [str(bad), "not a readable skops file"]


def c_skops_tampered_type(tmp, w):
    """schema.json edited to construct ``os.system``: refused before anything is built."""
    bad = tmp / "m.skops"
    with zipfile.ZipFile(w["skops"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "schema.json":
                schema = json.loads(data)
                schema["__module__"], schema["__class__"] = "os", "system"
                data = json.dumps(schema).encode()
            dst.writestr(item, data)
    return "compress_model", _c(bad, w), [str(bad), "not allowed", "os.system"]


def c_skops_unsupported_estimator(tmp, w):
    import skops.io
    from sklearn.tree import DecisionTreeClassifier

    bad = tmp / "tree.skops"
    x = np.random.default_rng(0).normal(size=(20, 4))
    skops.io.dump(DecisionTreeClassifier().fit(x, x[:, 0] > 0), bad)
    return "compress_model", _c(bad, w), [str(bad), "not allowed"]


def c_npz_truncated(tmp, w):
    bad = _copy(w["npz"], tmp / "lr.npz")
    _copy(w["npz"].with_suffix(".json"), tmp / "lr.json")
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return "compress_model", _c(bad, w), [str(bad)]


def c_npz_garbage(tmp, w):
    bad = tmp / "lr.npz"
    bad.write_bytes(b"\x00garbage" * 40)
    _copy(w["npz"].with_suffix(".json"), tmp / "lr.json")
    return "compress_model", _c(bad, w, None, None, "--model-type", "weights"), [str(bad)]


def c_npz_wrong_shape(tmp, w):
    """The bias tensor swapped for one of the wrong length: the layer does not fit."""
    bad = tmp / "lr.npz"
    with np.load(w["npz"]) as z:
        np.savez(bad, w=z["w"], b=np.zeros(3, np.float32))
    _copy(w["npz"].with_suffix(".json"), tmp / "lr.json")
    return "compress_model", _c(bad, w), ["b"]


def c_spec_missing_tensor(tmp, w):
    bad = _copy(w["npz"], tmp / "lr.npz")
    spec = json.loads(w["npz"].with_suffix(".json").read_text())
    spec["layers"][0]["weight"] = "fc1.weight"
    _write(tmp / "lr.json", json.dumps(spec))
    return "compress_model", _c(bad, w), ["'fc1.weight'", str(bad)]


def c_mllib_metadata_corrupt(tmp, w):
    bad = _copy(w["mllib"], tmp / "lr-mllib")
    meta = sorted((bad / "metadata").glob("part-*"))[0]
    meta.write_text("{truncated")
    return "compress_model", _c(bad, w), [str(meta), "not MLlib metadata"]


def c_mllib_data_truncated(tmp, w):
    bad = _copy(w["mllib"], tmp / "lr-mllib")
    part = sorted((bad / "data").glob("part-*.parquet"))[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    return "compress_model", _c(bad, w), [str(part), "not a readable Parquet file"]


def c_unknown_plan_key(tmp, w):
    conf = _write(tmp / "m.toml", MODEL_CONF.replace('quantize = "int8"',
                                                     'quantize = "int8"\nprunee = 0.5'))
    return "compress_model", _c(w["skops"], w, conf), [str(conf), "prunee"]


def c_quantize_bits_out_of_range(tmp, w):
    conf = _write(tmp / "m.toml", MODEL_CONF.replace('"int8"', '"int3"'))
    return "compress_model", _c(w["skops"], w, conf), [str(conf), "quantize", "'int3'"]


def c_kmeans_bits_out_of_range(tmp, w):
    conf = _write(tmp / "m.toml", MODEL_CONF.replace('quantize = "int8"',
                                                     'quantize = "kmeans"\nkmeans_bits = 12'))
    return "compress_model", _c(w["skops"], w, conf), [str(conf), "kmeans_bits"]


def c_eval_data_missing(tmp, w):
    missing = tmp / "nope.parquet"
    return "compress_model", _c(w["skops"], w, None, missing), [f"{missing}", "no such file"]


def c_eval_label_missing(tmp, w):
    data = _parquet(tmp, pq.read_table(w["eval"]).drop_columns(["label"]))
    return "compress_model", _c(w["skops"], w, None, data), ["'label'"]


def c_eval_feature_is_string(tmp, w):
    t = pq.read_table(w["eval"])
    t = t.set_column(1, "f1", pa.array([str(v) for v in t["f1"].to_pylist()]))
    data = _parquet(tmp, t)
    return "compress_model", _c(w["skops"], w, None, data), ["'f1'", "string"]


def c_eval_nulls_and_nan(tmp, w):
    t = pq.read_table(w["eval"])
    f1 = t["f1"].to_pylist()
    f1[0], f1[1], f1[2] = None, None, float("nan")
    label = t["label"].to_pylist()
    label[5] = None
    t = t.set_column(1, "f1", pa.array(f1, pa.float64()))
    t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(label, pa.float64()))
    data = _parquet(tmp, t)
    return "compress_model", _c(w["skops"], w, None, data), [
        f"--eval-data {data}", "'f1': 2 null, 1 nan; 'label': 1 null", "impute"]


def c_eval_empty(tmp, w):
    data = _parquet(tmp, pq.read_table(w["eval"]).slice(0, 0))
    return "compress_model", _c(w["skops"], w, None, data), [f"--eval-data {data}", "no rows"]


BAD = {
    "q-not-parquet": q_not_parquet,
    "q-truncated-parquet": q_truncated_parquet,
    "q-object-store-uri": q_object_store_uri,
    "q-empty-directory": q_empty_directory,
    "q-csv-header-only": q_csv_header_only,
    "q-numeric-method-on-string": q_numeric_method_on_string,
    "q-dictionary-on-double": q_dictionary_on_double,
    "q-timestamp-column": q_timestamp_column,
    "q-timestamp-nanos-column": q_timestamp_nanos_column,
    "q-boolean-column": q_boolean_column,
    "q-passthrough-column-missing": q_passthrough_column_missing,
    "q-unknown-section": q_unknown_section,
    "q-unknown-job-key": q_unknown_job_key,
    "q-unknown-column-key": q_unknown_column_key,
    "q-unknown-method": q_unknown_method,
    "q-toml-syntax": q_toml_syntax,
    "q-bits-32": _bits_case("32"),
    "q-bits-0": _bits_case("0"),
    "q-bits-negative": _bits_case("-8", "columns"),
    "q-bits-string": _bits_case('"8"'),
    "q-bits-float": _bits_case("8.0", "columns"),
    "q-clip-out-of-range": q_clip_out_of_range,
    "d-codebook-truncated": d_codebook_truncated,
    "d-codebook-binary": d_codebook_binary,
    "d-codebook-missing": d_codebook_missing,
    "d-codebook-not-an-object": d_codebook_not_an_object,
    "d-data-part-corrupt": d_data_part_corrupt,
    "d-data-column-missing": d_data_column_missing,
    "d-input-missing": d_input_missing,
    "c-model-missing": c_model_missing,
    "c-skops-garbage": c_skops_garbage,
    "c-skops-truncated": c_skops_truncated,
    "c-skops-tampered-type": c_skops_tampered_type,
    "c-skops-unsupported-estimator": c_skops_unsupported_estimator,
    "c-npz-truncated": c_npz_truncated,
    "c-npz-garbage": c_npz_garbage,
    "c-npz-wrong-shape": c_npz_wrong_shape,
    "c-spec-missing-tensor": c_spec_missing_tensor,
    "c-mllib-metadata-corrupt": c_mllib_metadata_corrupt,
    "c-mllib-data-truncated": c_mllib_data_truncated,
    "c-unknown-plan-key": c_unknown_plan_key,
    "c-quantize-bits-out-of-range": c_quantize_bits_out_of_range,
    "c-kmeans-bits-out-of-range": c_kmeans_bits_out_of_range,
    "c-eval-data-missing": c_eval_data_missing,
    "c-eval-label-missing": c_eval_label_missing,
    "c-eval-feature-is-string": c_eval_feature_is_string,
    "c-eval-nulls-and-nan": c_eval_nulls_and_nan,
    "c-eval-empty": c_eval_empty,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_names_the_culprit_and_writes_nothing(spark, capsys, tmp_path, world,
                                                               case):
    job, argv, expected = BAD[case](tmp_path, world)
    results = tmp_path / "results"
    results.mkdir()
    out = results / "out"
    run = _main(capsys, job, argv + ["--output", out])

    assert run.rc == 2, run.err[-3000:]
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err[-3000:]
    assert lines[0].startswith(f"{job}: error: "), lines[0]
    missing = [f for f in expected if f not in lines[0]]
    assert missing == [], lines[0]
    assert json.loads(run.out) == {"job": job, "status": "error", "exit_code": 2,
                                   "message": lines[0].split(": error: ", 1)[1]}
    assert not out.exists()
    assert sorted(p.name for p in results.iterdir()) == []


def test_hmac_key_set_but_empty_exits_2(spark, capsys, monkeypatch, tmp_path, world):
    monkeypatch.setenv("SPARK_COMPRESS_HMAC_KEY", "")
    out = tmp_path / "out"
    run = _main(capsys, "compress_model", _c(world["skops"], world) + ["--output", out])
    assert run.rc == 2
    assert run.err.strip().splitlines() == [
        "compress_model: error: environment variable SPARK_COMPRESS_HMAC_KEY is set but empty; "
        "unset it or set it to the HMAC key"]
    assert not out.exists()


# -------------------------------------------------------------------- score: the model file
# jobs/score.py's own tests cover a checksum-breaking edit, a missing feature column and an
# unknown [score] key; these add truncated and foreign files and the HMAC signature.
# A case returns (model file, key in SPARK_COMPRESS_HMAC_KEY or None, fragments).


def s_truncated(tmp, w):
    bad = tmp / "model.safetensors"
    data = w["compressed"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return bad, None, [str(bad)]


def s_not_a_model(tmp, w):
    return w["skops"], None, [str(w["skops"])]


def s_empty_file(tmp, w):
    bad = tmp / "model.safetensors"
    bad.write_bytes(b"")
    return bad, None, [str(bad)]


def s_signed_wrong_key(tmp, w):
    return w["signed"], "another-key", [str(w["signed"]), "hmac_key is wrong"]


def s_unsigned_but_key_set(tmp, w):
    return w["compressed"], SIGNING_KEY, [str(w["compressed"]), "signature"]


def s_signed_payload_tampered(tmp, w):
    bad = tmp / "model.safetensors"
    data = bytearray(w["signed"].read_bytes())
    data[-5] ^= 0x01
    bad.write_bytes(bytes(data))
    return bad, SIGNING_KEY, [str(bad), "payload checksum mismatch", "tampered"]


def s_signed_header_tampered(tmp, w):
    """The JSON header edited (one character of the plan) and the length kept: the signature
    no longer matches."""
    bad = tmp / "model.safetensors"
    data = w["signed"].read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n]
    assert b"int8" in header
    bad.write_bytes(data[:8] + header.replace(b"int8", b"int4", 1) + data[8 + n:])
    return bad, SIGNING_KEY, [str(bad), "signature mismatch"]


def s_missing(tmp, w):
    missing = tmp / "nope" / "model.safetensors"
    return missing, None, [str(missing)]


SCORE_BAD = {
    "truncated": s_truncated,
    "not-a-model-file": s_not_a_model,
    "empty-file": s_empty_file,
    "missing": s_missing,
    "hmac-wrong-key": s_signed_wrong_key,
    "hmac-unsigned-but-key-set": s_unsigned_but_key_set,
    "hmac-payload-tampered": s_signed_payload_tampered,
    "hmac-header-tampered": s_signed_header_tampered,
}


@pytest.mark.parametrize("case", list(SCORE_BAD))
def test_score_refuses_a_bad_model_file(spark, capsys, monkeypatch, tmp_path, world, case):
    model, key, expected = SCORE_BAD[case](tmp_path, world)
    if key is None:
        monkeypatch.delenv(HMAC_ENV, raising=False)
    else:
        monkeypatch.setenv(HMAC_ENV, key)
    results = tmp_path / "results"
    results.mkdir()
    out = results / "out"
    run = _main(capsys, "score", ["--model", model, "--input", world["eval"], "--output", out])

    assert run.rc == 2, run.err[-3000:]
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err[-3000:]
    assert lines[0].startswith("score: error: "), lines[0]
    missing = [f for f in expected if f not in lines[0]]
    assert missing == [], lines[0]
    assert json.loads(run.out) == {"job": "score", "status": "error", "exit_code": 2,
                                   "message": lines[0].split(": error: ", 1)[1]}
    assert sorted(p.name for p in results.iterdir()) == []


def test_score_accepts_the_signed_file_with_the_right_key(spark, capsys, monkeypatch, tmp_path,
                                                         world):
    monkeypatch.setenv(HMAC_ENV, SIGNING_KEY)
    out = tmp_path / "out"
    run = _main(capsys, "score", ["--model", world["signed"], "--input", world["eval"],
                                  "--output", out])
    assert run.rc == 0, run.err
    assert json.loads((out / "report.json").read_text())["rows_out"] == ROWS


# --------------------------------------------------------------- all-null data, quality


@pytest.mark.parametrize("arrow_type", [pa.float64(), pa.null()], ids=["double", "untyped"])
def test_all_null_column_warns_and_round_trips(spark, capsys, tmp_path, arrow_type):
    """A column with only nulls is a data-quality fact, not bad input: it is encoded with the
    documented ConstantColumnWarning, counted in the report, and decodes to nulls. Spark reads a
    Parquet column of type null as an integer column, so the untyped one takes the same path."""
    t = _table().append_column("empty", pa.nulls(ROWS, arrow_type))
    src = _parquet(tmp_path, t)
    conf = _write(tmp_path / "c.toml", BASE_CONF)
    q, r = tmp_path / "q", tmp_path / "r"
    with pytest.warns(Q.ConstantColumnWarning, match="no finite values"):
        run = _main(capsys, "quantize_features", ["--input", src, "--config", conf,
                                                  "--output", q])
    assert run.rc == 0, run.err
    col = json.loads((q / "report.json").read_text())["columns"]["empty"]
    assert (col["method"], col["null_count"], col["nan_count"]) == ("minmax", ROWS, 0)
    assert pq.read_table(q / "data").column("empty").null_count == ROWS

    run = _main(capsys, "dequantize_features", ["--input", q, "--output", r])
    assert run.rc == 0, run.err
    quality = json.loads((r / "report.json").read_text())["input_quality"]
    assert quality["empty"] == {"null_count": ROWS, "nan_count": 0, "posinf_count": 0,
                                "neginf_count": 0, "oov_count": 0}
    restored = pq.read_table(r / "data")
    assert restored.column("empty").null_count == ROWS
    assert restored.column("a").to_pylist() == pytest.approx(t.column("a").to_pylist(),
                                                             abs=(max(t["a"].to_pylist())
                                                                  - min(t["a"].to_pylist()))
                                                             / 255)


def test_special_values_are_counted_by_both_jobs(spark, capsys, tmp_path):
    """NaN, infinities, nulls and out-of-vocabulary categories: quantize_features counts them
    per column and dequantize_features' ``input_quality`` finds the same counts in the codes."""
    t = _table()
    a = t.column("a").to_numpy().copy()
    a[:3], a[3:5], a[5] = np.nan, np.inf, -np.inf
    mask = np.zeros(ROWS, bool)
    mask[10:14] = True
    t = t.set_column(1, "a", pa.array(a, mask=mask))
    city = t.column("city").to_pylist()
    rare = min(set(city), key=city.count)
    conf = _write(tmp_path / "c.toml", BASE_CONF + "[columns.city]\nmax_categories = 2\n")
    q, r = tmp_path / "q", tmp_path / "r"
    run = _main(capsys, "quantize_features", ["--input", _parquet(tmp_path, t), "--config", conf,
                                              "--output", q])
    assert run.rc == 0, run.err
    columns = json.loads((q / "report.json").read_text())["columns"]
    assert {k: columns["a"][k] for k in ("null_count", "nan_count", "posinf_count",
                                         "neginf_count")} == {
        "null_count": 4, "nan_count": 3, "posinf_count": 2, "neginf_count": 1}
    assert columns["city"]["oov_count"] == city.count(rare)

    run = _main(capsys, "dequantize_features", ["--input", q, "--output", r])
    assert run.rc == 0, run.err
    quality = json.loads((r / "report.json").read_text())["input_quality"]
    zero = {"null_count": 0, "nan_count": 0, "posinf_count": 0, "neginf_count": 0,
            "oov_count": 0}
    assert quality == {
        "a": zero | {"null_count": 4, "nan_count": 3, "posinf_count": 2, "neginf_count": 1},
        "b": zero,
        "city": zero | {"oov_count": city.count(rare)}}
    restored = pq.read_table(r / "data")
    assert restored.column("city").null_count == city.count(rare)
