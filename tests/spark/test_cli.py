"""The ``spark-compress`` command as a user gets it: the wheel's contents, and the command run
from a ``pip install --no-deps --target`` copy of it, from a folder outside the checkout
(``installed_package`` in tests/conftest.py), in local mode through the installed pyspark's
``spark-submit``.

The stream contract checked here: stdout is exactly one JSON line (the job's summary, also on
failure), Spark's INFO logging is off by default (the packaged log4j2.properties), the exit code
is the job's.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import spark_compress
from spark_compress.jobs import JOBS

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
ROWS = 1000
CONFIG = """\
[job]
passthrough = ["id"]

[defaults]
method = "minmax"
bits = 8
"""
# A log4j line at INFO from the JVM, in Spark's default layout or ours ("yy/MM/dd HH:mm:ss").
JVM_INFO = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ")


def _wheel_names(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_wheel_holds_the_command_license_defaults_examples_and_jobs(installed_package):
    files = _wheel_names(installed_package.wheel)
    version = spark_compress.__version__
    info = f"spark_compress-{version}.dist-info"
    assert b"spark-compress = spark_compress.cli:main" in files[f"{info}/entry_points.txt"]
    assert files[f"{info}/licenses/LICENSE"] == (REPO / "LICENSE").read_bytes()
    metadata = files[f"{info}/METADATA"].decode()
    assert f"\nVersion: {version}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert re.search(r"^Requires-Dist: pyspark<5,>=4\.0$", metadata, flags=re.M), metadata[:2000]
    for name in ("spark-defaults.conf", "log4j2.properties"):
        assert files[f"spark_compress/defaults/{name}"] == (REPO / "conf" / name).read_bytes()
    tomls = sorted(p.name for p in (REPO / "conf").glob("*.toml"))
    assert tomls and all(files[f"spark_compress/examples/{t}"] == (REPO / "conf" / t).read_bytes()
                         for t in tomls)
    for job in JOBS:
        assert files[f"spark_compress/jobs/{job}.py"] == (
            REPO / "spark_compress" / "jobs" / f"{job}.py").read_bytes()
    for module in ("cli.py", "__main__.py", "demo.py", "datasets.py"):
        assert f"spark_compress/{module}" in files, module
    assert not [n for n in files if "__pycache__" in n or n.startswith(("tests/", "jobs/"))]


def test_license_is_the_full_apache_2_text():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, "
                                    "January 2004")
    sections = re.findall(r"^   (\d)\. (\w[\w ]+)\.", text, flags=re.M)
    assert [int(n) for n, _ in sections] == list(range(1, 10)), sections
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX" in text


def test_version_from_the_install_outside_the_checkout(installed_package, tmp_path):
    r = installed_package.run("--version", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f"spark-compress {spark_compress.__version__}\n", "")


def test_job_path_names_the_installed_modules(installed_package, tmp_path):
    site = installed_package.target
    for command, module in [("quantize", "quantize_features"), ("dequantize",
                            "dequantize_features"), ("compress", "compress_model"),
                            ("score", "score"), ("quantize_features", "quantize_features")]:
        r = installed_package.run("job-path", command, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        path = Path(r.stdout.strip())
        assert path == site / "spark_compress" / "jobs" / f"{module}.py"
        assert path.read_bytes() == (REPO / "spark_compress" / "jobs" / f"{module}.py"
                                     ).read_bytes()
    r = installed_package.run("job-path", "quantise", cwd=tmp_path)
    assert r.returncode == 2 and "unknown job 'quantise'" in r.stderr and r.stdout == ""


def test_python_m_runs_the_same_command(installed_package, tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "spark_compress", "--version"], cwd=tmp_path,
                       env=installed_package.env(), capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (0, f"spark-compress {spark_compress.__version__}\n")


def test_examples_writes_the_configs_and_refuses_to_clobber(installed_package, tmp_path):
    r = installed_package.run("examples", "conf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    expected = sorted(p.name for p in (REPO / "conf").iterdir())
    assert sorted(p.name for p in (tmp_path / "conf").iterdir()) == expected
    for name in expected:
        assert (tmp_path / "conf" / name).read_bytes() == (REPO / "conf" / name).read_bytes()
    # Again: the same bytes are there, nothing to do.
    assert installed_package.run("examples", "conf", cwd=tmp_path).returncode == 0
    (tmp_path / "conf" / "score.toml").write_text("# mine\n")
    r = installed_package.run("examples", "conf", cwd=tmp_path)
    assert r.returncode == 2
    assert "conf/score.toml exists with other contents; pass --overwrite" in r.stderr
    assert (tmp_path / "conf" / "score.toml").read_text() == "# mine\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A 1,000-row Parquet table (id, x normal, y uniform) and a minmax 8-bit config."""
    root = tmp_path_factory.mktemp("cli-input")
    rng = np.random.default_rng(10)
    columns = {"id": np.arange(ROWS, dtype=np.int64), "x": rng.normal(size=ROWS),
               "y": rng.uniform(-5, 5, size=ROWS)}
    pq.write_table(pa.table(columns), root / "tiny.parquet")
    (root / "tiny.toml").write_text(CONFIG)
    return root / "tiny.parquet", root / "tiny.toml", columns


def _only_json_line(stdout: str) -> dict:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout[-3000:]
    return json.loads(lines[0])


def test_quantize_end_to_end_from_the_install(installed_package, tiny, tmp_path):
    src, conf, columns = tiny
    r = installed_package.run("quantize", "--input", src, "--config", conf,
                              "--conf", "spark.sql.shuffle.partitions=4",
                              "--output", "out/q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-5000:]
    summary = _only_json_line(r.stdout)
    assert summary["job"] == "quantize_features" and summary["status"] == "ok"
    assert (summary["rows_in"], summary["rows_out"], summary["output"]) == (ROWS, ROWS, "out/q")

    # The job ran from the install, with the packaged defaults and without Spark's INFO lines.
    assert f"{installed_package.target}/spark_compress/jobs/quantize_features.py" in r.stderr
    assert [ln for ln in r.stderr.splitlines() if JVM_INFO.match(ln)] == []
    assert "INFO SparkContext" not in r.stderr
    assert "INFO spark_compress: encode+write: done" in r.stderr  # the job's own progress
    out = tmp_path / "out" / "q"
    assert (out / "_SUCCESS").is_file()
    data = pq.read_table(out / "data").sort_by("id")
    parts = sorted((out / "data").glob("*.parquet"))
    assert parts and all(pq.ParquetFile(p).metadata.row_group(0).column(0).compression == "ZSTD"
                         for p in parts)

    # Codes equal the minmax formula, computed here with numpy from the input.
    assert data.column("id").to_pylist() == list(range(ROWS))
    for name in ("x", "y"):
        x = columns[name]
        lo, hi = x.min(), x.max()
        scale = (hi - lo) / 255
        expected = np.rint(x / scale - lo / scale)
        assert np.array_equal(data.column(name).to_numpy(), expected), name


def test_bad_config_gives_the_error_summary_and_exit_2(installed_package, tiny, tmp_path):
    src, _, _ = tiny
    conf = tmp_path / "bad.toml"
    conf.write_text(CONFIG.replace("bits = 8", "bits = 3"))
    r = installed_package.run("quantize", "--input", src, "--config", conf, "--output", "o",
                              cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-5000:]
    summary = _only_json_line(r.stdout)
    assert set(summary) == {"job", "status", "exit_code", "message"}
    assert (summary["job"], summary["status"], summary["exit_code"]) == (
        "quantize_features", "error", 2)
    assert "bits" in summary["message"] and "3" in summary["message"]
    assert f"quantize_features: error: {summary['message']}" in r.stderr.splitlines()
    assert not (tmp_path / "o").exists()


def test_argument_errors_and_help_are_answered_before_spark_starts(installed_package, tmp_path):
    r = installed_package.run("quantize", "--output", "o", cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    summary = _only_json_line(r.stdout)
    assert summary == {"job": "quantize_features", "status": "error", "exit_code": 2,
                       "message": "the following arguments are required: --input, --config"}
    assert "spark-submit" not in r.stderr  # no JVM was started
    assert r.stderr.startswith("usage: spark-compress quantize ")

    r = installed_package.run("score", "--help", "--master", "local[1]", cwd=tmp_path,
                              timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: spark-compress score "), r.stderr
    assert "--model" in r.stdout

    r = installed_package.run("quantize", "--output", "o", "--conf", cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert _only_json_line(r.stdout)["message"] == "spark-submit option --conf needs a value"


def test_a_failed_spark_submit_still_gives_one_error_line(installed_package, tiny, tmp_path):
    """spark-submit refusing its own arguments: the job never starts, so the command writes
    the error summary itself, with spark-submit's exit code."""
    src, conf, _ = tiny
    r = installed_package.run("quantize", "--input", src, "--config", conf, "--output", "o",
                              "--deploy-mode", "nonsense", cwd=tmp_path)
    assert r.returncode != 0
    summary = _only_json_line(r.stdout)
    assert (summary["status"], summary["exit_code"]) == ("error", r.returncode)
    assert "before the job wrote its summary" in summary["message"]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------- jobkit's one summary per outcome


def _toy_parser():
    import argparse

    p = argparse.ArgumentParser(prog="toy")
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--log-level", default="INFO")
    return p


@pytest.mark.parametrize("body,rc,expected", [
    (lambda a, s, r, c: {"output": a.output, "rows": 3}, 0,
     {"job": "toy", "status": "ok", "output": "o", "rows": 3}),
    (lambda a, s, r, c: {"status": "gate_failed", "exit_code": 3, "output": a.output}, 3,
     {"job": "toy", "status": "gate_failed", "exit_code": 3, "output": "o"}),
    (lambda a, s, r, c: 1 / 0, 1,
     {"job": "toy", "status": "error", "exit_code": 1,
      "message": "ZeroDivisionError: division by zero"}),
], ids=["ok", "gate", "failure"])
def test_run_job_emits_one_summary_on_stdout_or_in_the_summary_file(
        spark, capsys, monkeypatch, tmp_path, body, rc, expected):
    from spark_compress.spark import jobkit

    monkeypatch.delenv(jobkit.SUMMARY_FILE_ENV, raising=False)
    assert jobkit.run_job("toy", _toy_parser(), body, ["--output", "o"]) == rc
    out = capsys.readouterr().out
    assert json.loads(out) == expected and out.count("\n") == 1
    # Through the command the line goes to the file only (the command prints it), so a
    # terminal showing both streams does not get it twice.
    summary_file = tmp_path / "summary.json"
    monkeypatch.setenv(jobkit.SUMMARY_FILE_ENV, str(summary_file))
    assert jobkit.run_job("toy", _toy_parser(), body, ["--output", "o"]) == rc
    assert capsys.readouterr().out == ""
    assert summary_file.read_text() == out
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_run_job_argument_error_emits_the_error_summary(capsys, monkeypatch, tmp_path):
    from spark_compress.spark import jobkit

    monkeypatch.delenv(jobkit.SUMMARY_FILE_ENV, raising=False)
    assert jobkit.run_job("toy", _toy_parser(), lambda *a: {}, ["--outptu", "o"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "job": "toy", "status": "error", "exit_code": 2,
        "message": "the following arguments are required: --output"}
    assert captured.err.splitlines() == [
        "usage: toy [-h] --output OUTPUT [--overwrite] [--log-level LOG_LEVEL]",
        "toy: error: the following arguments are required: --output"]
