"""Quality gates and report warnings (spark_compress.io.gate): the checks on hand-made reports,
the [gate] tables of both configs, and both jobs exiting 3 with the output marked _GATE_FAILED
instead of _SUCCESS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_compress.errors import ConfigError
from spark_compress.io import gate as G
from spark_compress.io.config import parse_feature_config
from spark_compress.io.model_config import check_gate_task, parse_model_config

pytestmark = pytest.mark.spark


def _report(original, compressed, *, o_bytes=124, c_bytes=1910):
    return {"original_bytes": o_bytes, "compressed_bytes": c_bytes,
            "metrics": {"original": original, "compressed": compressed}}


BIN_O = {"count": 100, "accuracy": 0.93, "roc_auc": 0.97, "average_precision": 0.95,
         "agreement": 1.0}
BIN_C = {"count": 100, "accuracy": 0.58, "roc_auc": 0.95, "average_precision": 0.95,
         "agreement": 0.6}


def test_model_gate_checks_each_limit_by_hand():
    limits = {"min_ratio": 0.1, "max_accuracy_drop": 0.01, "max_auc_drop": 0.025,
              "max_average_precision_drop": 0.0, "min_agreement": 0.99}
    gate = G.model_gate(limits, _report(BIN_O, BIN_C))
    by_key = {c["key"]: c for c in gate["checks"]}
    assert gate["passed"] is False
    assert by_key["min_ratio"] == {"key": "min_ratio", "limit": 0.1, "value": 0.0649,
                                   "passed": False}  # 124 / 1910
    assert by_key["max_accuracy_drop"]["value"] == pytest.approx(0.35)
    assert by_key["max_accuracy_drop"]["passed"] is False
    assert by_key["max_auc_drop"]["value"] == pytest.approx(0.02)
    assert by_key["max_auc_drop"]["passed"] is True
    assert by_key["max_average_precision_drop"] == {
        "key": "max_average_precision_drop", "limit": 0.0, "value": 0.0, "passed": True}
    assert by_key["min_agreement"]["passed"] is False
    assert [c["key"] for c in gate["checks"]] == list(limits)
    assert G.model_gate({}, _report(BIN_O, BIN_C)) == {"passed": True, "checks": []}


def test_model_gate_ratio_is_not_rounded():
    # 10001 / 10000 rounds to 1.0 at four decimals; the check uses the exact ratio.
    gate = G.model_gate({"min_ratio": 1.00005}, _report(BIN_O, BIN_O, o_bytes=10001,
                                                        c_bytes=10000))
    assert gate["passed"] is True and gate["checks"][0]["value"] == 1.0001
    gate = G.model_gate({"min_ratio": 1.0001}, _report(BIN_O, BIN_O, o_bytes=10000,
                                                       c_bytes=10001))
    assert gate["passed"] is False


def test_model_gate_undefined_metric_fails_with_reason():
    reason = "ROC AUC needs both classes; only class 0 in the labels"
    o = dict(BIN_O, roc_auc=None, undefined={"roc_auc": reason})
    c = dict(BIN_C, roc_auc=None, undefined={"roc_auc": reason})
    gate = G.model_gate({"max_auc_drop": 0.5}, _report(o, c))
    assert gate == {"passed": False, "checks": [{"key": "max_auc_drop", "limit": 0.5,
                                                 "value": None, "passed": False,
                                                 "reason": reason}]}
    assert G.gate_message("compress_model", gate, "/o") == (
        f"compress_model: quality gate failed (max_auc_drop 0.5: {reason}); output written to "
        f"/o with _GATE_FAILED instead of _SUCCESS")


def test_model_gate_regression_rmse_increase():
    o = {"count": 10, "rmse": 2.0, "mae": 1.0, "rmse_between": 0.0}
    c = {"count": 10, "rmse": 2.25, "mae": 1.1, "rmse_between": 0.5}
    gate = G.model_gate({"max_rmse_increase": 0.2}, _report(o, c, o_bytes=4000, c_bytes=1000))
    assert gate["checks"] == [{"key": "max_rmse_increase", "limit": 0.2, "value": 0.25,
                               "passed": False}]
    assert G.model_warnings(_report(o, c, o_bytes=4000, c_bytes=1000)) == [
        "rmse rises from 2 to 2.25 (more than 5% above the original)"]


def test_model_warnings_of_issue_10():
    # A 124 B model written as 1,910 B, accuracy 0.93 -> 0.58: both warned without any [gate].
    assert G.model_warnings(_report(BIN_O, BIN_C)) == [
        "model.safetensors (1,910 B) is 15.4x larger than the original model's float32 "
        "parameters (124 B): the file's header and per-tensor metadata outweigh what the plan "
        "saves on a model this small",
        "accuracy drops from 0.9300 to 0.5800 (0.3500 > 0.01)",
        "roc_auc drops from 0.9700 to 0.9500 (0.0200 > 0.01)"]
    assert G.model_warnings(_report(BIN_O, BIN_O, o_bytes=4000, c_bytes=1000)) == []


def test_feature_gate_per_column_over_defaults():
    report = {"rows_in": 1000, "columns": {
        "a": {"rmse": 0.5, "clipped_count": 5},
        "b": {"rmse": 2.0, "clipped_count": 50},
        "city": {"rmse": None, "clipped_count": 0},
    }}
    gate = G.feature_gate({"max_rmse": 1.0, "max_clipped_fraction": 0.01},
                          {"b": {"max_rmse": 3.0}}, report)
    assert gate["checks"] == [
        {"key": "a.max_rmse", "limit": 1.0, "value": 0.5, "passed": True},
        {"key": "a.max_clipped_fraction", "limit": 0.01, "value": 0.005, "passed": True},
        {"key": "b.max_rmse", "limit": 3.0, "value": 2.0, "passed": True},
        {"key": "b.max_clipped_fraction", "limit": 0.01, "value": 0.05, "passed": False},
        {"key": "city.max_clipped_fraction", "limit": 0.01, "value": 0.0, "passed": True},
    ]
    assert gate["passed"] is False
    assert G.feature_warnings(dict(report, bytes_in=100, bytes_out=150)) == [
        "the encoded data (150 B) is 1.50x larger than the input (100 B)",
        "column 'b': 5.00% of the rows are clipped to the fitted range (more than 1%); widen "
        "clip or use more bits"]


def test_model_gate_config():
    cfg = parse_model_config({"plan": {"quantize": "int8"},
                              "gate": {"min_ratio": 4, "max_auc_drop": 0.005}}, source="m.toml")
    assert cfg.gate == {"min_ratio": 4.0, "max_auc_drop": 0.005}
    assert parse_model_config({"plan": {}}).gate == {}
    check_gate_task(cfg, "binary")
    with pytest.raises(ConfigError, match=r"m.toml: \[gate\] max_auc_drop applies to binary "
                                          r"models; the model is a regression model. Remove "
                                          r"the key or use min_ratio, max_rmse_increase."):
        check_gate_task(cfg, "regression")
    with pytest.raises(ConfigError, match=r"unknown key 'max_loss' in \[gate\]; allowed keys: "
                                          r"min_ratio, max_accuracy_drop"):
        parse_model_config({"plan": {}, "gate": {"max_loss": 0.1}})
    with pytest.raises(ConfigError, match=r"\[gate\] min_ratio: must be a finite number > 0"):
        parse_model_config({"plan": {}, "gate": {"min_ratio": 0}})
    with pytest.raises(ConfigError, match=r"\[gate\] max_accuracy_drop: must be a number in "
                                          r"\[0, 1\]. Got 5."):
        parse_model_config({"plan": {}, "gate": {"max_accuracy_drop": 5}})
    with pytest.raises(ConfigError, match=r"\[gate\] max_rmse_increase: must be a finite number "
                                          r">= 0. Got True."):
        parse_model_config({"plan": {}, "gate": {"max_rmse_increase": True}})
    # Every gate key the checker knows is a key the config accepts, and the reverse.
    for key in G.MODEL_GATE_KEYS:
        assert key in parse_model_config({"plan": {}, "gate": {key: 0.5}}).gate


def test_feature_gate_config():
    cfg = parse_feature_config({"gate": {"max_clipped_fraction": 0.01,
                                         "columns": {"mean radius": {"max_rmse": 0.5}}}})
    assert cfg.gate.defaults == {"max_clipped_fraction": 0.01}
    assert cfg.gate.columns == {"mean radius": {"max_rmse": 0.5}}
    assert parse_feature_config({}).gate.defaults == {}
    with pytest.raises(ConfigError, match=r"f.toml: \[gate\] max_clipped_fraction: must be a "
                                          r"fraction of the rows in \[0, 1\]"):
        parse_feature_config({"gate": {"max_clipped_fraction": 2}}, source="f.toml")
    with pytest.raises(ConfigError, match=r"unknown key 'rmse' in \[gate.columns.a\]"):
        parse_feature_config({"gate": {"columns": {"a": {"rmse": 1}}}})
    with pytest.raises(ConfigError, match=r"\[gate.columns.a\] must be a table"):
        parse_feature_config({"gate": {"columns": {"a": 1}}})
    with pytest.raises(ConfigError, match=r"column 'y' is in \[job\] passthrough and also has a "
                                          r"\[gate.columns.y\] table"):
        parse_feature_config({"job": {"passthrough": ["y"]},
                              "gate": {"columns": {"y": {"max_rmse": 1}}}})
    with pytest.raises(ConfigError, match=r"\[gate\] max_rmse: must be a finite number >= 0"):
        parse_feature_config({"gate": {"max_rmse": float("inf")}})


# --- the jobs -----------------------------------------------------------------------------


def _run(capsys, job, argv):
    import importlib

    rc = importlib.import_module(f"spark_compress.jobs.{job}").main([str(a) for a in argv])
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def small_lr(tmp_path_factory):
    """A 4-feature logistic regression (20 B of parameters) saved with skops, and labelled
    rows."""
    from sklearn.linear_model import LogisticRegression
    import skops.io

    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0, 0.5, 0.0]) + rng.normal(scale=0.5, size=200) > 0).astype(int)
    root = tmp_path_factory.mktemp("gate")
    skops.io.dump(LogisticRegression().fit(x, y), root / "lr.skops")
    pdf = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    pdf["y"] = y.astype(np.int32)
    pdf.to_parquet(root / "eval.parquet", index=False)
    return root


def _model_config(root: Path, gate: str) -> Path:
    path = root / "model.toml"
    path.write_text('[plan]\nquantize = "int8"\n[eval]\nlabel = "y"\n'
                    'features = ["a", "b", "c", "d"]\n' + gate)
    return path


def test_compress_gate_fails_exit_3_output_marked(spark, capsys, small_lr, tmp_path):
    cfg = _model_config(tmp_path, "[gate]\nmin_ratio = 1.0\nmax_accuracy_drop = 0.5\n")
    out = tmp_path / "o"
    rc, cap = _run(capsys, "compress_model", ["--model", small_lr / "lr.skops", "--config", cfg,
                                              "--eval-data", small_lr / "eval.parquet",
                                              "--output", out])
    assert rc == 3, cap.err
    # Committed for inspection, but never with _SUCCESS.
    assert sorted(p.name for p in out.iterdir()) == ["_GATE_FAILED", "_SPARK_COMPRESS",
                                                     "model.safetensors", "report.json"]
    report = json.loads((out / "report.json").read_text())
    ratio_check = report["gate"]["checks"][0]
    assert ratio_check["key"] == "min_ratio" and ratio_check["passed"] is False
    assert ratio_check["value"] == round(20 / report["compressed_bytes"], 4)
    assert report["gate"]["checks"][1]["key"] == "max_accuracy_drop"
    assert report["gate"]["checks"][1]["passed"] is True
    assert report["gate"]["passed"] is False
    assert json.loads((out / "_GATE_FAILED").read_text()) == report["gate"]
    assert report["warnings"][0].startswith(f"model.safetensors ({report['compressed_bytes']:,} B)")
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["status"] == "gate_failed" and summary["exit_code"] == 3
    assert summary["gate"] == report["gate"] and summary["output"] == str(out)
    err = [ln for ln in cap.err.splitlines() if "quality gate failed" in ln]
    assert err == [f"compress_model: quality gate failed (min_ratio 1.0: got "
                   f"{ratio_check['value']:.6g}); output written to {out} with _GATE_FAILED "
                   f"instead of _SUCCESS"]
    # A rerun is not skipped as finished (no _SUCCESS): without --overwrite it refuses.
    rc, cap = _run(capsys, "compress_model", ["--model", small_lr / "lr.skops", "--config", cfg,
                                              "--eval-data", small_lr / "eval.parquet",
                                              "--output", out])
    assert rc == 2 and "already exists" in cap.err


def test_compress_gate_passes_exit_0(spark, capsys, small_lr, tmp_path):
    cfg = _model_config(tmp_path, "[gate]\nmax_accuracy_drop = 0.5\nmin_agreement = 0.5\n")
    out = tmp_path / "o"
    rc, cap = _run(capsys, "compress_model", ["--model", small_lr / "lr.skops", "--config", cfg,
                                              "--eval-data", small_lr / "eval.parquet",
                                              "--output", out])
    assert rc == 0, cap.err
    assert (out / "_SUCCESS").exists() and not (out / "_GATE_FAILED").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["gate"]["passed"] is True
    assert [c["key"] for c in report["gate"]["checks"]] == ["max_accuracy_drop", "min_agreement"]


def test_compress_gate_key_of_another_task_exits_2(spark, capsys, small_lr, tmp_path):
    cfg = _model_config(tmp_path, "[gate]\nmax_rmse_increase = 0.1\n")
    rc, cap = _run(capsys, "compress_model", ["--model", small_lr / "lr.skops", "--config", cfg,
                                              "--eval-data", small_lr / "eval.parquet",
                                              "--output", tmp_path / "o"])
    assert rc == 2
    assert "[gate] max_rmse_increase applies to regression models; the model is a binary " \
           "model" in cap.err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def feature_input(tmp_path_factory):
    """1,000 rows: 'x' uniform, 'heavy' with a 2% far tail that percentile clipping cuts."""
    rng = np.random.default_rng(11)
    heavy = rng.normal(size=1000)
    heavy[:20] = 1000.0
    root = tmp_path_factory.mktemp("fgate")
    pd.DataFrame({"x": rng.random(1000), "heavy": heavy}).to_parquet(root / "in.parquet",
                                                                    index=False)
    return root


def _feature_config(root: Path, gate: str) -> Path:
    path = root / "features.toml"
    path.write_text('[defaults]\nmethod = "minmax"\nbits = 8\n'
                    '[columns.heavy]\nmethod = "percentile"\nclip = 0.03\n' + gate)
    return path


def test_feature_gate_fails_exit_3_output_marked(spark, capsys, feature_input, tmp_path):
    cfg = _feature_config(tmp_path, "[gate]\nmax_clipped_fraction = 0.01\n"
                                         "[gate.columns.x]\nmax_rmse = 0.01\n")
    out = tmp_path / "o"
    rc, cap = _run(capsys, "quantize_features", ["--input", feature_input / "in.parquet",
                                                 "--config", cfg, "--output", out])
    assert rc == 3, cap.err
    assert sorted(p.name for p in out.iterdir()) == ["_GATE_FAILED", "_SPARK_COMPRESS",
                                                     "codebook.json", "data", "report.json"]
    report = json.loads((out / "report.json").read_text())
    checks = {c["key"]: c for c in report["gate"]["checks"]}
    heavy = report["columns"]["heavy"]
    assert checks["heavy.max_clipped_fraction"]["value"] == heavy["clipped_count"] / 1000
    assert checks["heavy.max_clipped_fraction"]["passed"] is False
    assert heavy["clipped_count"] >= 20
    # minmax at 8 bits on [0, 1): the error is at most half a step, 1 / 510.
    assert checks["x.max_rmse"]["value"] == report["columns"]["x"]["rmse"] <= 1 / 510
    assert checks["x.max_rmse"]["passed"] is True
    assert any(w.startswith("column 'heavy': ") for w in report["warnings"])
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["status"] == "gate_failed" and summary["gate"] == report["gate"]


def test_feature_gate_passes_and_names_unknown_column(spark, capsys, feature_input, tmp_path):
    cfg = _feature_config(tmp_path, "[gate]\nmax_clipped_fraction = 0.5\n")
    rc, cap = _run(capsys, "quantize_features", ["--input", feature_input / "in.parquet",
                                                 "--config", cfg, "--output", tmp_path / "o"])
    assert rc == 0, cap.err
    assert (tmp_path / "o" / "_SUCCESS").exists()
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["gate"]["passed"] is True and len(report["gate"]["checks"]) == 2
    cfg = _feature_config(tmp_path, "[gate.columns.nope]\nmax_rmse = 1.0\n")
    rc, cap = _run(capsys, "quantize_features", ["--input", feature_input / "in.parquet",
                                                 "--config", cfg, "--output", tmp_path / "p"])
    assert rc == 2
    assert "[gate.columns.nope] names a column that is not encoded (encoded: x, heavy)" in cap.err
    assert not (tmp_path / "p").exists()
