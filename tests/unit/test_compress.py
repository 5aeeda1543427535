"""Compression plans applied to small hand-built models."""

from __future__ import annotations

import numpy as np
import pytest

from spark_compress.core.compress import (
    CompressedModel,
    LayerPlan,
    Plan,
    StoredTensor,
    bias_correction,
    check_plan,
    compress,
    decompress,
    parse_layer_key,
    resolve_plan,
    sparsity,
)
from spark_compress.core.model import Dense, Embedding, Model, forward
from spark_compress.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

# Distinct magnitudes, so magnitude pruning has no ties. Column 1 has the smallest L2 norm.
W0 = np.array(
    [[1.0, -0.1, 0.5],
     [-2.0, 0.2, -0.6],
     [3.0, -0.3, 0.7],
     [-4.0, 0.05, 0.8]],
    dtype=np.float32,
)
B0 = np.array([0.1, -0.2, 0.3], dtype=np.float32)
W1 = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 0.75]], dtype=np.float32)
B1 = np.array([0.05, -0.05], dtype=np.float32)


def mlp(w0=W0, b0=B0, w1=W1, b1=B1) -> Model:
    """A 4-3-2 regression MLP: relu hidden layer, identity output."""
    return Model("regression", (Dense(w0, b0, "relu"), Dense(w1, b1, "identity")), w0.shape[0])


def random_mlp(sizes, seed=0, *, task="regression") -> Model:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (nin, nout) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(
            Dense(
                rng.normal(size=(nin, nout)).astype(np.float32),
                rng.normal(size=nout).astype(np.float32),
                "identity" if last else "relu",
            )
        )
    return Model(task, tuple(layers), sizes[0])


def stored_arrays(cm: CompressedModel) -> list[np.ndarray]:
    out = []
    for layer in cm.layers:
        out.append(layer.bias)
        out.append(layer.kept_neurons)
        for st in (layer.w, layer.a, layer.b):
            if st is not None:
                out += [st.data, st.indices, st.scales, st.centroids]
    return out


# --------------------------------------------------------------------------- pruning


def test_per_layer_prune_removes_exactly_half_of_each_layer():
    cm = compress(mlp(), Plan(LayerPlan(prune=0.5)))
    w0 = cm.layers[0].weight()
    expected_zeros = np.abs(W0) <= 0.6  # the 6 smallest: 0.05, 0.1, 0.2, 0.3, 0.5, 0.6
    np.testing.assert_array_equal(w0 == 0, expected_zeros)
    np.testing.assert_array_equal(w0[~expected_zeros], W0[~expected_zeros])
    assert sparsity(cm) == {0: 6 / 12, 1: 3 / 6}
    assert cm.layers[0].w.indices.dtype == np.int32
    assert cm.layers[0].w.data.shape == (6,)


def test_global_prune_uses_one_threshold_across_layers():
    cm = compress(mlp(), Plan(LayerPlan(prune=0.5), global_prune=True))
    # 9 of the 18 weights go: 0.05 0.1 0.2 0.25 0.3 0.5(W0, first on the tie) 0.5(W1) 0.6 0.7
    assert sparsity(cm) == {0: 7 / 12, 1: 2 / 6}
    np.testing.assert_array_equal(cm.layers[0].weight() == 0, np.abs(W0) <= 0.7)
    np.testing.assert_array_equal(cm.layers[1].weight() == 0, np.abs(W1) <= 0.5)


def test_global_prune_skips_layers_without_prune():
    plan = Plan(LayerPlan(prune=0.5), layers={1: LayerPlan()}, global_prune=True)
    assert sparsity(compress(mlp(), plan)) == {0: 6 / 12, 1: 0.0}


# --------------------------------------------------------------------------- structured


def test_structured_prune_removes_lowest_norm_neuron_and_next_rows(
    float32_forward_bound, within_float32_rounding
):
    plan = Plan(LayerPlan(prune=1 / 3, structured=True), layers={1: LayerPlan()})
    cm = compress(mlp(), plan)
    assert [l.shape for l in cm.layers] == [(4, 2), (2, 2)]
    np.testing.assert_array_equal(cm.layers[0].kept_neurons, [0, 2])
    by_hand = mlp(W0[:, [0, 2]], B0[[0, 2]], W1[[0, 2], :], B1)
    # The parameters are copies of the kept entries: exact. The forward passes may differ in
    # the last bits (another array layout can take another BLAS path), so they are held to the
    # by-hand model's float64 reference within the float32 rounding bound.
    plain = decompress(cm)
    for got, want in zip(plain.layers, by_hand.layers):
        np.testing.assert_array_equal(got.weight, want.weight)
        np.testing.assert_array_equal(got.bias, want.bias)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    reference, bound = float32_forward_bound(by_hand, x)
    within_float32_rounding(forward(plain, x), reference, bound)


def test_structured_prune_of_output_layer_raises():
    with pytest.raises(ConfigError, match=r"layers\[1\] is the output layer"):
        compress(mlp(), Plan(LayerPlan(prune=0.5, structured=True)))


def test_structured_prune_of_every_neuron_raises():
    plan = Plan(LayerPlan(), layers={0: LayerPlan(prune=1.0, structured=True)})
    with pytest.raises(ConfigError, match=r"layers\[0\].*removes 3 of its 3 neurons"):
        compress(mlp(), plan)


# --------------------------------------------------------------------------- quantization


def test_int8_error_is_at_most_half_a_scale_per_output_channel():
    model = random_mlp([6, 5, 3], seed=3)
    cm = compress(model, Plan(LayerPlan(quantize="int8")))
    for layer, dense in zip(cm.layers, model.layers):
        scales = layer.w.scales
        assert scales.shape == (layer.shape[1],)
        np.testing.assert_allclose(scales, np.abs(dense.weight).max(axis=0) / 127, rtol=1e-6)
        err = np.abs(layer.weight() - dense.weight)
        assert np.all(err <= scales[None, :] / 2 * (1 + 1e-5))


def test_int4_codes_are_packed_and_within_half_a_scale():
    model = random_mlp([6, 5, 3], seed=4)
    cm = compress(model, Plan(LayerPlan(quantize="int4")))
    layer = cm.layers[0]
    assert layer.w.data.dtype == np.uint8 and layer.w.data.shape == (15,)  # ceil(30 / 2)
    err = np.abs(layer.weight() - model.layers[0].weight)
    assert np.all(err <= layer.w.scales[None, :] / 2 * (1 + 1e-5))


def test_kmeans_two_bits_gives_at_most_four_values_among_kept_weights():
    model = random_mlp([8, 6, 3], seed=5)
    cm = compress(model, Plan(LayerPlan(prune=0.5, quantize="kmeans", kmeans_bits=2)))
    for layer in cm.layers:
        w = layer.weight()
        kept = np.zeros(w.size, dtype=bool)
        kept[layer.w.indices] = True
        assert np.count_nonzero(~kept) == w.size // 2
        assert np.all(w.ravel()[~kept] == 0)
        assert np.unique(w.ravel()[kept]).size <= 4
        assert layer.w.centroids.size <= 4


def test_prune_then_int8_keeps_pruned_weights_exactly_zero():
    model = random_mlp([8, 6, 3], seed=6)
    cm = compress(model, Plan(LayerPlan(prune=0.75, quantize="int8")))
    for layer, dense in zip(cm.layers, model.layers):
        pruned = np.ones(dense.weight.size, dtype=bool)
        pruned[layer.w.indices] = False
        w = layer.weight().ravel()
        assert np.all(w[pruned] == 0.0)
        # Scales come from kept weights only; a column with no kept weight gets scale 1.0.
        kept_abs = np.where(pruned.reshape(dense.weight.shape), 0, np.abs(dense.weight))
        expected = kept_abs.max(axis=0) / 127
        expected[expected == 0] = 1.0
        np.testing.assert_allclose(layer.w.scales, expected, rtol=1e-6)


def test_nbytes_of_pruned_int8_layer():
    cm = compress(mlp(), Plan(LayerPlan(prune=0.5, quantize="int8")))
    kept, out = 6, 3
    assert cm.layers[0].nbytes() == {
        "w.data": kept * 1, "w.indices": 4 * kept, "w.scales": 4 * out, "bias": 4 * out,
    }
    assert sum(cm.layers[0].nbytes().values()) == 54


# --------------------------------------------------------------------------- low rank


def test_low_rank_by_energy_picks_the_smallest_rank_keeping_that_energy():
    # Singular values 3, 2, 1 (sum of squares 14): 0.64 of the energy needs rank 1 (9/14 =
    # 0.643), 0.65 and 0.92 need rank 2 (13/14 = 0.929), 0.93 needs all 3.
    u = np.linalg.qr(np.random.default_rng(3).normal(size=(4, 3)))[0]
    v = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))[0]
    w0 = (u * np.array([3.0, 2.0, 1.0])) @ v.T
    for energy, rank in [(0.64, 1), (0.65, 2), (0.92, 2), (0.93, 3)]:
        cm = compress(mlp(w0=w0.astype(np.float32)),
                      Plan(LayerPlan(), layers={0: LayerPlan(energy=energy)}))
        assert cm.layers[0].a.shape == (4, rank) and cm.layers[0].b.shape == (rank, 3)
        err = np.linalg.norm(cm.layers[0].weight() - w0)
        assert err == pytest.approx(np.sqrt(sum(s * s for s in [3.0, 2.0, 1.0][rank:])), abs=1e-5)


def test_rank_and_energy_together_are_refused():
    with pytest.raises(ConfigError, match=r"layers\[0\] sets both rank=2 and energy=0.9"):
        check_plan(LayerPlan(rank=2, energy=0.9), where="layers[0]")
    with pytest.raises(ConfigError, match=r"'energy' parameter of layers\[0\] must be 0"):
        check_plan(LayerPlan(energy=1.5), where="layers[0]")


def test_resolve_plan_strings_are_names_and_hash_or_int_keys_are_positions():
    named = Model("regression", (Dense(W0, B0, "relu", "hidden"), Dense(W1, B1, "identity", "out")),
                  4)
    a, b = LayerPlan(prune=0.5), LayerPlan(quantize="int8")
    assert resolve_plan(Plan(layers={"hidden": a, -1: b}), named).layers == {0: a, 1: b}
    assert resolve_plan(Plan(layers={"#-2": a, "out": b}), named).layers == {0: a, 1: b}
    assert resolve_plan(Plan(layers={1: b, "#0": a}), mlp()).layers == {0: a, 1: b}
    assert resolve_plan(Plan(layers={np.int64(-1): b}), mlp()).layers == {1: b}
    with pytest.raises(ConfigError, match=r"addresses layer #1 twice: as 'out' and as -1"):
        resolve_plan(Plan(layers={"out": a, -1: b}), named)
    with pytest.raises(ConfigError, match=r"names layer 'fc9', which the model does not have; "
                                          r"it has 2 layer\(s\): #0 'hidden', #1 'out'$"):
        resolve_plan(Plan(layers={"fc9": a}), named)
    # compress resolves too and keeps the names through decompress
    cm = compress(named, Plan(layers={"out": b}))
    assert cm.layers[1].w.kind == "int8" and cm.layers[0].w.kind == "float32"
    assert [l.name for l in decompress(cm).layers] == ["hidden", "out"]


def _sequential(names=("0", "2", "4")):
    """A PyTorch ``nn.Sequential``-like MLP 4-3-3-2 whose Dense layers are named "0", "2", "4"
    (the ReLUs in between are modules "1" and "3", which hold no weights)."""
    rng = np.random.default_rng(5)
    shapes = [(4, 3), (3, 3), (3, 2)]
    return Model("regression", tuple(
        Dense(rng.normal(size=s).astype(np.float32), np.zeros(s[1], np.float32),
              "relu" if i < 2 else "identity", nm)
        for i, (s, nm) in enumerate(zip(shapes, names))), 4)


def test_numeric_string_keys_are_layer_names_not_positions():
    model = _sequential()
    lp = LayerPlan(quantize="int8")
    assert resolve_plan(Plan(layers={"2": lp}), model).layers == {1: lp}  # the layer named "2"
    assert resolve_plan(Plan(layers={"#2": lp}), model).layers == {2: lp}  # the third layer
    assert resolve_plan(Plan(layers={2: lp}), model).layers == {2: lp}     # an int: a position
    cm = compress(model, Plan(layers={"2": lp}))
    assert [l.w.kind for l in cm.layers] == ["float32", "int8", "float32"]


def test_numeric_string_keys_for_positions_are_refused_with_the_fix():
    model = _sequential()
    with pytest.raises(ConfigError, match=r"names layer '1', which the model does not have; it has "
                                          r"3 layer\(s\): #0 '0', #1 '2', #2 '4'; a plan key is a "
                                          r"layer name: for the layer at position 1 write '#1' "
                                          r"\(\[layers.\"#1\"\] in TOML\)"):
        resolve_plan(Plan(layers={"1": LayerPlan()}), model)
    with pytest.raises(ConfigError, match=r"names layer '-1', .*#0 \(unnamed\), #1 \(unnamed\); "
                                          r".*write '#-1'"):
        compress(mlp(), Plan(layers={"-1": LayerPlan()}))


def test_two_keys_for_one_layer_and_hash_keys_that_are_also_names_are_refused():
    with pytest.raises(ConfigError, match=r"addresses layer #2 twice: as '4' and as '#-1'"):
        resolve_plan(Plan(layers={"4": LayerPlan(), "#-1": LayerPlan()}), _sequential())
    odd = _sequential(names=("#1", "b", "c"))
    with pytest.raises(ConfigError, match=r"the plan key '#1' is ambiguous: the model has a layer "
                                          r"named '#1' \(#0\) and '#1' is also the position #1"):
        resolve_plan(Plan(layers={"#1": LayerPlan()}), odd)
    assert resolve_plan(Plan(layers={1: LayerPlan()}), odd).layers == {1: LayerPlan()}


@pytest.mark.parametrize("key,match", [
    ("#", r"plan layer key '#' is not a position"),
    ("#1.5", r"plan layer key '#1.5' is not a position"),
    ("", r"plan layer key '' is empty"),
    (1.0, r"plan layer key 1.0 must be a layer name \(str\) or a position"),
    (True, r"plan layer key True must be a layer name"),
])
def test_malformed_layer_keys_are_refused(key, match):
    with pytest.raises(ConfigError, match=match):
        parse_layer_key(key)
    with pytest.raises(ConfigError, match=match):
        compress(mlp(), Plan(layers={key: LayerPlan()}))


def test_duplicate_layer_names_are_refused():
    with pytest.raises(Exception, match=r"layers\[0\] and layers\[1\] are both named 'x'"):
        compress(Model("regression", (Dense(W0, B0, "relu", "x"), Dense(W1, B1, "identity", "x")),
                       4), Plan())


def test_low_rank_of_rank_two_weight_is_exact_at_rank_two():
    rng = np.random.default_rng(7)
    w0 = (rng.normal(size=(4, 2)) @ rng.normal(size=(2, 3))).astype(np.float32)
    cm = compress(mlp(w0=w0), Plan(LayerPlan(), layers={0: LayerPlan(rank=2)}))
    layer = cm.layers[0]
    assert layer.w is None and layer.a.shape == (4, 2) and layer.b.shape == (2, 3)
    np.testing.assert_allclose(layer.weight(), w0, atol=1e-5)
    assert set(layer.nbytes()) == {"a.data", "b.data", "bias"}


def test_low_rank_factors_are_int8_quantized_when_asked():
    rng = np.random.default_rng(8)
    w0 = (rng.normal(size=(4, 2)) @ rng.normal(size=(2, 3))).astype(np.float32)
    cm = compress(mlp(w0=w0), Plan(LayerPlan(), layers={0: LayerPlan(rank=2, quantize="int8")}))
    layer = cm.layers[0]
    assert layer.a.data.dtype == np.int8 and layer.a.scales.shape == (2,)
    assert layer.b.scales.shape == (3,)
    np.testing.assert_allclose(layer.weight(), w0, atol=0.05 * np.abs(w0).max())


def test_rank_above_layer_size_raises():
    with pytest.raises(ConfigError, match=r"rank 4 for tensor 'layers\[0\].weight'"):
        compress(mlp(), Plan(LayerPlan(), layers={0: LayerPlan(rank=4)}))


# --------------------------------------------------------------------------- whole model


def test_compress_is_deterministic():
    model = random_mlp([8, 6, 4, 3], seed=9)
    plan = Plan(
        LayerPlan(prune=0.5, quantize="kmeans", kmeans_bits=3),
        layers={
            1: LayerPlan(prune=0.25, quantize="int4"),
            0: LayerPlan(prune=0.5, structured=True),
        },
        global_prune=True,
        seed=11,
    )
    # Bitwise on purpose: the same calls on the same arrays in one process take the same BLAS
    # path, and byte-identical model files for the same plan are a promise of the project.
    first, second = stored_arrays(compress(model, plan)), stored_arrays(compress(model, plan))
    assert len(first) == len(second)
    for a, b in zip(first, second):
        if a is None:
            assert b is None
        else:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_decompress_runs_and_embeddings_quantize_per_row():
    rng = np.random.default_rng(10)
    table = rng.normal(size=(5, 2)).astype(np.float32)
    model = Model(
        "regression",
        (Dense(rng.normal(size=(5, 2)).astype(np.float32), None, "identity"),),
        3,
        embeddings=(Embedding(table, "cat"),),
    )
    cm = compress(model, Plan(LayerPlan(quantize="int8")))
    emb = cm.embeddings[0]
    assert emb.table is None and emb.codes.dtype == np.int8 and emb.scales.shape == (5,)
    assert np.all(np.abs(emb.dense() - table) <= emb.scales[:, None] / 2 * (1 + 1e-5))
    x = rng.normal(size=(4, 3)).astype(np.float32)
    ids = {"cat": np.array([0, 1, 4, 2])}
    np.testing.assert_allclose(forward(decompress(cm), x, ids), forward(model, x, ids), atol=0.1)
    plain = compress(model, Plan(LayerPlan(quantize="kmeans")))
    np.testing.assert_array_equal(plain.embeddings[0].table, table)


def test_bias_correction_reduces_mean_output_difference():
    model = random_mlp([6, 8, 3], seed=12)
    cm = compress(model, Plan(LayerPlan(prune=0.5, quantize="int4")))
    x = np.random.default_rng(13).normal(size=(64, 6)).astype(np.float32)
    reference = forward(model, x)

    def mean_gap(c: CompressedModel) -> float:
        return float(np.linalg.norm((reference - forward(decompress(c), x)).mean(axis=0)))

    corrected = bias_correction(model, cm, x)
    before, after = mean_gap(cm), mean_gap(corrected)
    assert after < before
    assert after < 1e-4  # identity output: the mean pre-activation is matched exactly
    # Weights untouched; only biases move.
    for a, b in zip(cm.layers, corrected.layers):
        np.testing.assert_array_equal(a.weight(), b.weight())


def test_bias_correction_with_structured_pruning_and_no_bias():
    model = mlp(b0=None)
    plan = Plan(LayerPlan(prune=1 / 3, structured=True, quantize="int4"), layers={1: LayerPlan()})
    cm = compress(model, plan)
    x = np.random.default_rng(14).normal(size=(32, 4)).astype(np.float32)
    corrected = bias_correction(model, cm, x)
    assert corrected.layers[0].bias.shape == (2,)
    gap = (forward(model, x) - forward(decompress(corrected), x)).mean(axis=0)
    assert np.all(np.abs(gap) < 1e-4)


def test_bias_correction_errors():
    cm = compress(mlp(), Plan(LayerPlan()))
    one_layer = Model("regression", (Dense(W0, B0, "identity"),), 4)
    with pytest.raises(ConfigError, match="original model has 1 layers but the compressed one 2"):
        bias_correction(one_layer, cm, np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"calibration batch of shape \(n >= 1, 4\)"):
        bias_correction(mlp(), cm, np.zeros((0, 4), dtype=np.float32))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("layer_plan", "match"),
    [
        (LayerPlan(prune=1.5), r"'prune' parameter of layers\[1\] must be a fraction in \[0, 1\]"),
        (LayerPlan(quantize="int3"), r"'quantize' parameter of layers\[1\] .* Got 'int3'"),
        (LayerPlan(kmeans_bits=0), r"'kmeans_bits' parameter of layers\[1\] .* Got 0 instead"),
        (LayerPlan(rank=-1), r"'rank' parameter of layers\[1\] must be an int >= 0"),
        (LayerPlan(structured="yes"), r"'structured' parameter of layers\[1\] must be a bool"),
    ],
)
def test_plan_validation(layer_plan, match):
    with pytest.raises(ConfigError, match=match):
        check_plan(layer_plan, where="layers[1]")
    with pytest.raises(ConfigError, match=match):
        compress(mlp(), Plan(LayerPlan(), layers={1: layer_plan}))


def test_plan_level_validation():
    with pytest.raises(ConfigError, match=r"names layer 2, which the model does not have: "
                                          r"position 2 is out of range; it has 2 layer"):
        compress(mlp(), Plan(LayerPlan(), layers={2: LayerPlan()}))
    with pytest.raises(ConfigError, match=r"'prune' parameter of the default layer plan"):
        compress(mlp(), Plan(LayerPlan(prune=-0.1)))
    with pytest.raises(ConfigError, match=r"'seed' parameter must be an int >= 0"):
        compress(mlp(), Plan(LayerPlan(), seed=-1))
    with pytest.raises(ConfigError, match=r"'global_prune' parameter must be a bool"):
        compress(mlp(), Plan(LayerPlan(), global_prune=1))
    with pytest.raises(ConfigError, match="must be a LayerPlan, got dict"):
        check_plan({"prune": 0.5}, where="layers[0]")


def test_for_layer_falls_back_to_default():
    plan = Plan(LayerPlan(prune=0.5), layers={1: LayerPlan(rank=1)})
    assert plan.for_layer(0) == LayerPlan(prune=0.5)
    assert plan.for_layer(1) == LayerPlan(rank=1)


def test_stored_tensor_with_bad_indices_raises():
    st = StoredTensor((2, 2), "float32", np.ones(2, dtype=np.float32), np.array([3, 1], np.int32))
    with pytest.raises(DataError, match=r"indices of weight of shape \(2, 2\) must be sorted"):
        st.dense()
    short = StoredTensor((2, 2), "float32", np.ones(3, dtype=np.float32))
    with pytest.raises(DataError, match="stores 3 values but needs 4"):
        short.dense()
