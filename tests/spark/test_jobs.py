"""The feature jobs end to end, in process: ``main(argv)`` on real data, exit codes, atomic output.

The jobs reuse the session of the ``spark`` fixture (``run_job`` leaves an active session
running), so every test that calls ``main`` requests ``spark`` first.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_compress.core import quantize as Q
from spark_compress.datasets import ensure
from spark_compress.io.codebook import read_codebook
from spark_compress.spark import features as FT

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
ADULT_CONF = REPO / "conf" / "adult.toml"
MOVIELENS_CONF = REPO / "conf" / "movielens.toml"
ADULT_ROWS = 5000
ADULT_STRINGS = ["workclass", "education", "marital-status", "occupation", "relationship",
                 "race", "gender", "native-country"]
ADULT_METHODS = {"age": "quantile", "fnlwgt": "percentile", "educational-num": "minmax",
                 "capital-gain": "quantile", "capital-loss": "quantile",
                 "hours-per-week": "minmax"} | {s: "dictionary" for s in ADULT_STRINGS}
ADULT_BITS = {"age": 4, "fnlwgt": 8, "educational-num": 8, "capital-gain": 8,
              "capital-loss": 8, "hours-per-week": 8}
REPORT_COLUMN_KEYS = {"method", "bits", "null_count", "nan_count", "clipped_count", "rmse",
                      "max_abs_error", "scale"}


@functools.cache
def _job(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Run(NamedTuple):
    rc: int
    out: str
    err: str


def _main(capsys, job: str, argv: list) -> Run:
    """``jobs/<job>.py``'s ``main(argv)`` with what it printed."""
    rc = _job(job).main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(rc, captured.out, captured.err)


def _hidden(parent: Path) -> list[str]:
    """Staging (``.X.staging-*``) and replaced (``.X.old-*``) directories left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _data_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*")
               if p.is_file() and not p.name.startswith((".", "_")))


def _read(directory: Path):
    """A Spark-written Parquet directory as pandas, read with pyarrow (markers skipped)."""
    return pq.read_table(directory).to_pandas()


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def arrow_batches(spark):
    """Arrow batches of 1,000 rows while the jobs run: still several batches per partition, but
    the session's 7-row batches (meant for the small equivalence tests) make the 100k-row
    MovieLens run spend minutes in per-batch overhead."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key)
    spark.conf.set(key, "1000")
    yield
    spark.conf.set(key, previous)


@pytest.fixture(scope="module")
def adult_table() -> pa.Table:
    """The first 5,000 rows of the real adult census file."""
    return pq.read_table(ensure("adult")).slice(0, ADULT_ROWS)


def _spark_readable(table: pa.Table, path: Path) -> Path:
    """Write ``table`` as zstd Parquet. The shipped files' pages are Brotli-compressed, which
    Spark's Parquet reader cannot decode (see test_brotli_input_is_a_clear_input_error)."""
    pq.write_table(table, path, compression="zstd")
    return path


@pytest.fixture(scope="module")
def adult_input(tmp_path_factory, adult_table) -> Path:
    return _spark_readable(adult_table, tmp_path_factory.mktemp("adult_in") / "adult5k.parquet")


@pytest.fixture(scope="module")
def adult_run(spark, tmp_path_factory, adult_input) -> tuple[int, Path]:
    """One quantize_features run on the adult subset with conf/adult.toml. Its stdout is not
    inspected here (capsys is per test; the test that runs it again reads it)."""
    out = tmp_path_factory.mktemp("adult_out") / "q"
    rc = _job("quantize_features").main(["--input", str(adult_input), "--output", str(out),
                                         "--config", str(ADULT_CONF)])
    return rc, out


@pytest.fixture(scope="module")
def adult_out(adult_run) -> Path:
    rc, out = adult_run
    assert rc == 0
    return out


# ------------------------------------------------------------------------------ happy path


def test_quantize_adult_writes_output_and_report(adult_run, adult_input, adult_table):
    rc, out = adult_run
    x = adult_table.to_pandas()
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS",
                                                     "codebook.json", "data", "report.json"]
    assert _hidden(out.parent) == []

    report = json.loads((out / "report.json").read_text())
    bytes_in, bytes_out = adult_input.stat().st_size, _data_bytes(out / "data")
    assert (report["rows_in"], report["rows_out"]) == (ADULT_ROWS, ADULT_ROWS)
    assert (report["bytes_in"], report["bytes_out"]) == (bytes_in, bytes_out)
    assert report["compression_ratio"] == round(bytes_in / bytes_out, 4)
    assert report["passthrough"] == ["income"]
    assert report["dropped"] == []
    assert set(report["columns"]) == set(ADULT_METHODS)

    codebook = read_codebook(out / "codebook.json")
    for name, method in ADULT_METHODS.items():
        c = report["columns"][name]
        assert REPORT_COLUMN_KEYS <= set(c), name
        assert c["method"] == method, name
        assert (c["null_count"], c["nan_count"]) == (0, 0), name
        if method == "dictionary":
            n = x[name].nunique()
            assert c["bits"] == max(1, n.bit_length()), name
            assert (c["vocabulary_size"], c["oov_count"], c["clipped_count"]) == (n, 0, 0), name
            assert (c["rmse"], c["max_abs_error"], c["scale"]) == (None, None, None), name
            continue
        assert c["bits"] == ADULT_BITS[name], name
        assert (c["min"], c["max"]) == (x[name].min(), x[name].max()), name
        assert 0.0 <= c["rmse"] <= c["max_abs_error"], name
        enc = codebook.column(name).encoder
        if method == "minmax":
            assert c["scale"] == pytest.approx((x[name].max() - x[name].min()) / 255, rel=1e-12)
            assert c["clipped_count"] == 0, name
            assert c["max_abs_error"] <= c["scale"] / 2 * (1 + 1e-9), name
        elif method == "percentile":
            lo, hi = enc.lo, enc.hi
            assert x[name].min() < lo < hi < x[name].max()
            assert c["scale"] == pytest.approx((hi - lo) / 255, rel=1e-12)
            assert c["clipped_count"] == int(((x[name] < lo) | (x[name] > hi)).sum())
            assert 0 < c["clipped_count"] <= 0.01 * ADULT_ROWS
        else:
            assert c["scale"] is None and c["clipped_count"] == 0, name

    # capital-gain is 92% zeros: the point mass must own an exact code.
    assert (x["capital-gain"] == 0).mean() > 0.9
    for name in ("capital-gain", "capital-loss"):
        enc = codebook.column(name).encoder
        assert Q.decode(enc, Q.encode(enc, np.zeros(1))).tolist() == [0.0]


def test_dequantize_adult_restores_types_and_values(spark, capsys, tmp_path, adult_out,
                                                    adult_table):
    restored = tmp_path / "restored"
    run = _main(capsys, "dequantize_features", ["--input", adult_out, "--output", restored])
    assert run.rc == 0, run.err
    assert _summary(run.out) == {"job": "dequantize_features", "status": "ok",
                                 "output": str(restored), "rows_in": ADULT_ROWS,
                                 "rows_out": ADULT_ROWS}
    assert sorted(p.name for p in restored.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS", "data",
                                                          "report.json"]
    assert _hidden(tmp_path) == []
    report = json.loads((restored / "report.json").read_text())
    assert (report["rows_in"], report["rows_out"]) == (ADULT_ROWS, ADULT_ROWS)

    decoded_schema = {f.name: f.dataType.simpleString()
                      for f in spark.read.parquet((restored / "data").as_uri()).schema.fields}
    assert decoded_schema == {n: "double" for n in ADULT_BITS} | {
        n: "string" for n in ADULT_STRINGS + ["income"]}

    x, y = adult_table.to_pandas(), _read(restored / "data")
    assert len(y) == ADULT_ROWS
    quant = json.loads((adult_out / "report.json").read_text())["columns"]
    codebook = read_codebook(adult_out / "codebook.json")
    for name in ADULT_STRINGS + ["income"]:
        assert y[name].value_counts().to_dict() == x[name].value_counts().to_dict(), name
    for name in ADULT_BITS:
        enc, fit = codebook.column(name).encoder, codebook.column(name).fit
        lo = enc.lo if isinstance(enc, Q.AffineQuantizer) else fit["min"]
        hi = enc.hi if isinstance(enc, Q.AffineQuantizer) else fit["max"]
        tol = 1e-9 * max(abs(lo), abs(hi))
        assert lo - tol <= y[name].min() and y[name].max() <= hi + tol, name
        # Every method is monotone, so sorting pairs each value with its own decoding: the
        # Spark decode must reproduce the error the numpy evaluation reported.
        err = np.abs(np.sort(x[name].to_numpy(np.float64)) - np.sort(y[name].to_numpy()))
        assert err.max() == pytest.approx(quant[name]["max_abs_error"], rel=1e-9, abs=1e-12)
        assert np.sqrt(np.mean(err**2)) == pytest.approx(quant[name]["rmse"], rel=1e-9,
                                                         abs=1e-12)
    for name in ("capital-gain", "capital-loss"):
        assert (y[name] == 0.0).sum() == (x[name] == 0).sum(), name


def test_quantize_again_is_deterministic_and_prints_summary(spark, capsys, tmp_path,
                                                            adult_input, adult_out):
    again = tmp_path / "again"
    run = _main(capsys, "quantize_features",
                ["--input", adult_input, "--output", again, "--config", ADULT_CONF])
    assert run.rc == 0, run.err
    assert (again / "codebook.json").read_bytes() == (adult_out / "codebook.json").read_bytes()

    report = json.loads((again / "report.json").read_text())
    assert _summary(run.out) == {
        "job": "quantize_features", "status": "ok", "output": str(again),
        "rows_in": ADULT_ROWS, "rows_out": ADULT_ROWS, "bytes_in": adult_input.stat().st_size,
        "bytes_out": _data_bytes(again / "data"),
        "compression_ratio": report["compression_ratio"]}


def test_existing_output_needs_overwrite(spark, capsys, tmp_path, adult_input, adult_out):
    out = tmp_path / "out"
    shutil.copytree(adult_out, out)
    before = _snapshot(out)
    argv = ["--input", adult_input, "--output", out, "--config", ADULT_CONF]

    run = _main(capsys, "quantize_features", argv)
    assert run.rc == 2
    message = (f"output {out} already exists (a finished output); pass --overwrite to replace "
               f"it or choose another --output")
    assert run.err.strip() == f"quantize_features: error: {message}"
    assert json.loads(run.out) == {"job": "quantize_features", "status": "error",
                                   "exit_code": 2, "message": message}
    assert _snapshot(out) == before
    assert _hidden(tmp_path) == []

    run = _main(capsys, "quantize_features", argv + ["--overwrite"])
    assert run.rc == 0, run.err
    assert sorted(p.name for p in out.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS",
                                                     "codebook.json", "data", "report.json"]
    assert _hidden(tmp_path) == []
    old_id = json.loads(before["report.json"][1])["run_id"]
    assert json.loads((out / "report.json").read_text())["run_id"] != old_id
    assert (out / "codebook.json").read_bytes() == before["codebook.json"][1]


# ----------------------------------------------------------------------------- bad input: 2


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _case_unknown_key(tmp, src, q):
    conf = _write(tmp / "c.toml", '[defaults]\nmethod = "minmax"\nbitz = 8\n')
    return ("quantize_features", ["--input", src, "--config", conf],
            [str(conf), "unknown key 'bitz' in [defaults]"])


def _case_bits_3(tmp, src, q):
    conf = _write(tmp / "c.toml", '[defaults]\nstrings = "dictionary"\n'
                                  '[columns.age]\nmethod = "quantile"\nbits = 3\n')
    return ("quantize_features", ["--input", src, "--config", conf],
            [str(conf), "[columns.age] bits", "must be one of 2, 4, 8, 16. Got 3."])


def _case_column_missing(tmp, src, q):
    conf = _write(tmp / "c.toml", '[defaults]\nstrings = "dictionary"\n'
                                  '[columns.Age]\nbits = 4\n')
    return ("quantize_features", ["--input", src, "--config", conf],
            [str(conf), "'Age'", "not found in the input", "did you mean 'age'"])


def _case_string_not_configured(tmp, src, q):
    conf = _write(tmp / "c.toml", '[job]\npassthrough = ["income"]\n')
    return ("quantize_features", ["--input", src, "--config", conf],
            [str(conf), "string column 'workclass' is not configured"])


def _case_input_missing(tmp, src, q):
    missing = tmp / "nope.parquet"
    return ("quantize_features", ["--input", missing, "--config", ADULT_CONF],
            [f"--input {missing}: no such file or directory"])


def _case_empty_dataset(tmp, src, q):
    empty = tmp / "empty.parquet"
    pq.write_table(pq.read_table(src).slice(0, 0), empty)
    return ("quantize_features", ["--input", empty, "--config", ADULT_CONF],
            [str(empty), "no rows"])


def _case_nested_column(tmp, src, q):
    nested = tmp / "nested.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "tags": [["a"], [], ["b", "c"]]}), nested)
    conf = _write(tmp / "c.toml", '[columns.x]\nmethod = "minmax"\n')
    return ("quantize_features", ["--input", nested, "--config", conf],
            [str(conf), "'tags'", "array<string>", "passthrough or drop"])


def _case_config_missing(tmp, src, q):
    conf = tmp / "missing.toml"
    return ("quantize_features", ["--input", src, "--config", conf],
            [f"cannot read config file {conf}"])


def _case_input_option_without_equals(tmp, src, q):
    return ("quantize_features", ["--input", src, "--config", ADULT_CONF,
                                  "--input-option", "mergeSchema"],
            ["--input-option 'mergeSchema' must look like KEY=VALUE"])


def _case_dequantize_unfinished(tmp, src, q):
    unfinished = tmp / "unfinished"
    shutil.copytree(q, unfinished)
    (unfinished / "_SUCCESS").unlink()
    return ("dequantize_features", ["--input", unfinished],
            [f"--input {unfinished}", "no _SUCCESS"])


def _case_dequantize_corrupt_codebook(tmp, src, q):
    corrupt = tmp / "corrupt"
    shutil.copytree(q, corrupt)
    book = corrupt / "codebook.json"
    text = book.read_text()
    edited = text.replace(f'"count": {ADULT_ROWS}', f'"count": {ADULT_ROWS + 1}', 1)
    assert edited != text
    book.write_text(edited)
    return ("dequantize_features", ["--input", corrupt],
            [str(book), "checksum mismatch"])


BAD_INPUT = {
    "unknown-config-key": _case_unknown_key,
    "bits-3": _case_bits_3,
    "config-column-missing": _case_column_missing,
    "string-not-configured": _case_string_not_configured,
    "input-missing": _case_input_missing,
    "empty-dataset": _case_empty_dataset,
    "nested-column": _case_nested_column,
    "config-missing": _case_config_missing,
    "input-option-without-equals": _case_input_option_without_equals,
    "dequantize-unfinished": _case_dequantize_unfinished,
    "dequantize-corrupt-codebook": _case_dequantize_corrupt_codebook,
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_and_writes_nothing(spark, capsys, tmp_path, adult_input, adult_out,
                                             case):
    job, argv, expected = BAD_INPUT[case](tmp_path, adult_input, adult_out)
    results = tmp_path / "results"
    results.mkdir()
    out = results / "out"
    run = _main(capsys, job, argv + ["--output", out])

    assert run.rc == 2
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith(f"{job}: error: ")
    for fragment in expected:
        assert fragment in lines[0]
    assert json.loads(run.out) == {"job": job, "status": "error", "exit_code": 2,
                                   "message": lines[0].split(": error: ", 1)[1]}
    assert not out.exists()
    assert _hidden(results) == []


# ------------------------------------------------------------------------------- failure: 1


def test_failure_midway_exits_1_and_leaves_nothing(spark, capsys, caplog, tmp_path,
                                                  adult_input, monkeypatch):
    def evaluate_fails(df, codebook):
        raise RuntimeError("evaluation blew up")

    monkeypatch.setattr(FT, "evaluate_features", evaluate_fails)
    out = tmp_path / "out"
    run = _main(capsys, "quantize_features",
                ["--input", adult_input, "--output", out, "--config", ADULT_CONF])
    assert run.rc == 1
    assert json.loads(run.out) == {"job": "quantize_features", "status": "error",
                                   "exit_code": 1, "message": "RuntimeError: evaluation blew up"}
    assert not out.exists()
    assert _hidden(tmp_path) == []
    failed = [r for r in caplog.records if r.exc_info]
    assert [(r.getMessage(), r.exc_info[0]) for r in failed] == [
        ("quantize_features failed", RuntimeError)]


# --------------------------------------------------------------------------- other formats


def test_quantize_csv_input(spark, capsys, tmp_path, adult_table):
    rows = 40
    x = adult_table.slice(0, rows).to_pandas()
    csv = tmp_path / "adult.csv"
    x.to_csv(csv, index=False)
    out = tmp_path / "out"
    assert (x["capital-loss"] == 0).all()  # a constant column here: it warns, it does not fail
    with pytest.warns(Q.ConstantColumnWarning, match=r"constant \(0\.0\)"):
        run = _main(capsys, "quantize_features",
                    ["--input", csv, "--input-format", "csv", "--input-option", "header=true",
                     "--output", out, "--config", ADULT_CONF])
    assert run.rc == 0, run.err
    report = json.loads((out / "report.json").read_text())
    assert (report["rows_in"], report["rows_out"]) == (rows, rows)
    assert report["input_format"] == "csv"
    assert report["bytes_in"] == csv.stat().st_size
    columns = report["columns"]
    assert {n: c["method"] for n, c in columns.items()} == ADULT_METHODS
    assert {n: c["source_type"] for n, c in columns.items()} == {
        n: "int" for n in ADULT_BITS} | {n: "string" for n in ADULT_STRINGS}
    for name in ADULT_STRINGS:
        assert columns[name]["vocabulary_size"] == x[name].nunique(), name
        assert "bytes_in" not in columns[name], name  # only Parquet footers give column sizes
    codes = _read(out / "data")
    assert list(codes.columns) == list(x.columns)
    assert len(codes) == rows
    assert codes["income"].value_counts().to_dict() == x["income"].value_counts().to_dict()


# ------------------------------------------------------------------------------- movielens


def test_movielens_ids_round_trip_exactly(spark, capsys, tmp_path):
    src = _spark_readable(pq.read_table(ensure("movielens")), tmp_path / "ratings.parquet")
    out, restored = tmp_path / "q", tmp_path / "restored"
    run = _main(capsys, "quantize_features",
                ["--input", src, "--output", out, "--config", MOVIELENS_CONF])
    assert run.rc == 0, run.err
    report = json.loads((out / "report.json").read_text())
    assert (report["rows_in"], report["rows_out"]) == (100_000, 100_000)
    columns = report["columns"]
    assert {n: (c["method"], c["bits"]) for n, c in columns.items()} == {
        "user_id": ("dictionary", 10), "movie_id": ("dictionary", 11),
        "rating": ("dictionary", 3), "timestamp": ("minmax", 16)}
    assert {n: (columns[n]["vocabulary_size"], columns[n]["oov_count"])
            for n in ("user_id", "movie_id", "rating")} == {
        "user_id": (943, 0), "movie_id": (1682, 0), "rating": (5, 0)}
    ts = columns["timestamp"]
    assert ts["scale"] == pytest.approx((893286638 - 874724710) / 65535, rel=1e-12)
    assert ts["max_abs_error"] <= ts["scale"] / 2 * (1 + 1e-9)

    run = _main(capsys, "dequantize_features", ["--input", out, "--output", restored])
    assert run.rc == 0, run.err
    x, y = pq.read_table(src).to_pandas(), _read(restored / "data")
    assert len(y) == 100_000
    for name in ("user_id", "movie_id", "rating"):
        assert y[name].dtype == np.int64, name
        assert y[name].value_counts().to_dict() == x[name].value_counts().to_dict(), name
    err = np.abs(np.sort(x["timestamp"].to_numpy(np.float64)) - np.sort(y["timestamp"]))
    assert err.max() == pytest.approx(ts["max_abs_error"], rel=1e-9)


def test_brotli_input_is_a_clear_input_error(spark, capsys, tmp_path):
    """The data sets ship as Brotli Parquet, which Spark cannot decode: that is the caller's
    input to fix (re-write it with zstd or snappy), so exit 2 with a message saying so, not a
    JVM stack trace and exit 1."""
    src = ensure("movielens")
    out = tmp_path / "out"
    run = _main(capsys, "quantize_features",
                ["--input", src, "--output", out, "--config", MOVIELENS_CONF])
    assert run.rc == 2
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quantize_features: error: ")
    assert str(src) in lines[0] and "brotli" in lines[0].lower()
    assert not out.exists()
    assert _hidden(tmp_path) == []
