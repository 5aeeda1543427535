"""scripts/show_report.py on the report of every job, on --help and on bad paths.

The reports under ``reports/`` were written by the four jobs (quantize_features,
dequantize_features, compress_model and score on scikit-learn's breast-cancer table, 569 rows),
copied as they were; the script used to crash on the dequantize one (its ``columns`` is a list)
and on ``--help`` (read as a file name).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "show_report.py"
REPORTS = Path(__file__).resolve().parent / "reports"
JOBS = ("quantize_features", "dequantize_features", "compress_model", "score")


def script():
    spec = importlib.util.spec_from_file_location("show_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd="/")


def recorded(job: str) -> dict:
    return json.loads((REPORTS / f"{job}.json").read_text(encoding="utf-8"))


def test_recorded_reports_are_the_four_jobs():
    assert [recorded(job)["job"] for job in JOBS] == list(JOBS)


def test_help_prints_usage_and_exits_0():
    done = run("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: show_report.py [-h] report")
    assert "Print a job's report.json so a person can read it." in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("job", JOBS)
def test_every_job_report_prints(job, tmp_path):
    r = recorded(job)
    done = run(str(REPORTS / f"{job}.json"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert out.splitlines()[:2] == [f"report: {REPORTS / f'{job}.json'}", f"  job         {job}"]
    assert f"{r['rows_in']:,} in" in out
    if job == "quantize_features":
        for name, c in r["columns"].items():
            line = next(ln for ln in out.splitlines() if ln.startswith(f"  {name[:16]:<16} "))
            assert line.split()[1:3] == [c["method"], str(c["bits"])], line
    elif job == "dequantize_features":
        assert f"{len(r['columns'])} decoded: {', '.join(r['columns'])}" in out
    elif job == "compress_model":
        assert f"({r['compression_ratio']:.4g}x," in out
        header = next(ln for ln in out.splitlines() if ln.startswith("  metric "))
        assert header.split()[1:] == list(r["metrics"])
        for layer in r["layers"]:
            assert f"  {layer['index']:<6} {'x'.join(map(str, layer['shape_out'])):<12} " in out
    else:
        assert f"{r['invalid_rows']:,} without a score" in out
        assert f"method      {r['method']}" in out
    # The output folder works as well as its report.json.
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(r), encoding="utf-8")
    again = run(str(folder))
    assert again.returncode == 0 and again.stdout.splitlines()[1:] == out.splitlines()[1:]


def test_missing_figures_print_as_dashes_and_unknown_jobs_as_keys(capsys):
    sr = script()
    sr.show({"job": "dequantize_features"})
    sr.show({"job": "score", "rows_in": 3})
    sr.show({"job": "compress_model", "layers": [{"index": 0}], "metrics": {}})
    sr.show({"job": "future_job", "rows_in": 3, "thing": {"a": [1, 2]}})
    out = capsys.readouterr().out
    assert "  rows        - in, - out" in out
    assert "  rows        3 in, - out, - without a score" in out
    assert "  0      -" in out
    assert '  thing                    {"a": [1, 2]}' in out


def test_warnings_are_listed(capsys):
    script().show({"job": "compress_model", "warnings": ["the file is larger than the model"]})
    assert "  warnings:\n  - the file is larger than the model" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "holds a JSON list, not a job's report"),
])
def test_bad_paths_exit_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    done = run(str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("show_report.py: error: ")
    assert message in lines[0] and str(path) in lines[0]


def test_no_argument_is_a_usage_error():
    done = run()
    assert done.returncode == 2
    assert "error: the following arguments are required: report" in done.stderr
