"""The ``spark-compress`` command's pure parts, without Spark: how a command line is split
between spark-submit and the job, the spark-submit command and environment built from it, the
``--py-files`` zip, and the packaged copies of conf/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spark_compress import cli
from spark_compress.jobs import JOBS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ argument splitting


def test_split_sends_spark_submit_options_anywhere_to_spark_submit():
    split = cli.split_args([
        "--master", "spark://h:7077", "--input", "in.parquet", "--conf", "a.b=1",
        "--config", "c.toml", "--conf=spark.x=y=z", "-c", "k=v", "--executor-memory=2g",
        "--output", "out", "--verbose", "--overwrite", "--properties-file", "p.conf",
        "--no-py-files", "--driver-java-options", "-Dx=1 -Dy=2"])
    assert split.submit == (
        "--master", "spark://h:7077", "--conf", "a.b=1", "--conf=spark.x=y=z", "-c", "k=v",
        "--executor-memory=2g", "--verbose", "--properties-file", "p.conf",
        "--driver-java-options", "-Dx=1 -Dy=2")
    assert split.job == ("--input", "in.parquet", "--config", "c.toml", "--output", "out",
                         "--overwrite")
    assert split.no_py_files is True
    assert split.values("--master") == ["spark://h:7077"]
    assert split.values("--executor-memory") == ["2g"]
    assert split.values("--py-files") == []
    assert split.conf() == {"a.b": "1", "spark.x": "y=z", "k": "v"}


def test_split_matches_exact_names_only():
    # --config is the job's (argparse would also take --conf for it; the split never does),
    # --master-url is no spark-submit option, a job value after a job option stays the job's.
    split = cli.split_args(["--config", "--confx", "--master-url", "u", "--name", "n",
                            "--input-option", "sep=;"])
    assert split.submit == ("--name", "n")
    assert split.job == ("--config", "--confx", "--master-url", "u", "--input-option", "sep=;")
    assert split.no_py_files is False


def test_split_refuses_a_spark_submit_option_without_its_value():
    with pytest.raises(cli.UsageError, match="spark-submit option --master needs a value"):
        cli.split_args(["--input", "x", "--master"])


def test_last_conf_of_a_key_wins():
    assert cli.split_args(["--conf", "k=1", "-c", "k=2"]).conf() == {"k": "2"}


# ------------------------------------------------------------------ the spark-submit command


def _submission(tmp_path, argv, env=None):
    split = cli.split_args(argv)
    return cli.submission("quantize_features", split, {"PATH": "/usr/bin"} if env is None
                          else env, summary_file=tmp_path / "s.json", workdir=tmp_path)


def test_local_default_master_packaged_defaults_and_environment(tmp_path):
    sub = _submission(tmp_path, ["--input", "i", "--conf", "k=v", "--output", "o"])
    home = cli.spark_home()
    assert sub.command == (str(home / "bin" / "spark-submit"), "--master", "local[*]",
                           "--conf", "k=v", str(cli.job_path("quantize")), "--input", "i",
                           "--output", "o")
    assert (home / "bin" / "spark-class").is_file()
    assert sub.env["SPARK_HOME"] == str(home)
    assert sub.env["PATH"].split(os.pathsep) == [str(home / "bin"),
                                                 str(Path(sys.executable).parent), "/usr/bin"]
    assert sub.env["PYSPARK_PYTHON"] == sys.executable
    assert sub.env["SPARK_CONF_DIR"] == str(cli.defaults_dir())
    assert sub.env[cli.SUMMARY_FILE_ENV] == str(tmp_path / "s.json")
    assert (sub.master, sub.py_files_zip) == ("local[*]", None)
    assert sorted(p.name for p in cli.defaults_dir().iterdir()) == [
        "log4j2.properties", "spark-defaults.conf"]


def test_the_users_settings_win(tmp_path):
    env = {"PATH": "/bin", "PYSPARK_PYTHON": "/opt/py/bin/python", "SPARK_CONF_DIR": "/etc/sc"}
    sub = _submission(tmp_path, ["--properties-file", "mine.conf", "--master", "local[2]",
                                 "--output", "o"], env)
    assert sub.env["PYSPARK_PYTHON"] == "/opt/py/bin/python"
    assert sub.env["SPARK_CONF_DIR"] == "/etc/sc"
    assert sub.command[1:5] == ("--properties-file", "mine.conf", "--master", "local[2]")
    assert "local[*]" not in sub.command and sub.py_files_zip is None


def test_a_cluster_master_gets_the_package_zip_unless_told_otherwise(tmp_path):
    sub = _submission(tmp_path, ["--master", "spark://h:7077", "--output", "o"])
    zip_path = tmp_path / f"spark_compress-{cli.__version__}.zip"
    assert sub.py_files_zip == zip_path and zip_path.is_file()
    assert sub.command[1:5] == ("--py-files", str(zip_path), "--master", "spark://h:7077")

    mine = _submission(tmp_path / "a", ["--master", "yarn", "--py-files", "deps.zip"])
    assert mine.py_files_zip is None and mine.command.count("--py-files") == 1
    assert mine.command[mine.command.index("--py-files") + 1] == "deps.zip"

    none = _submission(tmp_path / "b", ["--master", "yarn", "--no-py-files"])
    assert none.py_files_zip is None and "--py-files" not in none.command
    assert "--no-py-files" not in none.command


def test_job_names_and_paths():
    assert [cli.job_module(c) for c in ("quantize", "dequantize", "compress", "score")] == list(
        JOBS)
    for job in JOBS:
        assert cli.job_module(job) == job
        path = cli.job_path(job)
        assert path == REPO / "spark_compress" / "jobs" / f"{job}.py" and path.is_file()
        # spark-submit runs the module file as a script.
        assert 'if __name__ == "__main__":\n    sys.exit(main())' in path.read_text()
    with pytest.raises(cli.UsageError, match="unknown job 'fit'; the jobs are quantize "
                                             r"\(quantize_features\), dequantize"):
        cli.job_module("fit")


# ------------------------------------------------------------------------- the py-files zip


def test_py_files_zip_is_the_whole_package_and_reproducible(tmp_path):
    a = cli.build_py_files(tmp_path / "a" / "p.zip")
    b = cli.build_py_files(tmp_path / "b" / "p.zip")
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as z:
        names = set(z.namelist())
    package = REPO / "spark_compress"
    expected = {str(Path("spark_compress") / p.relative_to(package))
                for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and p.suffix != ".pyc"}
    assert names == expected
    assert {f"spark_compress/jobs/{j}.py" for j in JOBS} <= names
    assert "spark_compress/defaults/log4j2.properties" in names


def test_py_files_zip_imports_without_the_installed_package(tmp_path):
    zip_path = cli.build_py_files(tmp_path / "p.zip")
    # -S: no site-packages, so the venv's (editable) install cannot be found.
    r = subprocess.run([sys.executable, "-S", "-c",
                        "import spark_compress, spark_compress.jobs as j; "
                        "print(spark_compress.__file__); print(','.join(j.JOBS))"],
                       env={"PYTHONPATH": str(zip_path), "PATH": os.defpath},
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(zip_path / "spark_compress" / "__init__.py"),
                                     ",".join(JOBS)]


# ------------------------------------------------------------- conf/ and its packaged copies


def test_conf_and_the_packaged_copies_are_identical():
    """conf/ (read by path from a checkout: spark-submit lines, docker-compose's bind mount,
    the Airflow DAG) and spark_compress/defaults + examples (in the wheel) hold the same files
    byte for byte: edit both, or copy one over the other."""
    packaged = cli.example_files()
    in_conf = {p.name: p for p in (REPO / "conf").iterdir() if p.is_file()}
    assert sorted(packaged) == sorted(in_conf)
    differ = [n for n in in_conf if in_conf[n].read_bytes() != packaged[n].read_bytes()]
    assert differ == [], f"conf/ and the packaged copies differ: {differ}"


def test_examples_write_overwrite_and_refuse(tmp_path):
    written = cli.write_examples(tmp_path / "c")
    assert sorted(p.name for p in written) == sorted(cli.example_files())
    assert cli.write_examples(tmp_path / "c") == []
    (tmp_path / "c" / "adult.toml").write_text("x = 1\n")
    with pytest.raises(cli.UsageError, match=r"c/adult.toml exists with other contents; pass "
                                             r"--overwrite"):
        cli.write_examples(tmp_path / "c")
    assert (tmp_path / "c" / "adult.toml").read_text() == "x = 1\n"
    assert cli.write_examples(tmp_path / "c", overwrite=True) == [tmp_path / "c" / "adult.toml"]
    assert (tmp_path / "c" / "adult.toml").read_bytes() == (REPO / "conf" / "adult.toml"
                                                            ).read_bytes()


def test_main_version_usage_and_unknown_command(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"spark-compress {cli.__version__}\n"
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spark-compress") and all(c in out for c in cli.JOB_COMMANDS)
    assert cli.main([]) == 2
    assert capsys.readouterr().err.startswith("usage: spark-compress")
    assert cli.main(["fit"]) == 2
    assert capsys.readouterr().err == ("spark-compress: error: unknown command 'fit'; "
                                       "`spark-compress --help` lists them\n")
