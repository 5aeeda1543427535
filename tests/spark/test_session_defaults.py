"""Jobs that do not depend on a remembered properties file (issue #10, items 6 and 11).

The decision table (:func:`jobkit.decide_settings`) is tested as a pure function; two
``spark-submit`` runs of ``jobs/quantize_features.py`` with no properties file and no log config
check what reaches the files (the codec in the Parquet footers), the report's
``spark_settings``, that the user's ``--conf`` wins and that Spark's INFO lines are off; an
in-process run on the test session checks that a reused session gets its settings back. The
code identity in the input fingerprint is tested on copies of the package's source tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_compress.spark import jobkit

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "spark_compress"
ROWS = 500
CODEC = "spark.sql.parquet.compression.codec"
SPLIT = "spark.sql.codegen.methodSplitThreshold"
HUGE = "spark.sql.codegen.hugeMethodLimit"
LOG = "spark.log.level"
FLAG = "-XX:-DontCompileHugeMethods"


def _decide(configured=None, env=None, log_level="INFO", interactive=False,
            job="quantize_features"):
    return jobkit.decide_settings(job, configured or {}, env=env or {}, log_level=log_level,
                                  interactive=interactive)


# ------------------------------------------------------------------ the decision table, pure


def test_without_user_settings_the_job_sets_its_table_and_quiets_spark():
    d = _decide()
    assert {k: (v.value, v.source) for k, v in d.items()} == {
        CODEC: ("zstd", "job"),
        "spark.sql.session.timeZone": ("UTC", "job"),
        "spark.sql.execution.arrow.maxRecordsPerBatch": ("100000", "job"),
        SPLIT: ("256", "job"),
        HUGE: ("8000", "job"),
        "spark.ui.showConsoleProgress": ("false", "job"),
        LOG: ("WARN", "job"),
    }
    assert _decide(interactive=True)["spark.ui.showConsoleProgress"].value == "true"


def test_a_key_the_user_configured_keeps_the_users_value():
    d = _decide({CODEC: "snappy", SPLIT: "1024", LOG: "INFO",
                 "spark.ui.showConsoleProgress": "true"})
    assert (d[CODEC].value, d[CODEC].source) == ("snappy", "user")
    assert (d[SPLIT].value, d[SPLIT].source) == ("1024", "user")
    assert (d[LOG].value, d[LOG].source) == ("INFO", "user")
    assert (d["spark.ui.showConsoleProgress"].value,
            d["spark.ui.showConsoleProgress"].source) == ("true", "user")
    assert d["spark.sql.session.timeZone"].source == "job"      # the others still the job's
    # The user's value wins even where it equals the job's.
    assert _decide({CODEC: "zstd"})[CODEC].source == "user"


def test_huge_method_limit_only_where_the_jit_flag_does_not_reach_the_tasks():
    local = {"spark.master": "local[2]"}
    assert _decide(local)[HUGE].value == "8000"
    for configured, env in (
            (local | {"spark.driver.extraJavaOptions": f"-Xss4m {FLAG}"}, {}),
            (local, {"JAVA_TOOL_OPTIONS": FLAG}),
            ({"spark.master": "spark://h:7077", "spark.executor.extraJavaOptions": FLAG}, {})):
        d = _decide(configured, env)
        assert (d[HUGE].value, d[HUGE].source) == (None, "spark"), configured
        assert FLAG in d[HUGE].why
    # On a cluster the driver's flag does not help the executors, where the code runs.
    cluster = {"spark.master": "yarn", "spark.driver.extraJavaOptions": FLAG}
    assert _decide(cluster)[HUGE].value == "8000"
    # The opposite flag is not the flag.
    assert _decide(local | {"spark.driver.extraJavaOptions": "-XX:+DontCompileHugeMethods"}
                   )[HUGE].value == "8000"
    assert _decide({HUGE: "65535"})[HUGE].source == "user"


def test_spark_logs_are_left_alone_with_a_user_log_config_or_debug(tmp_path):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    assert _decide(env={"SPARK_CONF_DIR": str(conf_dir)})[LOG].value == "WARN"  # no file in it
    (conf_dir / "log4j2.properties").write_text("rootLogger.level = info\n")
    for env, configured in (({"SPARK_CONF_DIR": str(conf_dir)}, {}),
                            ({"SPARK_HOME": str(tmp_path)}, {}),
                            ({}, {"spark.driver.extraJavaOptions":
                                  "-Dlog4j.configurationFile=/etc/l.properties"}),
                            ({"SPARK_SUBMIT_OPTS": "-Dlog4j2.configurationFile=x.xml"}, {})):
        d = _decide(configured, env)
        assert (d[LOG].value, d[LOG].source) == (None, "spark"), (env, configured)
    assert _decide(log_level="DEBUG")[LOG].source == "spark"
    assert _decide(log_level="WARNING")[LOG].value == "WARN"


def test_every_job_has_a_table_with_the_codec_and_the_feature_jobs_the_codegen_settings():
    for job in ("quantize_features", "dequantize_features", "score", "compress_model"):
        assert jobkit.JOB_SPARK_DEFAULTS[job][CODEC].value == "zstd"
    for job in ("quantize_features", "dequantize_features", "score"):
        assert {SPLIT, HUGE} <= set(jobkit.JOB_SPARK_DEFAULTS[job])


# ------------------------------------------------------------------ under spark-submit


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, Path]:
    """A 500-row Parquet file (an id and two float columns) and an 8-bit minmax config."""
    d = tmp_path_factory.mktemp("session")
    rng = np.random.default_rng(11)
    src = d / "in.parquet"
    pq.write_table(pa.table({"id": np.arange(ROWS, dtype=np.int64),
                             "a": rng.normal(size=ROWS), "b": rng.uniform(0, 50, size=ROWS)}),
                   src, compression="zstd")
    conf = d / "mm8.toml"
    conf.write_text('[job]\npassthrough = ["id"]\n[defaults]\nmethod = "minmax"\nbits = 8\n')
    return src, conf


def _submit(tmp_path: Path, table, *spark_args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """``spark-submit [spark_args] jobs/quantize_features.py`` as a scheduler's operator runs
    it: no properties file, no SPARK_CONF_DIR, no log config, from outside the checkout."""
    src, conf = table
    out = tmp_path / "out"
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_CONF_DIR", "SPARK_HOME", "PYSPARK_DRIVER_PYTHON",
                        "SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")}
    env |= {"PATH": os.pathsep.join([str(venv_bin), env.get("PATH", "")]),
            "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    r = subprocess.run([str(venv_bin / "spark-submit"), "--master", "local[2]",
                        "--conf", "spark.ui.enabled=false", *spark_args,
                        str(REPO / "jobs" / "quantize_features.py"), "--input", str(src),
                        "--config", str(conf), "--output", str(out)],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, out


def _codecs(data: Path) -> set[str]:
    files = sorted(data.glob("*.parquet"))
    assert files
    return {pq.ParquetFile(f).metadata.row_group(0).column(i).compression
            for f in files for i in range(pq.ParquetFile(f).metadata.num_columns)}


def test_spark_submit_without_properties_writes_zstd_with_the_jobs_settings(tmp_path, table):
    r, out = _submit(tmp_path, table)
    assert _codecs(out / "data") == {"ZSTD"}
    settings = json.loads((out / "report.json").read_text())["spark_settings"]
    assert settings[CODEC] == {"value": "zstd", "source": "job"}
    assert settings[SPLIT] == {"value": "256", "source": "job"}
    assert settings[HUGE] == {"value": "8000", "source": "job"}
    assert settings["spark.sql.session.timeZone"] == {"value": "UTC", "source": "job"}
    assert settings[LOG] == {"value": "WARN", "source": "job"}
    # Spark's own INFO lines stop where the job's level takes effect (the few before it come
    # from the JVM's start); the job's own progress lines stay.
    lines = (r.stdout + r.stderr).splitlines()
    start = next(i for i, ln in enumerate(lines) if 'Setting Spark log level to "WARN"' in ln)
    spark_info = [ln for ln in lines[start:] if re.search(r" INFO (?!spark_compress)", ln)]
    assert spark_info == []
    assert any("INFO spark_compress: encode+write: done" in ln for ln in lines)


def test_spark_submit_users_conf_wins(tmp_path, table):
    r, out = _submit(tmp_path, table, "--conf", f"{CODEC}=snappy",
                     "--conf", f"spark.driver.extraJavaOptions={FLAG}",
                     "--conf", f"{LOG}=INFO")
    assert _codecs(out / "data") == {"SNAPPY"}
    settings = json.loads((out / "report.json").read_text())["spark_settings"]
    assert settings[CODEC] == {"value": "snappy", "source": "user"}
    assert settings[LOG] == {"value": "INFO", "source": "user"}
    # The JIT flag reached the driver JVM (local mode: the tasks' JVM too), so whole-stage
    # codegen keeps Spark's own limit.
    assert settings[HUGE] == {"value": "65535", "source": "spark"}
    assert settings[SPLIT] == {"value": "256", "source": "job"}
    assert re.search(r" INFO (?!spark_compress)\S+: ", r.stdout + r.stderr)


# ------------------------------------------------------------------ a reused session


def test_a_reused_session_gets_the_jobs_settings_for_the_run_only(spark, tmp_path, table,
                                                                  capsys):
    from spark_compress.jobs import quantize_features

    src, conf = table
    out = tmp_path / "q"
    before = spark.conf.get(CODEC)
    assert before == "snappy" and CODEC not in spark.conf.getAll   # Spark's default, unset
    rc = quantize_features.main(["--input", str(src), "--config", str(conf),
                                 "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert _codecs(out / "data") == {"ZSTD"}
    settings = json.loads((out / "report.json").read_text())["spark_settings"]
    assert settings[CODEC] == {"value": "zstd", "source": "job"}
    assert settings[SPLIT] == {"value": "256", "source": "user"}   # the test session's
    assert settings["spark.sql.execution.arrow.maxRecordsPerBatch"] == {"value": "7",
                                                                        "source": "user"}
    assert settings[LOG]["source"] == "spark"   # only at startup: the session's is kept
    # Taken back after the run.
    assert spark.conf.get(CODEC) == before and CODEC not in spark.conf.getAll
    assert jobkit.JOB_SETTINGS_KEY not in spark.conf.getAll
    assert spark.conf.get(SPLIT) == "256"


# ------------------------------------------------------------------ code identity


def _copy_package(dst: Path) -> Path:
    return Path(shutil.copytree(PACKAGE, dst / "spark_compress",
                                ignore=shutil.ignore_patterns("__pycache__")))


def test_code_identity_changes_with_any_source_change(tmp_path):
    a = _copy_package(tmp_path / "a")
    base = jobkit.code_identity(a)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert jobkit.code_identity(_copy_package(tmp_path / "b")) == base   # same tree, same hash
    assert base == jobkit.code_identity(PACKAGE) == jobkit.code_identity()

    module = a / "core" / "quantize.py"
    text = module.read_bytes()
    module.write_bytes(text + b"\n")
    assert jobkit.code_identity(a) != base                          # one byte more
    module.write_bytes(text)
    assert jobkit.code_identity(a) == base
    module.rename(a / "core" / "quantize2.py")
    assert jobkit.code_identity(a) != base                          # a renamed module
    (a / "core" / "quantize2.py").rename(module)
    (a / "extra.py").write_text("")
    assert jobkit.code_identity(a) != base                          # an added module
    (a / "extra.py").unlink()
    (a / "notes.txt").write_text("not code")
    (a / "__pycache__").mkdir()
    (a / "__pycache__" / "x.py").write_text("cached")
    assert jobkit.code_identity(a) == base                          # only *.py source counts


def test_the_fingerprint_follows_the_code(tmp_path, monkeypatch):
    spec = jobkit.Fingerprint()
    args = argparse.Namespace(output=str(tmp_path / "o"), overwrite=False, log_level="INFO",
                              input_fingerprint=None)
    doc = spec.document("job", args)
    assert doc["code"] == jobkit.code_identity()
    before = spec.compute("job", args)
    monkeypatch.setattr(jobkit, "_installed_code_identity", lambda: "0" * 64)
    assert spec.compute("job", args) != before


def test_a_run_started_inside_another_takes_back_only_its_own_settings(spark):
    """Found when a safe-outputs test started one job inside another in the shared session: the
    inner run took the outer run's settings for the user's and its release dropped the outer
    run's record, so the outer run's codec stayed set for the rest of the session."""
    before = spark.conf.get(CODEC)
    assert CODEC not in spark.conf.getAll
    jobkit.build_session("quantize_features", "outer")
    outer_record = spark.conf.get(jobkit.JOB_SETTINGS_KEY)
    assert spark.conf.get(CODEC) == "zstd"
    jobkit.build_session("score", "inner")
    assert CODEC in json.loads(spark.conf.get(jobkit.JOB_SETTINGS_KEY))  # the job's, not a user's
    jobkit.release_session(spark)
    assert spark.conf.get(CODEC) == "zstd"                    # the outer run still has it
    assert spark.conf.get(jobkit.JOB_SETTINGS_KEY) == outer_record
    jobkit.release_session(spark)
    assert spark.conf.get(CODEC) == before and CODEC not in spark.conf.getAll
    assert jobkit.JOB_SETTINGS_KEY not in spark.conf.getAll
