"""Batch scoring on floats and on folded feature codes (numpy core)."""

from __future__ import annotations

import numpy as np
import pytest

from spark_compress.core import quantize as Q
from spark_compress.core.model import Dense, Embedding, Model, forward, linear
from spark_compress.core.scoring import fold_codes, prepare, score, score_codes
from spark_compress.errors import ConfigError, DataError

pytestmark = pytest.mark.unit


def mlp(rng, sizes=(3, 5, 2), task="multiclass") -> Model:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        act = "relu" if i < len(sizes) - 2 else ("softmax" if task == "multiclass" else
                                                  "identity")
        layers.append(Dense(rng.normal(size=(a, b)).astype(np.float32),
                            rng.normal(size=b).astype(np.float32), act))
    return Model(task, tuple(layers), sizes[0])


def test_score_equals_forward_and_does_not_depend_on_batch_size(
    float32_forward_bound, within_float32_rounding
):
    """Each batch size within the float32 rounding bound of the float64 reference: BLAS may sum
    in another order for another batch shape, so bitwise equality is not promised."""
    rng = np.random.default_rng(0)
    model = mlp(rng)
    x = rng.normal(size=(23, 3)).astype(np.float32)
    reference, bound = float32_forward_bound(model, x)
    within_float32_rounding(forward(model, x), reference, bound)
    for bs in (1, 4, 23, 1000):
        out, valid = score(prepare(model), x, batch_size=bs)
        within_float32_rounding(out, reference, bound)
        assert valid.all()


def test_rows_with_null_nan_or_inf_are_not_scored():
    model = linear(np.array([1.0, 2.0]), 0.5, "regression")
    x = np.array([[1, 1], [np.nan, 0], [0, np.inf], [2, -1], [-np.inf, 0]], dtype=np.float32)
    out, valid = score(prepare(model), x)
    assert valid.tolist() == [True, False, False, True, False]
    # 1 + 2 + 0.5 and 2 - 2 + 0.5, by hand
    np.testing.assert_array_equal(out[valid, 0], np.array([3.5, 0.5], dtype=np.float32))
    assert np.isnan(out[~valid]).all()


def test_empty_batch():
    out, valid = score(prepare(mlp(np.random.default_rng(1))), np.zeros((0, 3), np.float32))
    assert out.shape == (0, 2) and valid.shape == (0,)


def test_embedding_models_and_bad_shapes_are_refused():
    emb = Embedding(np.ones((4, 2), np.float32), "city")
    m = Model("regression", (Dense(np.ones((3, 1), np.float32), None, "identity"),), 1,
              embeddings=(emb,))
    with pytest.raises(ConfigError, match="embedding table"):
        prepare(m)
    with pytest.raises(DataError, match=r"shape \(n, 3\); got shape \(2, 2\)"):
        score(prepare(mlp(np.random.default_rng(1))), np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="'batch_size' parameter must be an int >= 1"):
        score(prepare(mlp(np.random.default_rng(1))), np.zeros((2, 3)), batch_size=0)


def _quantizers():
    return [
        Q.choose_affine(-2.0, 6.0, method="minmax", bits=8),     # scale 8/255, zp 63.75
        Q.choose_affine(-3.0, 3.0, method="symmetric", bits=4),
        Q.choose_quantile(np.linspace(-1.0, 1.0, 2 * 4 + 1) ** 3, bits=2),
    ]


def test_fold_equals_scoring_the_decoded_floats():
    rng = np.random.default_rng(2)
    model = mlp(rng)
    qs = _quantizers()
    codes = np.stack([rng.integers(0, q.qmax + 1, size=50) for q in qs], axis=1)
    decoded = np.stack([Q.decode(q, codes[:, j]) for j, q in enumerate(qs)], axis=1)
    expected, _ = score(prepare(model), decoded.astype(np.float32))
    for bs in (7, 50):
        out, valid = score_codes(fold_codes(model, qs), codes, batch_size=bs)
        assert valid.all()
        np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)


def test_fold_by_hand_for_one_affine_column():
    # x = (code - 2) * 0.5; model z = 3x + 1  ->  z = 1.5 code - 2
    q = Q.AffineQuantizer("minmax", 2, 0.5, 2.0, -1.0, 0.5)
    scorer = fold_codes(linear(np.array([3.0]), 1.0, "regression"), [q])
    np.testing.assert_allclose(scorer.fold.weight, [[1.5]])
    np.testing.assert_allclose(scorer.fold.bias, [-2.0])
    out, valid = score_codes(scorer, np.array([[0], [3], [-1]]))
    np.testing.assert_allclose(out[:2, 0], [-2.0, 2.5])
    assert valid.tolist() == [True, True, False]


def test_special_and_null_codes_are_not_scored_like_their_decoded_floats():
    rng = np.random.default_rng(3)
    model, qs = mlp(rng), _quantizers()
    codes = np.array([[10, 3, 1], [Q.CODE_NAN, 3, 1], [10, Q.CODE_POSINF, 1],
                      [10, 3, Q.CODE_NEGINF]])
    decoded = np.stack([Q.decode(q, codes[:, j]) for j, q in enumerate(qs)], axis=1)
    f_out, f_valid = score(prepare(model), decoded)
    c_out, c_valid = score_codes(fold_codes(model, qs), codes)
    assert f_valid.tolist() == c_valid.tolist() == [True, False, False, False]
    np.testing.assert_allclose(c_out[0], f_out[0], atol=2e-6)


def test_codes_above_qmax_are_invalid_and_dictionary_inputs_are_refused():
    rng = np.random.default_rng(4)
    model, qs = mlp(rng), _quantizers()
    _, valid = score_codes(fold_codes(model, qs), np.array([[0, 0, 4], [0, 16, 3], [0, 0, 3]]))
    assert valid.tolist() == [False, False, True]  # 4 > qmax 3 of input 2, 16 > 15 of input 1
    d = Q.choose_dictionary(["a", "b"], [5, 3], max_categories=10)
    with pytest.raises(ConfigError, match=r"model input 'c' is encoded with DictionaryEncoder"):
        fold_codes(model, [qs[0], qs[1], d], names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="takes 3 inputs but 2 column codebook"):
        fold_codes(model, qs[:2])
    with pytest.raises(ConfigError, match="takes feature codes: use score_codes"):
        score(fold_codes(model, qs), np.zeros((1, 3)))
