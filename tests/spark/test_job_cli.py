"""The jobs as a scheduler sees them: ``--help``, argument errors, and idempotent reruns driven by
the input fingerprint recorded in ``report.json`` (``spark_compress.spark.jobkit.Fingerprint``).

``--help`` and argument errors run every ``jobs/*.py`` (a glob: new jobs are covered without
editing this file) as a subprocess, like ``spark-submit`` would; the rerun tests call ``main(argv)``
in process with the session of the ``spark`` fixture.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_compress.io import output as O
from spark_compress.spark import jobkit

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
JOB_FILES = sorted((REPO / "jobs").glob("*.py"))
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
ROWS = 300


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(capsys, name: str, argv: list) -> tuple[int, str, str]:
    rc = _job(name).main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _documented_flags(job_file: Path) -> list[str]:
    """The options the job module's docstring (its spark-submit usage) names; ``jobs/X.py`` is
    a shim over ``spark_compress/jobs/X.py``, which documents them."""
    module = REPO / "spark_compress" / "jobs" / job_file.name
    doc = ast.get_docstring(ast.parse(module.read_text(encoding="utf-8")))
    return sorted(set(FLAG.findall(doc)))


# ------------------------------------------------------------------------- --help, argv errors


def test_console_progress_is_on_for_terminals_unless_configured():
    from spark_compress.spark.jobkit import console_progress

    assert console_progress(None, interactive=True) == "true"
    assert console_progress(None, interactive=False) == "false"
    assert console_progress("true", interactive=False) == "true"
    assert console_progress("false", interactive=True) == "false"


def test_interactive_asks_the_launcher_jvm_for_a_terminal(monkeypatch):
    """Under spark-submit the driver's stderr is a pipe to the JVM: the JVM's console decides
    (checked by hand with `script`: a bar under a terminal, none in a pipe, --conf wins)."""
    import io
    from types import SimpleNamespace

    from spark_compress.spark import jobkit

    def jvm(console):
        return SimpleNamespace(java=SimpleNamespace(lang=SimpleNamespace(
            System=SimpleNamespace(console=lambda: console))))

    class Java17Console:  # no isTerminal()
        pass

    monkeypatch.setattr(jobkit.sys, "stderr", io.StringIO())
    assert jobkit._interactive(jvm(None)) is False
    assert jobkit._interactive(jvm(Java17Console())) is True
    assert jobkit._interactive(jvm(SimpleNamespace(isTerminal=lambda: False))) is False
    assert jobkit._interactive(jvm(SimpleNamespace(isTerminal=lambda: True))) is True
    assert jobkit._interactive(object()) is False  # no answer from the JVM


def test_every_job_is_collected():
    assert {"quantize_features.py", "dequantize_features.py", "compress_model.py"} <= {
        p.name for p in JOB_FILES}


@pytest.mark.parametrize("job_file", JOB_FILES, ids=lambda p: p.stem)
def test_help_exits_0_with_usage_and_documented_options(job_file):
    flags = _documented_flags(job_file)
    assert "--output" in flags, f"{job_file.name}: its docstring documents no --output"
    r = subprocess.run([sys.executable, str(job_file), "--help"], capture_output=True,
                       text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {job_file.stem} "), r.stdout[:200]
    assert r.stderr == ""
    offered = set(FLAG.findall(r.stdout))
    missing = [f for f in flags if f not in offered]
    assert missing == [], f"{job_file.name} documents {missing} but --help does not offer them"
    assert {"--output", "--overwrite", "--log-level", "--help"} <= offered


@pytest.mark.parametrize("job_file", JOB_FILES, ids=lambda p: p.stem)
def test_missing_required_argument_exits_2(job_file, tmp_path):
    r = subprocess.run([sys.executable, str(job_file), "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{job_file.stem}: error: the following arguments are required: --")
    assert json.loads(r.stdout) == {"job": job_file.stem, "status": "error", "exit_code": 2,
                                    "message": last.split(": error: ", 1)[1]}
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- fingerprint document


def _namespace(**kw) -> argparse.Namespace:
    base = {"output": "/tmp/out", "overwrite": False, "log_level": "INFO",
            "input_fingerprint": None}
    return argparse.Namespace(**(base | kw))


def test_fingerprint_document_lists_data_files_and_hashes_configs(tmp_path):
    data = tmp_path / "in"
    (data / "sub").mkdir(parents=True)
    (data / "part-0.parquet").write_bytes(b"abc")
    (data / "sub" / "part-1.parquet").write_bytes(b"defgh")
    for marker in ("_SUCCESS", ".part-0.parquet.crc", "_committed_1"):
        (data / marker).write_bytes(b"x")
    (data / "_temporary").mkdir()
    (data / "_temporary" / "part-9.parquet").write_bytes(b"partial")
    conf = tmp_path / "c.toml"
    conf.write_bytes(b"[defaults]\nbits = 8\n")
    spec = jobkit.Fingerprint(inputs=("input",), configs=("config",))
    args = _namespace(input=str(data), config=str(conf), input_format="parquet",
                      input_option=["a=b"])

    doc = spec.document("quantize_features", args)
    st0, st1 = (data / "part-0.parquet").stat(), (data / "sub" / "part-1.parquet").stat()
    assert doc == {
        "job": "quantize_features", "version": "0.1.0", "code": jobkit.code_identity(),
        "output": "/tmp/out",
        "inputs": {"input": {"path": str(data), "files": [
            ["part-0.parquet", 3, st0.st_mtime_ns], ["sub/part-1.parquet", 5, st1.st_mtime_ns]]}},
        "configs": {"config": {"path": str(conf),
                               "sha256": hashlib.sha256(b"[defaults]\nbits = 8\n").hexdigest()}},
        "args": {"input_format": "parquet", "input_option": ["a=b"]}}
    assert spec.compute("quantize_features", args) == O.fingerprint_of(doc)
    assert re.fullmatch(r"[0-9a-f]{64}", spec.compute("quantize_features", args))


def test_fingerprint_changes_with_what_decides_the_output_only(tmp_path):
    data = tmp_path / "in.parquet"
    data.write_bytes(b"1234")
    conf = tmp_path / "c.toml"
    conf.write_bytes(b"bits = 8\n")
    spec = jobkit.Fingerprint(inputs=("input",), configs=("config",))

    def fp(**kw) -> str:
        return spec.compute("job", _namespace(**({"input": str(data), "config": str(conf),
                                                  "mode": "a"} | kw)))

    base = fp()
    assert fp(overwrite=True) == base
    assert fp(log_level="DEBUG") == base
    assert fp(input_fingerprint="whatever") == base
    assert fp(mode="b") != base
    assert fp(output="/tmp/elsewhere") != base
    assert spec.compute("other_job", _namespace(input=str(data), config=str(conf),
                                                mode="a")) != base
    conf.write_bytes(b"bits = 4\n")
    assert fp() != base
    conf.write_bytes(b"bits = 8\n")
    assert fp() == base
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert fp() != base


def test_fingerprint_records_missing_paths_without_raising(tmp_path):
    spec = jobkit.Fingerprint(inputs=("input", "extra_data"), configs=("config",))
    args = _namespace(input=str(tmp_path / "nope"), extra_data=None,
                      config=str(tmp_path / "missing.toml"))
    doc = spec.document("job", args)
    assert doc["inputs"] == {"input": {"path": str(tmp_path / "nope"), "missing": True},
                             "extra_data": None}
    assert doc["configs"] == {"config": {"path": str(tmp_path / "missing.toml"),
                                         "error": "FileNotFoundError"}}


def test_hmac_key_id_names_the_key_without_revealing_it():
    a, b = jobkit.hmac_key_id(b"secret-1"), jobkit.hmac_key_id(b"secret-2")
    assert jobkit.hmac_key_id(None) is None
    assert re.fullmatch(r"[0-9a-f]{16}", a) and a != b
    assert a == jobkit.hmac_key_id(b"secret-1")


def test_finished_fingerprint_needs_success_and_a_report(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"input_fingerprint": "f" * 64}))
    assert O.finished_fingerprint(out) is None                 # no _SUCCESS
    (out / "_SUCCESS").write_text("")
    assert O.finished_fingerprint(out) == "f" * 64
    (out / "report.json").write_text("{not json")
    assert O.finished_fingerprint(out) is None
    (out / "report.json").write_text(json.dumps({"rows_in": 3}))
    assert O.finished_fingerprint(out) is None                 # an older output
    assert O.finished_fingerprint(tmp_path / "absent") is None


# ------------------------------------------------------------------------ reruns, in process


@pytest.fixture()
def small(tmp_path) -> tuple[Path, Path]:
    """A 300-row Parquet file (id, two floats, a string) and a config for it."""
    rng = np.random.default_rng(5)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "id": np.arange(ROWS, dtype=np.int64),
        "a": rng.normal(size=ROWS), "b": rng.uniform(0, 100, size=ROWS),
        "city": rng.choice(["x", "y", "z"], size=ROWS)}), src, compression="zstd")
    conf = tmp_path / "c.toml"
    conf.write_text('[job]\npassthrough = ["id"]\n[defaults]\nmethod = "minmax"\nbits = 8\n'
                    'strings = "dictionary"\n')
    return src, conf


def _no_spark(monkeypatch, module) -> None:
    """Make any attempt to prepare or start Spark fail loudly (exit 1 with this message)."""
    def refuse(*a, **k):
        raise AssertionError("a skipped rerun must not prepare or start Spark")

    monkeypatch.setattr(jobkit, "build_session", refuse)
    monkeypatch.setattr(module, "prepare", refuse, raising=True)


def test_rerun_with_same_inputs_is_skipped_before_spark(spark, capsys, monkeypatch, tmp_path,
                                                       small):
    src, conf = small
    out = tmp_path / "q"
    argv = ["--input", src, "--config", conf, "--output", out]
    rc, stdout, err = _main(capsys, "quantize_features", argv)
    assert rc == 0, err
    assert _summary(stdout)["status"] == "ok"
    fp = _report(out)["input_fingerprint"]
    args = _job("quantize_features").build_parser().parse_args([str(a) for a in argv])
    args.input_fingerprint = None
    assert fp == _job("quantize_features").FINGERPRINT.compute("quantize_features", args)
    before = _snapshot(out)

    module = _job("quantize_features")
    _no_spark(monkeypatch, module)
    rc = module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert _summary(captured.out) == {"job": "quantize_features", "status": "skipped",
                                      "output": str(out), "input_fingerprint": fp}
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_skipped_rerun_as_a_command_needs_no_java(spark, capsys, tmp_path, small):
    """The skip decision is made before a JVM is needed: with no Java reachable, the rerun of a
    finished output still exits 0, while a run that has work to do fails to start Spark."""
    src, conf = small
    out = tmp_path / "q"
    argv = ["--input", str(src), "--config", str(conf), "--output", str(out)]
    assert _main(capsys, "quantize_features", argv)[0] == 0
    fp = _report(out)["input_fingerprint"]
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME")}
    env |= {"JAVA_HOME": str(tmp_path / "no-java"),
            "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                    if not (Path(p) / "java").exists())}
    job = str(REPO / "jobs" / "quantize_features.py")

    r = subprocess.run([sys.executable, job, *argv], capture_output=True, text=True,
                       timeout=120, env=env, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {
        "job": "quantize_features", "status": "skipped", "output": str(out),
        "input_fingerprint": fp}

    r = subprocess.run([sys.executable, job, *argv[:-1], str(tmp_path / "fresh")],
                       capture_output=True, text=True, timeout=120, env=env, cwd="/")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "JAVA_GATEWAY_EXITED" in r.stderr  # it did need Java, and Java was not there
    error = json.loads(r.stdout)
    assert (error["status"], error["exit_code"]) == ("error", 1)
    assert "JAVA_GATEWAY_EXITED" in error["message"]
    assert not (tmp_path / "fresh").exists()


def _edit_config(src, conf, out):
    conf.write_text(conf.read_text() + "# same settings, other bytes\n")


def _touch_input(src, conf, out):
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def _remove_success(src, conf, out):
    (out / "_SUCCESS").unlink()


def _old_report(src, conf, out):
    report = _report(out)
    del report["input_fingerprint"]
    (out / "report.json").write_text(json.dumps(report))


@pytest.mark.parametrize("change,state,warns", [
    (_edit_config, "a finished output", True),
    (_touch_input, "a finished output", True),
    (_remove_success, "an unfinished output", False),
    (_old_report, "a finished output", False),
], ids=["config-bytes", "input-mtime", "no-success", "no-fingerprint"])
def test_changed_inputs_need_overwrite(spark, capsys, caplog, tmp_path, small, change, state,
                                       warns):
    src, conf = small
    out = tmp_path / "q"
    argv = ["--input", src, "--config", conf, "--output", out]
    rc, _, err = _main(capsys, "quantize_features", argv)
    assert rc == 0, err
    old = _report(out)
    change(src, conf, out)
    before = _snapshot(out)
    caplog.clear()

    rc, stdout, err = _main(capsys, "quantize_features", argv)
    assert rc == 2
    message = (f"output {out} already exists ({state}); "
               f"pass --overwrite to replace it or choose another --output")
    assert err.strip() == f"quantize_features: error: {message}"
    assert json.loads(stdout) == {"job": "quantize_features", "status": "error", "exit_code": 2,
                                  "message": message}
    assert _snapshot(out) == before
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and "input fingerprint" in r.getMessage()]
    assert len(warnings) == int(warns), warnings
    if warns:
        assert f"output {out} was written from other inputs" in warnings[0]

    rc, stdout, err = _main(capsys, "quantize_features", argv + ["--overwrite"])
    assert rc == 0, err
    new = _report(out)
    assert _summary(stdout)["status"] == "ok"
    assert new["run_id"] != old["run_id"]
    assert (out / "_SUCCESS").exists()
    if change in (_edit_config, _touch_input):
        assert new["input_fingerprint"] != old["input_fingerprint"]
    else:
        assert new["input_fingerprint"] == old["input_fingerprint"]
    # And now the rerun is skipped.
    rc, stdout, _ = _main(capsys, "quantize_features", argv)
    assert (rc, _summary(stdout)["status"]) == (0, "skipped")


def test_overwrite_reruns_even_when_nothing_changed(spark, capsys, tmp_path, small):
    src, conf = small
    out = tmp_path / "q"
    argv = ["--input", src, "--config", conf, "--output", out]
    assert _main(capsys, "quantize_features", argv)[0] == 0
    old = _report(out)
    rc, stdout, err = _main(capsys, "quantize_features", argv + ["--overwrite"])
    assert rc == 0, err
    assert _summary(stdout)["status"] == "ok"
    new = _report(out)
    assert new["run_id"] != old["run_id"]
    assert new["input_fingerprint"] == old["input_fingerprint"]


def test_other_arguments_are_a_different_run(spark, capsys, tmp_path, small):
    src, conf = small
    out = tmp_path / "q"
    argv = ["--input", src, "--config", conf, "--output", out]
    assert _main(capsys, "quantize_features", argv)[0] == 0
    rc, _, err = _main(capsys, "quantize_features", argv + ["--input-option", "mergeSchema=true"])
    assert rc == 2
    assert "pass --overwrite" in err


def test_dequantize_rerun_is_skipped_until_its_input_changes(spark, capsys, tmp_path, small):
    src, conf = small
    q, r = tmp_path / "q", tmp_path / "r"
    assert _main(capsys, "quantize_features",
                 ["--input", src, "--config", conf, "--output", q])[0] == 0
    rc, stdout, err = _main(capsys, "dequantize_features", ["--input", q, "--output", r])
    assert rc == 0, err
    fp = _report(r)["input_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    rc, stdout, _ = _main(capsys, "dequantize_features", ["--input", q, "--output", r])
    assert rc == 0
    assert _summary(stdout) == {"job": "dequantize_features", "status": "skipped",
                                "output": str(r), "input_fingerprint": fp}
    # A new quantize output (same config, rewritten) is a new input for dequantize.
    assert _main(capsys, "quantize_features",
                 ["--input", src, "--config", conf, "--output", q, "--overwrite"])[0] == 0
    rc, _, err = _main(capsys, "dequantize_features", ["--input", q, "--output", r])
    assert rc == 2 and "pass --overwrite" in err


@pytest.fixture()
def skops_model(tmp_path) -> tuple[Path, Path, Path]:
    """A scikit-learn logistic regression on 4 features as a .skops file, eval data, config."""
    import skops.io
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) > 0).astype(np.int32)
    model = tmp_path / "lr.skops"
    skops.io.dump(LogisticRegression().fit(x, y), model)
    data = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "f3": x[:, 3],
                             "label": y}), data)
    conf = tmp_path / "m.toml"
    conf.write_text('[plan]\nquantize = "int8"\n[eval]\nlabel = "label"\n'
                    'features = ["f0", "f1", "f2", "f3"]\n')
    return model, data, conf


def test_compress_model_rerun_is_skipped_until_the_signing_key_changes(spark, capsys,
                                                                       monkeypatch, tmp_path,
                                                                       skops_model):
    model, data, conf = skops_model
    out = tmp_path / "m"
    argv = ["--model", model, "--config", conf, "--eval-data", data, "--output", out]
    monkeypatch.delenv("SPARK_COMPRESS_HMAC_KEY", raising=False)
    rc, stdout, err = _main(capsys, "compress_model", argv)
    assert rc == 0, err
    fp = _report(out)["input_fingerprint"]
    rc, stdout, _ = _main(capsys, "compress_model", argv)
    assert (rc, _summary(stdout)) == (0, {"job": "compress_model", "status": "skipped",
                                          "output": str(out), "input_fingerprint": fp})
    # Signing with a key changes the file: not the same run.
    monkeypatch.setenv("SPARK_COMPRESS_HMAC_KEY", "k1")
    rc, _, err = _main(capsys, "compress_model", argv)
    assert rc == 2 and "pass --overwrite" in err
    rc, _, err = _main(capsys, "compress_model", argv + ["--overwrite"])
    assert rc == 0, err
    assert _report(out)["input_fingerprint"] != fp
    rc, stdout, _ = _main(capsys, "compress_model", argv)
    assert (rc, _summary(stdout)["status"]) == (0, "skipped")
