"""Deep Compression of a :class:`~spark_compress.core.model.Model`: a per-layer plan and its
application. numpy only.

A :class:`Plan` gives every Dense layer a :class:`LayerPlan`; :func:`compress` applies it, layer
by layer, in this order::

    1. structured pruning   remove whole output neurons of layer i (lowest L2 norm of their
                            weight column); layer i's out dim and bias shrink, and so do the
                            matching input rows of layer i + 1
    2. low rank             W ~ a @ b (truncated SVD) when rank > 0, or with the smallest rank
                            that keeps ``energy`` of the squared singular values when energy > 0;
                            steps 3 and 4 then act on
                            the factors a (in x r) and b (r x out) instead of W
    3. unstructured pruning the smallest |w| per tensor, or against one threshold across all
                            layers (Plan.global_prune); only the kept entries are stored
    4. quantization         int8 / int4 codes with one scale per output column, or k-means
                            weight sharing, computed over the kept weights only

:func:`decompress` turns the result back into a float32 :class:`Model` that
:func:`~spark_compress.core.model.forward` runs, and :func:`bias_correction` adjusts the biases
of the compressed layers on a calibration batch.

The dataclasses are frozen but hold numpy arrays, which stay mutable: treat them as read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from spark_compress.core.model import Dense, Embedding, Model, _activate, forward, validate
from spark_compress.core.weights import (
    QuantizedTensor,
    _is_int,
    dequantize,
    global_magnitude_masks,
    kmeans_share,
    low_rank,
    magnitude_mask,
    pack_int4,
    quantize_symmetric,
    share_decode,
    structured_mask,
    unpack_int4,
)
from spark_compress.errors import ConfigError, DataError

QUANTIZE_MODES = ("none", "int8", "int4", "kmeans")
KMEANS_BITS = (1, 8)  # inclusive range: one uint8 code per kept weight
_INT_BITS = {"int8": 8, "int4": 4}


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class LayerPlan:
    """How to compress one Dense layer.

    ``prune``: fraction in ``[0, 1]``. With ``structured=False`` it is the fraction of weights
    removed (smallest magnitudes; of each low-rank factor when ``rank > 0``), with
    ``structured=True`` the fraction of the layer's output neurons removed (rounded half to even,
    at least one neuron must stay). ``quantize``: one of :data:`QUANTIZE_MODES`; ``kmeans_bits``
    (an int in ``[1, 8]``) is used only by ``kmeans``. ``rank``: 0 keeps the weight whole, else
    the number of singular values kept (at most ``min(in, out)`` after structured pruning).
    ``energy``: 0 (off) or a fraction in ``(0, 1]``: factorize with the smallest rank whose
    squared singular values keep that fraction of the total; at most one of ``rank`` and
    ``energy`` is set.
    """

    prune: float = 0.0
    structured: bool = False
    quantize: str = "none"
    kmeans_bits: int = 4
    rank: int = 0
    energy: float = 0.0

    @property
    def factorized(self) -> bool:
        """True when the layer is stored as two low-rank factors."""
        return self.rank > 0 or self.energy > 0


def check_plan(plan: LayerPlan, *, where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` (e.g. ``"layers[1]"``) if ``plan`` has a value
    out of range; return ``None`` if it is sound. The model-dependent checks (a rank too large
    for the layer, structured pruning of the output layer) happen in :func:`compress`."""
    if not isinstance(plan, LayerPlan):
        raise ConfigError(f"the plan for {where} must be a LayerPlan, got {type(plan).__name__}")
    p = plan.prune
    if (
        isinstance(p, (bool, np.bool_))
        or not isinstance(p, (int, float, np.integer, np.floating))
        or not 0.0 <= float(p) <= 1.0
    ):
        raise ConfigError(
            f"The 'prune' parameter of {where} must be a fraction in [0, 1]. Got {p!r} instead."
        )
    if not isinstance(plan.structured, (bool, np.bool_)):
        raise ConfigError(
            f"The 'structured' parameter of {where} must be a bool. "
            f"Got {plan.structured!r} instead."
        )
    if plan.quantize not in QUANTIZE_MODES:
        raise ConfigError(
            f"The 'quantize' parameter of {where} must be one of {QUANTIZE_MODES}. "
            f"Got {plan.quantize!r} instead."
        )
    lo, hi = KMEANS_BITS
    if not _is_int(plan.kmeans_bits) or not lo <= int(plan.kmeans_bits) <= hi:
        raise ConfigError(
            f"The 'kmeans_bits' parameter of {where} must be an int in [{lo}, {hi}]. "
            f"Got {plan.kmeans_bits!r} instead."
        )
    if not _is_int(plan.rank) or int(plan.rank) < 0:
        raise ConfigError(
            f"The 'rank' parameter of {where} must be an int >= 0 (0: no factorization). "
            f"Got {plan.rank!r} instead."
        )
    e = plan.energy
    if (
        isinstance(e, (bool, np.bool_))
        or not isinstance(e, (int, float, np.integer, np.floating))
        or not 0.0 <= float(e) <= 1.0
    ):
        raise ConfigError(
            f"The 'energy' parameter of {where} must be 0 (off) or a fraction in (0, 1]. "
            f"Got {e!r} instead."
        )
    if plan.rank > 0 and e > 0:
        raise ConfigError(
            f"{where} sets both rank={plan.rank!r} and energy={e!r}; set only one of them"
        )


POSITION_PREFIX = "#"


def parse_layer_key(key: object) -> tuple[str, int | str]:
    """What a plan's ``layers`` key addresses: ``("position", i)`` or ``("name", text)``.

    The one rule, the same in TOML and in Python: a string is a layer *name*, unless it starts
    with ``#``, which makes it a *position* (``"#0"`` the first layer, ``"#-1"`` the output
    layer). A Python ``int`` is a position too (TOML keys are always strings, so ``[layers.2]``
    is the layer named ``"2"``, never the third layer). Raises :class:`ConfigError` naming the
    key for a ``#`` key that is not ``#`` followed by an integer, an empty name, or a key of
    another type.
    """
    if _is_int(key):
        return ("position", int(key))
    if not isinstance(key, str):
        raise ConfigError(f"plan layer key {key!r} must be a layer name (str) or a position "
                          f"(int, or a string such as '#0' or '#-1'); got {type(key).__name__}")
    if key.startswith(POSITION_PREFIX):
        digits = key[len(POSITION_PREFIX):]
        if not re.fullmatch(r"-?[0-9]+", digits):
            raise ConfigError(f"plan layer key {key!r} is not a position: write '#' followed by "
                              f"an integer ('#0' is the first layer, '#-1' the output layer)")
        return ("position", int(digits))
    if not key:
        raise ConfigError("plan layer key '' is empty: write a layer name or a position such as "
                          "'#0'")
    return ("name", key)


@dataclass(frozen=True)
class Plan:
    """The compression of a whole model: ``layers`` overrides ``default`` per layer.

    ``layers`` keys follow :func:`parse_layer_key`: a string is a layer name
    (:attr:`Dense.name`), ``"#i"`` or an int ``i`` is a position (``"#-1"``/``-1`` is the
    output layer). :func:`resolve_plan` turns them into positions ``0..n-1``; after it (and in
    a stored plan) every key is an int.

    ``global_prune``: unstructured pruning removes, in total, the same number of weights as
    per-layer pruning would (the sum over layers of ``round(prune * size)``), but chosen against
    one magnitude threshold across all the layers with ``prune > 0`` and ``structured=False``.
    ``seed`` (int >= 0) seeds k-means; the same plan on the same model gives identical arrays.
    """

    default: LayerPlan = field(default_factory=LayerPlan)
    layers: Mapping[int | str, LayerPlan] = field(default_factory=dict)
    global_prune: bool = False
    seed: int = 0

    def for_layer(self, i: int) -> LayerPlan:
        """The plan of layer ``i`` (a position after :func:`resolve_plan`): its override if
        there is one, else ``default``."""
        return self.layers.get(i, self.default)


def _layer_list(names: list[str]) -> str:
    n = len(names)
    listed = ", ".join(f"#{i} {nm!r}" if nm else f"#{i} (unnamed)" for i, nm in enumerate(names))
    return f"{n} layer(s): {listed}"


def resolve_plan(plan: Plan, model: Model | CompressedModel) -> Plan:
    """``plan`` with every ``layers`` key turned into a position ``0..n-1`` of ``model`` (a
    model or its compressed form: both have ``layers`` with ``name``).

    Keys follow :func:`parse_layer_key`: names must be names of the model's layers, positions
    ``#i`` (or ints) must be in ``-n..n-1``. Refused with :class:`ConfigError`, each message
    naming the key, the model's layers and the fix:

    * a name the model does not have; when it looks like a position (``"2"``, ``"-1"``), the
      message says to write ``"#2"`` (``[layers."#2"]`` in TOML) for the layer at position 2;
    * a ``#`` key when the model has a layer of exactly that name (it could mean either);
    * a position out of range, and two keys that address the same layer.
    """
    if not isinstance(plan, Plan):
        raise ConfigError(f"plan must be a Plan, got {type(plan).__name__}")
    n = len(model.layers)
    layer_names = [layer.name for layer in model.layers]
    names = {nm: i for i, nm in enumerate(layer_names) if nm}
    layers: dict[int, LayerPlan] = {}
    origin: dict[int, object] = {}
    for key, lp in plan.layers.items():
        kind, value = parse_layer_key(key)
        if kind == "name":
            if value not in names:
                hint = ""
                if re.fullmatch(r"-?[0-9]+", value):
                    hint = (f"; a plan key is a layer name: for the layer at position {value} "
                            f"write '#{value}' ([layers.\"#{value}\"] in TOML)")
                raise ConfigError(f"the plan names layer {key!r}, which the model does not "
                                  f"have; it has {_layer_list(layer_names)}{hint}")
            index = names[value]
        else:
            if isinstance(key, str) and key in names:
                raise ConfigError(
                    f"the plan key {key!r} is ambiguous: the model has a layer named {key!r} "
                    f"(#{names[key]}) and {key!r} is also the position #{value}; the model has "
                    f"{_layer_list(layer_names)}. Rename the layer in the model's spec"
                )
            if not -n <= value < n:
                raise ConfigError(f"the plan names layer {key!r}, which the model does not "
                                  f"have: position {value} is out of range; it has "
                                  f"{_layer_list(layer_names)}")
            index = value % n
        if index in layers:
            raise ConfigError(f"the plan addresses layer #{index} twice: as {origin[index]!r} "
                              f"and as {key!r}; keep one of them")
        layers[index] = lp
        origin[index] = key
    return replace(plan, layers=dict(sorted(layers.items())))


def _check_model_plan(plan: Plan, n_layers: int) -> None:
    if not isinstance(plan, Plan):
        raise ConfigError(f"plan must be a Plan, got {type(plan).__name__}")
    check_plan(plan.default, where="the default layer plan")
    for key, lp in plan.layers.items():
        if not _is_int(key) or not 0 <= int(key) < n_layers:
            raise ConfigError(
                f"the plan names layer {key!r} but the model's layers are 0..{n_layers - 1}"
            )
        check_plan(lp, where=f"layers[{key}]")
    if not isinstance(plan.global_prune, (bool, np.bool_)):
        raise ConfigError(
            f"The 'global_prune' parameter must be a bool. Got {plan.global_prune!r} instead."
        )
    if not _is_int(plan.seed) or int(plan.seed) < 0:
        raise ConfigError(f"The 'seed' parameter must be an int >= 0. Got {plan.seed!r} instead.")


# --------------------------------------------------------------------------- stored forms


@dataclass(frozen=True, eq=False)
class StoredTensor:
    """One stored 2-D weight tensor (a layer's weight or one low-rank factor) of ``shape``.

    ``kind`` and ``data``:

    * ``"float32"``: float32 values;
    * ``"int8"``: int8 codes, ``w = code * scales[column]``;
    * ``"int4"``: the same codes in ``[-7, 7]`` packed two per byte (:func:`pack_int4`), uint8;
    * ``"kmeans"``: uint8 indices into ``centroids`` (float32, sorted).

    ``indices`` is ``None`` (``data`` holds every entry, C order, shape ``shape`` except for
    packed int4, which is always 1-D) or the sorted int32 flat (C-order) indices of the kept
    entries, in which case ``data`` holds only those entries and every other entry is zero.
    ``scales`` (float32, ``(shape[1],)``) is set only for int kinds, ``centroids`` only for
    kmeans.
    """

    shape: tuple[int, int]
    kind: str
    data: np.ndarray
    indices: np.ndarray | None = None
    scales: np.ndarray | None = None
    centroids: np.ndarray | None = None

    @property
    def stored_count(self) -> int:
        """Number of stored entries (kept weights when pruned, else every weight)."""
        return int(np.prod(self.shape)) if self.indices is None else int(self.indices.size)

    def dense(self, *, name: str = "weight") -> np.ndarray:
        """The float32 ``shape`` tensor; entries not in ``indices`` are exactly 0."""
        size = int(np.prod(self.shape))
        if self.kind == "int4":
            flat = unpack_int4(self.data, self.stored_count, name=name)
        else:
            flat = np.asarray(self.data).ravel()
        if flat.size != self.stored_count:
            raise DataError(
                f"{name} of shape {self.shape} stores {flat.size} values but needs "
                f"{self.stored_count}"
            )
        if self.indices is None:
            full = flat.reshape(self.shape)
            keep = None
        else:
            idx = np.asarray(self.indices)
            if idx.size and (idx.min() < 0 or idx.max() >= size or np.any(np.diff(idx) <= 0)):
                raise DataError(
                    f"indices of {name} of shape {self.shape} must be sorted, unique and in "
                    f"[0, {size - 1}]"
                )
            full = np.zeros(size, dtype=flat.dtype)
            full[idx] = flat
            full = full.reshape(self.shape)
            keep = np.zeros(size, dtype=bool)
            keep[idx] = True
            keep = keep.reshape(self.shape)
        if self.kind == "float32":
            return full.astype(np.float32)
        if self.kind in _INT_BITS:
            qt = QuantizedTensor(full, self.scales, axis=1, bits=_INT_BITS[self.kind])
            return dequantize(qt, name=name)
        if self.kind == "kmeans":
            return share_decode(full, self.centroids, mask=keep, name=name)
        raise DataError(f"{name} has unknown kind {self.kind!r}")

    def nbytes(self, prefix: str) -> dict[str, int]:
        """Raw bytes of each stored array, keyed ``prefix + "." + array name``."""
        out = {f"{prefix}.data": int(self.data.nbytes)}
        for key in ("indices", "scales", "centroids"):
            arr = getattr(self, key)
            if arr is not None:
                out[f"{prefix}.{key}"] = int(arr.nbytes)
        return out


@dataclass(frozen=True, eq=False)
class CompressedLayer:
    """The stored form of one Dense layer: ``activation(x @ weight() + bias)``.

    ``shape`` is ``(in, out)`` after structured pruning; ``bias`` is float32 ``(out,)`` or
    ``None``. Exactly one of ``w`` (the whole weight) or the pair ``a`` (``in x r``), ``b``
    (``r x out``) with ``weight = a @ b`` is set. ``kept_neurons`` (int32, sorted) are the
    indices of this layer's outputs in the original model; it is bookkeeping for
    :func:`bias_correction`, not needed to run the layer, and not counted by :meth:`nbytes`.
    ``name`` is the source layer's :attr:`Dense.name`.
    """

    shape: tuple[int, int]
    activation: str
    bias: np.ndarray | None
    kept_neurons: np.ndarray
    w: StoredTensor | None = None
    a: StoredTensor | None = None
    b: StoredTensor | None = None
    name: str = ""

    def weight(self) -> np.ndarray:
        """The dense dequantized float32 ``(in, out)`` weight (``a @ b`` for low rank)."""
        if self.w is not None:
            return self.w.dense()
        a = self.a.dense(name="a").astype(np.float64)
        b = self.b.dense(name="b").astype(np.float64)
        return (a @ b).astype(np.float32)

    def nbytes(self) -> dict[str, int]:
        """Raw bytes (before any entropy coding) of each stored array: ``w.data``,
        ``w.indices``, ``w.scales``, ``w.centroids`` (or the same under ``a.`` and ``b.``) and
        ``bias``, for the arrays that exist."""
        out: dict[str, int] = {}
        for key in ("w", "a", "b"):
            st = getattr(self, key)
            if st is not None:
                out.update(st.nbytes(key))
        if self.bias is not None:
            out["bias"] = int(self.bias.nbytes)
        return out


@dataclass(frozen=True, eq=False)
class CompressedEmbedding:
    """An embedding table, float32 (``table``) or int8 codes with one float32 scale per row
    (``codes``, ``scales``)."""

    input: str
    combiner: str
    table: np.ndarray | None = None
    codes: np.ndarray | None = None
    scales: np.ndarray | None = None

    def dense(self) -> np.ndarray:
        if self.table is not None:
            return self.table
        qt = QuantizedTensor(self.codes, self.scales, axis=0, bits=8)
        return dequantize(qt, name=f"embedding {self.input!r}")


@dataclass(frozen=True, eq=False)
class CompressedModel:
    """A compressed :class:`Model`: same task, inputs and output."""

    task: str
    layers: tuple[CompressedLayer, ...]
    n_features: int
    embeddings: tuple[CompressedEmbedding, ...] = ()
    input_names: tuple[str, ...] = ()


# --------------------------------------------------------------------------- compress


def _store(
    arr: np.ndarray, keep: np.ndarray | None, lp: LayerPlan, seed: int, name: str
) -> StoredTensor:
    """Quantize the kept entries of ``arr`` (float64, 2-D) as ``lp.quantize`` says."""
    shape = tuple(int(s) for s in arr.shape)
    idx = None if keep is None else np.flatnonzero(keep.ravel()).astype(np.int32)
    work = arr if keep is None else np.where(keep, arr, 0.0)

    def pick(values: np.ndarray) -> np.ndarray:
        return values if idx is None else values.ravel()[idx]

    if lp.quantize == "none":
        return StoredTensor(shape, "float32", pick(work.astype(np.float32)), idx)
    if lp.quantize in _INT_BITS:
        # Pruned entries are 0, so the per-column max |w| (the scale) is over kept weights only.
        qt = quantize_symmetric(work, bits=_INT_BITS[lp.quantize], axis=1, name=name)
        codes = pick(qt.codes)
        if lp.quantize == "int4":
            codes = pack_int4(codes, name=name)
        return StoredTensor(shape, lp.quantize, codes, idx, scales=qt.scales)
    codes, centroids = kmeans_share(arr, bits=int(lp.kmeans_bits), seed=seed, mask=keep, name=name)
    return StoredTensor(shape, "kmeans", pick(codes), idx, centroids=centroids)


def compress(model: Model, plan: Plan) -> CompressedModel:
    """Apply ``plan`` to ``model`` (see the module docstring for the order of the steps).

    Raises :class:`ConfigError` naming the layer for a plan value out of range, a rank above
    ``min(in, out)``, structured pruning that would remove every neuron of a layer, or
    structured pruning (``structured=True, prune > 0``) of the output layer, whose outputs are
    the model's. Deterministic: the same model and plan give identical arrays.
    """
    validate(model)
    n = len(model.layers)
    plan = resolve_plan(plan, model)
    _check_model_plan(plan, n)
    plans = [plan.for_layer(i) for i in range(n)]
    ws = [np.asarray(l.weight, dtype=np.float64) for l in model.layers]
    bs = [None if l.bias is None else np.asarray(l.bias, dtype=np.float64) for l in model.layers]
    kept = [np.arange(w.shape[1], dtype=np.int32) for w in ws]

    for i, lp in enumerate(plans):
        if not (lp.structured and lp.prune > 0):
            continue
        if i == n - 1:
            raise ConfigError(
                f"layers[{i}] is the output layer: its outputs are the model's and cannot be "
                f"pruned structurally; set structured=False or prune=0 for layers[{i}]"
            )
        out = ws[i].shape[1]
        removed = int(round(float(lp.prune) * out))
        if removed >= out:
            raise ConfigError(
                f"structured prune {lp.prune!r} of layers[{i}] (shape {ws[i].shape}) removes "
                f"{removed} of its {out} neurons; at least one must stay"
            )
        keep = structured_mask(ws[i].T, removed, axis=0, norm=2, name=f"layers[{i}].weight")
        ws[i] = ws[i][:, keep]
        if bs[i] is not None:
            bs[i] = bs[i][keep]
        kept[i] = kept[i][keep]
        ws[i + 1] = ws[i + 1][keep, :]

    # Each layer's stored tensors: the weight, or the two low-rank factors.
    tensors: list[dict[str, np.ndarray]] = []
    for i, lp in enumerate(plans):
        if lp.factorized:
            a, b = low_rank(ws[i], rank=int(lp.rank) if lp.rank > 0 else None,
                            energy=float(lp.energy) if lp.energy > 0 else None,
                            name=f"layers[{i}].weight")
            tensors.append({"a": a, "b": b})
        else:
            tensors.append({"w": ws[i]})

    masks: list[dict[str, np.ndarray | None]] = [dict.fromkeys(t) for t in tensors]
    prunes = [i for i, lp in enumerate(plans) if lp.prune > 0 and not lp.structured]
    if plan.global_prune and prunes:
        pool = {(i, key): t for i in prunes for key, t in tensors[i].items()}
        total = sum(int(round(float(plans[i].prune) * t.size)) for (i, _), t in pool.items())
        named = {f"layers[{i}].{key}": t for (i, key), t in pool.items()}
        got = global_magnitude_masks(named, total)
        for (i, key), m in zip(pool, got.values()):
            masks[i][key] = m
    else:
        for i in prunes:
            for key, t in tensors[i].items():
                masks[i][key] = magnitude_mask(t, float(plans[i].prune), name=f"layers[{i}].{key}")

    layers = []
    for i, lp in enumerate(plans):
        stored = {
            key: _store(t, masks[i][key], lp, int(plan.seed), f"layers[{i}].{key}")
            for key, t in tensors[i].items()
        }
        layers.append(
            CompressedLayer(
                shape=tuple(int(s) for s in ws[i].shape),
                activation=model.layers[i].activation,
                bias=None if bs[i] is None else bs[i].astype(np.float32),
                kept_neurons=kept[i],
                **stored,
                name=model.layers[i].name,
            )
        )

    embeddings = []
    quantize_tables = plan.default.quantize in _INT_BITS
    for j, emb in enumerate(model.embeddings):
        table = np.asarray(emb.table, dtype=np.float32)
        if quantize_tables:
            qt = quantize_symmetric(table, bits=8, axis=0, name=f"embeddings[{j}].table")
            embeddings.append(
                CompressedEmbedding(emb.input, emb.combiner, codes=qt.codes, scales=qt.scales)
            )
        else:
            embeddings.append(CompressedEmbedding(emb.input, emb.combiner, table.copy()))

    return CompressedModel(
        task=model.task,
        layers=tuple(layers),
        n_features=model.n_features,
        embeddings=tuple(embeddings),
        input_names=tuple(model.input_names),
    )


def decompress(cm: CompressedModel) -> Model:
    """The float32 :class:`Model` that ``cm`` stores: dequantized weights, pruned entries 0,
    low-rank layers materialised as ``a @ b``, structurally pruned layers at their new width."""
    layers = tuple(
        Dense(l.weight(), None if l.bias is None else l.bias.astype(np.float32), l.activation,
              l.name)
        for l in cm.layers
    )
    embeddings = tuple(Embedding(e.dense(), e.input, e.combiner) for e in cm.embeddings)
    model = Model(
        cm.task, layers, cm.n_features, embeddings=embeddings, input_names=tuple(cm.input_names)
    )
    validate(model)
    return model


def sparsity(cm: CompressedModel) -> dict[int, float]:
    """Fraction of exactly-zero entries of each layer's materialised weight, by layer index.

    Counts pruned entries and kept weights that quantize to 0; for a low-rank layer it is the
    sparsity of ``a @ b``, not of the factors."""
    out = {}
    for i, layer in enumerate(cm.layers):
        w = layer.weight()
        out[i] = float(np.count_nonzero(w == 0)) / w.size if w.size else 0.0
    return out


# --------------------------------------------------------------------------- bias correction


def _first_input(model: Model, x: np.ndarray, ids: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """The first layer's input (features then combined embeddings), float32."""
    width = model.n_inputs
    probe = Model(
        "regression",
        (Dense(np.eye(width, dtype=np.float32), None, "identity"),),
        model.n_features,
        embeddings=model.embeddings,
        input_names=tuple(model.input_names),
    )
    return forward(probe, x, ids)


def bias_correction(
    original: Model,
    cm: CompressedModel,
    x_calib: np.ndarray,
    ids: Mapping[str, np.ndarray] | None = None,
) -> CompressedModel:
    """Shift each compressed layer's bias so its mean pre-activation on ``x_calib`` equals the
    original layer's.

    ``original`` is the float model that ``cm`` approximates: the model given to
    :func:`compress`, whose layers are restricted to ``kept_neurons`` where structured pruning
    made the compressed layer narrower, or a model whose layers already have the compressed
    widths (the fine-tuned model of
    :func:`~spark_compress.core.finetune.prune_finetune_compress`), used as it is.

    The rule, for ``i = 0, 1, ...`` in order, with ``h_orig_i`` the input of layer ``i`` in the
    original model and ``h_comp_i`` its input in the compressed model *with the biases of layers
    ``0..i-1`` already corrected* (so later layers also absorb the error passed on by earlier
    ones)::

        z_orig = h_orig_i @ W_i + b_i                     (original layer, restricted to the
                                                           neurons kept by structured pruning)
        z_comp = h_comp_i @ W'_i + b'_i                   (compressed layer, b' = 0 if no bias)
        b'_i  <- b'_i + mean over rows of (z_orig - z_comp)

    After it, ``mean(z_comp) == mean(z_orig)`` per neuron on the batch (up to float32
    rounding). A layer without a bias gets one. Weights are unchanged; returns a new
    :class:`CompressedModel`. ``x_calib`` (``(n, n_features)``, ``n >= 1``) and ``ids`` are as
    for :func:`~spark_compress.core.model.forward`.
    """
    validate(original)
    if len(original.layers) != len(cm.layers):
        raise ConfigError(
            f"the original model has {len(original.layers)} layers but the compressed one "
            f"{len(cm.layers)}; bias correction needs the model that was compressed"
        )
    x = np.asarray(x_calib, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(
            f"bias correction needs a calibration batch of shape (n >= 1, {original.n_features}); "
            f"got shape {x.shape}"
        )
    h_orig = _first_input(original, x, ids).astype(np.float64)
    h_comp = _first_input(decompress(cm), x, ids).astype(np.float64)
    layers = []
    for i, (lo, lc) in enumerate(zip(original.layers, cm.layers)):
        z_orig = h_orig @ np.asarray(lo.weight, dtype=np.float64)
        if lo.bias is not None:
            z_orig = z_orig + np.asarray(lo.bias, dtype=np.float64)
        w_c = lc.weight().astype(np.float64)
        b_c = np.zeros(lc.shape[1]) if lc.bias is None else lc.bias.astype(np.float64)
        z_comp = h_comp @ w_c + b_c
        cols = slice(None) if z_orig.shape[1] == lc.shape[1] else lc.kept_neurons
        b_new = b_c + (z_orig[:, cols] - z_comp).mean(axis=0)
        layers.append(replace(lc, bias=b_new.astype(np.float32)))
        h_orig = _activate(z_orig.astype(np.float32), lo.activation).astype(np.float64)
        z_new = (h_comp @ w_c + b_new.astype(np.float32)).astype(np.float32)
        h_comp = _activate(z_new, lc.activation).astype(np.float64)
    return replace(cm, layers=tuple(layers))
