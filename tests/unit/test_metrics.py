"""spark_compress.core.metrics: hand-computed values, exact AUC by sorting, merging, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_compress.core.metrics import finalize, merge_stats, partial_stats
from spark_compress.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

SEED = 20240607


def exact_roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney with average ranks (ties count one half)."""
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    p, n = int((y == 1).sum()), int((y == 0).sum())
    return float((ranks[y == 1].sum() - p * (p + 1) / 2) / (p * n))


def exact_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Step-wise AP over distinct thresholds, highest first."""
    p = int((y == 1).sum())
    ap, tp, fp = 0.0, 0, 0
    for t in np.unique(s)[::-1]:
        at = s == t
        dtp = int((y[at] == 1).sum())
        tp += dtp
        fp += int((y[at] == 0).sum())
        ap += dtp / p * tp / (tp + fp)
    return ap


def test_binary_hand_computed():
    y = np.array([1, 0, 1, 0])
    p = np.array([[0.9], [0.2], [0.4], [0.6]])
    m = finalize("binary", partial_stats("binary", y, p))
    assert m["count"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    expected_ll = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.4)) / 4
    assert m["log_loss"] == pytest.approx(expected_ll, rel=1e-12)
    # scores desc: .9(+) .6(-) .4(+) .2(-): 3 of 4 pos/neg pairs ordered right.
    assert m["roc_auc"] == pytest.approx(0.75, abs=1e-12)
    # AP: precision 1 at recall .5, precision 2/3 at recall 1.
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-12)


def test_binary_two_softmax_outputs_match_single_output():
    y = np.array([1, 0, 1, 0, 1])
    p1 = np.array([0.9, 0.2, 0.4, 0.6, 0.7])
    one = finalize("binary", partial_stats("binary", y, p1[:, None]))
    two = finalize("binary", partial_stats("binary", y, np.stack([1 - p1, p1], axis=1)))
    for k in one:
        assert two[k] == pytest.approx(one[k], abs=1e-12)


def test_log_loss_clips_probabilities():
    m = finalize("binary", partial_stats("binary", np.array([1, 0]), np.array([[0.0], [1.0]])))
    assert m["log_loss"] == pytest.approx(-math.log(1e-15), rel=1e-9)


@pytest.mark.parametrize("n", [50, 300, 2000])
def test_histogram_auc_close_to_exact(n):
    rng = np.random.default_rng(SEED + n)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.5 + 0.15 * (y - 0.5), 0.2), 0, 1)
    m = finalize("binary", partial_stats("binary", y, s[:, None]))
    assert m["roc_auc"] == pytest.approx(exact_roc_auc(y, s), abs=1e-3)
    assert m["pr_auc"] == pytest.approx(exact_average_precision(y, s), abs=1e-3)


def test_histogram_auc_exact_when_scores_on_bin_edges():
    y = np.array([1, 0, 0, 1, 1, 0, 1])
    s = np.array([0.5, 0.5, 0.25, 0.75, 0.25, 0.0, 1.0])  # ties across classes
    m = finalize("binary", partial_stats("binary", y, s[:, None], bins=4))
    assert m["roc_auc"] == pytest.approx(exact_roc_auc(y, s), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(exact_average_precision(y, s), abs=1e-12)


def test_perfect_and_inverted_classifiers():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    perfect = finalize("binary", partial_stats("binary", y, s[:, None]))
    inverted = finalize("binary", partial_stats("binary", y, 1 - s[:, None]))
    assert (perfect["roc_auc"], perfect["pr_auc"], perfect["accuracy"]) == (1.0, 1.0, 1.0)
    assert inverted["roc_auc"] == 0.0
    assert inverted["accuracy"] == 0.0


def test_one_class_labels_leave_auc_undefined():
    s = np.array([[0.1], [0.7], [0.4]])
    neg = finalize("binary", partial_stats("binary", np.zeros(3), s))
    pos = finalize("binary", partial_stats("binary", np.ones(3), s))
    assert neg["roc_auc"] is None and neg["pr_auc"] is None
    assert pos["roc_auc"] is None and pos["pr_auc"] == 1.0
    assert neg["accuracy"] == pytest.approx(2 / 3)


def test_empty_gives_none():
    m = finalize("binary", partial_stats("binary", np.zeros(0), np.zeros((0, 1)), np.zeros((0, 1))))
    assert m == {"count": 0, "accuracy": None, "log_loss": None, "roc_auc": None,
                 "pr_auc": None, "agreement": None}
    r = finalize("regression", partial_stats("regression", np.zeros(0), np.zeros(0)))
    assert r == {"count": 0, "rmse": None, "mae": None}


def test_multiclass_hand_computed():
    y = np.array([0, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    m = finalize("multiclass", partial_stats("multiclass", y, p))
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.6) + math.log(0.4)) / 3)
    assert set(m) == {"count", "accuracy", "log_loss"}


def test_regression_hand_computed():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    a = np.array([[1.5], [2.0], [2.0], [6.0]])  # errors .5 0 -1 2
    b = np.array([1.0, 2.0, 3.0, 4.0])          # a - b: .5 0 -1 2
    m = finalize("regression", partial_stats("regression", y, a, b))
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 4) / 4))
    assert m["mae"] == pytest.approx(3.5 / 4)
    assert m["rmse_between"] == pytest.approx(math.sqrt((0.25 + 1 + 4) / 4))


def test_agreement_counts_same_predicted_labels():
    y = np.array([0, 1, 1, 0])
    a = np.array([[0.2], [0.7], [0.6], [0.51]])   # labels 0 1 1 1
    b = np.array([[0.4], [0.9], [0.3], [0.5]])    # labels 0 1 0 0 (0.5 is not > 0.5)
    m = finalize("binary", partial_stats("binary", y, a, b))
    assert m["agreement"] == pytest.approx(0.5)


def test_merge_equals_whole():
    rng = np.random.default_rng(SEED)
    y = rng.integers(0, 3, 100)
    p = rng.dirichlet(np.ones(3), 100)
    q = rng.dirichlet(np.ones(3), 100)
    whole = finalize("multiclass", partial_stats("multiclass", y, p, q))
    parts = [partial_stats("multiclass", y[i:i + 13], p[i:i + 13], q[i:i + 13])
             for i in range(0, 100, 13)]
    merged = parts[0]
    for s in parts[1:]:
        merged = merge_stats(merged, s)
    got = finalize("multiclass", merged)
    for k in whole:
        assert got[k] == pytest.approx(whole[k], rel=1e-12)

    yb = rng.integers(0, 2, 100)
    s = rng.random((100, 1))
    whole_b = partial_stats("binary", yb, s)
    merged_b = merge_stats(partial_stats("binary", yb[:40], s[:40]),
                           partial_stats("binary", yb[40:], s[40:]))
    np.testing.assert_array_equal(merged_b["hist_pos"], whole_b["hist_pos"])
    np.testing.assert_array_equal(merged_b["hist_neg"], whole_b["hist_neg"])


def test_merge_rejects_mismatched_stats():
    a = partial_stats("binary", np.array([1]), np.array([[0.5]]))
    b = partial_stats("binary", np.array([1]), np.array([[0.5]]), np.array([[0.5]]))
    with pytest.raises(DataError, match="different keys"):
        merge_stats(a, b)
    c = partial_stats("binary", np.array([1]), np.array([[0.5]]), bins=10)
    with pytest.raises(DataError, match="'hist_pos' of shapes"):
        merge_stats(a, c)


def test_errors():
    with pytest.raises(ConfigError, match="'task' parameter must be one of"):
        partial_stats("ranking", np.zeros(1), np.zeros((1, 1)))
    with pytest.raises(ConfigError, match="'bins' parameter"):
        partial_stats("binary", np.zeros(1), np.zeros((1, 1)), bins=0)
    with pytest.raises(DataError, match="labels of a binary model must be integers in 0..1"):
        partial_stats("binary", np.array([2]), np.zeros((1, 1)))
    with pytest.raises(DataError, match="integers in 0..2; got 0.5"):
        partial_stats("multiclass", np.array([0.5]), np.full((1, 3), 1 / 3))
    with pytest.raises(DataError, match=r"outputs_a must have shape \(2, k\)"):
        partial_stats("binary", np.zeros(2), np.zeros((3, 1)))
    with pytest.raises(DataError, match="1 or 2 outputs"):
        partial_stats("binary", np.zeros(1), np.zeros((1, 3)))
    with pytest.raises(DataError, match=">= 2 outputs"):
        partial_stats("multiclass", np.zeros(1), np.zeros((1, 1)))
    with pytest.raises(DataError, match="regression model must have 1 output"):
        partial_stats("regression", np.zeros(1), np.zeros((1, 2)))
    with pytest.raises(DataError, match="outputs_b hold NaN or infinity in 1 row"):
        partial_stats("binary", np.zeros(2), np.zeros((2, 1)), np.array([[0.1], [np.nan]]))
    with pytest.raises(DataError, match="y_true holds NaN"):
        partial_stats("regression", np.array([np.nan]), np.zeros(1))
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        partial_stats("binary", np.zeros(1), np.array([[1.5]]))
    with pytest.raises(DataError, match=r"lack \['hist_neg', 'hist_pos'\]"):
        finalize("binary", partial_stats("multiclass", np.zeros(1), np.full((1, 2), 0.5)))
