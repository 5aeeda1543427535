"""The compressed model file: one :class:`~spark_compress.core.compress.CompressedModel` in one
``.safetensors`` container (:mod:`spark_compress.io.container`).

Tensors are named by layer and role (``i`` is the layer index, ``key`` is ``w`` for a whole
weight or ``a`` / ``b`` for the two low-rank factors, ``<input>`` the embedding's id column)::

    layers.<i>.<key>.data           F32 values | I8 codes | U8 packed int4 codes | U8 k-means codes
    layers.<i>.<key>.indices        sorted flat indices of the kept entries, delta-coded (below)
    layers.<i>.<key>.scales         F32 (out,), int8 / int4 only
    layers.<i>.<key>.centroids      F32 (k,), k-means only
    layers.<i>.bias                 F32 (out,), if the layer has a bias
    layers.<i>.kept_neurons         I32 (out,), only after structured pruning
    embeddings.<input>.table        F32 (num_ids, dim), or I8 codes with
    embeddings.<input>.table.scales F32 (num_ids,)

The container's spec (JSON) holds the rest, and the reader checks every field of it::

    {"model_file_version": 1, "task": ..., "n_features": ..., "input_names": [...],
     "layers": [{"shape": [in, out], "activation": ..., "bias": bool, "kept_neurons": bool,
                 "tensors": {"w": {"kind": "int8", "bits": 8, "shape": [in, out],
                                   "count": <stored entries>, "indices": null | "delta-u8" |
                                   "delta-u16" | "delta-i32", "centroids": null | k}}}, ...],
     "embeddings": [{"input": ..., "combiner": ..., "num_ids": ..., "dim": ...,
                     "storage": "float32" | "int8"}, ...],
     "plan": null | {"default": {...}, "layers": {"<i>": {...}}, "global_prune": ..., "seed": ...},
     "source": null | {...}}

Codes, indices, k-means codes and ``kept_neurons`` are zstd frames in the container; float
tensors (values, scales, centroids, biases, float tables) stay raw, as zstd barely shrinks
random float32 mantissas. Sparse indices are stored as deltas (the first index, then the gaps,
all >= 1) in the narrowest of uint8 / uint16 / int32 that holds the largest: on a 256x784 layer
pruned to 10 % (20 070 kept, gaps <= 89) zstd made 22 729 bytes of the int32 flat indices,
11 961 of uint8 deltas (15 455 as uint16, 15 190 as int32 deltas; a packed bitmask 12 185).

Writing is deterministic: the same model, plan and source give identical bytes. Any change to
the bytes written for the same input is a format change and needs a version bump.

Reading is bounded before anything is allocated. The container bounds every stored tensor by the
file's size (:mod:`spark_compress.io.container`); the spec is then checked, before any tensor is
copied or decompressed, against caps on what loading *materialises*: a pruned or low-rank layer
is stored in a few bytes but becomes a dense ``in x out`` float32 matrix, so the declared shapes
alone would let a small file ask for gigabytes. The caps:

* every layer dimension (``in``, ``out``, a factor's rank), ``n_features`` and an embedding's
  ``dim`` is at most :data:`MAX_LAYER_WIDTH`;
* a sparse tensor's ``count`` is at most its dense size ``rows x cols``;
* the model materialises (dense weights, low-rank factors, biases, embedding tables) at most
  ``FREE_ELEMENTS + MAX_EXPANSION * len(file)`` float32 values and never more than
  :data:`MAX_MODEL_ELEMENTS` (1 GiB). Files this writer makes from real models stay far below
  the expansion rule (a rank-1 4096x4096 int4 layer: about 400 values per byte); a caller who
  trusts a file can pass ``max_elements`` to replace the rule with its own cap.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from spark_compress.core.compress import (
    KMEANS_BITS,
    CompressedEmbedding,
    CompressedLayer,
    CompressedModel,
    LayerPlan,
    Plan,
    StoredTensor,
    check_plan,
    decompress,
    resolve_plan,
)
from spark_compress.core.model import ACTIVATIONS, COMBINERS, TASKS, validate
from spark_compress.errors import ConfigError, DataError, FormatError
from spark_compress.io.container import DTYPES, read_container, write_container

MODEL_FILE_VERSION = 2
# Version 1 had no layer "name" and no plan "energy"; it is read as version 2 with name "" and
# energy 0.
READABLE_MODEL_FILE_VERSIONS = (1, 2)
HMAC_ENV_VAR = "SPARK_COMPRESS_HMAC_KEY"

_KINDS = {  # kind -> (bits, dtype of the stored data)
    "float32": (32, np.dtype("<f4")),
    "int8": (8, np.dtype("i1")),
    "int4": (4, np.dtype("u1")),
    "kmeans": (None, np.dtype("u1")),
}
_INDEX_DTYPES = {
    "delta-u8": np.dtype("u1"), "delta-u16": np.dtype("<u2"), "delta-i32": np.dtype("<i4"),
}
# Caps on what a file may declare (module docstring).
MAX_LAYER_WIDTH = 1 << 20
MAX_MODEL_ELEMENTS = 1 << 28
FREE_ELEMENTS = 1 << 22
MAX_EXPANSION = 4096

_F32 = np.dtype("<f4")
_I8 = np.dtype("i1")
_I32 = np.dtype("<i4")
_MAX_CENTROIDS = 2 ** KMEANS_BITS[1]

_SPEC_KEYS = frozenset({"model_file_version", "task", "n_features", "input_names", "layers",
                        "embeddings", "plan", "source"})
_LAYER_KEYS = frozenset({"name", "shape", "activation", "bias", "kept_neurons", "tensors"})
_TENSOR_KEYS = frozenset({"kind", "bits", "shape", "count", "indices", "centroids"})
_EMB_KEYS = frozenset({"input", "combiner", "num_ids", "dim", "storage"})
_PLAN_KEYS = frozenset({"default", "layers", "global_prune", "seed"})
_LAYER_PLAN_KEYS = frozenset(LayerPlan.__dataclass_fields__)


# --------------------------------------------------------------------------- plan <-> dict


def plan_to_dict(plan: Plan) -> dict:
    """``plan`` as plain JSON-able values; layer keys become strings (JSON object keys)."""
    if not isinstance(plan, Plan):
        raise ConfigError(f"plan must be a Plan, got {type(plan).__name__}")

    def lp(p: LayerPlan) -> dict:
        d = asdict(p)
        return {"prune": float(d["prune"]), "structured": bool(d["structured"]),
                "quantize": str(d["quantize"]), "kmeans_bits": int(d["kmeans_bits"]),
                "rank": int(d["rank"]), "energy": float(d["energy"])}

    bad = [k for k in plan.layers if not _is_int(k)]
    if bad:
        raise ConfigError(f"plan layers {bad} are not layer indices; resolve names and negative "
                          f"indices against the model first (core.compress.resolve_plan)")
    return {"default": lp(plan.default),
            "layers": {str(int(k)): lp(v) for k, v in plan.layers.items()},
            "global_prune": bool(plan.global_prune), "seed": int(plan.seed)}


def plan_from_dict(d: Any) -> Plan:
    """The :class:`Plan` of a :func:`plan_to_dict` dict; :class:`ConfigError` naming the field
    for a missing, unknown or out-of-range value."""
    if not isinstance(d, dict) or set(d) != _PLAN_KEYS:
        raise ConfigError(f"a plan must be an object with exactly the keys {sorted(_PLAN_KEYS)}; "
                          f"got {sorted(d) if isinstance(d, dict) else type(d).__name__}")

    def lp(x: Any, where: str) -> LayerPlan:
        if not isinstance(x, dict) or set(x) != _LAYER_PLAN_KEYS:
            raise ConfigError(f"{where} must be an object with exactly the keys "
                              f"{sorted(_LAYER_PLAN_KEYS)}")
        p = LayerPlan(**x)
        check_plan(p, where=where)
        return p

    layers = {}
    if not isinstance(d["layers"], dict):
        raise ConfigError("plan 'layers' must be an object keyed by layer index")
    for key, value in d["layers"].items():
        if not (isinstance(key, str) and key.isdigit() and str(int(key)) == key):
            raise ConfigError(f"plan 'layers' key {key!r} is not a layer index")
        layers[int(key)] = lp(value, f"plan layers[{key}]")
    if not isinstance(d["global_prune"], bool):
        raise ConfigError(f"plan 'global_prune' must be a bool, got {d['global_prune']!r}")
    if not _is_int(d["seed"]) or d["seed"] < 0:
        raise ConfigError(f"plan 'seed' must be an int >= 0, got {d['seed']!r}")
    return Plan(default=lp(d["default"], "plan default"), layers=layers,
                global_prune=d["global_prune"], seed=d["seed"])


# --------------------------------------------------------------------------- spec


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _delta_encoding(indices: np.ndarray) -> tuple[str, np.ndarray]:
    """The narrowest delta coding of sorted flat ``indices`` and the deltas in it."""
    deltas = np.diff(indices.astype(np.int64), prepend=np.int64(0))
    top = int(deltas.max()) if deltas.size else 0
    for name in ("delta-u8", "delta-u16", "delta-i32"):
        if top <= np.iinfo(_INDEX_DTYPES[name]).max:
            return name, deltas.astype(_INDEX_DTYPES[name])
    raise ConfigError(f"index gap {top} does not fit int32")  # unreachable for int32 indices


def _tensor_spec(st: StoredTensor, where: str) -> dict:
    if not isinstance(st, StoredTensor):
        raise ConfigError(f"{where} must be a StoredTensor, got {type(st).__name__}")
    if st.kind not in _KINDS:
        raise ConfigError(f"{where}.kind must be one of {tuple(_KINDS)}. Got {st.kind!r} instead.")
    shape = [int(s) for s in st.shape]
    if len(shape) != 2:
        raise ConfigError(f"{where}.shape must be (rows, cols); got {st.shape!r}")
    k = None if st.centroids is None else int(np.size(st.centroids))
    bits = _KINDS[st.kind][0]
    if st.kind == "kmeans":
        bits = max(1, ((k or 1) - 1).bit_length())
    indices = None
    if st.indices is not None:
        indices, _ = _delta_encoding(np.asarray(st.indices))
    return {"kind": st.kind, "bits": bits, "shape": shape, "count": st.stored_count,
            "indices": indices, "centroids": k}


def _build_spec(cm: CompressedModel, plan: Plan | None, source: Mapping | None) -> dict:
    if not isinstance(cm, CompressedModel):
        raise ConfigError(f"model must be a CompressedModel, got {type(cm).__name__}")
    layers = []
    for i, layer in enumerate(cm.layers):
        where = f"layers[{i}]"
        if not isinstance(layer, CompressedLayer):
            raise ConfigError(f"{where} must be a CompressedLayer, got {type(layer).__name__}")
        keys = [k for k in ("w", "a", "b") if getattr(layer, k) is not None]
        if keys not in (["w"], ["a", "b"]):
            raise ConfigError(f"{where} must set either w or both a and b; it sets {keys}")
        out = int(layer.shape[1])
        kept = np.asarray(layer.kept_neurons)
        if not isinstance(layer.name, str):
            raise ConfigError(f"{where}.name must be a string, got {layer.name!r}")
        layers.append({
            "name": layer.name,
            "shape": [int(s) for s in layer.shape], "activation": layer.activation,
            "bias": layer.bias is not None,
            "kept_neurons": not (kept.shape == (out,) and np.array_equal(kept, np.arange(out))),
            "tensors": {k: _tensor_spec(getattr(layer, k), f"{where}.{k}") for k in keys},
        })
    embeddings = []
    for j, e in enumerate(cm.embeddings):
        if not isinstance(e, CompressedEmbedding):
            raise ConfigError(f"embeddings[{j}] must be a CompressedEmbedding, got "
                              f"{type(e).__name__}")
        table = e.table if e.table is not None else e.codes
        embeddings.append({"input": e.input, "combiner": e.combiner,
                           "num_ids": int(np.shape(table)[0]), "dim": int(np.shape(table)[1]),
                           "storage": "float32" if e.table is not None else "int8"})
    if plan is not None:
        plan = resolve_plan(plan, cm)  # layer names and negative indices -> indices
        plan_d = plan_to_dict(plan)
        plan_from_dict(plan_d)
    if source is not None and not isinstance(source, Mapping):
        raise ConfigError(f"source must be a mapping or None, got {type(source).__name__}")
    return {
        "model_file_version": MODEL_FILE_VERSION, "task": cm.task,
        "n_features": int(cm.n_features), "input_names": list(cm.input_names),
        "layers": layers, "embeddings": embeddings,
        "plan": None if plan is None else plan_d,
        "source": None if source is None else dict(source),
    }


def _fail(msg: str) -> None:
    raise FormatError(f"model file spec: {msg}")


def _check_keys(obj: Any, keys: frozenset, where: str) -> None:
    if not isinstance(obj, dict) or set(obj) != keys:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        _fail(f"{where} must be an object with exactly the keys {sorted(keys)}; got {got}")


def _check_dims(value: Any, n: int, where: str, *, minimum: int = 1,
                maximum: int = MAX_LAYER_WIDTH) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != n or \
            not all(_is_int(v) and v >= minimum for v in value):
        _fail(f"{where} must be a list of {n} ints >= {minimum}; got {value!r}")
    if any(v > maximum for v in value):
        _fail(f"{where} {value} has a dimension above the cap {maximum} "
              f"(MAX_LAYER_WIDTH; corrupt or crafted file)")
    return tuple(value)


def _check_tensor_spec(t: Any, where: str) -> None:
    _check_keys(t, _TENSOR_KEYS, where)
    if t["kind"] not in _KINDS:
        _fail(f"{where}.kind must be one of {tuple(_KINDS)}; got {t['kind']!r}")
    rows, cols = _check_dims(t["shape"], 2, f"{where}.shape")
    size = rows * cols
    if not _is_int(t["count"]) or not 0 <= t["count"] <= size:
        _fail(f"{where}.count must be an int in [0, {size}]; got {t['count']!r}")
    if t["indices"] is None:
        if t["count"] != size:
            _fail(f"{where}: count {t['count']} without indices must equal {rows}x{cols}")
    elif t["indices"] not in _INDEX_DTYPES:
        _fail(f"{where}.indices must be null or one of {tuple(_INDEX_DTYPES)}; "
              f"got {t['indices']!r}")
    if t["kind"] == "kmeans":
        k = t["centroids"]
        if not _is_int(k) or not 1 <= k <= _MAX_CENTROIDS:
            _fail(f"{where}.centroids must be an int in [1, {_MAX_CENTROIDS}]; got {k!r}")
        bits = max(1, (k - 1).bit_length())
    else:
        if t["centroids"] is not None:
            _fail(f"{where}.centroids must be null for kind {t['kind']!r}")
        bits = _KINDS[t["kind"]][0]
    if t["bits"] != bits or isinstance(t["bits"], bool):
        _fail(f"{where}.bits must be {bits} for this {t['kind']} tensor; got {t['bits']!r}")


def _upgrade(spec: Any) -> Any:
    """A version-1 spec in the version-2 form (layer names "", plan energy 0); others as is."""
    if not isinstance(spec, dict) or spec.get("model_file_version") != 1:
        return spec
    spec = json.loads(json.dumps(spec))
    spec["model_file_version"] = MODEL_FILE_VERSION
    for layer in spec.get("layers") if isinstance(spec.get("layers"), list) else ():
        if isinstance(layer, dict):
            layer.setdefault("name", "")
    plan = spec.get("plan")
    if isinstance(plan, dict):
        for lp in [plan.get("default"), *(plan.get("layers") or {}).values()]:
            if isinstance(lp, dict):
                lp.setdefault("energy", 0.0)
    return spec


def _check_spec(spec: Any) -> None:
    """Raise :class:`FormatError` naming the field for anything a writer would not produce."""
    _check_keys(spec, _SPEC_KEYS, "the spec")
    if spec["model_file_version"] != MODEL_FILE_VERSION:
        _fail(f"model_file_version {spec['model_file_version']!r} is not supported; this reader "
              f"reads {list(READABLE_MODEL_FILE_VERSIONS)} (upgrade spark-compress)")
    if spec["task"] not in TASKS:
        _fail(f"task must be one of {TASKS}; got {spec['task']!r}")
    nf = spec["n_features"]
    if not _is_int(nf) or not 0 <= nf <= MAX_LAYER_WIDTH:
        _fail(f"n_features must be an int in [0, {MAX_LAYER_WIDTH}] (MAX_LAYER_WIDTH); "
              f"got {nf!r}")
    names = spec["input_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        _fail(f"input_names must be a list of strings; got {names!r}")
    if not isinstance(spec["layers"], list) or not spec["layers"]:
        _fail("layers must be a non-empty list")
    for i, layer in enumerate(spec["layers"]):
        where = f"layers[{i}]"
        _check_keys(layer, _LAYER_KEYS, where)
        if not isinstance(layer["name"], str):
            _fail(f"{where}.name must be a string; got {layer['name']!r}")
        n_in, n_out = _check_dims(layer["shape"], 2, f"{where}.shape")
        if layer["activation"] not in ACTIVATIONS:
            _fail(f"{where}.activation must be one of {ACTIVATIONS}; "
                  f"got {layer['activation']!r}")
        for flag in ("bias", "kept_neurons"):
            if not isinstance(layer[flag], bool):
                _fail(f"{where}.{flag} must be a bool; got {layer[flag]!r}")
        tensors = layer["tensors"]
        if not isinstance(tensors, dict) or sorted(tensors) not in (["w"], ["a", "b"]):
            _fail(f"{where}.tensors must hold either 'w' or both 'a' and 'b'; got "
                  f"{sorted(tensors) if isinstance(tensors, dict) else tensors!r}")
        for key, t in tensors.items():
            _check_tensor_spec(t, f"{where}.tensors.{key}")
        if "w" in tensors:
            if tuple(tensors["w"]["shape"]) != (n_in, n_out):
                _fail(f"{where}.tensors.w.shape {tensors['w']['shape']} != layer shape "
                      f"{layer['shape']}")
        else:
            (ar, ac), (br, bc) = tensors["a"]["shape"], tensors["b"]["shape"]
            if ar != n_in or bc != n_out or ac != br:
                _fail(f"{where}: factors a {[ar, ac]} and b {[br, bc]} do not multiply to "
                      f"the layer shape {layer['shape']}")
    if not isinstance(spec["embeddings"], list):
        _fail("embeddings must be a list")
    for j, e in enumerate(spec["embeddings"]):
        where = f"embeddings[{j}]"
        _check_keys(e, _EMB_KEYS, where)
        if not isinstance(e["input"], str) or not e["input"]:
            _fail(f"{where}.input must be a non-empty string; got {e['input']!r}")
        if e["combiner"] not in COMBINERS:
            _fail(f"{where}.combiner must be one of {COMBINERS}; got {e['combiner']!r}")
        _check_dims([e["num_ids"], e["dim"]], 2, f"{where} num_ids/dim",
                    maximum=MAX_MODEL_ELEMENTS)
        _check_dims([e["dim"]], 1, f"{where}.dim")
        if e["storage"] not in ("float32", "int8"):
            _fail(f"{where}.storage must be 'float32' or 'int8'; got {e['storage']!r}")
    if spec["plan"] is not None:
        try:
            plan = plan_from_dict(spec["plan"])
        except ConfigError as exc:
            _fail(f"plan: {exc}")
        bad = [k for k in plan.layers if k >= len(spec["layers"])]
        if bad:
            _fail(f"plan names layers {bad} but the model has {len(spec['layers'])}")
    if spec["source"] is not None and not isinstance(spec["source"], dict):
        _fail(f"source must be an object or null; got {spec['source']!r}")


def _expected(spec: dict) -> dict[str, tuple[str, np.dtype, tuple[int, ...]]]:
    """Every tensor the (checked) ``spec`` calls for: name -> (owner, dtype, shape), ``owner``
    being ``layers[i]`` or ``embeddings['<input>']``."""
    out: dict[str, tuple[str, np.dtype, tuple[int, ...]]] = {}

    def add(name: str, owner: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if name in out:
            raise FormatError(f"model file spec: two tensors would be named {name!r}")
        out[name] = (owner, dtype, shape)

    for i, layer in enumerate(spec["layers"]):
        owner = f"layers[{i}]"
        n_out = layer["shape"][1]
        if layer["bias"]:
            add(f"layers.{i}.bias", owner, _F32, (n_out,))
        if layer["kept_neurons"]:
            add(f"layers.{i}.kept_neurons", owner, _I32, (n_out,))
        for key, t in sorted(layer["tensors"].items()):
            p = f"layers.{i}.{key}"
            shape, count = tuple(t["shape"]), t["count"]
            dense_shape = shape if t["indices"] is None else (count,)
            data_shape = ((count + 1) // 2,) if t["kind"] == "int4" else dense_shape
            add(f"{p}.data", owner, _KINDS[t["kind"]][1], data_shape)
            if t["indices"] is not None:
                add(f"{p}.indices", owner, _INDEX_DTYPES[t["indices"]], (count,))
            if t["kind"] in ("int8", "int4"):
                add(f"{p}.scales", owner, _F32, (shape[1],))
            if t["kind"] == "kmeans":
                add(f"{p}.centroids", owner, _F32, (t["centroids"],))
    for e in spec["embeddings"]:
        owner = f"embeddings[{e['input']!r}]"
        p = f"embeddings.{e['input']}.table"
        shape = (e["num_ids"], e["dim"])
        add(p, owner, _F32 if e["storage"] == "float32" else _I8, shape)
        if e["storage"] == "int8":
            add(f"{p}.scales", owner, _F32, (e["num_ids"],))
    return out


def _materialised(spec: dict) -> list[tuple[str, int]]:
    """(owner, float32 values) that loading the (checked) ``spec`` builds, per layer/embedding:
    the dense weight (``a @ b`` for low rank), the factors, the bias; each table."""
    out = []
    for i, layer in enumerate(spec["layers"]):
        n_in, n_out = layer["shape"]
        n = n_in * n_out + n_out
        if "w" not in layer["tensors"]:
            n += sum(t["shape"][0] * t["shape"][1] for t in layer["tensors"].values())
        out.append((f"layers[{i}] ({n_in}x{n_out})", n))
    for e in spec["embeddings"]:
        out.append((f"embeddings[{e['input']!r}] ({e['num_ids']}x{e['dim']})",
                    e["num_ids"] * e["dim"]))
    return out


def _check_size(spec: dict, file_bytes: int, max_elements: int | None) -> None:
    """Refuse a (checked) spec that would materialise more float32 values than allowed."""
    parts = _materialised(spec)
    total = sum(n for _, n in parts)
    if max_elements is None:
        allowed = min(MAX_MODEL_ELEMENTS, FREE_ELEMENTS + MAX_EXPANSION * file_bytes)
        rule = (f"{FREE_ELEMENTS} + {MAX_EXPANSION} per byte of this {file_bytes}-byte file, "
                f"at most MAX_MODEL_ELEMENTS={MAX_MODEL_ELEMENTS}")
    else:
        allowed, rule = max_elements, f"max_elements={max_elements}"
    if total > allowed:
        owner, n = max(parts, key=lambda p: p[1])
        _fail(f"loading would materialise {total} float32 values, more than the {allowed} "
              f"allowed ({rule}); the largest is {owner} with {n} (corrupt or crafted file; "
              "if you trust it, load it with a larger max_elements)")


def _check_declared(spec: dict, declared: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    """Refuse tensors whose names, dtypes or shapes disagree with the (checked) spec."""
    expected = _expected(spec)
    missing = sorted(set(expected) - set(declared))
    extra = sorted(set(declared) - set(expected))
    if missing or extra:
        raise FormatError(f"the file's tensors do not match its spec: missing {missing}, "
                          f"unexpected {extra}")
    for name, (owner, dtype, shape) in expected.items():
        code, got_shape = declared[name]
        got_dtype = DTYPES[code]
        if got_dtype != dtype or tuple(got_shape) != shape:
            raise FormatError(f"{owner}: tensor {name!r} is {got_dtype} of shape "
                              f"{tuple(got_shape)}; the spec needs {dtype} of shape {shape}")


# --------------------------------------------------------------------------- write


def _tensors_of(cm: CompressedModel, spec: dict) -> tuple[dict[str, np.ndarray], list[str]]:
    tensors: dict[str, np.ndarray] = {}
    coded: list[str] = []
    for i, (layer, ls) in enumerate(zip(cm.layers, spec["layers"])):
        if layer.bias is not None:
            tensors[f"layers.{i}.bias"] = layer.bias
        if ls["kept_neurons"]:
            tensors[f"layers.{i}.kept_neurons"] = layer.kept_neurons
            coded.append(f"layers.{i}.kept_neurons")
        for key, ts in ls["tensors"].items():
            st: StoredTensor = getattr(layer, key)
            p = f"layers.{i}.{key}"
            tensors[f"{p}.data"] = st.data
            if st.kind != "float32":
                coded.append(f"{p}.data")
            if st.indices is not None:
                tensors[f"{p}.indices"] = _delta_encoding(np.asarray(st.indices))[1]
                coded.append(f"{p}.indices")
            if st.scales is not None:
                tensors[f"{p}.scales"] = st.scales
            if st.centroids is not None:
                tensors[f"{p}.centroids"] = st.centroids
    for e in cm.embeddings:
        p = f"embeddings.{e.input}.table"
        if e.table is not None:
            tensors[p] = e.table
        else:
            tensors[p] = e.codes
            tensors[f"{p}.scales"] = e.scales
            coded.append(p)
    return tensors, coded


def model_to_bytes(cm: CompressedModel, *, plan: Plan | None = None,
                   source: Mapping | None = None, hmac_key: bytes | None = None) -> bytes:
    """The model file bytes of ``cm`` (layout in the module docstring).

    ``plan`` (the :class:`Plan` that made ``cm``) and ``source`` (JSON-able, e.g.
    ``{"type": "mllib", "class": ...}``) are recorded in the spec; ``hmac_key`` signs the file.
    Deterministic. Raises :class:`ConfigError` naming the layer or tensor when ``cm`` is not
    what :func:`~spark_compress.core.compress.compress` makes (wrong dtype or shape, unknown
    kind, a tensor both set and missing), and whatever :func:`decompress` raises for a model
    that would not load.
    """
    spec = _build_spec(cm, plan, source)
    expected = _expected(spec)
    tensors, coded = _tensors_of(cm, spec)
    if set(tensors) != set(expected):
        raise ConfigError(f"the model's tensors {sorted(set(tensors) ^ set(expected))} do not "
                          "match its layer kinds")
    for name, (owner, dtype, shape) in expected.items():
        arr = tensors[name]
        if not isinstance(arr, np.ndarray) or arr.dtype.newbyteorder("<") != dtype or \
                arr.shape != shape:
            got = (arr.dtype, arr.shape) if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ConfigError(f"{owner}: tensor {name!r} must be {dtype} of shape {shape}; "
                              f"got {got}")
    validate(decompress(cm))
    return write_container(tensors, spec, compress=coded, hmac_key=hmac_key)


# --------------------------------------------------------------------------- read


def _indices(deltas: np.ndarray, size: int, name: str) -> np.ndarray:
    idx = np.cumsum(deltas.astype(np.int64))
    if idx.size and (deltas[1:].min(initial=1) < 1 or idx[0] < 0 or idx[-1] >= size):
        raise FormatError(f"tensor {name!r}: decoded indices must be strictly increasing in "
                          f"[0, {size - 1}]")
    return idx.astype(np.int32)


def _stored(tensors: dict, p: str, t: dict) -> StoredTensor:
    indices = None
    if t["indices"] is not None:
        indices = _indices(tensors[f"{p}.indices"], t["shape"][0] * t["shape"][1],
                           f"{p}.indices")
    return StoredTensor(tuple(t["shape"]), t["kind"], tensors[f"{p}.data"], indices,
                        scales=tensors.get(f"{p}.scales"),
                        centroids=tensors.get(f"{p}.centroids"))


def model_from_bytes(data: bytes, *, hmac_key: bytes | None = None,
                     require_signature: bool = False, max_elements: int | None = None,
                     ) -> tuple[CompressedModel, dict]:
    """The :class:`CompressedModel` in ``data`` and its spec (with ``plan`` and ``source``).

    The container is validated first (structure, size bounds, checksum, signature: see
    :func:`~spark_compress.io.container.read_container`); then, before any tensor is copied or
    decompressed, every spec field, the caps of the module docstring (``max_elements``, if
    given, replaces the default rule on materialised values) and each tensor's declared dtype
    and shape against the spec; then the values (indices, codes, finite floats, shapes that
    chain) by running :func:`validate` on the decompressed model. Every problem is a
    :class:`FormatError` naming the field, tensor or layer.
    """
    if max_elements is not None and (not _is_int(max_elements) or max_elements < 0):
        raise ConfigError(f"max_elements must be an int >= 0 or None; got {max_elements!r}")
    checked: dict = {}

    def check(raw_spec: Any, declared: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
        spec = _upgrade(raw_spec)
        _check_spec(spec)
        _check_size(spec, len(data), max_elements)
        _check_declared(spec, declared)
        checked["spec"] = spec

    tensors, _ = read_container(data, hmac_key=hmac_key, require_signature=require_signature,
                                check=check)
    spec = checked["spec"]

    layers = []
    for i, ls in enumerate(spec["layers"]):
        n_out = ls["shape"][1]
        kept = tensors.get(f"layers.{i}.kept_neurons", np.arange(n_out, dtype=np.int32))
        if ls["kept_neurons"] and (np.any(kept < 0) or np.any(np.diff(kept) <= 0)):
            raise FormatError(f"layers[{i}]: tensor 'layers.{i}.kept_neurons' must be sorted, "
                              "unique and >= 0")
        stored = {k: _stored(tensors, f"layers.{i}.{k}", t) for k, t in ls["tensors"].items()}
        layers.append(CompressedLayer(tuple(ls["shape"]), ls["activation"],
                                      tensors.get(f"layers.{i}.bias"), kept, **stored,
                                      name=ls["name"]))
    embeddings = []
    for e in spec["embeddings"]:
        p = f"embeddings.{e['input']}.table"
        if e["storage"] == "float32":
            embeddings.append(CompressedEmbedding(e["input"], e["combiner"], tensors[p]))
        else:
            embeddings.append(CompressedEmbedding(e["input"], e["combiner"], codes=tensors[p],
                                                  scales=tensors[f"{p}.scales"]))
    cm = CompressedModel(spec["task"], tuple(layers), spec["n_features"],
                         embeddings=tuple(embeddings), input_names=tuple(spec["input_names"]))
    try:
        validate(decompress(cm))
    except (ConfigError, DataError) as exc:
        # A bad name or value inside a file is a corrupt file, not a config mistake.
        raise FormatError(f"the model in the file is invalid: {exc}") from exc
    return cm, spec


# --------------------------------------------------------------------------- files


def save_model(cm: CompressedModel, path: str | os.PathLike, **kw: Any) -> None:
    """Write :func:`model_to_bytes` ``(cm, **kw)`` to ``path`` atomically: a temporary file in
    the same directory, flushed to disk, then renamed over ``path``; on any error ``path`` is
    untouched and the temporary file removed."""
    data = model_to_bytes(cm, **kw)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: str | os.PathLike, **kw: Any) -> tuple[CompressedModel, dict]:
    """:func:`model_from_bytes` of the file at ``path``; a :class:`FormatError` names the file.

    The file is read whole; its size is not capped here (the bounds of
    :func:`model_from_bytes` are relative to it)."""
    data = Path(path).read_bytes()
    try:
        return model_from_bytes(data, **kw)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc


def hmac_key_from_env(var: str = HMAC_ENV_VAR) -> bytes | None:
    """The UTF-8 bytes of environment variable ``var``, or ``None`` if it is unset. Set but
    empty raises :class:`ConfigError`: an empty key would sign with no secret."""
    value = os.environ.get(var)
    if value is None:
        return None
    if not value:
        raise ConfigError(f"environment variable {var} is set but empty; unset it or set it to "
                          "the HMAC key")
    return value.encode("utf-8")


# --------------------------------------------------------------------------- report


def size_report(data: bytes) -> dict:
    """Bytes each part of a model file takes, as stored (after zstd).

    ``{"total": len(data), "header": 8 + header JSON, "layers": [bytes of layer 0, ...],
    "embeddings": {input: bytes}, "tensors": {name: bytes}}``; a layer's bytes are the sum of
    its tensors' byte ranges. The file is validated first (no signature check)."""
    _, spec = model_from_bytes(data)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    header.pop("__metadata__")
    sizes = {name: e["data_offsets"][1] - e["data_offsets"][0] for name, e in header.items()}
    owners = {f"layers[{i}]": i for i in range(len(spec["layers"]))}
    owners.update({f"embeddings[{e['input']!r}]": e["input"] for e in spec["embeddings"]})
    layers = [0] * len(spec["layers"])
    embeddings = {e["input"]: 0 for e in spec["embeddings"]}
    for name, (owner, _, _) in _expected(spec).items():
        key = owners[owner]
        if isinstance(key, int):
            layers[key] += sizes[name]
        else:
            embeddings[key] += sizes[name]
    return {"total": len(data), "header": 8 + n, "layers": layers, "embeddings": embeddings,
            "tensors": dict(sorted(sizes.items()))}
