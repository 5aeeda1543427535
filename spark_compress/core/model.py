"""A small feed-forward model and its float32 forward pass. numpy only.

A :class:`Model` is a stack of :class:`Dense` layers, optionally fed by :class:`Embedding`
lookups. The input of the first layer is the row's numeric features followed by one combined
vector per embedding, in the order of ``Model.embeddings``::

    h0 = concat(x, combine(table_0[ids_0]), combine(table_1[ids_1]), ...)   # (n, n_in)
    h_{i+1} = activation_i(h_i @ weight_i + bias_i)                          # weight_i: (in, out)

Weights are stored ``(in, out)`` so that a batch of rows multiplies from the left; Spark MLlib's
MLP layout (the ``(out, in)`` matrix stored column by column) reads directly into it, see
:func:`mlp_from_mllib_flat`. The forward pass runs in float32 whatever the stored dtype.

The dataclasses are frozen but hold numpy arrays, which stay mutable: treat them as read-only.
They compare by identity (``eq=False``), because ``==`` on arrays is elementwise.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Mapping, Sequence

import numpy as np

from spark_compress.errors import ConfigError, DataError, FormatError, SchemaError

TASKS = ("regression", "binary", "multiclass")
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax")
COMBINERS = ("mean", "sum", "first")


@dataclass(frozen=True, eq=False)
class Dense:
    """``activation(x @ weight + bias)``.

    ``weight`` is ``(in, out)``, ``bias`` is ``(out,)`` or ``None`` (no bias); ``activation`` is
    one of :data:`ACTIVATIONS` (``softmax`` is taken over the ``out`` axis). ``name`` is
    optional (``""``); a non-empty name is unique in its model and lets a compression plan
    address the layer by name.
    """

    weight: np.ndarray
    bias: np.ndarray | None
    activation: str
    name: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.weight))  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Embedding:
    """Lookup of integer ids in ``table`` (``num_ids x dim``), fed by the id column ``input``.

    Each row has one id (ids of shape ``(n,)``) or a bag of ``L >= 1`` ids (shape ``(n, L)``)
    that ``combiner`` reduces to one vector: ``mean``, ``sum``, or ``first`` (the bag's first id).
    """

    table: np.ndarray
    input: str
    combiner: str = "mean"

    @property
    def num_ids(self) -> int:
        return int(np.shape(self.table)[0])

    @property
    def dim(self) -> int:
        return int(np.shape(self.table)[1])


@dataclass(frozen=True, eq=False)
class Model:
    """A feed-forward model: ``n_features`` numeric inputs (named ``input_names`` if given),
    ``embeddings`` concatenated after them, then ``layers``.

    ``task`` fixes what the last layer must be: ``regression`` (any activation but softmax),
    ``binary`` (1 output with sigmoid, the probability of class 1, or 2 with softmax) or
    ``multiclass`` (``k >= 2`` outputs with softmax). Check a model with :func:`validate`.
    """

    task: str
    layers: tuple[Dense, ...]
    n_features: int
    _: KW_ONLY
    embeddings: tuple[Embedding, ...] = ()
    input_names: tuple[str, ...] = ()

    @property
    def n_inputs(self) -> int:
        """Width of the first layer's input: numeric features plus embedding dims."""
        return self.n_features + sum(e.dim for e in self.embeddings)

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].shape[1]


# --------------------------------------------------------------------------- validation


def validate(model: Model) -> None:
    """Raise if ``model`` cannot be evaluated or does not fit its task; return ``None`` if it is
    sound.

    :class:`ConfigError` for an unknown task, activation or combiner; :class:`FormatError` for
    shapes that don't chain, wrong bias shapes, non-float or non-finite parameters, and a last
    layer that does not fit the task. Messages name the layer (``layers[i]``) or the embedding
    and the shapes involved.
    """
    if model.task not in TASKS:
        raise ConfigError(f"Model task must be one of {TASKS}. Got {model.task!r} instead.")
    nf = model.n_features
    if isinstance(nf, bool) or not isinstance(nf, (int, np.integer)) or nf < 0:
        raise FormatError(f"n_features must be an int >= 0. Got {nf!r} instead.")
    if model.input_names:
        names = tuple(model.input_names)
        if len(names) != nf:
            raise FormatError(
                f"input_names has {len(names)} names but n_features is {nf}"
            )
        if len(set(names)) != len(names):
            raise FormatError(f"input_names are not unique: {list(names)}")
    _validate_embeddings(model.embeddings)
    layers = model.layers
    if not isinstance(layers, tuple) or len(layers) == 0:
        raise FormatError("model has no layers; it needs at least one Dense layer")
    width = model.n_inputs
    if width == 0:
        raise FormatError("model has no inputs (n_features is 0 and there are no embeddings)")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Dense):
            raise FormatError(f"layers[{i}] is a {type(layer).__name__}, not a Dense layer")
        w = layer.weight
        _check_float_array(w, f"layers[{i}].weight")
        if w.ndim != 2 or w.shape[1] == 0:
            raise FormatError(
                f"layers[{i}].weight must be 2-D (in, out) with out >= 1; got shape {w.shape}"
            )
        if w.shape[0] != width:
            what = "model input (n_features + embedding dims)" if i == 0 else f"layers[{i - 1}]"
            raise FormatError(
                f"layers[{i}].weight has shape {w.shape}: it takes {w.shape[0]} inputs but the "
                f"{what} gives {width}"
            )
        if layer.bias is not None:
            _check_float_array(layer.bias, f"layers[{i}].bias")
            if layer.bias.shape != (w.shape[1],):
                raise FormatError(
                    f"layers[{i}].bias has shape {layer.bias.shape}; the weight {w.shape} needs "
                    f"({w.shape[1]},)"
                )
        if layer.activation not in ACTIVATIONS:
            raise ConfigError(
                f"layers[{i}].activation must be one of {ACTIVATIONS}. "
                f"Got {layer.activation!r} instead."
            )
        width = w.shape[1]
    names = [layer.name for layer in layers]
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise FormatError(f"layers[{i}].name must be a string. Got {name!r} instead.")
        if name and names.index(name) != i:
            raise FormatError(f"layers[{names.index(name)}] and layers[{i}] are both named "
                              f"{name!r}; layer names must be unique")
    _validate_head(model.task, len(layers) - 1, layers[-1])


def _validate_head(task: str, i: int, last: Dense) -> None:
    out, act = last.weight.shape[1], last.activation
    if task == "regression" and act == "softmax":
        raise FormatError(
            f"layers[{i}] (the output layer, shape {last.weight.shape}) uses softmax, which does "
            f"not fit a regression model; use identity"
        )
    binary_ok = (out == 1 and act == "sigmoid") or (out == 2 and act == "softmax")
    if task == "binary" and not binary_ok:
        raise FormatError(
            f"layers[{i}] (the output layer, shape {last.weight.shape}, {act}) does not fit a "
            f"binary model: it needs 1 output with sigmoid or 2 outputs with softmax"
        )
    if task == "multiclass" and not (out >= 2 and act == "softmax"):
        raise FormatError(
            f"layers[{i}] (the output layer, shape {last.weight.shape}, {act}) does not fit a "
            f"multiclass model: it needs >= 2 outputs with softmax"
        )


def _validate_embeddings(embeddings: tuple[Embedding, ...]) -> None:
    if not isinstance(embeddings, tuple):
        raise FormatError(f"embeddings must be a tuple, got {type(embeddings).__name__}")
    seen: set[str] = set()
    for j, emb in enumerate(embeddings):
        where = f"embeddings[{j}] ({getattr(emb, 'input', '?')!r})"
        if not isinstance(emb, Embedding):
            raise FormatError(f"embeddings[{j}] is a {type(emb).__name__}, not an Embedding")
        _check_float_array(emb.table, f"{where}.table")
        if emb.table.ndim != 2 or emb.table.shape[0] == 0 or emb.table.shape[1] == 0:
            raise FormatError(
                f"{where}.table must be 2-D (num_ids, dim) with both >= 1; "
                f"got shape {emb.table.shape}"
            )
        if emb.combiner not in COMBINERS:
            raise ConfigError(
                f"{where}.combiner must be one of {COMBINERS}. Got {emb.combiner!r} instead."
            )
        if emb.input in seen:
            raise FormatError(f"{where}: the id input {emb.input!r} feeds two embeddings")
        seen.add(emb.input)


def _check_float_array(a: object, where: str) -> None:
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
        kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise FormatError(f"{where} must be a float numpy array; got {kind}")
    if not np.all(np.isfinite(a)):
        raise FormatError(f"{where} (shape {a.shape}) contains NaN or infinity")


# --------------------------------------------------------------------------- forward


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow: ``exp`` only ever sees ``-|z|``."""
    z = np.asarray(z, dtype=np.float32)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32, copy=False)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a 2-D array; the row maximum is subtracted first, so large logits
    don't overflow. Rows sum to 1 (up to float32 rounding)."""
    z = np.asarray(z, dtype=np.float32)
    if z.shape[0] == 0:
        return z.copy()
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _activate(z: np.ndarray, activation: str) -> np.ndarray:
    if activation == "identity":
        return z
    if activation == "relu":
        return np.maximum(z, np.float32(0))
    if activation == "sigmoid":
        return sigmoid(z)
    if activation == "tanh":
        return np.tanh(z)
    return softmax(z)


def forward(
    model: Model,
    x: np.ndarray,
    ids: Mapping[str, np.ndarray] | None = None,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Outputs of ``model`` on the rows of ``x`` (``(n, n_features)``), float32 ``(n, k)``.

    Classification models give probabilities (binary single-output: the probability of class 1),
    regression models their values. ``ids`` maps each embedding's ``input`` to its integer ids,
    ``(n,)`` or ``(n, L)``; an id outside ``0 .. num_ids - 1`` raises :class:`DataError` naming
    the embedding and the id. NaN in ``x`` propagates to that row's outputs. ``n = 0`` gives
    shape ``(0, k)``. ``batch_size`` bounds the rows evaluated at once (memory); it changes a
    row's result only within float32 rounding (BLAS may sum in another order for another batch
    shape).
    """
    validate(model)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ConfigError(
            f"The 'batch_size' parameter must be an int >= 1 or None. Got {batch_size!r} instead."
        )
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != model.n_features:
        raise DataError(
            f"features must have shape (n, {model.n_features}); got shape {x.shape}"
        )
    n = x.shape[0]
    id_arrays = _check_ids(model, ids, n)
    tables = [np.asarray(e.table, dtype=np.float32) for e in model.embeddings]
    params = [
        (np.asarray(l.weight, dtype=np.float32),
         None if l.bias is None else np.asarray(l.bias, dtype=np.float32),
         l.activation)
        for l in model.layers
    ]
    step = n if batch_size is None else int(batch_size)
    out = np.empty((n, model.n_outputs), dtype=np.float32)
    for start in range(0, n, max(step, 1)):
        stop = min(start + step, n)
        parts = [x[start:stop]]
        for emb, table, a in zip(model.embeddings, tables, id_arrays):
            parts.append(_combine(table[a[start:stop]], emb.combiner))
        h = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        for w, b, act in params:
            z = h @ w
            if b is not None:
                z += b
            h = _activate(z, act)
        out[start:stop] = h
    return out


def _check_ids(
    model: Model, ids: Mapping[str, np.ndarray] | None, n: int
) -> list[np.ndarray]:
    ids = {} if ids is None else ids
    wanted = [e.input for e in model.embeddings]
    missing = [k for k in wanted if k not in ids]
    if missing:
        raise SchemaError(f"ids are missing for the embedding input(s) {missing}; "
                          f"the model needs {wanted}")
    unknown = sorted(set(ids) - set(wanted))
    if unknown:
        raise SchemaError(f"ids given for {unknown}, which no embedding uses (inputs: {wanted})")
    arrays = []
    for emb in model.embeddings:
        a = np.asarray(ids[emb.input])
        if not np.issubdtype(a.dtype, np.integer):
            raise SchemaError(f"ids of embedding {emb.input!r} must be integers; got {a.dtype}")
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[0] != n or a.shape[1] == 0:
            raise DataError(
                f"ids of embedding {emb.input!r} must have shape ({n},) or ({n}, L) with L >= 1; "
                f"got shape {np.shape(ids[emb.input])}"
            )
        bad = (a < 0) | (a >= emb.num_ids)
        if bad.any():
            raise DataError(
                f"id {int(a[np.unravel_index(np.argmax(bad), a.shape)])} is out of range for "
                f"embedding {emb.input!r} (valid ids: 0..{emb.num_ids - 1})"
            )
        arrays.append(a)
    return arrays


def _combine(vectors: np.ndarray, combiner: str) -> np.ndarray:
    """``vectors`` is ``(rows, L, dim)``; reduce the bag axis."""
    if combiner == "first":
        return vectors[:, 0, :]
    if combiner == "sum":
        return vectors.sum(axis=1, dtype=np.float32)
    return vectors.mean(axis=1, dtype=np.float32)


def predict(model: Model, outputs: np.ndarray) -> np.ndarray:
    """Class labels (int64, ``(n,)``) from the :func:`forward` outputs of a classification model.

    Single-output binary: ``1`` where the probability is ``> 0.5`` (as MLlib's default
    threshold), else ``0``. Softmax outputs: the argmax (the first on ties, as MLlib). A
    regression model raises :class:`ConfigError`: its ``forward`` outputs are the predictions.
    """
    if model.task == "regression":
        raise ConfigError(
            "predict gives class labels; for a regression model the outputs of forward are "
            "the predictions"
        )
    outputs = np.asarray(outputs)
    k = model.n_outputs
    if outputs.ndim != 2 or outputs.shape[1] != k:
        raise DataError(f"outputs must have shape (n, {k}); got shape {outputs.shape}")
    if k == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return np.argmax(outputs, axis=1).astype(np.int64)


# --------------------------------------------------------------------------- constructors


def linear(
    weights: np.ndarray,
    intercept: float | np.ndarray | None,
    task: str,
    *,
    input_names: Sequence[str] = (),
) -> Model:
    """A one-layer model: linear regression or logistic regression.

    ``weights`` is ``(in,)`` (one output) or ``(in, k)``; ``intercept`` a scalar, ``(k,)`` or
    ``None``. ``regression``: identity outputs. ``binary`` with one output: sigmoid (the
    probability of class 1, as MLlib's binomial LogisticRegression); ``binary`` with two or
    ``multiclass``: softmax (multinomial). MLlib's ``coefficientMatrix`` is ``(k, in)``: pass its
    transpose.
    """
    if task not in TASKS:
        raise ConfigError(f"Model task must be one of {TASKS}. Got {task!r} instead.")
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim == 1:
        w = w[:, None]
    if w.ndim != 2:
        raise FormatError(f"linear weights must be (in,) or (in, k); got shape {np.shape(weights)}")
    k = w.shape[1]
    if intercept is None:
        b = None
    else:
        b = np.asarray(intercept, dtype=np.float32).reshape(-1)
        if b.size == 1 and k != 1:
            b = np.full(k, b[0], dtype=np.float32)
    activation = "identity" if task == "regression" else ("sigmoid" if k == 1 else "softmax")
    model = Model(task, (Dense(w, b, activation),), w.shape[0], input_names=tuple(input_names))
    validate(model)
    return model


def mlp_from_mllib_flat(
    layers: Sequence[int], flat_weights: np.ndarray, *, input_names: Sequence[str] = ()
) -> Model:
    """The model of a Spark MLlib ``MultilayerPerceptronClassificationModel``.

    ``layers`` are the layer sizes (inputs first, classes last) and ``flat_weights`` is
    ``model.weights.toArray()``: per layer the ``(out, in)`` matrix stored column by column,
    which is ``flat[off:off + in*out].reshape(in, out)`` in numpy, then ``out`` biases. Hidden
    layers use sigmoid, the output softmax; the task is ``binary`` for 2 classes, else
    ``multiclass``.
    """
    sizes = list(layers)
    if len(sizes) < 2 or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes
    ):
        raise ConfigError(
            f"The 'layers' parameter must list >= 2 positive ints (inputs, ..., classes). "
            f"Got {sizes!r} instead."
        )
    if sizes[-1] < 2:
        raise ConfigError(f"an MLlib MLP needs >= 2 output classes; layers is {sizes}")
    flat = np.asarray(flat_weights, dtype=np.float64).reshape(-1)
    expected = sum(nin * nout + nout for nin, nout in zip(sizes[:-1], sizes[1:]))
    if flat.size != expected:
        raise FormatError(
            f"layers {sizes} need {expected} weights; got {flat.size} (shape "
            f"{np.shape(flat_weights)})"
        )
    dense = []
    off = 0
    for i, (nin, nout) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = flat[off:off + nin * nout].reshape(nin, nout).astype(np.float32)
        off += nin * nout
        b = flat[off:off + nout].astype(np.float32)
        off += nout
        dense.append(Dense(w, b, "softmax" if i == len(sizes) - 2 else "sigmoid"))
    task = "binary" if sizes[-1] == 2 else "multiclass"
    model = Model(task, tuple(dense), sizes[0], input_names=tuple(input_names))
    validate(model)
    return model
