"""Data errors found inside Spark tasks (``spark_compress.errors.TaskDataError``): each kind of
task (SQL ``raise_error``, ``mapInArrow``, the Arrow UDF) gives the driver an exception from
which the one-line message is recovered, and a job ends with exit 2 and that message, not
exit 1 ("retry may help").

The bad rows are codes a codebook does not allow and arrays of the wrong length: nothing on the
driver can see them before the tasks read the rows. Bigint values beyond 2**53, which used to
fail the encode inside a task (exit 1), now encode.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_compress.errors import (DataError, TaskDataError, marked,
                                   task_data_error_message)

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
ROWS = 60
AFFINE_MESSAGE = ("column 'a': code 300 is not valid (0..255 or -1/-2/-3); the data does not "
                  "match its codebook")
QUANTILE_MESSAGE = ("column 'q': code 16 is not valid for this quantile column (valid: 0..15 "
                    "and [-3, -2, -1]); the data does not match its codebook")
DICTIONARY_MESSAGE = ("column 'd': code 9 is not valid for this dictionary column (valid: 0..2 "
                      "and [-4]); the data does not match its codebook")


def test_the_message_is_found_in_the_texts_spark_gives():
    """The texts as Spark 4.3 delivers them (copied from real failures): a Python worker's
    traceback, a raise_error, and one nested in a stage-failure message."""
    e = TaskDataError("column 'x':\n code 3")
    assert isinstance(e, DataError) and e.message == "column 'x': code 3"
    assert str(e) == "[SPARK_COMPRESS_DATA_ERROR] column 'x': code 3"
    python = ("An exception was thrown from the Python worker:\nTraceback (most recent call "
              "last):\n  File \"f.py\", line 13, in run\n    raise TaskDataError(msg)\n"
              "spark_compress.errors.TaskDataError: [SPARK_COMPRESS_DATA_ERROR] column 'x': "
              "code 300 is not valid\n SQLSTATE: 38000")
    assert task_data_error_message(python) == "column 'x': code 300 is not valid"
    sql = f"[USER_RAISED_EXCEPTION] {marked('column ' + repr('z') + ': code 7')} SQLSTATE: P0001"
    assert task_data_error_message(sql) == "column 'z': code 7"
    nested = ("Job aborted due to stage failure: Task 0 in stage 4.0 failed 1 times, most "
              "recent failure: Lost task 0.0: org.apache.spark.SparkRuntimeException: " + sql +
              "\n\tat org.apache.spark.sql.errors.QueryExecutionErrors$.raiseError(...)")
    assert task_data_error_message(nested) == "column 'z': code 7"
    assert task_data_error_message("ArrowInvalid: Integer value 9 not in range") is None
    chained = RuntimeError("write failed")
    chained.__cause__ = RuntimeError(python)
    assert task_data_error_message(chained) == "column 'x': code 300 is not valid"


@pytest.fixture(scope="module")
def quantized(spark):
    """A table of three encoded columns (minmax 8 bits, quantile 4 bits, a dictionary of three
    categories), its codebook and its codes."""
    from spark_compress.spark.ml import FeatureQuantizer

    rng = np.random.default_rng(3)
    pdf = pd.DataFrame({"id": np.arange(ROWS, dtype=np.int64),
                        "a": rng.normal(size=ROWS), "q": rng.normal(size=ROWS),
                        "d": rng.choice(["x", "y", "z"], size=ROWS)})
    df = spark.createDataFrame(pdf).repartition(3)
    settings = {"a": {"method": "minmax", "bits": 8}, "q": {"method": "quantile", "bits": 4},
                "d": {"method": "dictionary"}}
    qm = FeatureQuantizer(passthroughCols=["id"], columnSettings=json.dumps(settings)).fit(df)
    return qm.codebook, qm.transform(df).cache()


def _corrupt(codes, column: str, value: int, row: int = 17):
    from pyspark.sql import functions as F

    dtype = dict(codes.dtypes)[column]
    return codes.withColumn(column, F.when(F.col("id") == row, F.lit(value).cast(dtype))
                            .otherwise(F.col(column)))


@pytest.mark.parametrize("column,value,message", [
    ("a", 300, AFFINE_MESSAGE),          # native expression: SQL raise_error
    ("q", 16, QUANTILE_MESSAGE),         # mapInArrow with the numpy core
    ("d", 9, DICTIONARY_MESSAGE),        # mapInArrow, dictionary
])
def test_a_bad_code_found_by_a_task_gives_its_message(spark, quantized, column, value, message):
    from spark_compress.spark.features import decode_features

    codebook, codes = quantized
    with pytest.raises(Exception) as info:
        decode_features(_corrupt(codes, column, value), codebook).collect()
    assert not isinstance(info.value, DataError)  # it arrives as Spark's exception
    assert task_data_error_message(info.value) == message


def test_an_array_of_the_wrong_length_found_by_the_arrow_udf(spark, data_model):
    from pyspark.sql import functions as F

    from spark_compress.spark.score import score_dataframe

    mf, x = data_model
    rows = spark.createDataFrame([(int(i), [float(v) for v in x[i]]) for i in range(len(x))],
                                 "id long, v array<double>").repartition(2)
    rows = rows.withColumn("v", F.when(F.col("id") == 5, F.slice("v", 1, 3))
                           .otherwise(F.col("v")))
    with pytest.raises(Exception) as info:
        score_dataframe(rows, mf, features="v", method="arrow").collect()
    assert task_data_error_message(info.value) == (
        "feature column 'v' holds an array of length 3; the model takes 4 features (fix or "
        "filter those rows)")


@pytest.fixture(scope="module")
def data_model():
    """A 4-input MLP (two layers: the Arrow path) and 30 rows for it."""
    from spark_compress.core import compress as C
    from spark_compress.core.model import Dense, Model
    from spark_compress.io.model_file import model_to_bytes
    from spark_compress.spark.score import model_file_from_bytes

    rng = np.random.default_rng(0)
    layers = (Dense(rng.normal(size=(4, 3)).astype(np.float32), np.zeros(3, np.float32),
                    "relu"),
              Dense(rng.normal(size=(3, 1)).astype(np.float32), np.zeros(1, np.float32),
                    "sigmoid"))
    model = Model("binary", layers, 4)
    return (model_file_from_bytes(model_to_bytes(C.compress(model, C.Plan()))),
            rng.normal(size=(30, 4)).astype(np.float32))


def _main(capsys, job: str, argv: list) -> tuple[int, str, str]:
    spec = importlib.util.spec_from_file_location(f"task_errors_{job}",
                                                  REPO / "jobs" / f"{job}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _write_output(codebook, codes, path: Path) -> Path:
    """``codes`` and ``codebook`` laid out as a finished quantize_features output."""
    from spark_compress.io.codebook import write_codebook

    codes.write.parquet(str(path / "data"))
    write_codebook(codebook, path / "codebook.json")
    (path / "_SUCCESS").write_text("")
    return path


def test_dequantize_exits_2_with_the_message_of_a_bad_code(spark, quantized, capsys, tmp_path):
    codebook, codes = quantized
    src = _write_output(codebook, _corrupt(codes, "q", 16), tmp_path / "quantized")
    rc, out, err = _main(capsys, "dequantize_features",
                         ["--input", src, "--output", tmp_path / "restored"])
    assert rc == 2, err
    assert f"dequantize_features: error: {QUANTILE_MESSAGE}" in err.splitlines()
    assert not (tmp_path / "restored").exists()


def test_score_exits_2_when_a_passthrough_column_holds_a_bad_code(spark, quantized, capsys,
                                                                  tmp_path):
    """The model reads ``q`` only; ``a`` is decoded for the output, and its bad code is found
    by the decode's raise_error inside the write."""
    from spark_compress.core import compress as C
    from spark_compress.core.model import linear
    from spark_compress.io.model_file import model_to_bytes

    codebook, codes = quantized
    m = linear(np.array([0.5]), 0.1, "binary", input_names=("q",))
    (tmp_path / "m.safetensors").write_bytes(model_to_bytes(C.compress(m, C.Plan())))
    src = _write_output(codebook, _corrupt(codes, "a", 300), tmp_path / "quantized")
    rc, out, err = _main(capsys, "score", ["--model", tmp_path / "m.safetensors", "--input", src,
                                           "--output", tmp_path / "scores"])
    assert rc == 2, err
    assert f"score: error: {AFFINE_MESSAGE}" in err.splitlines()
    assert not (tmp_path / "scores").exists()


def test_spark_submit_prints_one_line_and_no_java_stack(spark, quantized, tmp_path):
    """What a user sees: ``spark-submit`` in ``local[2]`` with the project's log config (conf/
    as ``SPARK_CONF_DIR``, as ``make demo`` runs it). The bad code is found inside a task; the
    output (stdout and stderr: spark-submit merges the driver's stderr into its stdout) holds
    the one-line message and no Java stack or Python traceback."""
    codebook, codes = quantized
    src = _write_output(codebook, _corrupt(codes, "a", 300), tmp_path / "quantized")
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
           str(REPO / "jobs" / "dequantize_features.py"), "--input", str(src),
           "--output", str(tmp_path / "restored"), "--log-level", "WARNING"]
    bin_dir = str(Path(sys.executable).parent)  # the launcher runs python3 from PATH
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
           "SPARK_CONF_DIR": str(REPO / "conf")}
    env.pop("PYSPARK_DRIVER_PYTHON", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    assert f"dequantize_features: error: {AFFINE_MESSAGE}" in text.splitlines()
    assert not re.search(r"^\s+at [\w.$]+\(", text, re.M), text[-3000:]
    assert "Traceback" not in text and "Exception" not in text, text[-3000:]
    assert not (tmp_path / "restored").exists()


# ------------------------------------------------------------------------- bigint columns

BIG = [2**53 + 1, 2**53 + 3, 2**62 + 1, 2**62 + 12_345, -2**63, 2**63 - 1, 0, 7]


def test_bigint_columns_of_any_magnitude_encode(spark, capsys, tmp_path):
    """Defect: a bigint column with values above 2**53 passed the fit, then the encode's Arrow
    cast to float64 refused them in a task (exit 1). Now: dictionary codes restore every value
    exactly; affine and quantile codes are those of the value rounded to the nearest float64
    (as Spark's cast rounds it), on the native path and the Arrow path alike, and the report's
    errors are measured against the exact integers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spark_compress.core import quantize as Q
    from spark_compress.io.codebook import read_codebook
    from spark_compress.spark.features import encode_features

    values = BIG * 5
    pq.write_table(pa.table({"id": pa.array(range(len(values)), pa.int64()),
                             "a": pa.array(values, pa.int64()),
                             "q": pa.array(values, pa.int64()),
                             "d": pa.array(values, pa.int64())}), tmp_path / "in.parquet")
    (tmp_path / "c.toml").write_text('[job]\npassthrough = ["id"]\n[defaults]\n'
                                     'method = "minmax"\nbits = 8\n[columns.q]\n'
                                     'method = "quantile"\nbits = 4\n[columns.d]\n'
                                     'method = "dictionary"\n')
    rc, _, err = _main(capsys, "quantize_features",
                       ["--input", tmp_path / "in.parquet", "--config", tmp_path / "c.toml",
                        "--output", tmp_path / "q"])
    assert rc == 0, err
    cb = read_codebook(tmp_path / "q" / "codebook.json")
    codes = pq.read_table(tmp_path / "q" / "data").to_pandas().sort_values("id")
    rounded = np.array(values, dtype=np.int64).astype(np.float64)  # round to nearest
    for c in ("a", "q"):
        assert codes[c].tolist() == Q.encode(cb.column(c).encoder, rounded).tolist(), c
    arrow = encode_features(spark.read.parquet(str(tmp_path / "in.parquet")), cb,
                            engine="arrow").toPandas().sort_values("id")
    assert arrow["a"].tolist() == codes["a"].tolist()
    rc, _, err = _main(capsys, "dequantize_features",
                       ["--input", tmp_path / "q", "--output", tmp_path / "r"])
    assert rc == 0, err
    restored = pq.read_table(tmp_path / "r" / "data")
    assert restored.schema.field("d").type == pa.int64()
    assert restored.to_pandas().sort_values("id")["d"].tolist() == values
    report = json.loads((tmp_path / "q" / "report.json").read_text())
    # Each distinct value has its own quantile bin, so the error is the float64 rounding of the
    # integers: |2**62 + 12,345 - (2**62 + 12,288)| = 57 is the largest (the others are 0 or 1).
    assert report["columns"]["q"]["max_abs_error"] == 57.0
    errors = np.array([1, 1, 1, 57, 0, 1, 0, 0] * 5, dtype=np.float64)
    assert report["columns"]["q"]["rmse"] == pytest.approx(np.sqrt(np.mean(errors ** 2)),
                                                           rel=1e-12)
