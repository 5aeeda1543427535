"""spark_compress.core.model: hand-computed forward passes, stability, validation errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_compress.core.model import (
    Dense,
    Embedding,
    Model,
    forward,
    linear,
    mlp_from_mllib_flat,
    predict,
    sigmoid,
    softmax,
    validate,
)
from spark_compress.errors import ConfigError, DataError, FormatError, SchemaError

pytestmark = pytest.mark.unit

SEED = 20240601


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def tiny_net(task: str = "regression", head: str = "identity") -> Model:
    """2-2-1: relu hidden layer, then one output."""
    hidden = Dense(f32([[1, -1], [2, 0.5]]), f32([0, 1]), "relu")
    out = Dense(f32([[1], [-2]]), f32([0.5]), head)
    return Model(task, (hidden, out), 2)


X3 = f32([[1, 1], [0, -1], [2, 0]])
# By hand: z1 = x @ W1 + b1 -> relu -> h @ W2 + b2
#   [1, 1]:  z1 = [3, 0.5]  -> [3, 0.5] -> 3 - 1 + 0.5 = 2.5
#   [0, -1]: z1 = [-2, 0.5] -> [0, 0.5] -> 0 - 1 + 0.5 = -0.5
#   [2, 0]:  z1 = [2, -1]   -> [2, 0]   -> 2 - 0 + 0.5 = 2.5
LOGITS3 = [2.5, -0.5, 2.5]


# --------------------------------------------------------------------------- forward by hand


def test_two_two_one_network_by_hand():
    out = forward(tiny_net(), X3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, f32([[2.5], [-0.5], [2.5]]), rtol=0, atol=1e-6)


def test_two_two_one_binary_head_gives_sigmoid_probabilities_and_labels():
    model = tiny_net("binary", "sigmoid")
    out = forward(model, X3)
    expected = [[1 / (1 + math.exp(-z))] for z in LOGITS3]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(predict(model, out), [1, 0, 1])


def test_no_bias_and_tanh():
    model = Model("regression", (Dense(f32([[1.0], [-1.0]]), None, "tanh"),), 2)
    np.testing.assert_allclose(forward(model, X3), [[0.0], [math.tanh(1.0)], [math.tanh(2.0)]],
                               rtol=1e-6, atol=1e-7)


def test_logistic_regression_matches_formula():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    w = np.array([0.5, -1.25, 2.0, 0.0])
    b = -0.3
    model = linear(w, b, "binary")
    expected = 1 / (1 + np.exp(-(x.astype(np.float64) @ w + b)))
    out = forward(model, x)
    assert out.shape == (50, 1)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(predict(model, out), (expected > 0.5).astype(int))


def test_linear_regression_and_multinomial():
    x = f32([[1, 2], [3, -1]])
    reg = linear(f32([2, -1]), 0.5, "regression")
    np.testing.assert_allclose(forward(reg, x), [[0.5], [7.5]])
    multi = linear(f32([[1, 0, 0], [0, 1, 0]]), f32([0, 0, 1]), "multiclass")
    # logits row 0: [1, 2, 1]; row 1: [3, -1, 1]
    e0 = np.exp([1.0, 2.0, 1.0])
    e1 = np.exp([3.0, -1.0, 1.0])
    expected = np.stack([e0 / e0.sum(), e1 / e1.sum()])
    out = forward(multi, x)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(predict(multi, out), [1, 0])


def test_softmax_rows_sum_to_one_and_stable_for_large_logits():
    z = f32([[1000, 1001], [-1000, -1001], [0, 0], [1, 2]])
    p = softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    e = 1 / (1 + math.exp(1))  # softmax([0, 1])[0]
    np.testing.assert_allclose(p[0], [e, 1 - e], rtol=1e-6)
    np.testing.assert_allclose(p[1], [1 - e, e], rtol=1e-6)
    np.testing.assert_allclose(p[2], [0.5, 0.5])


def test_softmax_model_with_large_logits():
    model = linear(f32([[1000, 1001]]), None, "multiclass")
    out = forward(model, f32([[1.0]]))
    e = 1 / (1 + math.exp(1))
    np.testing.assert_allclose(out, [[e, 1 - e]], rtol=1e-6)


def test_sigmoid_stable_at_extremes():
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s = sigmoid(f32([-1000, -20, 0, 20, 1000]))
    np.testing.assert_allclose(s, [0.0, 1 / (1 + math.exp(20)), 0.5, 1 / (1 + math.exp(-20)), 1.0],
                               rtol=1e-6)
    assert s.dtype == np.float32


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "tanh", "identity"])
def test_batch_size_changes_results_only_within_float32_rounding(
    head, float32_forward_bound, within_float32_rounding
):
    """BLAS may sum a row's dot products in another order for another batch shape (1.5e-7 apart
    was seen), so each batch size is held to the float64 reference within the float32 error
    bound, which any summation order meets; a row scored with another row's inputs, or a batch
    seam dropping or repeating rows, is off by orders of magnitude more."""
    rng = np.random.default_rng(SEED)
    layers = [6, 8, 5, 3]
    n_w = sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))
    model = mlp_from_mllib_flat(layers, rng.normal(size=n_w))
    if head != "softmax":
        last = model.layers[-1]
        model = Model("regression", (*model.layers[:-1], Dense(last.weight, last.bias, head)), 6)
    x = rng.normal(size=(103, 6)).astype(np.float32)
    reference, bound = float32_forward_bound(model, x)
    # The bound is a worst case over all summation orders (about 500x the differences seen),
    # still small enough that a row scored with a neighbour's inputs falls outside it.
    assert bound.max() < 1e-4
    assert np.abs(reference[1:] - reference[:-1]).max(axis=1).min() > 2 * bound.max()
    for bs in (None, 1, 7, 50, 103, 1000):
        within_float32_rounding(forward(model, x, batch_size=bs), reference, bound)


def _openblas_kernels() -> list[str]:
    """OpenBLAS kernels this CPU can run (OPENBLAS_CORETYPE): each sums dot products its own
    way. Under Haswell's the batch sizes of the test above differ by up to 1.49e-7."""
    try:
        flags = set(open("/proc/cpuinfo", encoding="ascii").read().split())
    except OSError:
        flags = set()
    return ["Prescott"] + (["Sandybridge"] if "avx" in flags else []) + (
        ["Haswell"] if "avx2" in flags else [])


_KERNEL_RUN = """
import sys
import numpy as np
from spark_compress.core.model import forward, mlp_from_mllib_flat
flat, x = np.load(sys.argv[1]), np.load(sys.argv[2])
model = mlp_from_mllib_flat([6, 8, 5, 3], flat)
np.save(sys.argv[3], np.stack([forward(model, x, batch_size=bs) for bs in (1, 7, 103)]))
"""


@pytest.mark.parametrize("kernel", _openblas_kernels())
def test_other_blas_kernels_stay_within_float32_rounding(
    kernel, tmp_path, float32_forward_bound, within_float32_rounding
):
    """The same model and rows in a process whose numpy uses another OpenBLAS kernel (where
    numpy's BLAS is not OpenBLAS the variable is ignored and the default kernel is checked)."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(SEED)
    flat = rng.normal(size=sum(a * b + b for a, b in zip([6, 8, 5], [8, 5, 3])))
    x = rng.normal(size=(103, 6)).astype(np.float32)
    np.save(tmp_path / "flat.npy", flat)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, OPENBLAS_CORETYPE=kernel)
    done = subprocess.run([sys.executable, "-c", _KERNEL_RUN, str(tmp_path / "flat.npy"),
                           str(tmp_path / "x.npy"), str(tmp_path / "out.npy")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reference, bound = float32_forward_bound(mlp_from_mllib_flat([6, 8, 5, 3], flat), x)
    for out in np.load(tmp_path / "out.npy"):
        within_float32_rounding(out, reference, bound)


def test_empty_batch_gives_zero_rows():
    out = forward(tiny_net(), np.zeros((0, 2), dtype=np.float32), batch_size=4)
    assert out.shape == (0, 1) and out.dtype == np.float32
    multi = linear(f32([[1, 0, 0], [0, 1, 0]]), None, "multiclass")
    assert forward(multi, np.zeros((0, 2))).shape == (0, 3)
    assert predict(multi, np.zeros((0, 3))).shape == (0,)


def test_predict_ties_take_first_class_and_threshold_is_strict():
    multi = linear(f32([[1, 0, 0], [0, 1, 0]]), None, "multiclass")
    np.testing.assert_array_equal(predict(multi, f32([[0.4, 0.4, 0.2]])), [0])
    binary = linear(f32([1, 1]), None, "binary")
    np.testing.assert_array_equal(predict(binary, f32([[0.5], [0.5001]])), [0, 1])


# --------------------------------------------------------------------------- embeddings


TABLE = f32([[0, 0], [1, 2], [3, 4], [-1, 1]])


def embed_model(combiner: str) -> Model:
    # Identity layer on [x, emb] so the output shows the first layer's input.
    return Model("regression", (Dense(np.eye(3, dtype=np.float32), None, "identity"),), 1,
                 embeddings=(Embedding(TABLE, "item", combiner),), input_names=("price",))


@pytest.mark.parametrize(
    "combiner, expected",
    [
        # bags [1, 2] and [0, 3]
        ("mean", [[10, 2, 3], [20, -0.5, 0.5]]),
        ("sum", [[10, 4, 6], [20, -1, 1]]),
        ("first", [[10, 1, 2], [20, 0, 0]]),
    ],
)
def test_embedding_bag_combiners_by_hand(combiner, expected):
    out = forward(embed_model(combiner), f32([[10], [20]]), {"item": np.array([[1, 2], [0, 3]])})
    np.testing.assert_allclose(out, expected)


def test_embedding_single_id_per_row_and_batching():
    model = embed_model("mean")
    ids = {"item": np.array([3, 1, 2])}
    out = forward(model, f32([[1], [2], [3]]), ids, batch_size=2)
    np.testing.assert_allclose(out, [[1, -1, 1], [2, 1, 2], [3, 3, 4]])


def test_embedding_out_of_range_id_names_embedding_and_id():
    model = embed_model("mean")
    with pytest.raises(DataError, match=r"id 4 is out of range for embedding 'item'.*0\.\.3"):
        forward(model, f32([[1], [2]]), {"item": np.array([[1, 2], [4, 0]])})
    with pytest.raises(DataError, match=r"id -1 is out of range for embedding 'item'"):
        forward(model, f32([[1]]), {"item": np.array([-1])})


def test_embedding_ids_missing_unknown_or_badly_typed():
    model = embed_model("mean")
    x = f32([[1]])
    with pytest.raises(SchemaError, match=r"missing for the embedding input\(s\) \['item'\]"):
        forward(model, x)
    with pytest.raises(SchemaError, match=r"ids given for \['user'\]"):
        forward(model, x, {"item": np.array([0]), "user": np.array([0])})
    with pytest.raises(SchemaError, match=r"ids of embedding 'item' must be integers"):
        forward(model, x, {"item": np.array([0.0])})
    with pytest.raises(DataError, match=r"ids of embedding 'item' must have shape \(1,\)"):
        forward(model, x, {"item": np.array([0, 1])})


# --------------------------------------------------------------------------- validation


def test_valid_models_pass():
    validate(tiny_net())
    validate(embed_model("sum"))


def test_layers_that_do_not_chain_name_the_layer_and_shapes():
    hidden = Dense(f32(np.ones((2, 3))), f32(np.zeros(3)), "relu")
    out = Dense(f32(np.ones((2, 1))), None, "identity")
    message = r"layers\[1\]\.weight has shape \(2, 1\).*layers\[0\] gives 3"
    with pytest.raises(FormatError, match=message):
        validate(Model("regression", (hidden, out), 2))
    with pytest.raises(FormatError, match=r"layers\[0\]\.weight has shape \(2, 3\).*gives 4"):
        validate(Model("regression", (hidden, out), 4))


def test_first_layer_counts_embedding_dims():
    bad = Model("regression", (Dense(f32(np.ones((1, 1))), None, "identity"),), 1,
                embeddings=(Embedding(TABLE, "item"),))
    with pytest.raises(FormatError, match=r"layers\[0\].*n_features \+ embedding dims\) gives 3"):
        validate(bad)


def test_wrong_bias_shape():
    layer = Dense(f32(np.ones((2, 3))), f32(np.zeros(2)), "identity")
    with pytest.raises(FormatError, match=r"layers\[0\]\.bias has shape \(2,\).*needs \(3,\)"):
        validate(Model("regression", (layer,), 2))


def test_unknown_activation_task_and_combiner():
    layer = Dense(f32(np.ones((2, 1))), None, "gelu")
    with pytest.raises(ConfigError, match=r"layers\[0\]\.activation must be one of .* 'gelu'"):
        validate(Model("regression", (layer,), 2))
    with pytest.raises(ConfigError, match=r"task must be one of .* 'ranking'"):
        validate(Model("ranking", tiny_net().layers, 2))
    with pytest.raises(ConfigError, match=r"embeddings\[0\] \('item'\)\.combiner .* 'max'"):
        validate(embed_model("max"))


@pytest.mark.parametrize(
    "task, out, act, message",
    [
        ("binary", 1, "identity", r"layers\[1\] \(the output layer, shape \(2, 1\), identity\) "
                                  r"does not fit a binary model"),
        ("binary", 3, "softmax", r"layers\[1\].*shape \(2, 3\).*binary"),
        ("binary", 2, "sigmoid", r"layers\[1\].*binary"),
        ("multiclass", 3, "sigmoid",
         r"layers\[1\].*multiclass model: it needs >= 2 outputs with softmax"),
        ("multiclass", 1, "softmax", r"layers\[1\].*multiclass"),
        ("regression", 2, "softmax", r"layers\[1\].*softmax, which does not fit a regression"),
    ],
)
def test_last_layer_must_fit_task(task, out, act, message):
    hidden = Dense(f32(np.ones((2, 2))), None, "relu")
    head = Dense(f32(np.ones((2, out))), None, act)
    with pytest.raises(FormatError, match=message):
        validate(Model(task, (hidden, head), 2))


def test_bad_parameters_and_inputs():
    with pytest.raises(FormatError, match=r"layers\[0\]\.weight .* contains NaN"):
        validate(Model("regression", (Dense(f32([[np.nan]]), None, "identity"),), 1))
    with pytest.raises(FormatError, match=r"layers\[0\]\.weight must be a float numpy array"):
        validate(Model("regression", (Dense(np.ones((1, 1), dtype=int), None, "identity"),), 1))
    with pytest.raises(FormatError, match=r"model has no layers"):
        validate(Model("regression", (), 1))
    with pytest.raises(FormatError, match=r"input_names has 1 names but n_features is 2"):
        validate(Model("regression", tiny_net().layers, 2, input_names=("a",)))
    message = r"embeddings\[1\] \('item'\): the id input 'item' feeds two"
    with pytest.raises(FormatError, match=message):
        validate(Model("regression", (Dense(f32(np.ones((4, 1))), None, "identity"),), 0,
                       embeddings=(Embedding(TABLE, "item"), Embedding(TABLE, "item"))))
    with pytest.raises(DataError, match=r"features must have shape \(n, 2\); got shape \(3,\)"):
        forward(tiny_net(), f32([1, 2, 3]))
    with pytest.raises(ConfigError, match=r"'batch_size' parameter must be an int >= 1"):
        forward(tiny_net(), X3, batch_size=0)
    with pytest.raises(ConfigError, match=r"for a regression model the outputs of forward"):
        predict(tiny_net(), f32([[1.0]]))
    with pytest.raises(DataError, match=r"outputs must have shape \(n, 1\); got shape \(2, 2\)"):
        predict(tiny_net("binary", "sigmoid"), np.zeros((2, 2)))


# --------------------------------------------------------------------------- MLlib layout


def test_mlp_from_mllib_flat_layout_by_hand():
    # layers [2, 3, 2]: layer 0 is the (3 x 2) matrix M column by column, i.e. M.T row by row.
    m0 = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (out=3, in=2)
    b0 = np.array([0.1, 0.2, 0.3])
    m1 = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]])  # (out=2, in=3)
    b1 = np.array([0.0, 1.0])
    flat = np.concatenate([m0.ravel(order="F"), b0, m1.ravel(order="F"), b1])
    model = mlp_from_mllib_flat([2, 3, 2], flat)
    assert model.task == "binary" and model.n_features == 2
    np.testing.assert_array_equal(model.layers[0].weight, m0.T)
    np.testing.assert_array_equal(model.layers[1].bias, b1)
    assert [l.activation for l in model.layers] == ["sigmoid", "softmax"]
    x = np.array([[0.5, -1.0]])
    h = 1 / (1 + np.exp(-(m0 @ x[0] + b0)))
    z = m1 @ h + b1
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(forward(model, x)[0], expected, rtol=1e-6)
    assert mlp_from_mllib_flat([2, 3, 4], np.zeros(2 * 3 + 3 + 3 * 4 + 4)).task == "multiclass"


def test_mlp_from_mllib_flat_errors():
    with pytest.raises(FormatError, match=r"layers \[2, 3, 2\] need 17 weights; got 16"):
        mlp_from_mllib_flat([2, 3, 2], np.zeros(16))
    with pytest.raises(ConfigError, match=r"'layers' parameter must list >= 2 positive ints"):
        mlp_from_mllib_flat([4], np.zeros(0))
    with pytest.raises(ConfigError, match=r"needs >= 2 output classes"):
        mlp_from_mllib_flat([4, 1], np.zeros(5))


def test_linear_errors():
    with pytest.raises(ConfigError, match=r"task must be one of .* 'poisson'"):
        linear(f32([1, 2]), 0.0, "poisson")
    with pytest.raises(FormatError, match=r"layers\[0\].*multiclass"):
        linear(f32([1, 2]), 0.0, "multiclass")
    with pytest.raises(FormatError, match=r"linear weights must be \(in,\) or \(in, k\)"):
        linear(np.zeros((2, 2, 2)), 0.0, "regression")
