"""Accuracy recovery after pruning: retrain the surviving weights with the pruning masks fixed.
numpy only.

Deep Compression (Han et al., 2016) prunes, retrains the kept weights, then quantizes.
:func:`finetune` is the retraining step: Adam on shuffled mini-batches of a sample held on the
driver, manual backprop through the Dense layers, and after every step each weight is multiplied
by its mask, so a pruned weight stays exactly 0. :func:`prune_finetune_compress` chains the three
steps around :func:`~spark_compress.core.compress.compress`.

The loss follows the model's task::

    multiclass, binary with 2 softmax outputs   mean over rows of -log p[label]
    binary with 1 sigmoid output                mean binary cross-entropy of p(class 1)
    regression                                  mean over rows and outputs of (out - y) ** 2

Embedding tables are not trained: a model with embeddings raises :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from spark_compress.core.compress import (
    CompressedModel,
    Plan,
    bias_correction,
    compress,
    decompress,
    resolve_plan,
)
from spark_compress.core.model import Dense, Model, validate
from spark_compress.core.weights import _is_int
from spark_compress.errors import ConfigError, DataError

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8

Params = list[tuple[np.ndarray, np.ndarray | None, str]]


# --------------------------------------------------------------------------- checks


def _check_trainable(model: Model) -> None:
    validate(model)
    if model.embeddings:
        names = [e.input for e in model.embeddings]
        raise ConfigError(
            f"fine-tuning does not train embedding tables; the model has embeddings {names}. "
            f"Fine-tune a model without embeddings"
        )


def _check_xy(model: Model, x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as float32 ``(n, n_features)``; ``y`` as int64 labels ``(n,)`` (classification)
    or float32 targets ``(n, k)`` (regression)."""
    xa = np.asarray(x)
    if not (np.issubdtype(xa.dtype, np.floating) or np.issubdtype(xa.dtype, np.integer)):
        raise DataError(f"features must be numeric; got dtype {xa.dtype}")
    xa = xa.astype(np.float32)
    if xa.ndim != 2 or xa.shape[1] != model.n_features or xa.shape[0] == 0:
        raise DataError(
            f"features must have shape (n >= 1, {model.n_features}); got shape {xa.shape}"
        )
    if not np.all(np.isfinite(xa)):
        raise DataError(f"features (shape {xa.shape}) contain NaN or infinity")
    n, k = xa.shape[0], model.n_outputs
    ya = np.asarray(y)
    if model.task == "regression":
        if not (np.issubdtype(ya.dtype, np.floating) or np.issubdtype(ya.dtype, np.integer)):
            raise DataError(f"regression targets must be numeric; got dtype {ya.dtype}")
        if ya.ndim == 1 and k == 1:
            ya = ya[:, None]
        if ya.shape != (n, k):
            want = f"({n},) or ({n}, 1)" if k == 1 else f"({n}, {k})"
            raise DataError(f"targets must have shape {want}; got shape {np.shape(y)}")
        ya = ya.astype(np.float32)
        if not np.all(np.isfinite(ya)):
            raise DataError(f"targets (shape {ya.shape}) contain NaN or infinity")
        return xa, ya
    if ya.shape != (n,):
        raise DataError(f"labels must have shape ({n},), one per row; got shape {ya.shape}")
    classes = max(k, 2)
    if np.issubdtype(ya.dtype, np.floating):
        # MLlib tables hold labels as doubles (0.0, 1.0, ...): accept integral values only.
        frac = ~np.isfinite(ya) | (ya != np.round(ya))
        if frac.any():
            i = int(np.argmax(frac))
            raise DataError(
                f"labels must be integer class values 0..{classes - 1}; row {i} holds "
                f"{float(ya[i])!r}, which is not a whole number"
            )
    elif not (np.issubdtype(ya.dtype, np.integer) or ya.dtype == np.bool_):
        raise DataError(f"labels must be integers 0..{classes - 1}; got dtype {ya.dtype}")
    bad = (ya < 0) | (ya >= classes)
    if bad.any():
        raise DataError(
            f"label {int(ya[np.argmax(bad)])} is out of range for a {model.task} model with "
            f"{classes} classes (valid labels: 0..{classes - 1})"
        )
    return xa, ya.astype(np.int64)


def _check_masks(model: Model, masks: object) -> list[np.ndarray | None]:
    n = len(model.layers)
    if isinstance(masks, np.ndarray) or not isinstance(masks, Sequence) or len(masks) != n:
        got = len(masks) if isinstance(masks, Sequence) else type(masks).__name__
        raise ConfigError(
            f"masks must be a sequence of {n} entries (one per layer, None for an unmasked "
            f"layer); got {got}"
        )
    out: list[np.ndarray | None] = []
    for i, (m, layer) in enumerate(zip(masks, model.layers)):
        if m is None:
            out.append(None)
            continue
        arr = np.asarray(m)
        if arr.shape != layer.shape:
            raise ConfigError(
                f"masks[{i}] has shape {arr.shape} but layers[{i}].weight has shape {layer.shape}"
            )
        if arr.dtype != np.bool_ and not np.all((arr == 0) | (arr == 1)):
            raise ConfigError(f"masks[{i}] must be boolean or 0/1 (1 = keep the weight)")
        out.append(arr.astype(bool))
    return out


def _check_options(epochs: object, batch_size: object, lr: object, seed: object) -> None:
    if not _is_int(epochs) or int(epochs) < 0:
        raise ConfigError(f"The 'epochs' parameter must be an int >= 0. Got {epochs!r} instead.")
    if not _is_int(batch_size) or int(batch_size) < 1:
        raise ConfigError(
            f"The 'batch_size' parameter must be an int >= 1. Got {batch_size!r} instead."
        )
    if (
        isinstance(lr, (bool, np.bool_))
        or not isinstance(lr, (int, float, np.integer, np.floating))
        or not np.isfinite(lr) or lr <= 0
    ):
        raise ConfigError(f"The 'lr' parameter must be a float > 0. Got {lr!r} instead.")
    if not _is_int(seed) or int(seed) < 0:
        raise ConfigError(f"The 'seed' parameter must be an int >= 0. Got {seed!r} instead.")


# --------------------------------------------------------------------------- loss and backprop


def _act(z: np.ndarray, activation: str) -> np.ndarray:
    """The activation in ``z``'s own dtype (float64 for the gradient check)."""
    if activation == "identity":
        return z
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "sigmoid":
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    if activation == "tanh":
        return np.tanh(z)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _act_backward(da: np.ndarray, z: np.ndarray, a: np.ndarray, activation: str) -> np.ndarray:
    """d loss / d z from d loss / d a, for ``a = activation(z)``."""
    if activation == "identity":
        return da
    if activation == "relu":
        return da * (z > 0)
    if activation == "sigmoid":
        return da * a * (1 - a)
    if activation == "tanh":
        return da * (1 - a * a)
    return a * (da - (da * a).sum(axis=1, keepdims=True))


def _loss_grads(
    task: str, params: Params, x: np.ndarray, y: np.ndarray
) -> tuple[float, list[tuple[np.ndarray, np.ndarray | None]]]:
    """Loss on the batch and its gradient for each ``(weight, bias)``, in ``x``'s dtype."""
    hs, zs = [x], []
    for w, b, act in params:
        z = hs[-1] @ w
        if b is not None:
            z = z + b
        zs.append(z)
        hs.append(_act(z, act))
    rows = x.shape[0]
    z, out, last = zs[-1], hs[-1], params[-1][2]
    if task == "regression":
        diff = out - y
        loss = float(np.mean(diff * diff))
        dz = _act_backward(2 * diff / diff.size, z, out, last)
    elif last == "sigmoid":  # binary, one output: BCE with logits
        t = y.astype(z.dtype)[:, None]
        loss = float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))
        dz = (out - t) / rows
    else:  # softmax output: cross-entropy on integer labels
        shifted = z - z.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-np.mean(logp[np.arange(rows), y]))
        dz = out.copy()
        dz[np.arange(rows), y] -= 1
        dz /= rows
    grads: list[tuple[np.ndarray, np.ndarray | None]] = [None] * len(params)  # type: ignore
    for i in range(len(params) - 1, -1, -1):
        w, b, _ = params[i]
        gw = hs[i].T @ dz
        gb = None if b is None else dz.sum(axis=0)
        grads[i] = (gw, gb)
        if i > 0:
            dh = dz @ w.T
            dz = _act_backward(dh, zs[i - 1], hs[i], params[i - 1][2])
    return loss, grads


def loss_and_gradients(
    model: Model, x: np.ndarray, y: np.ndarray, *, dtype: type = np.float32
) -> tuple[float, list[tuple[np.ndarray, np.ndarray | None]]]:
    """The training loss of ``model`` on ``(x, y)`` (see the module docstring) and its gradient
    with respect to each layer's ``(weight, bias)`` (``None`` for a layer without bias).

    Computed in ``dtype`` (float32 as :func:`finetune`; float64 to check the gradients against
    finite differences). Labels and shapes are validated as in :func:`finetune`.
    """
    _check_trainable(model)
    xa, ya = _check_xy(model, x, y)
    params = _params(model, dtype)
    if model.task == "regression":
        ya = ya.astype(dtype)
    return _loss_grads(model.task, params, xa.astype(dtype), ya)


def _params(model: Model, dtype: type) -> Params:
    return [
        (np.array(l.weight, dtype=dtype),
         None if l.bias is None else np.array(l.bias, dtype=dtype),
         l.activation)
        for l in model.layers
    ]


# --------------------------------------------------------------------------- fine-tuning


def finetune(
    model: Model,
    masks: Sequence[np.ndarray | None],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 3,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> Model:
    """``model`` with its Dense weights and biases retrained on ``(x, y)``, masks held fixed.

    ``masks`` has one entry per layer: ``None`` (every weight of the layer trains) or a boolean
    (or 0/1) array of the weight's shape, ``True`` = keep. Masked-out weights are 0 in the
    result, exactly, whatever their value in ``model``; biases are never masked. ``x`` is
    ``(n >= 1, n_features)`` and finite; ``y`` is integer labels ``(n,)`` for classification
    (``0..k-1``, binary ``0/1``; integral floats such as MLlib's ``0.0``/``1.0`` are accepted)
    or targets ``(n,)``/``(n, k)`` for regression.

    Adam (beta1 0.9, beta2 0.999, eps 1e-8, step ``lr``) on mini-batches of ``batch_size`` rows,
    reshuffled every epoch by ``numpy.random.default_rng(seed)``; float32 throughout. The same
    inputs and seed give identical weights. ``epochs=0`` returns the masked model. Returns a new
    float32 :class:`Model` with the same task, activations and input names.

    Raises :class:`ConfigError` for a model with embeddings (tables are not trained), masks of
    the wrong number or shape, or an option out of range; :class:`DataError` for features or
    labels of the wrong shape, non-finite values, labels that are not whole numbers or labels
    out of range.
    """
    _check_trainable(model)
    mks = _check_masks(model, masks)
    _check_options(epochs, batch_size, lr, seed)
    xa, ya = _check_xy(model, x, y)
    params = _params(model, np.float32)
    fmasks = [None if m is None else m.astype(np.float32) for m in mks]
    for (w, _, _), m in zip(params, fmasks):
        if m is not None:
            w *= m
    tensors = [t for w, b, _ in params for t in (w, b) if t is not None]
    tmasks = [t for (_, b, _), m in zip(params, fmasks) for t in ((m,) if b is None else (m, None))]
    m1 = [np.zeros_like(t) for t in tensors]
    m2 = [np.zeros_like(t) for t in tensors]
    rng = np.random.default_rng(int(seed))
    n, bs = xa.shape[0], int(batch_size)
    lr32 = np.float32(lr)
    step = 0
    for _ in range(int(epochs)):
        order = rng.permutation(n)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            _, grads = _loss_grads(model.task, params, xa[idx], ya[idx])
            step += 1
            c1 = np.float32(1 - _BETA1 ** step)
            c2 = np.float32(1 - _BETA2 ** step)
            flat = [g for gw, gb in grads for g in (gw, gb) if g is not None]
            for t, g, a, v, m in zip(tensors, flat, m1, m2, tmasks):
                g = g.astype(np.float32, copy=False)
                a *= np.float32(_BETA1)
                a += np.float32(1 - _BETA1) * g
                v *= np.float32(_BETA2)
                v += np.float32(1 - _BETA2) * g * g
                t -= lr32 * (a / c1) / (np.sqrt(v / c2) + np.float32(_EPS))
                if m is not None:
                    t *= m
    layers = tuple(Dense(w, b, act, src.name) for (w, b, act), src in zip(params, model.layers))
    out = Model(model.task, layers, model.n_features, input_names=tuple(model.input_names))
    validate(out)
    return out


# ------------------------------------------------------------------------- prune, retrain, quantize


def _kept(stored) -> np.ndarray | None:
    if stored is None or stored.indices is None:
        return None
    keep = np.zeros(int(np.prod(stored.shape)), dtype=bool)
    keep[np.asarray(stored.indices)] = True
    return keep.reshape(stored.shape)


def prune_finetune_compress(
    model: Model,
    plan: Plan,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 3,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    x_calib: np.ndarray | None = None,
) -> CompressedModel:
    """Deep Compression order: prune as ``plan`` says, :func:`finetune` the survivors on
    ``(x, y)``, then quantize as ``plan`` says; with ``x_calib``, bias-correct the result.

    1. ``compress(model, plan)`` with every layer's ``quantize`` set to ``"none"``: structured
       and unstructured pruning (per layer or global) exactly as :func:`compress` does them.
    2. The pruned float model is fine-tuned with masks = the kept entries of each
       unstructurally pruned layer (``None`` for the other layers; a structurally pruned layer
       is already narrower, and every remaining weight trains).
    3. ``compress`` of the fine-tuned model with ``plan``, structured pruning removed (already
       done). Pruned weights are exactly 0 and survivors are nonzero, so re-pruning the same
       count keeps the same weights; this is checked, and a kept weight that became exactly 0
       during training (which would make the re-pruning ambiguous) raises :class:`DataError`.

    4. With ``x_calib`` (calibration rows, ``(n >= 1, n_features)``):
       :func:`~spark_compress.core.compress.bias_correction` of the result towards the
       *fine-tuned* float model, the model the quantization error of step 3 is measured
       against (correcting towards ``model`` would undo part of the fine-tuning).

    ``kept_neurons`` of the result refer to the original model's neurons, as after
    :func:`compress`. Low rank (``rank > 0``) is refused with :class:`ConfigError`: the
    factorization would have to be redone after training, so its factors would not be the
    ones trained. Other errors are those of :func:`compress` and :func:`finetune`.
    """
    _check_trainable(model)
    if not isinstance(plan, Plan):
        raise ConfigError(f"plan must be a Plan, got {type(plan).__name__}")
    plan = resolve_plan(plan, model)
    n = len(model.layers)
    plans = [plan.for_layer(i) for i in range(n)]
    low_rank = [i for i, lp in enumerate(plans) if lp.factorized]
    if low_rank:
        raise ConfigError(
            f"prune_finetune_compress does not fine-tune low-rank factors; layers {low_rank} "
            f"have rank > 0 or energy > 0. Set both to 0, or use compress without fine-tuning"
        )
    first = Plan(
        default=replace(plan.default, quantize="none"),
        layers={i: replace(lp, quantize="none") for i, lp in enumerate(plans)},
        global_prune=plan.global_prune,
        seed=plan.seed,
    )
    cm1 = compress(model, first)
    masks = [_kept(layer.w) for layer in cm1.layers]
    tuned = finetune(decompress(cm1), masks, x, y, epochs=epochs, batch_size=batch_size, lr=lr,
                     seed=seed)
    last = Plan(
        default=plan.default,
        layers={
            i: replace(lp, prune=0.0, structured=False) if lp.structured else lp
            for i, lp in enumerate(plans)
        },
        global_prune=plan.global_prune,
        seed=plan.seed,
    )
    cm2 = compress(tuned, last)
    layers = []
    for i, (l1, l2) in enumerate(zip(cm1.layers, cm2.layers)):
        k1, k2 = _kept(l1.w), _kept(l2.w)
        if (k1 is None) != (k2 is None) or (k1 is not None and not np.array_equal(k1, k2)):
            raise DataError(
                f"re-pruning layers[{i}] (shape {l2.shape}) after fine-tuning kept other weights "
                f"than the first pruning: a kept weight became exactly 0 during training. Try "
                f"another seed or a smaller lr"
            )
        layers.append(replace(l2, kept_neurons=l1.kept_neurons))
    cm = replace(cm2, layers=tuple(layers))
    if x_calib is not None:
        cm = bias_correction(tuned, cm, x_calib)
    return cm
