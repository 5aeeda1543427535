"""Quality gates and warnings of the jobs' reports, and the marker of an output that failed one.

A job's ``[gate]`` table (parsed by :mod:`spark_compress.io.model_config` and
:mod:`spark_compress.io.config`) sets limits; after the job has written its output it checks them
against its report (:func:`model_gate`, :func:`feature_gate`). Every report holds ``"gate"``:
``{"passed": bool, "checks": [{"key", "limit", "value", "passed"[, "reason"]}, ...]}`` (no
checks and ``passed`` true without a ``[gate]`` table) and ``"warnings"``: a list of one-line
messages from fixed thresholds (:data:`WARN_ACCURACY_DROP` and its siblings), written whether
or not a gate is configured.

When a check fails, the job still commits its output, atomically, so that it can be inspected,
but with the marker ``_GATE_FAILED`` (holding the gate as JSON) *instead of* ``_SUCCESS``: a
scheduler or reader that waits for ``_SUCCESS`` does not take it for a good output, and a rerun
is never "skipped" over it (the input fingerprint counts only with ``_SUCCESS``). The job then
exits with code 3, "quality gate failed" (:class:`spark_compress.errors.QualityGateFailed`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from spark_compress.io.output import StagedOutput

GATE_FAILED = "_GATE_FAILED"

# Warning thresholds (absolute differences, compressed minus original, unless said otherwise).
WARN_ACCURACY_DROP = 0.01          # one accuracy point
WARN_AUC_DROP = 0.01               # ROC AUC and average precision
WARN_RMSE_INCREASE = 0.05          # relative: 5% of the original model's RMSE
WARN_CLIPPED_FRACTION = 0.01       # of the rows, per feature column

# The model gate's keys: (task(s) it applies to, metric, direction) -- drops are original minus
# compressed, increases compressed minus original, all absolute in the metric's own units.
MODEL_GATE_KEYS = {
    "min_ratio": (("regression", "binary", "multiclass"), None, "min"),
    "max_accuracy_drop": (("binary", "multiclass"), "accuracy", "drop"),
    "max_auc_drop": (("binary",), "roc_auc", "drop"),
    "max_average_precision_drop": (("binary",), "average_precision", "drop"),
    "min_agreement": (("binary", "multiclass"), "agreement", "min"),
    "max_rmse_increase": (("regression",), "rmse", "increase"),
}


def _check(key: str, limit: float, value: float | None, ok: bool | None,
           reason: str | None = None) -> dict:
    entry: dict[str, Any] = {"key": key, "limit": limit, "value": value, "passed": bool(ok)}
    if reason:
        entry["reason"] = reason
    return entry


def _gate(checks: list[dict]) -> dict:
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _undefined(metrics: Mapping, name: str) -> str:
    return (metrics.get("undefined") or {}).get(name, f"{name} was not computed")


def model_gate(limits: Mapping[str, float], report: Mapping) -> dict:
    """The ``"gate"`` of a compress job's ``report`` (``original_bytes``, ``compressed_bytes``,
    ``metrics.original``/``metrics.compressed``) under ``limits`` (the ``[gate]`` keys that are
    set, see :data:`MODEL_GATE_KEYS`). ``min_ratio`` compares ``original_bytes /
    compressed_bytes`` unrounded. A metric that is undefined (``None``, e.g. ROC AUC without
    both classes) fails its check, with the reason: a gate that cannot be evaluated does not
    pass."""
    orig = report["metrics"]["original"]
    comp = report["metrics"]["compressed"]
    checks = []
    for key in MODEL_GATE_KEYS:
        if key not in limits:
            continue
        limit = limits[key]
        _, metric, direction = MODEL_GATE_KEYS[key]
        if metric is None:
            ratio = report["original_bytes"] / report["compressed_bytes"]
            checks.append(_check(key, limit, round(ratio, 4), ratio >= limit))
            continue
        a, b = orig.get(metric), comp.get(metric)
        if direction == "min":
            if b is None:
                checks.append(_check(key, limit, None, False, _undefined(comp, metric)))
            else:
                checks.append(_check(key, limit, b, b >= limit))
            continue
        if a is None or b is None:
            checks.append(_check(key, limit, None, False,
                                 _undefined(orig if a is None else comp, metric)))
            continue
        diff = a - b if direction == "drop" else b - a
        checks.append(_check(key, limit, diff, diff <= limit))
    return _gate(checks)


def model_warnings(report: Mapping) -> list[str]:
    """One-line warnings about a compress job's ``report`` from the fixed thresholds (see the
    module docstring); empty when nothing looks wrong."""
    out = []
    o, c = report["original_bytes"], report["compressed_bytes"]
    if c > o:
        out.append(f"model.safetensors ({c:,} B) is {c / o:.1f}x larger than the original "
                   f"model's float32 parameters ({o:,} B): the file's header and per-tensor "
                   f"metadata outweigh what the plan saves on a model this small")
    orig = report["metrics"]["original"]
    comp = report["metrics"]["compressed"]
    for metric, limit in (("accuracy", WARN_ACCURACY_DROP), ("roc_auc", WARN_AUC_DROP),
                          ("average_precision", WARN_AUC_DROP)):
        if metric not in orig:
            continue
        a, b = orig.get(metric), comp.get(metric)
        if a is None or b is None:
            out.append(f"{metric} is undefined: {_undefined(orig if a is None else comp, metric)}")
        elif a - b > limit:
            out.append(f"{metric} drops from {a:.4f} to {b:.4f} ({a - b:.4f} > {limit})")
    if "rmse" in orig and orig.get("rmse") is not None and comp.get("rmse") is not None:
        a, b = orig["rmse"], comp["rmse"]
        if b > a * (1 + WARN_RMSE_INCREASE):
            out.append(f"rmse rises from {a:.6g} to {b:.6g} (more than "
                       f"{WARN_RMSE_INCREASE:.0%} above the original)")
    return out


def feature_gate(defaults: Mapping[str, float], columns: Mapping[str, Mapping[str, float]],
                 report: Mapping) -> dict:
    """The ``"gate"`` of a feature job's ``report`` (``rows_in``, ``columns.<name>.rmse`` and
    ``clipped_count``): every encoded column is checked against its own ``[gate.columns.<name>]``
    limits over the ``[gate]`` defaults. ``max_rmse`` is absolute, in the column's units (a
    dictionary column has no RMSE and is not checked by a default ``max_rmse``);
    ``max_clipped_fraction`` is ``clipped_count / rows_in``. Check keys read
    ``"<column>.<limit>"``."""
    checks = []
    rows = report["rows_in"]
    for name, col in report["columns"].items():
        limits = {**defaults, **columns.get(name, {})}
        if "max_rmse" in limits and col.get("rmse") is not None:
            rmse = col["rmse"]
            checks.append(_check(f"{name}.max_rmse", limits["max_rmse"], rmse,
                                 math.isfinite(rmse) and rmse <= limits["max_rmse"]))
        if "max_clipped_fraction" in limits:
            frac = col.get("clipped_count", 0) / rows if rows else 0.0
            checks.append(_check(f"{name}.max_clipped_fraction", limits["max_clipped_fraction"],
                                 frac, frac <= limits["max_clipped_fraction"]))
    return _gate(checks)


def feature_warnings(report: Mapping) -> list[str]:
    """One-line warnings about a feature job's ``report``: output larger than the input, and
    columns with more than :data:`WARN_CLIPPED_FRACTION` of their rows clipped."""
    out = []
    bi, bo = report.get("bytes_in"), report.get("bytes_out")
    if bi and bo and bo > bi:
        out.append(f"the encoded data ({bo:,} B) is {bo / bi:.2f}x larger than the input "
                   f"({bi:,} B)")
    rows = report["rows_in"]
    for name, col in report["columns"].items():
        frac = col.get("clipped_count", 0) / rows if rows else 0.0
        if frac > WARN_CLIPPED_FRACTION:
            out.append(f"column {name!r}: {frac:.2%} of the rows are clipped to the fitted range "
                       f"(more than {WARN_CLIPPED_FRACTION:.0%}); widen clip or use more bits")
    return out


def gate_message(job: str, gate: Mapping, output: str) -> str:
    """The one-line stderr message of a failed gate, naming every failed check."""
    failed = [c for c in gate["checks"] if not c["passed"]]
    parts = []
    for c in failed:
        if c.get("reason"):
            parts.append(f"{c['key']} {c['limit']}: {c['reason']}")
        else:
            parts.append(f"{c['key']} {c['limit']}: got {c['value']:.6g}")
    return (f"{job}: quality gate failed ({'; '.join(parts)}); output written to {output} "
            f"with {GATE_FAILED} instead of _SUCCESS")


def commit_gate_failed(out: StagedOutput, gate: Mapping) -> None:
    """Commit ``out`` with :data:`GATE_FAILED` (the gate as JSON) in place of ``_SUCCESS`` (see
    the module docstring): :meth:`StagedOutput.commit` with ``success=False``, so the output's
    marker still says it is ours and a later ``--overwrite`` may replace it."""
    (out.staging / GATE_FAILED).write_text(json.dumps(gate, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
    out.commit(success=False)
