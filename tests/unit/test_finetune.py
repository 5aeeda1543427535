"""Fine-tuning with fixed pruning masks, and prune -> fine-tune -> quantize."""

from __future__ import annotations

import numpy as np
import pytest

from spark_compress.core.compress import LayerPlan, Plan, compress, decompress, sparsity
from spark_compress.core.finetune import (
    _kept,
    finetune,
    loss_and_gradients,
    prune_finetune_compress,
)
from spark_compress.core.model import Dense, Embedding, Model, forward
from spark_compress.errors import ConfigError, DataError

pytestmark = pytest.mark.unit


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0, 0.7, size=shape).astype(np.float32)


def _net(sizes: list[int], acts: list[str], task: str, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    layers = tuple(
        Dense(_rand(rng, a, b), _rand(rng, b), act)
        for a, b, act in zip(sizes[:-1], sizes[1:], acts)
    )
    return Model(task, layers, sizes[0])


def _with_params(model: Model, flat: list[np.ndarray]) -> Model:
    layers, it = [], iter(flat)
    for l in model.layers:
        w = next(it)
        b = None if l.bias is None else next(it)
        layers.append(Dense(w, b, l.activation))
    return Model(model.task, tuple(layers), model.n_features)


def _max_rel_error(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    """Largest relative error of the analytic gradient against central differences, float64."""
    model = _with_params(model, [np.asarray(t, np.float64) for l in model.layers
                                 for t in (l.weight, l.bias) if t is not None])
    _, grads = loss_and_gradients(model, x, y, dtype=np.float64)
    analytic = [g for gw, gb in grads for g in (gw, gb) if g is not None]
    flat = [t.copy() for l in model.layers for t in (l.weight, l.bias) if t is not None]
    eps, worst = 1e-6, 0.0
    for j, t in enumerate(flat):
        for k in np.ndindex(t.shape):
            plus = [f.copy() for f in flat]
            minus = [f.copy() for f in flat]
            plus[j][k] += eps
            minus[j][k] -= eps
            lp, _ = loss_and_gradients(_with_params(model, plus), x, y, dtype=np.float64)
            lm, _ = loss_and_gradients(_with_params(model, minus), x, y, dtype=np.float64)
            num = (lp - lm) / (2 * eps)
            ana = analytic[j][k]
            worst = max(worst, abs(num - ana) / max(abs(num), abs(ana), 1e-8))
    return worst


# --------------------------------------------------------------------------- gradients


def test_gradient_softmax_3_4_2_matches_finite_differences():
    model = _net([3, 4, 2], ["tanh", "softmax"], "multiclass", seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 3))
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    assert _max_rel_error(model, x, y) < 1e-3


def test_gradient_sigmoid_3_2_1_matches_finite_differences():
    model = _net([3, 2, 1], ["sigmoid", "sigmoid"], "binary", seed=3)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3))
    y = np.array([1, 0, 1, 1, 0, 0])
    assert _max_rel_error(model, x, y) < 1e-3


def test_gradient_regression_relu_matches_finite_differences():
    model = _net([3, 4, 2], ["relu", "identity"], "regression", seed=5)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, 3))
    y = rng.normal(size=(5, 2))
    assert _max_rel_error(model, x, y) < 1e-3


def test_softmax_loss_hand_computed():
    # One layer, zero weights: p = 1/2 for each class, loss = log 2.
    model = Model("binary", (Dense(np.zeros((2, 2), np.float32), None, "softmax"),), 2)
    loss, grads = loss_and_gradients(model, np.ones((4, 2)), np.array([0, 1, 0, 1]))
    assert loss == pytest.approx(np.log(2), rel=1e-6)
    assert grads[0][1] is None


# --------------------------------------------------------------------------- finetune


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 1).astype(np.int64)
    model = _net([6, 16, 3], ["relu", "softmax"], "multiclass", seed=seed)
    return model, x, y


def _masks(model: Model, fraction: float) -> list[np.ndarray]:
    rng = np.random.default_rng(9)
    return [rng.random(l.shape) >= fraction for l in model.layers]


def test_finetune_reduces_training_loss():
    model, x, y = _problem()
    masks = _masks(model, 0.5)
    masked = finetune(model, masks, x, y, epochs=0)
    before, _ = loss_and_gradients(masked, x, y)
    tuned = finetune(model, masks, x, y, epochs=20, batch_size=32, lr=1e-2)
    after, _ = loss_and_gradients(tuned, x, y)
    assert after < 0.8 * before


def test_masked_weights_stay_exactly_zero():
    model, x, y = _problem()
    masks = _masks(model, 0.7)
    tuned = finetune(model, masks, x, y, epochs=3, batch_size=50, lr=1e-2)
    for layer, m, orig in zip(tuned.layers, masks, model.layers):
        assert layer.weight.dtype == np.float32
        assert np.all(layer.weight[~m] == 0.0)
        assert not np.array_equal(layer.weight[m], orig.weight[m])  # the survivors trained


def test_none_mask_trains_every_weight():
    model, x, y = _problem()
    tuned = finetune(model, [None, None], x, y, epochs=1)
    assert np.count_nonzero(tuned.layers[0].weight) == tuned.layers[0].weight.size


def test_finetune_is_deterministic_for_a_seed():
    model, x, y = _problem()
    masks = _masks(model, 0.5)
    a = finetune(model, masks, x, y, epochs=2, batch_size=64, seed=7)
    b = finetune(model, masks, x, y, epochs=2, batch_size=64, seed=7)
    c = finetune(model, masks, x, y, epochs=2, batch_size=64, seed=8)
    # Bitwise on purpose: the same calls on the same arrays in one process take the same BLAS
    # path, and byte-identical model files for the same seed are a promise of the project.
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.weight, lb.weight)
        assert np.array_equal(la.bias, lb.bias)
    assert not np.array_equal(a.layers[0].weight, c.layers[0].weight)


def test_finetune_binary_sigmoid_and_regression_reduce_loss():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    yb = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    binary = _net([4, 8, 1], ["tanh", "sigmoid"], "binary", seed=2)
    yr = (x @ np.array([1.0, -2.0, 0.5, 0.0])).astype(np.float32)
    reg = _net([4, 8, 1], ["relu", "identity"], "regression", seed=3)
    for model, y in ((binary, yb), (reg, yr)):
        before, _ = loss_and_gradients(model, x, y)
        after, _ = loss_and_gradients(
            finetune(model, [None, None], x, y, epochs=10, batch_size=32, lr=1e-2), x, y)
        assert after < 0.7 * before


# ------------------------------------------------------------------------- prune, retrain, quantize


@pytest.mark.parametrize("quantize", ["none", "int8", "int4", "kmeans"])
@pytest.mark.parametrize("global_prune", [False, True])
def test_prune_finetune_compress_keeps_the_same_mask_and_sparsity(quantize, global_prune):
    model, x, y = _problem()
    plan = Plan(default=LayerPlan(prune=0.75, quantize=quantize), global_prune=global_prune)
    cm = prune_finetune_compress(model, plan, x, y, epochs=2, batch_size=64, lr=1e-2)
    ref = compress(model, plan)
    for lc, lr in zip(cm.layers, ref.layers):
        assert np.array_equal(lc.w.indices, lr.w.indices)
    if not global_prune:
        for layer in cm.layers:
            assert layer.w.indices.size == round(0.25 * np.prod(layer.shape))
        for i, frac in sparsity(cm).items():
            assert frac >= 0.75  # quantizing may zero a few more kept weights, never fewer
    assert sum(l.w.indices.size for l in cm.layers) == sum(
        round(0.25 * np.prod(l.shape)) for l in model.layers)


def test_prune_finetune_compress_improves_on_pruning_alone():
    model, x, y = _problem()
    plan = Plan(default=LayerPlan(prune=0.8, quantize="int8"))
    plain, _ = loss_and_gradients(decompress(compress(model, plan)), x, y)
    cm = prune_finetune_compress(model, plan, x, y, epochs=10, batch_size=32, lr=1e-2)
    tuned, _ = loss_and_gradients(decompress(cm), x, y)
    assert tuned < plain


def test_prune_finetune_compress_structured_keeps_neurons():
    model, x, y = _problem()
    plan = Plan(default=LayerPlan(prune=0.5, structured=True, quantize="int8"),
                layers={1: LayerPlan(prune=0.5, quantize="int8")})
    cm = prune_finetune_compress(model, plan, x, y, epochs=2)
    ref = compress(model, plan)
    assert cm.layers[0].shape == ref.layers[0].shape == (6, 8)
    assert np.array_equal(cm.layers[0].kept_neurons, ref.layers[0].kept_neurons)
    assert cm.layers[0].w.indices is None
    assert np.array_equal(cm.layers[1].w.indices, ref.layers[1].w.indices)


def test_double_labels_with_integer_values_train_like_integer_labels():
    # MLlib tables hold class labels as doubles (0.0, 1.0, 2.0).
    model, x, y = _problem()
    as_int = finetune(model, [None, None], x, y, epochs=2, batch_size=64)
    for dtype in (np.float64, np.float32):
        as_double = finetune(model, [None, None], x, y.astype(dtype), epochs=2, batch_size=64)
        for a, b in zip(as_int.layers, as_double.layers):
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    binary = _net([6, 1], ["sigmoid"], "binary")
    yb = (x[:, 0] > 0).astype(np.float64)
    tuned = finetune(binary, [None], x, yb, epochs=1)
    assert not np.array_equal(tuned.layers[0].weight, binary.layers[0].weight)


def test_bias_correction_after_finetuning_aims_at_the_finetuned_model():
    # One identity layer y = x @ w + b, w = (1, 0.5), b = 0, fine-tuned on targets whose offset
    # is 5: the tuned bias moves far from 0. int8 quantizes the tuned weights to w_q, so the
    # correction towards the tuned model is, by hand, b' = b_t + mean(x) @ (w_t - w_q), a few
    # thousandths from b_t. Aiming at the pre-fine-tune model would give b0 + mean(x) @ (w0 -
    # w_q) instead, which is ~5 away and undoes the tuning of the bias.
    model = Model("regression", (Dense(np.array([[1.0], [0.5]], np.float32),
                                       np.zeros(1, np.float32), "identity"),), 2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(256, 2)).astype(np.float32)
    y = x @ np.array([1.2, 0.3], np.float32) + 5.0
    opts = dict(epochs=40, batch_size=32, lr=0.05, seed=1)
    plan = Plan(default=LayerPlan(quantize="int8"))
    tuned = finetune(model, [None], x, y, **opts)
    w_t, b_t = tuned.layers[0].weight[:, 0].astype(np.float64), float(tuned.layers[0].bias[0])
    assert b_t > 4.0  # the tuning moved the bias: the two references really differ
    x_calib = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)  # mean (2, 3)
    cm = prune_finetune_compress(model, plan, x, y, **opts, x_calib=x_calib)
    w_q = cm.layers[0].weight()[:, 0].astype(np.float64)
    assert np.array_equal(w_q, decompress(compress(tuned, plan)).layers[0].weight[:, 0])
    expected = b_t + 2.0 * (w_t[0] - w_q[0]) + 3.0 * (w_t[1] - w_q[1])
    assert float(cm.layers[0].bias[0]) == pytest.approx(expected, abs=1e-5)
    wrong = 0.0 + 2.0 * (1.0 - w_q[0]) + 3.0 * (0.5 - w_q[1])
    assert abs(float(cm.layers[0].bias[0]) - wrong) > 4.0
    # The corrected compressed model's mean output on the batch is the tuned model's.
    assert forward(decompress(cm), x_calib).mean() == pytest.approx(
        forward(tuned, x_calib).mean(), abs=1e-5)


def test_bias_correction_after_structured_finetuning_uses_the_narrow_tuned_layers():
    model, x, y = _problem()
    plan = Plan(default=LayerPlan(prune=0.5, structured=True, quantize="int8"),
                layers={1: LayerPlan(quantize="int8")})
    plain = prune_finetune_compress(model, plan, x, y, epochs=2)
    cm = prune_finetune_compress(model, plan, x, y, epochs=2, x_calib=x[:50])
    assert cm.layers[0].shape == (6, 8)
    assert np.array_equal(cm.layers[0].kept_neurons, plain.layers[0].kept_neurons)
    # Layer 0's mean pre-activation equals the fine-tuned (narrow) model's; the tuned model is
    # the float model of the first pass, retrained.
    first = compress(model, Plan(default=LayerPlan(prune=0.5, structured=True),
                                 layers={1: LayerPlan()}))
    tuned = finetune(decompress(first), [_kept(l.w) for l in first.layers], x, y, epochs=2)
    xc = x[:50].astype(np.float64)
    z_ref = xc @ tuned.layers[0].weight + tuned.layers[0].bias
    z_cm = xc @ cm.layers[0].weight() + cm.layers[0].bias
    np.testing.assert_allclose(z_cm.mean(axis=0), z_ref.mean(axis=0), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- errors


def test_error_embeddings_are_refused():
    table = np.ones((3, 2), np.float32)
    model = Model("regression", (Dense(np.ones((3, 1), np.float32), None, "identity"),), 1,
                  embeddings=(Embedding(table, "cat"),))
    with pytest.raises(ConfigError, match=r"does not train embedding tables.*\['cat'\]"):
        finetune(model, [None], np.ones((2, 1)), np.ones(2))


def test_error_masks_wrong_count_and_shape():
    model, x, y = _problem()
    with pytest.raises(ConfigError, match=r"masks must be a sequence of 2 entries.*got 1"):
        finetune(model, [None], x, y)
    with pytest.raises(ConfigError, match=r"masks\[1\] has shape \(3, 3\).*\(16, 3\)"):
        finetune(model, [None, np.ones((3, 3), bool)], x, y)
    with pytest.raises(ConfigError, match=r"masks\[0\] must be boolean or 0/1"):
        finetune(model, [np.full((6, 16), 0.5), None], x, y)


def test_error_labels_and_features():
    model, x, y = _problem()
    with pytest.raises(DataError,
                       match=r"label 3 is out of range .* 3 classes \(valid labels: 0..2\)"):
        finetune(model, [None, None], x, np.where(y == 2, 3, y))
    with pytest.raises(DataError, match=r"labels must have shape \(400,\)"):
        finetune(model, [None, None], x, y[:10])
    frac = y.astype(np.float64)
    frac[7] = 1.5
    with pytest.raises(DataError, match=r"labels must be integer class values 0..2; row 7 holds "
                                        r"1.5, which is not a whole number"):
        finetune(model, [None, None], x, frac)
    frac[7] = np.nan
    with pytest.raises(DataError, match=r"row 7 holds nan, which is not a whole number"):
        finetune(model, [None, None], x, frac)
    with pytest.raises(DataError, match=r"labels must be integers 0..2; got dtype <U"):
        finetune(model, [None, None], x, y.astype(str))
    with pytest.raises(DataError,
                       match=r"features must have shape \(n >= 1, 6\); got shape \(400, 5\)"):
        finetune(model, [None, None], x[:, :5], y)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match=r"NaN or infinity"):
        finetune(model, [None, None], bad, y)
    reg = _net([6, 2], ["identity"], "regression")
    with pytest.raises(DataError, match=r"targets must have shape \(400, 2\)"):
        finetune(reg, [None], x, np.ones(400))


def test_error_binary_label_out_of_range():
    model = _net([3, 1], ["sigmoid"], "binary")
    with pytest.raises(DataError, match=r"label -1 is out of range .*valid labels: 0..1"):
        finetune(model, [None], np.ones((2, 3)), np.array([0, -1]))


@pytest.mark.parametrize("kw, match", [
    ({"epochs": -1}, r"'epochs' parameter must be an int >= 0. Got -1"),
    ({"batch_size": 0}, r"'batch_size' parameter must be an int >= 1. Got 0"),
    ({"lr": 0.0}, r"'lr' parameter must be a float > 0. Got 0.0"),
    ({"seed": -2}, r"'seed' parameter must be an int >= 0. Got -2"),
])
def test_error_options(kw, match):
    model, x, y = _problem()
    with pytest.raises(ConfigError, match=match):
        finetune(model, [None, None], x, y, **kw)


def test_error_low_rank_plan_is_refused():
    model, x, y = _problem()
    with pytest.raises(ConfigError, match=r"does not fine-tune low-rank factors; layers \[0\]"):
        prune_finetune_compress(model, Plan(layers={0: LayerPlan(rank=2)}), x, y)


def test_error_plan_type():
    model, x, y = _problem()
    with pytest.raises(ConfigError, match=r"plan must be a Plan, got dict"):
        prune_finetune_compress(model, {}, x, y)
