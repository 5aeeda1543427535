"""Evaluation metrics as mergeable partial statistics, so one distributed pass computes them. numpy
only.

Each block of rows gives :func:`partial_stats`; blocks combine with :func:`merge_stats` (sums, so
the order does not matter up to float64 rounding of the log-loss and error sums); :func:`finalize`
turns the merged statistics into metrics::

    stats = merge_stats(partial_stats("binary", y0, out0), partial_stats("binary", y1, out1))
    finalize("binary", stats)  # {"count", "accuracy", "log_loss", "roc_auc", "pr_auc"}

``outputs`` are those of :func:`spark_compress.core.model.forward`: for ``binary`` ``(n, 1)`` (the
probability of class 1) or ``(n, 2)`` (softmax); for ``multiclass`` ``(n, k)``; for
``regression`` ``(n,)`` or ``(n, 1)``. Predicted labels follow
:func:`spark_compress.core.model.predict` (``p > 0.5``, else the first argmax).

AUC approximation: positive-class scores are counted in ``bins`` equal-width bins on ``[0, 1]``
(bin ``min(floor(s * bins), bins - 1)``), and both AUCs are computed with each bin as one tie
group. The histogram ROC AUC equals the exact ROC AUC (ties counting one half) of the scores
rounded down to their bin, so it differs from the exact value only through positive/negative pairs
that share a bin: ``|error| <= 0.5 * sum_b pos_b * neg_b / (P * N)``, zero when no bin holds both
classes. With the default 10,000 bins (width 1e-4) and scores spread over ``[0, 1]`` this is far
below 1e-3; scores piled in a narrow range (a saturated model) make it larger. Average precision
is exact for the binned scores likewise.

Undefined metrics are ``None``: every metric when ``count`` is 0; ``roc_auc`` when the labels hold
only one class; ``pr_auc`` when there is no positive label (all positives give 1.0).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from spark_compress.errors import ConfigError, DataError

TASKS = ("regression", "binary", "multiclass")
DEFAULT_BINS = 10_000
EPS = 1e-15

_INT_KEYS = ("count", "correct", "agree", "hist_pos", "hist_neg")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"The 'task' parameter must be one of {TASKS}. Got {task!r} instead.")


def _outputs(task: str, outputs: np.ndarray, n: int, name: str) -> np.ndarray:
    out = np.asarray(outputs, dtype=np.float64)
    if task == "regression" and out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] != n:
        raise DataError(f"{name} must have shape ({n}, k) for {n} labels; got shape {out.shape}")
    k = out.shape[1]
    if task == "regression" and k != 1:
        raise DataError(f"{name} of a regression model must have 1 output; got shape {out.shape}")
    if task == "binary" and k not in (1, 2):
        raise DataError(f"{name} of a binary model must have 1 or 2 outputs; got shape {out.shape}")
    if task == "multiclass" and k < 2:
        raise DataError(f"{name} of a multiclass model must have >= 2 outputs; got shape "
                        f"{out.shape}")
    bad = ~np.isfinite(out)
    if bad.any():
        raise DataError(f"{name} hold NaN or infinity in {int(bad.any(axis=1).sum())} row(s) "
                        f"(first row {int(np.argmax(bad.any(axis=1)))}); NaN features propagate "
                        f"to the outputs")
    return out


def _labels(task: str, y_true: np.ndarray, k: int) -> np.ndarray:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise DataError(f"y_true holds NaN or infinity in {int((~np.isfinite(y)).sum())} row(s)")
    if task == "regression":
        return y
    n_classes = 2 if task == "binary" else k
    ok = (y == np.round(y)) & (y >= 0) & (y < n_classes)
    if not ok.all():
        raise DataError(f"labels of a {task} model must be integers in 0..{n_classes - 1}; got "
                        f"{float(y[np.argmax(~ok)])!r}")
    return y.astype(np.int64)


def _predicted(out: np.ndarray) -> np.ndarray:
    if out.shape[1] == 1:
        return (out[:, 0] > 0.5).astype(np.int64)
    return np.argmax(out, axis=1).astype(np.int64)


def partial_stats(task: str, y_true: np.ndarray, outputs_a: np.ndarray,
                  outputs_b: np.ndarray | None = None, *, bins: int = DEFAULT_BINS,
                  ) -> dict[str, np.ndarray]:
    """Sufficient statistics of ``outputs_a`` against ``y_true`` (``(n,)``), and against
    ``outputs_b`` (another model on the same rows) if given.

    Keys: ``count``; ``binary``/``multiclass``: ``correct`` and ``log_loss_sum`` (probabilities
    clipped to ``[1e-15, 1 - 1e-15]``); ``binary`` also ``hist_pos``/``hist_neg`` (int64
    ``(bins,)`` histograms of the class-1 score by label); ``regression``: ``sse``, ``sae``. With
    ``outputs_b``: ``agree`` (rows with the same predicted label) for classification, ``sq_diff``
    (sum of squared differences of the predictions) for regression. Values are numpy
    scalars or 1-d arrays, int64 for counts, float64 for sums. ``n = 0`` gives zeros.

    Raises :class:`DataError` for outputs of the wrong shape or with NaN/infinity, labels that
    are not finite, or classification labels outside ``0..k-1``; :class:`ConfigError` for an
    unknown task or ``bins < 1``.
    """
    _check_task(task)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ConfigError(f"The 'bins' parameter must be an int >= 1. Got {bins!r} instead.")
    n = int(np.shape(y_true)[0]) if np.ndim(y_true) else 0
    a = _outputs(task, outputs_a, n, "outputs_a")
    y = _labels(task, y_true, a.shape[1])
    stats: dict[str, np.ndarray] = {"count": np.int64(n)}
    if task == "regression":
        err = a[:, 0] - y
        stats["sse"] = np.float64(np.dot(err, err))
        stats["sae"] = np.float64(np.abs(err).sum())
    else:
        pred = _predicted(a)
        stats["correct"] = np.int64((pred == y).sum())
        if a.shape[1] == 1:
            p = np.where(y == 1, a[:, 0], 1.0 - a[:, 0])
        else:
            p = a[np.arange(n), y]
        stats["log_loss_sum"] = np.float64(-np.log(np.clip(p, EPS, 1.0 - EPS)).sum())
        if task == "binary":
            score = a[:, 0] if a.shape[1] == 1 else a[:, 1]
            if ((score < 0) | (score > 1)).any():
                raise DataError("class-1 scores of a binary model must lie in [0, 1]; got "
                                f"{float(score[np.argmax((score < 0) | (score > 1))])!r}")
            idx = np.minimum((score * bins).astype(np.int64), bins - 1)
            stats["hist_pos"] = np.bincount(idx[y == 1], minlength=bins).astype(np.int64)
            stats["hist_neg"] = np.bincount(idx[y == 0], minlength=bins).astype(np.int64)
    if outputs_b is not None:
        b = _outputs(task, outputs_b, n, "outputs_b")
        if task == "regression":
            d = a[:, 0] - b[:, 0]
            stats["sq_diff"] = np.float64(np.dot(d, d))
        else:
            stats["agree"] = np.int64((_predicted(a) == _predicted(b)).sum())
    return stats


def merge_stats(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The statistics of the union of the rows of ``a`` and ``b`` (a new dict; inputs unchanged).

    Both must come from :func:`partial_stats` with the same task, ``bins`` and presence of
    ``outputs_b``; otherwise :class:`DataError` names the differing keys or shapes.
    """
    if set(a) != set(b):
        raise DataError(f"cannot merge statistics with different keys: {sorted(a)} and "
                        f"{sorted(b)}")
    out = {}
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if x.shape != y.shape:
            raise DataError(f"cannot merge statistics {key!r} of shapes {x.shape} and {y.shape}")
        dtype = np.int64 if key in _INT_KEYS else np.float64
        out[key] = (x.astype(dtype) + y.astype(dtype))
    return out


def _roc_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    # Sweep the threshold from the top bin down; each bin is one tie group (a trapezoid).
    tp = np.concatenate([[0], np.cumsum(pos[::-1])]).astype(np.float64)
    fp = np.concatenate([[0], np.cumsum(neg[::-1])]).astype(np.float64)
    area = np.sum(np.diff(fp) * (tp[1:] + tp[:-1])) / 2.0
    return float(area / (n_pos * n_neg))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float | None:
    n_pos = int(pos.sum())
    if n_pos == 0:
        return None
    p, q = pos[::-1].astype(np.float64), neg[::-1].astype(np.float64)
    tp, fp = np.cumsum(p), np.cumsum(q)
    hit = p > 0
    return float(np.sum(p[hit] / n_pos * tp[hit] / (tp[hit] + fp[hit])))


def finalize(task: str, stats: Mapping[str, np.ndarray]) -> dict[str, float | int | None]:
    """Metrics from (merged) :func:`partial_stats` statistics.

    Keys: ``count`` (int) and ``binary``: ``accuracy``, ``log_loss`` (mean), ``roc_auc``
    (trapezoid), ``pr_auc`` (average precision, step-wise); ``multiclass``: ``accuracy``,
    ``log_loss``; ``regression``: ``rmse``, ``mae``; with a second model: ``agreement`` (fraction
    of rows with the same predicted label) or, for regression, ``rmse_between``. Undefined values
    are ``None`` (see the module docstring).
    """
    _check_task(task)
    need = {"count"} | ({"sse", "sae"} if task == "regression" else {"correct", "log_loss_sum"})
    if task == "binary":
        need |= {"hist_pos", "hist_neg"}
    missing = sorted(need - set(stats))
    if missing:
        raise DataError(f"statistics for a {task} model lack {missing}; compute them with "
                        f"partial_stats({task!r}, ...)")
    n = int(stats["count"])
    out: dict[str, float | int | None] = {"count": n}

    def mean(v: object) -> float | None:
        return None if n == 0 else float(v) / n

    if task == "regression":
        sse = mean(stats["sse"])
        out["rmse"] = None if sse is None else float(np.sqrt(sse))
        out["mae"] = mean(stats["sae"])
        if "sq_diff" in stats:
            d = mean(stats["sq_diff"])
            out["rmse_between"] = None if d is None else float(np.sqrt(d))
    else:
        out["accuracy"] = mean(stats["correct"])
        out["log_loss"] = mean(stats["log_loss_sum"])
        if task == "binary":
            pos, neg = np.asarray(stats["hist_pos"]), np.asarray(stats["hist_neg"])
            out["roc_auc"] = _roc_auc(pos, neg)
            out["pr_auc"] = _average_precision(pos, neg)
        if "agree" in stats:
            out["agreement"] = mean(stats["agree"])
    return out
