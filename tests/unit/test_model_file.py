"""The compressed model file: round trips per storage kind, golden bytes, corrupt files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from spark_compress.core.compress import (
    CompressedModel,
    LayerPlan,
    Plan,
    compress,
    decompress,
)
from spark_compress.core.model import Dense, Embedding, Model, forward
from spark_compress.errors import ConfigError, FormatError
from spark_compress.io.container import read_container, write_container
from spark_compress.io.model_file import (
    hmac_key_from_env,
    load_model,
    model_from_bytes,
    model_to_bytes,
    plan_from_dict,
    plan_to_dict,
    save_model,
    size_report,
)

pytestmark = pytest.mark.unit

KEY = b"test-key"


def random_mlp(sizes, seed=0, *, task="regression", embeddings=()) -> Model:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (nin, nout) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(Dense(rng.normal(size=(nin, nout)).astype(np.float32),
                            rng.normal(size=nout).astype(np.float32),
                            "identity" if last else "relu"))
    n_features = sizes[0] - sum(e.dim for e in embeddings)
    return Model(task, tuple(layers), n_features, embeddings=tuple(embeddings))


def with_embedding(seed=0) -> Model:
    rng = np.random.default_rng(seed)
    emb = Embedding(rng.normal(size=(10, 3)).astype(np.float32), "city", "mean")
    return random_mlp([8, 6, 2], seed, embeddings=(emb,))


def arrays_of(cm: CompressedModel) -> dict[str, np.ndarray]:
    out = {}
    for i, layer in enumerate(cm.layers):
        out[f"{i}.bias"] = layer.bias
        out[f"{i}.kept"] = layer.kept_neurons
        for key in ("w", "a", "b"):
            st = getattr(layer, key)
            if st is not None:
                for field in ("data", "indices", "scales", "centroids"):
                    out[f"{i}.{key}.{field}"] = getattr(st, field)
    for e in cm.embeddings:
        for field in ("table", "codes", "scales"):
            out[f"emb.{e.input}.{field}"] = getattr(e, field)
    return out


def assert_same_model(got: CompressedModel, want: CompressedModel) -> None:
    assert (got.task, got.n_features, got.input_names) == \
        (want.task, want.n_features, want.input_names)
    assert [(l.shape, l.activation) for l in got.layers] == \
        [(l.shape, l.activation) for l in want.layers]
    assert [(st.shape, st.kind) for l in got.layers for st in (l.w, l.a, l.b) if st] == \
        [(st.shape, st.kind) for l in want.layers for st in (l.w, l.a, l.b) if st]
    a, b = arrays_of(got), arrays_of(want)
    assert a.keys() == b.keys()
    for name in a:
        if b[name] is None:
            assert a[name] is None, name
        else:
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def run_inputs(model: Model, seed=1) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(7, model.n_features)).astype(np.float32)
    ids = {e.input: rng.integers(0, e.num_ids, size=(7, 2)) for e in model.embeddings}
    return x, ids


CASES = {
    "dense_float32": (random_mlp([5, 4, 3]), Plan()),
    "pruned_int8": (random_mlp([6, 5, 2], 1), Plan(default=LayerPlan(prune=0.5, quantize="int8"))),
    "int4": (random_mlp([7, 5, 2], 2), Plan(default=LayerPlan(quantize="int4"))),
    "pruned_int4_odd": (random_mlp([7, 5, 1], 3),
                        Plan(default=LayerPlan(prune=0.3, quantize="int4"))),
    "kmeans4": (random_mlp([6, 8, 2], 4),
                Plan(default=LayerPlan(prune=0.2, quantize="kmeans", kmeans_bits=4), seed=3)),
    "low_rank": (random_mlp([8, 6, 3], 5),
                 Plan(layers={0: LayerPlan(rank=2, prune=0.25, quantize="int8")})),
    "structured": (random_mlp([6, 8, 5, 2], 6),
                   Plan(layers={0: LayerPlan(prune=0.5, structured=True),
                                1: LayerPlan(prune=0.4, structured=True, quantize="int8")})),
    "embeddings_int8": (with_embedding(7), Plan(default=LayerPlan(quantize="int8"))),
    "embeddings_float": (with_embedding(8), Plan()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_each_storage_kind(case, float32_forward_bound, within_float32_rounding):
    model, plan = CASES[case]
    cm = compress(model, plan)
    source = {"type": "test", "case": case}
    data = model_to_bytes(cm, plan=plan, source=source)
    got, spec = model_from_bytes(data)
    assert_same_model(got, cm)  # every stored array bit for bit
    # The same parameters in buffers of another layout: the forward passes agree within float32
    # rounding (not bitwise: BLAS may take another path for another alignment or stride).
    want = decompress(cm)
    x, ids = run_inputs(want)
    reference, bound = float32_forward_bound(want, x, ids)
    within_float32_rounding(forward(decompress(got), x, ids), reference, bound)
    assert spec["source"] == source
    assert plan_from_dict(spec["plan"]) == plan
    assert model_to_bytes(cm, plan=plan, source=source) == data


def test_kmeans_spec_records_bits_and_centroids():
    model, plan = CASES["kmeans4"]
    _, spec = model_from_bytes(model_to_bytes(compress(model, plan)))
    w = spec["layers"][0]["tensors"]["w"]
    assert (w["kind"], w["bits"], w["centroids"], w["indices"]) == ("kmeans", 4, 16, "delta-u8")


def test_plan_dict_round_trip():
    plan = Plan(default=LayerPlan(prune=np.float64(0.25)), layers={1: LayerPlan(rank=2)},
                global_prune=True, seed=4)
    assert plan_to_dict(plan)["layers"] == {"1": {"prune": 0.0, "structured": False,
                                                  "quantize": "none", "kmeans_bits": 4,
                                                  "rank": 2, "energy": 0.0}}
    assert plan_from_dict(plan_to_dict(plan)) == plan


def tiny_model() -> CompressedModel:
    w = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 0.75]], dtype=np.float32)
    b = np.array([0.125, -0.25], dtype=np.float32)
    return compress(Model("regression", (Dense(w, b, "identity"),), 3), Plan())


GOLDEN_SHA256 = "07c6742c3e0511f396729fa6e4a06cd313939992309bbfa4039499599b72c259"  # version 2


def test_golden_sha256_of_tiny_uncompressed_model():
    # Pins the written bytes. If this changes, files written before no longer read the same:
    # bump MODEL_FILE_VERSION (or the container's FORMAT_VERSION) and update the digest.
    data = model_to_bytes(tiny_model(), source={"type": "golden"})
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256


def test_version_1_file_reads_with_empty_layer_names_and_no_energy():
    # Version 1 (before layer names and plan energy): the same tensors, the older spec.
    model, plan = CASES["pruned_int8"]
    v2 = model_to_bytes(compress(model, plan), plan=plan)

    def edit(tensors, spec):
        spec["model_file_version"] = 1
        for layer in spec["layers"]:
            del layer["name"]
        del spec["plan"]["default"]["energy"]
        for lp in spec["plan"]["layers"].values():
            del lp["energy"]

    cm1, spec1 = model_from_bytes(rewrite(v2, edit))
    cm2, spec2 = model_from_bytes(v2)
    assert spec1 == spec2 and spec1["model_file_version"] == 2
    for l1, l2 in zip(cm1.layers, cm2.layers):
        np.testing.assert_array_equal(l1.weight(), l2.weight())
        assert l1.name == l2.name == ""


def test_layer_names_round_trip():
    w = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 0.75]], dtype=np.float32)
    named = Model("regression", (Dense(w, None, "identity", "head"),), 3)
    cm, spec = model_from_bytes(model_to_bytes(compress(named, Plan())))
    assert cm.layers[0].name == "head" and spec["layers"][0]["name"] == "head"


def test_pruning_shrinks_file():
    rng = np.random.default_rng(0)
    model = Model("regression", (Dense(rng.normal(size=(784, 256)).astype(np.float32),
                                       None, "identity"),), 784)
    dense = model_to_bytes(compress(model, Plan()))
    pruned = model_to_bytes(compress(model, Plan(default=LayerPlan(prune=0.9, quantize="int8"))))
    assert len(dense) > 784 * 256 * 4
    assert len(pruned) < 0.1 * len(dense)
    report = size_report(pruned)
    assert report["layers"][0] == sum(report["tensors"].values())
    assert report["total"] == report["header"] + report["layers"][0]


def test_size_report_splits_layers_and_embeddings():
    model, plan = CASES["embeddings_int8"]
    data = model_to_bytes(compress(model, plan))
    report = size_report(data)
    assert report["embeddings"]["city"] == report["tensors"]["embeddings.city.table"] + \
        report["tensors"]["embeddings.city.table.scales"]
    assert sum(report["layers"]) + report["embeddings"]["city"] + report["header"] == \
        report["total"]


def test_save_and_load(tmp_path, monkeypatch):
    model, plan = CASES["low_rank"]
    cm = compress(model, plan)
    path = tmp_path / "m.safetensors"
    save_model(cm, path, plan=plan, hmac_key=KEY)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    got, _ = load_model(path, hmac_key=KEY, require_signature=True)
    assert_same_model(got, cm)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(FormatError, match="m.safetensors"):
        load_model(path)


def test_hmac_key_from_env(monkeypatch):
    monkeypatch.delenv("SPARK_COMPRESS_HMAC_KEY", raising=False)
    assert hmac_key_from_env() is None
    monkeypatch.setenv("SPARK_COMPRESS_HMAC_KEY", "s3cret")
    assert hmac_key_from_env() == b"s3cret"
    monkeypatch.setenv("OTHER_KEY", "")
    with pytest.raises(ConfigError, match="OTHER_KEY is set but empty"):
        hmac_key_from_env("OTHER_KEY")


# --------------------------------------------------------------------------- refused files


def test_tampered_file_refused():
    data = bytearray(model_to_bytes(tiny_model()))
    data[-3] ^= 0x01
    with pytest.raises(FormatError, match="payload checksum mismatch"):
        model_from_bytes(bytes(data))


def test_hmac_required_and_wrong_key_refused():
    unsigned = model_to_bytes(tiny_model())
    with pytest.raises(FormatError, match="signature missing"):
        model_from_bytes(unsigned, hmac_key=KEY)
    signed = model_to_bytes(tiny_model(), hmac_key=KEY)
    with pytest.raises(FormatError, match="signature mismatch"):
        model_from_bytes(signed, hmac_key=b"wrong-key")
    with pytest.raises(ConfigError, match="needs hmac_key"):
        model_from_bytes(signed, require_signature=True)
    assert_same_model(model_from_bytes(signed, hmac_key=KEY, require_signature=True)[0],
                      tiny_model())


def rewrite(data: bytes, edit) -> bytes:
    """The file re-written through the container after ``edit(tensors, spec)``: a well-formed,
    checksummed file whose content disagrees with itself."""
    tensors, spec = read_container(data)
    edit(tensors, spec)
    coded = [n for n in tensors if tensors[n].dtype != np.float32]
    return write_container(tensors, spec, compress=coded)


def test_wrong_tensor_shape_refused_naming_it():
    def edit(tensors, spec):
        tensors["layers.0.bias"] = np.zeros(3, dtype=np.float32)

    with pytest.raises(FormatError, match=r"layers\[0\]: tensor 'layers.0.bias' is float32 of "
                                          r"shape \(3,\); the spec needs float32 of shape \(2,\)"):
        model_from_bytes(rewrite(model_to_bytes(tiny_model()), edit))


def test_spec_shape_disagreeing_with_tensor_refused():
    def edit(tensors, spec):
        spec["layers"][0]["tensors"]["w"]["count"] = 5

    with pytest.raises(FormatError, match=r"count 5 without indices must equal 3x2"):
        model_from_bytes(rewrite(model_to_bytes(tiny_model()), edit))


def test_missing_and_extra_tensors_refused():
    def edit(tensors, spec):
        tensors["layers.0.extra"] = tensors.pop("layers.0.bias")

    with pytest.raises(FormatError, match=r"missing \['layers.0.bias'\], unexpected "
                                          r"\['layers.0.extra'\]"):
        model_from_bytes(rewrite(model_to_bytes(tiny_model()), edit))


def test_unknown_activation_refused():
    def edit(tensors, spec):
        spec["layers"][0]["activation"] = "swish"

    with pytest.raises(FormatError, match=r"layers\[0\].activation must be one of .* 'swish'"):
        model_from_bytes(rewrite(model_to_bytes(tiny_model()), edit))


@pytest.mark.parametrize("field, value, match", [
    ("task", "ranking", "task must be one of"),
    ("n_features", -1, r"n_features must be an int in \[0, 1048576\]"),
    ("model_file_version", 3, r"model_file_version 3 is not supported; this reader reads "
                              r"\[1, 2\]"),
    ("source", "mllib", "source must be an object or null"),
    ("plan", {"default": {}}, "plan: a plan must be an object with exactly the keys"),
])
def test_bad_spec_field_refused(field, value, match):
    def edit(tensors, spec):
        spec[field] = value

    with pytest.raises(FormatError, match=match):
        model_from_bytes(rewrite(model_to_bytes(tiny_model()), edit))


def test_unknown_spec_key_refused():
    def edit(tensors, spec):
        spec["extra"] = 1

    with pytest.raises(FormatError, match="the spec must be an object with exactly the keys"):
        model_from_bytes(rewrite(model_to_bytes(tiny_model()), edit))


def test_bad_indices_refused():
    model, plan = CASES["pruned_int8"]
    data = model_to_bytes(compress(model, plan))

    def edit(tensors, spec):
        tensors["layers.0.w.indices"][1] = 0  # a repeated index

    with pytest.raises(FormatError, match="'layers.0.w.indices': decoded indices must be "
                                          "strictly increasing"):
        model_from_bytes(rewrite(data, edit))


def test_kmeans_code_out_of_range_refused():
    model, plan = CASES["kmeans4"]
    data = model_to_bytes(compress(model, plan))

    def edit(tensors, spec):
        tensors["layers.0.w.data"][0] = 200

    with pytest.raises(FormatError, match="the model in the file is invalid"):
        model_from_bytes(rewrite(data, edit))


def test_bad_name_inside_file_is_format_error():
    def edit(tensors, spec):
        spec["embeddings"][0]["combiner"] = "max"

    model, plan = CASES["embeddings_float"]
    with pytest.raises(FormatError, match=r"embeddings\[0\].combiner must be one of"):
        model_from_bytes(rewrite(model_to_bytes(compress(model, plan)), edit))


def test_non_finite_weight_refused():
    def edit(tensors, spec):
        tensors["layers.0.w.data"][0, 0] = np.nan

    with pytest.raises(FormatError, match="NaN or infinity"):
        model_from_bytes(rewrite(model_to_bytes(tiny_model()), edit))


# --------------------------------------------------------------------------- writer errors


def test_writer_refuses_inconsistent_model():
    from dataclasses import replace

    cm = tiny_model()
    layer = cm.layers[0]
    bad = replace(cm, layers=(replace(layer, bias=layer.bias.astype(np.float64)),))
    with pytest.raises(ConfigError, match=r"layers\[0\]: tensor 'layers.0.bias' must be float32"):
        model_to_bytes(bad)
    bad_kind = replace(cm, layers=(replace(layer, w=replace(layer.w, kind="fp8")),))
    with pytest.raises(ConfigError, match=r"layers\[0\].w.kind must be one of"):
        model_to_bytes(bad_kind)


def test_writer_refuses_plan_for_missing_layer():
    with pytest.raises(ConfigError, match=r"the plan names layer 3, which the model does not have"):
        model_to_bytes(tiny_model(), plan=Plan(layers={3: LayerPlan()}))


def _set(path, value):
    def edit(tensors, spec):
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("case, path, value, match", [
    ("low_rank", ("layers", 0, "kept_neurons"), 1, r"layers\[0\].kept_neurons must be a bool"),
    ("low_rank", ("layers", 0, "tensors"), {}, r"layers\[0\].tensors must hold either 'w'"),
    ("low_rank", ("layers", 0, "tensors", "a", "shape"), [8, 3],
     r"layers\[0\]: factors a \[8, 3\] and b \[2, 6\] do not multiply"),
    ("low_rank", ("layers", 0, "tensors", "a", "indices"), "delta-u4",
     r"layers\[0\].tensors.a.indices must be null or one of"),
    ("low_rank", ("layers", 0, "shape"), [8, 0], r"layers\[0\].shape must be a list of 2 ints"),
    ("low_rank", ("layers", 1, "shape"), [6, 2],
     r"layers\[1\].tensors.w.shape \[6, 3\] != layer shape \[6, 2\]"),
    ("low_rank", ("layers", 1, "tensors", "w", "centroids"), 4,
     r"layers\[1\].tensors.w.centroids must be null for kind 'float32'"),
    ("low_rank", ("layers", 1, "tensors", "w", "kind"), "fp8",
     r"layers\[1\].tensors.w.kind must be one of"),
    ("kmeans4", ("layers", 0, "tensors", "w", "bits"), 3,
     r"layers\[0\].tensors.w.bits must be 4 for this kmeans tensor; got 3"),
    ("kmeans4", ("layers", 0, "tensors", "w", "centroids"), 300,
     r"layers\[0\].tensors.w.centroids must be an int in \[1, 256\]"),
    ("kmeans4", ("layers", 0, "tensors", "w", "count"), 10 ** 6,
     r"layers\[0\].tensors.w.count must be an int in \[0, 48\]"),
    ("embeddings_int8", ("embeddings", 0, "storage"), "int4",
     r"embeddings\[0\].storage must be 'float32' or 'int8'"),
    ("embeddings_int8", ("embeddings", 0, "input"), "", r"embeddings\[0\].input must be"),
    ("embeddings_int8", ("embeddings", 0, "dim"), 0, r"embeddings\[0\] num_ids/dim must be"),
    ("embeddings_int8", ("input_names",), "x", "input_names must be a list of strings"),
    ("embeddings_int8", ("layers",), [], "layers must be a non-empty list"),
    ("embeddings_int8", ("embeddings",), {}, "embeddings must be a list"),
    ("low_rank", ("plan", "layers", "7"), plan_to_dict(Plan())["default"],
     r"plan names layers \[7\] but the model has 2"),
    ("low_rank", ("plan", "seed"), -1, "plan: plan 'seed' must be an int >= 0"),
])
def test_bad_layer_spec_field_refused(case, path, value, match):
    model, plan = CASES[case]
    data = model_to_bytes(compress(model, plan), plan=plan)
    with pytest.raises(FormatError, match=match):
        model_from_bytes(rewrite(data, _set(path, value)))


def test_bad_kept_neurons_refused():
    model, plan = CASES["structured"]
    data = model_to_bytes(compress(model, plan))

    def edit(tensors, spec):
        tensors["layers.0.kept_neurons"][:] = 0

    with pytest.raises(FormatError, match="'layers.0.kept_neurons' must be sorted, unique"):
        model_from_bytes(rewrite(data, edit))


def test_int4_unused_nibble_refused():
    model, plan = CASES["pruned_int4_odd"]
    data = model_to_bytes(compress(model, plan))

    def edit(tensors, spec):
        tensors["layers.1.w.data"][-1] |= 0x70

    with pytest.raises(FormatError, match="the model in the file is invalid"):
        model_from_bytes(rewrite(data, edit))


# --- bounded loading: crafted files that would need gigabytes -----------------------------------

def _one_layer_file(shape, w_spec, tensors) -> bytes:
    """A checksummed file of a one-layer regression model whose spec and tensors are given."""
    spec = {"model_file_version": 2, "task": "regression", "n_features": shape[0],
            "input_names": [], "embeddings": [], "plan": None, "source": None,
            "layers": [{"name": "", "shape": list(shape), "activation": "identity",
                        "bias": False, "kept_neurons": False, "tensors": {"w": w_spec}}]}
    coded = [n for n in tensors if tensors[n].dtype != np.float32]
    return write_container(tensors, spec, compress=coded)


def _pruned_away(rows, cols) -> bytes:
    """The 832-byte kind of file: a layer declared rows x cols, fully pruned, so nothing is
    stored but loading builds the dense rows x cols float32 weight."""
    return _one_layer_file((rows, cols), {"kind": "float32", "bits": 32, "shape": [rows, cols],
                                          "count": 0, "indices": "delta-u8", "centroids": None},
                           {"layers.0.w.data": np.zeros(0, np.float32),
                            "layers.0.w.indices": np.zeros(0, np.uint8)})


def _kmeans_zeros(rows, cols) -> bytes:
    """A zstd bomb: rows x cols k-means codes, all 0, compress about 32 000:1."""
    return _one_layer_file((rows, cols), {"kind": "kmeans", "bits": 1, "shape": [rows, cols],
                                          "count": rows * cols, "indices": None,
                                          "centroids": 1},
                           {"layers.0.w.data": np.zeros((rows, cols), np.uint8),
                            "layers.0.w.centroids": np.zeros(1, np.float32)})


def _peak_of(fn) -> int:
    """Bytes of the traced allocation peak while ``fn()`` runs (numpy arrays included)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _refused_small(data: bytes, match: str, **kw) -> None:
    def load():
        with pytest.raises(FormatError, match=match):
            model_from_bytes(data, **kw)
    assert _peak_of(load) < 4 * 2 ** 20  # a few MB whatever the file declares


def test_small_fully_pruned_layer_of_huge_declared_shape_refused_without_allocating():
    data = _pruned_away(9000, 9000)  # before the bound: 324 MB allocated from this file
    assert len(data) < 1000
    _refused_small(data, r"more than the \d+ allowed \(4194304 \+ 4096 per byte of this "
                         r"\d+-byte file.*the largest is layers\[0\] \(9000x9000\) with 81009000")


def test_layer_spec_whose_dims_multiply_to_1e12_refused():
    # Each dimension under MAX_LAYER_WIDTH; together 1e12 weights (4 TB as float32).
    _refused_small(_pruned_away(10 ** 6, 10 ** 6),
                   r"loading would materialise 1000001000000 float32 values")
    _refused_small(_pruned_away(1, 2 ** 21),
                   r"layers\[0\].shape \[1, 2097152\] has a dimension above the cap 1048576")


def test_zstd_bomb_refused_before_decompressing():
    data = _kmeans_zeros(8192, 8192)  # 64 MiB of codes in a few KB; 256 MiB once dequantized
    assert len(data) < 8000
    _refused_small(data, r"layers\[0\] \(8192x8192\) with 67117056")


def test_sparse_count_beyond_dense_size_refused():
    data = _one_layer_file((10, 10), {"kind": "float32", "bits": 32, "shape": [10, 10],
                                      "count": 10 ** 12, "indices": "delta-u8",
                                      "centroids": None},
                           {"layers.0.w.data": np.zeros(0, np.float32),
                            "layers.0.w.indices": np.zeros(0, np.uint8)})
    _refused_small(data, r"layers\[0\].tensors.w.count must be an int in \[0, 100\]")


def test_declared_shape_disagreeing_with_spec_refused_before_decompressing():
    # The spec says 2x2 codes, the zstd tensor records 8192x8192: refused on the declaration.
    data = _one_layer_file((2, 2), {"kind": "kmeans", "bits": 1, "shape": [2, 2], "count": 4,
                                    "indices": None, "centroids": 1},
                           {"layers.0.w.data": np.zeros((8192, 8192), np.uint8),
                            "layers.0.w.centroids": np.zeros(1, np.float32)})
    _refused_small(data, r"tensor 'layers.0.w.data' is uint8 of shape \(8192, 8192\); the spec "
                         r"needs uint8 of shape \(2, 2\)")


def test_max_elements_replaces_the_expansion_rule():
    data = _pruned_away(3000, 3000)  # 9M values from a few hundred bytes: over the rule
    with pytest.raises(FormatError, match="allowed .*max_elements"):
        model_from_bytes(data)
    with pytest.raises(FormatError, match=r"more than the 100 allowed \(max_elements=100\)"):
        model_from_bytes(_pruned_away(10, 10), max_elements=100)
    cm, _ = model_from_bytes(data, max_elements=9_003_000)  # trusted: loads, all zeros
    assert cm.layers[0].shape == (3000, 3000)
    with pytest.raises(ConfigError, match="max_elements must be an int >= 0"):
        model_from_bytes(data, max_elements=-1)


def test_real_models_load_under_the_default_bounds():
    # A 256x784 MLP layer pruned to 1 % and a rank-1 low-rank int4 layer: far under the rule.
    model = random_mlp([784, 256, 10], 3)
    for plan in (Plan(default=LayerPlan(prune=0.99, quantize="int8")),
                 Plan(default=LayerPlan(rank=1, quantize="int4"))):
        cm = compress(model, plan)
        got, _ = model_from_bytes(model_to_bytes(cm))
        assert_same_model(got, cm)
