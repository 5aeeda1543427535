"""spark_compress.core.metrics: hand-computed values, exact AUC by sorting, merging, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_compress.core.metrics import (class1_scores, finalize, finalize_ranking,
                                         merge_score_counts, merge_stats, partial_stats,
                                         ranking_block, ranking_metrics, score_counts)
from spark_compress.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

SEED = 20240607


def binary(y, p):
    """finalize with the exact ranking metrics of the class-1 scores, as evaluate_models does."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    return finalize("binary", partial_stats("binary", y, p),
                    ranking=ranking_metrics(y, class1_scores(p)))


def sklearn_pair(y, s):
    from sklearn.metrics import average_precision_score, roc_auc_score

    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def test_binary_hand_computed():
    y = np.array([1, 0, 1, 0])
    p = np.array([[0.9], [0.2], [0.4], [0.6]])
    m = binary(y, p)
    assert m["count"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    expected_ll = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.4)) / 4
    assert m["log_loss"] == pytest.approx(expected_ll, rel=1e-12)
    # scores desc: .9(+) .6(-) .4(+) .2(-): 3 of 4 pos/neg pairs ordered right.
    assert m["roc_auc"] == 0.75
    # AP: precision 1 at recall .5, precision 2/3 at recall 1.
    assert m["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-15)
    assert "undefined" not in m


def test_ties_count_one_half_by_hand():
    # desc: 0.8 {+, -}, 0.3 {+}, 0.1 {-, -}; 2 positives x 3 negatives = 6 pairs. pos@0.8 beats both 0.1 negatives (2) and ties the 0.8 negative (1/2); pos@0.3 beats the
    # two 0.1 negatives (2): 4.5 / 6.
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.8, 0.8, 0.3, 0.1, 0.1])
    m = ranking_metrics(y, s)
    assert m["roc_auc"] == 0.75
    # thresholds: 0.8 -> TP 1, FP 1 (precision 1/2, recall 1/2); 0.3 -> TP 2, FP 1 (2/3, 1).
    assert m["average_precision"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3, abs=1e-15)


def test_histogram_defect_of_issue_10_is_gone():
    # Issue #10: 10,000 equal-width bins put every score below 1e-4 into one bin, so a model
    # whose scores are all tiny got ROC AUC 0.5. The exact ranking separates them.
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([1e-9, 2e-9, 3e-9, 4e-9, 5e-9, 6e-9])
    assert ranking_metrics(y, s)["roc_auc"] == 1.0
    assert ranking_metrics(y, s)["average_precision"] == 1.0


@pytest.mark.parametrize("case", ["uniform", "ties", "extremes", "float32_saturated", "tiny"])
def test_ranking_equals_sklearn(case):
    rng = np.random.default_rng(SEED + len(case))
    n = 3000
    y = rng.integers(0, 2, n)
    if case == "uniform":
        s = np.clip(rng.normal(0.5 + 0.15 * (y - 0.5), 0.2), 0, 1)
    elif case == "ties":
        s = np.round(rng.random(n) * 0.6 + 0.3 * y, 1)
    elif case == "extremes":
        s = rng.choice([0.0, 1.0, 1e-300, 5e-324, 1 - 1e-16, 1 - 2 ** -53, 0.5, 1e-16], n)
    elif case == "float32_saturated":
        z = rng.normal(4 * (y - 0.5), 40).astype(np.float32)
        with np.errstate(over="ignore"):  # exp(-z) = inf gives the exact score 0
            s = (1 / (1 + np.exp(-z))).astype(np.float32).astype(np.float64)
    else:
        s = rng.random(n) ** 40 * 1e-6
    m = ranking_metrics(y, s)
    roc, ap = sklearn_pair(y, s)
    assert m["roc_auc"] == pytest.approx(roc, abs=1e-9, rel=0)
    assert m["average_precision"] == pytest.approx(ap, abs=1e-9, rel=0)


def test_blocks_with_prefix_totals_equal_one_block():
    """The distributed recipe: runs of the sorted distinct scores, each with the totals above it,
    added in any order, give the same areas as one block."""
    rng = np.random.default_rng(SEED)
    y = rng.integers(0, 2, 5000)
    s = np.round(rng.random(5000) + 0.2 * y, 3)
    parts = [score_counts(y[i:i + 700], s[i:i + 700]) for i in range(0, 5000, 700)]
    values, pos, neg = merge_score_counts(parts)
    whole_values, whole_pos, whole_neg = score_counts(y, s)
    np.testing.assert_array_equal(values, whole_values)
    np.testing.assert_array_equal(pos, whole_pos)
    np.testing.assert_array_equal(neg, whole_neg)
    pos, neg = pos[::-1], neg[::-1]
    cuts = [0, 1, 17, 400, 401, len(pos)]
    blocks, tp, fp = [], 0, 0
    for a, b in zip(cuts[:-1], cuts[1:]):
        blocks.append(ranking_block(pos[a:b], neg[a:b], tp_before=tp, fp_before=fp))
        tp, fp = tp + int(pos[a:b].sum()), fp + int(neg[a:b].sum())
    got = finalize_ranking(blocks[::-1])
    one = ranking_metrics(y, s)
    assert got["roc_auc"] == one["roc_auc"]  # exact integers: bit-identical
    assert got["average_precision"] == pytest.approx(one["average_precision"], abs=1e-15)
    roc, ap = sklearn_pair(y, s)
    assert got["roc_auc"] == pytest.approx(roc, abs=1e-9, rel=0)
    assert got["average_precision"] == pytest.approx(ap, abs=1e-9, rel=0)


def test_ranking_block_integers_beyond_int64():
    # 3e9 positives above 3e9 negatives: 9e18 pairs, past int64; the count stays exact.
    big = 3 * 10 ** 9
    blk = ranking_block(np.array([big, 0]), np.array([0, big]))
    assert blk["roc_twice"] == 2 * big * big
    assert finalize_ranking([blk])["roc_auc"] == 1.0
    tied = ranking_block(np.array([big]), np.array([big]), tp_before=big, fp_before=0)
    assert tied["roc_twice"] == 2 * big * big + big * big


def test_binary_two_softmax_outputs_match_single_output():
    y = np.array([1, 0, 1, 0, 1])
    p1 = np.array([0.9, 0.2, 0.4, 0.6, 0.7])
    one = binary(y, p1[:, None])
    two = binary(y, np.stack([1 - p1, p1], axis=1))
    for k in one:
        assert two[k] == pytest.approx(one[k], abs=1e-12)


def test_log_loss_clips_probabilities():
    m = finalize("binary", partial_stats("binary", np.array([1, 0]), np.array([[0.0], [1.0]])))
    assert m["log_loss"] == pytest.approx(-math.log(1e-15), rel=1e-9)


def test_perfect_and_inverted_classifiers():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    perfect = binary(y, s[:, None])
    inverted = binary(y, 1 - s[:, None])
    assert (perfect["roc_auc"], perfect["average_precision"], perfect["accuracy"]) == (1.0, 1.0,
                                                                                      1.0)
    assert inverted["roc_auc"] == 0.0
    assert inverted["accuracy"] == 0.0
    assert inverted["average_precision"] == pytest.approx(sklearn_pair(y, 1 - s)[1], abs=1e-15)


def test_one_class_labels_leave_metrics_undefined_with_reason():
    import warnings

    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.array([[0.1], [0.7], [0.4]])
    neg = binary(np.zeros(3), s)
    pos = binary(np.ones(3), s)
    assert neg["roc_auc"] is None and neg["average_precision"] is None
    assert neg["undefined"] == {
        "roc_auc": "ROC AUC needs both classes; only class 0 in the labels",
        "average_precision": "average precision needs a positive label; there is none"}
    assert pos["roc_auc"] is None and pos["average_precision"] == 1.0
    assert pos["undefined"] == {"roc_auc": "ROC AUC needs both classes; only class 1 in the "
                                           "labels"}
    assert neg["accuracy"] == pytest.approx(2 / 3)
    # What scikit-learn does in these cases (documented in core/metrics.py; null is reported).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(roc_auc_score(np.zeros(3), s[:, 0]))
        assert average_precision_score(np.zeros(3), s[:, 0]) == 0.0
        assert average_precision_score(np.ones(3), s[:, 0]) == 1.0


def test_empty_gives_none():
    empty = finalize_ranking([])
    m = finalize("binary", partial_stats("binary", np.zeros(0), np.zeros((0, 1)), np.zeros((0, 1))),
                 ranking=empty)
    assert m == {"count": 0, "accuracy": None, "log_loss": None, "roc_auc": None,
                 "average_precision": None, "agreement": None,
                 "undefined": {"roc_auc": "ROC AUC needs both classes; no rows",
                               "average_precision": "average precision needs a positive label; "
                                                    "there is none"}}
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
    m = binary(y, a) | {"agreement": finalize("binary", partial_stats("binary", y, a, b))[
        "agreement"]}
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


def test_merge_rejects_mismatched_stats():
    a = partial_stats("binary", np.array([1]), np.array([[0.5]]))
    b = partial_stats("binary", np.array([1]), np.array([[0.5]]), np.array([[0.5]]))
    with pytest.raises(DataError, match="different keys"):
        merge_stats(a, b)
    with pytest.raises(DataError, match="'count' of shapes"):
        merge_stats({"count": np.zeros(2)}, {"count": np.zeros(3)})


def test_errors():
    with pytest.raises(ConfigError, match="'task' parameter must be one of"):
        partial_stats("ranking", np.zeros(1), np.zeros((1, 1)))
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
    with pytest.raises(DataError, match=r"lack \['sae', 'sse'\]"):
        finalize("regression", partial_stats("multiclass", np.zeros(1), np.full((1, 2), 0.5)))
    with pytest.raises(ConfigError, match="binary models only; got task 'multiclass'"):
        finalize("multiclass", partial_stats("multiclass", np.zeros(1), np.full((1, 2), 0.5)),
                 ranking=finalize_ranking([]))
    with pytest.raises(DataError, match="labels of a binary model must be 0 or 1; got 2.0"):
        score_counts(np.array([2]), np.array([0.5]))
    with pytest.raises(DataError, match="scores hold NaN or infinity in 1 row"):
        score_counts(np.array([0, 1]), np.array([0.5, np.nan]))
    with pytest.raises(DataError, match="2 labels but 1 scores"):
        score_counts(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(DataError, match="same length; got 2 and 1"):
        ranking_block(np.array([1, 2]), np.array([1]))
    with pytest.raises(DataError, match="label counts must be >= 0"):
        ranking_block(np.array([-1]), np.array([1]))
