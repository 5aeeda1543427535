"""Evaluation metrics as mergeable partial statistics, so one distributed pass computes them. numpy
only.

Each block of rows gives :func:`partial_stats`; blocks combine with :func:`merge_stats` (sums, so
the order does not matter up to float64 rounding of the log-loss and error sums); :func:`finalize`
turns the merged statistics into metrics::

    stats = merge_stats(partial_stats("binary", y0, out0), partial_stats("binary", y1, out1))
    finalize("binary", stats, ranking=ranking_metrics(y, score))
    # {"count", "accuracy", "log_loss", "roc_auc", "average_precision"}

``outputs`` are those of :func:`spark_compress.core.model.forward`: for ``binary`` ``(n, 1)`` (the
probability of class 1) or ``(n, 2)`` (softmax); for ``multiclass`` ``(n, k)``; for
``regression`` ``(n,)`` or ``(n, 1)``. Predicted labels follow
:func:`spark_compress.core.model.predict` (``p > 0.5``, else the first argmax).

Ranking metrics (binary) are exact: ``roc_auc`` equals ``sklearn.metrics.roc_auc_score`` (ties
count one half) and ``average_precision`` equals ``sklearn.metrics.average_precision_score``
(step-wise, one threshold per distinct score) on the same float64 scores, whatever the scores
(ties, ``1e-300``, ``1 - 1e-16``, exact 0 and 1), up to float64 rounding of the final divisions.
They need the scores in order, so they are not a sum of per-block statistics; they are built
from three pieces that a distributed caller can place on different machines:

1. :func:`score_counts`: per block of rows, the distinct scores with their counts of positive
   and negative labels (what a partition sends to a shuffle);
2. after the counts of equal scores are summed and sorted by decreasing score, every contiguous
   run of distinct scores (a partition of the sorted data) gives :func:`ranking_block` from its
   counts and the totals of the runs above it (prefix sums over the runs: a few numbers each);
3. :func:`finalize_ranking` adds the runs' pieces: the ROC area in exact integers (the
   Mann-Whitney count, doubled to stay integral), the average precision with ``math.fsum``.

:func:`ranking_metrics` does all three on one block (in memory).

Undefined metrics are ``None``: every metric when ``count`` is 0; ``roc_auc`` when the labels
hold only one class (scikit-learn 1.9 returns NaN with an ``UndefinedMetricWarning``);
``average_precision`` when there is no positive label (scikit-learn 1.9 returns 0.0 with a
warning that recall is set to one; a number there would look like a real, terrible model). All
positive labels give ``average_precision`` 1.0, as in scikit-learn. :func:`finalize_ranking`
says why a value is ``None`` under ``"undefined"``.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from spark_compress.errors import ConfigError, DataError

TASKS = ("regression", "binary", "multiclass")
EPS = 1e-15

# What each key of finalize() means, for reports that must say how a number was computed.
DEFINITIONS = {
    "count": "rows evaluated",
    "accuracy": "fraction of rows whose predicted label (binary: p > 0.5; else the first "
                "argmax) equals the label",
    "log_loss": "mean negative log-likelihood of the label, probabilities clipped to "
                "[1e-15, 1 - 1e-15]",
    "roc_auc": "exact area under the ROC curve of the class-1 scores, tied scores counting one "
               "half (equal to sklearn.metrics.roc_auc_score); null when a class is absent",
    "average_precision": "exact step-wise average precision over the distinct class-1 scores "
                         "(equal to sklearn.metrics.average_precision_score); null without "
                         "positive labels",
    "agreement": "fraction of rows whose predicted label equals the original model's",
    "rmse": "root mean squared error against the label",
    "mae": "mean absolute error against the label",
    "rmse_between": "root mean squared difference from the original model's predictions",
    "undefined": "why a metric is null",
}

_INT_KEYS = ("count", "correct", "agree")
# Above this a product of two int64 counts could overflow: Python integers take over.
_INT64_SAFE = 2 ** 62


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


def class1_scores(outputs: np.ndarray) -> np.ndarray:
    """The float64 scores of class 1 of a binary model's outputs (``(n, 1)``: the column; ``(n,
    2)``: the second column), the values :func:`ranking_metrics` ranks."""
    out = np.asarray(outputs)
    return np.asarray(out[:, 0] if out.shape[1] == 1 else out[:, 1], dtype=np.float64)


def partial_stats(task: str, y_true: np.ndarray, outputs_a: np.ndarray,
                  outputs_b: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sufficient statistics of ``outputs_a`` against ``y_true`` (``(n,)``), and against
    ``outputs_b`` (another model on the same rows) if given.

    Keys: ``count``; ``binary``/``multiclass``: ``correct`` and ``log_loss_sum`` (probabilities
    clipped to ``[1e-15, 1 - 1e-15]``); ``regression``: ``sse``, ``sae``. With ``outputs_b``:
    ``agree`` (rows with the same predicted label) for classification, ``sq_diff`` (sum of
    squared differences of the predictions) for regression. Values are numpy scalars, int64 for
    counts, float64 for sums. ``n = 0`` gives zeros. The ranking metrics of a binary model are
    not sums: see :func:`score_counts`.

    Raises :class:`DataError` for outputs of the wrong shape or with NaN/infinity, labels that
    are not finite, classification labels outside ``0..k-1``, or binary class-1 scores outside
    ``[0, 1]``; :class:`ConfigError` for an unknown task.
    """
    _check_task(task)
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
            score = class1_scores(a)
            if ((score < 0) | (score > 1)).any():
                raise DataError("class-1 scores of a binary model must lie in [0, 1]; got "
                                f"{float(score[np.argmax((score < 0) | (score > 1))])!r}")
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

    Both must come from :func:`partial_stats` with the same task and presence of
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


def score_counts(y_true: np.ndarray, scores: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct values of ``scores`` (float64, increasing) and, for each, the int64 counts of
    rows with label 1 and with label 0.

    ``y_true`` holds 0/1 labels (any numeric dtype), ``scores`` finite numbers of the same length
    (compared as float64, so float32 scores keep their exact values; ``-0.0`` equals ``0.0``).
    Raises :class:`DataError` for other labels, non-finite scores or different lengths.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise DataError(f"{y.size} labels but {s.size} scores; they must be the same rows")
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise DataError(f"labels of a binary model must be 0 or 1; got "
                        f"{float(y[np.argmax(bad)])!r}")
    if not np.isfinite(s).all():
        raise DataError(f"scores hold NaN or infinity in {int((~np.isfinite(s)).sum())} row(s)")
    values, inverse = np.unique(s, return_inverse=True)
    values = values + 0.0  # -0.0 -> 0.0: equal values print the same in every partition
    pos = np.bincount(inverse[y == 1], minlength=values.size).astype(np.int64)
    neg = np.bincount(inverse[y == 0], minlength=values.size).astype(np.int64)
    return values, pos, neg


def merge_score_counts(parts: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`score_counts` of the union of the blocks whose counts ``parts`` holds (the sums of
    the counts of equal scores, exact in int64)."""
    parts = list(parts)
    if not parts:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    values = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
    uniq, inverse = np.unique(values, return_inverse=True)
    pos = np.zeros(uniq.size, np.int64)
    neg = np.zeros(uniq.size, np.int64)
    np.add.at(pos, inverse, np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts]))
    np.add.at(neg, inverse, np.concatenate([np.asarray(p[2], dtype=np.int64) for p in parts]))
    return uniq + 0.0, pos, neg


def ranking_block(pos: np.ndarray, neg: np.ndarray, *, tp_before: int = 0,
                  fp_before: int = 0) -> dict[str, int | float]:
    """The share of one contiguous run of distinct scores in the ranking metrics.

    ``pos`` and ``neg`` are the counts of positive and negative labels of each distinct score of
    the run, in *decreasing* score order; ``tp_before`` and ``fp_before`` are the positives and
    negatives of all higher scores (the runs above this one). Returns ``n_pos`` and ``n_neg``
    (the run's totals), ``roc_twice`` (an exact Python int: twice the number of
    positive/negative pairs the run's negatives rank below a positive, ties counting one half:
    ``sum_g neg_g * (2 * TP_above_g + pos_g)``) and ``ap_sum`` (``sum_g pos_g * precision_g``
    with ``precision_g = TP_g / (TP_g + FP_g)`` at threshold ``g`` inclusive, a ``math.fsum``).
    :func:`finalize_ranking` adds the runs' values in any order.
    """
    p = np.asarray(pos, dtype=np.int64).reshape(-1)
    q = np.asarray(neg, dtype=np.int64).reshape(-1)
    if p.shape != q.shape:
        raise DataError(f"pos and neg counts must have the same length; got {p.size} and {q.size}")
    if (p < 0).any() or (q < 0).any():
        raise DataError("label counts must be >= 0")
    tp_before, fp_before = int(tp_before), int(fp_before)
    n_pos, n_neg = int(p.sum()), int(q.sum())
    above = np.cumsum(p) - p  # positives of this run ranked strictly higher
    if 2 * max(n_pos, 1) * max(n_neg, 1) < _INT64_SAFE:
        local = int(np.dot(q, 2 * above + p))
    else:  # counts so large that int64 products could overflow
        local = sum(int(a) * (2 * int(b) + int(c)) for a, b, c in zip(q, above, p))
    roc_twice = 2 * tp_before * n_neg + local
    hit = p > 0
    tp = (tp_before + np.cumsum(p))[hit].astype(np.float64)
    fp = (fp_before + np.cumsum(q))[hit].astype(np.float64)
    ap_sum = math.fsum((p[hit].astype(np.float64) * (tp / (tp + fp))).tolist())
    return {"n_pos": n_pos, "n_neg": n_neg, "roc_twice": roc_twice, "ap_sum": ap_sum}


def finalize_ranking(blocks: Iterable[Mapping[str, int | float]]) -> dict:
    """``roc_auc`` and ``average_precision`` from the :func:`ranking_block` results of runs that
    together cover every distinct score once (each computed with the right ``tp_before`` /
    ``fp_before``). Undefined values are ``None`` and ``"undefined"`` maps their names to the
    reason (the key is present only when something is undefined)."""
    blocks = list(blocks)
    n_pos = sum(int(b["n_pos"]) for b in blocks)
    n_neg = sum(int(b["n_neg"]) for b in blocks)
    roc_twice = sum(int(b["roc_twice"]) for b in blocks)
    out: dict = {"roc_auc": None, "average_precision": None}
    undefined = {}
    if n_pos and n_neg:
        # Python's int / int is correctly rounded: the exact area, rounded once.
        out["roc_auc"] = roc_twice / (2 * n_pos * n_neg)
    else:
        present = "no rows" if not (n_pos or n_neg) else \
            f"only class {1 if n_pos else 0} in the labels"
        undefined["roc_auc"] = f"ROC AUC needs both classes; {present}"
    if n_pos:
        out["average_precision"] = math.fsum(float(b["ap_sum"]) for b in blocks) / n_pos
    else:
        undefined["average_precision"] = "average precision needs a positive label; there is none"
    if undefined:
        out["undefined"] = undefined
    return out


def ranking_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict:
    """Exact ``roc_auc`` and ``average_precision`` of ``scores`` (the class-1 scores, see
    :func:`class1_scores`) against 0/1 labels ``y_true``, in memory: :func:`score_counts`, one
    :func:`ranking_block` over all distinct scores from the highest, :func:`finalize_ranking`.
    Equal to scikit-learn's ``roc_auc_score`` and ``average_precision_score`` where those are
    defined (see the module docstring for the undefined cases)."""
    _, pos, neg = score_counts(y_true, scores)
    return finalize_ranking([ranking_block(pos[::-1], neg[::-1])])


def finalize(task: str, stats: Mapping[str, np.ndarray], *,
             ranking: Mapping | None = None) -> dict[str, float | int | None]:
    """Metrics from (merged) :func:`partial_stats` statistics.

    Keys: ``count`` (int) and ``binary``/``multiclass``: ``accuracy``, ``log_loss`` (mean);
    ``regression``: ``rmse``, ``mae``; with a second model: ``agreement`` (fraction of rows with
    the same predicted label) or, for regression, ``rmse_between``. For ``binary``, ``ranking``
    (:func:`finalize_ranking` or :func:`ranking_metrics` of the same rows) adds ``roc_auc``,
    ``average_precision`` and, when one is undefined, ``undefined``; without it they are left
    out. Undefined values are ``None`` (see the module docstring).
    """
    _check_task(task)
    need = {"count"} | ({"sse", "sae"} if task == "regression" else {"correct", "log_loss_sum"})
    missing = sorted(need - set(stats))
    if missing:
        raise DataError(f"statistics for a {task} model lack {missing}; compute them with "
                        f"partial_stats({task!r}, ...)")
    if ranking is not None and task != "binary":
        raise ConfigError(f"ranking metrics are defined for binary models only; got task {task!r}")
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
        if ranking is not None:
            out["roc_auc"] = ranking.get("roc_auc")
            out["average_precision"] = ranking.get("average_precision")
            if ranking.get("undefined"):
                out["undefined"] = dict(ranking["undefined"])
        if "agree" in stats:
            out["agreement"] = mean(stats["agree"])
    return out
