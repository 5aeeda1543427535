"""Weight compression primitives for model tensors: pruning masks, symmetric quantization, int4
packing, k-means weight sharing and low-rank factors. numpy only.

Every function is pure: inputs are never modified and a mask is returned apart from the weights
(as in PyTorch's ``torch/nn/utils/prune.py``); the caller applies it (``w * mask``). Each takes
a keyword-only ``name`` used in error messages, which name the tensor and its shape.
Non-finite weights (NaN, +-inf) are rejected with :class:`DataError`: they have no magnitude
order, no scale and no cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from spark_compress.errors import ConfigError, DataError

QUANT_BITS = (4, 8)
INT4_MIN = -8
INT4_MAX = 7


# --------------------------------------------------------------------------- validation


def _where(name: str, shape: tuple[int, ...]) -> str:
    return f"tensor {name!r} of shape {tuple(shape)}"


def _as_weights(w: object, name: str) -> np.ndarray:
    """``w`` as a float64 array (a copy when converted; never written to)."""
    arr = np.asarray(w)
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{_where(name, arr.shape)} has dtype {arr.dtype}; weights must be real numbers"
        )
    arr = arr.astype(np.float64, copy=False)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataError(
            f"{_where(name, arr.shape)} has {bad} non-finite value(s) (NaN or inf); "
            f"replace or drop them before compressing"
        )
    return arr


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _count_to_prune(amount: object, n: int, where: str, unit: str = "a count") -> int:
    """Number of items to remove: ``amount`` itself (an int in ``[0, n]``) or
    ``round(amount * n)`` (a float in ``[0, 1]``, rounded half to even as in PyTorch)."""
    ok = False
    if _is_int(amount):
        ok = 0 <= int(amount) <= n
    elif isinstance(amount, (float, np.floating)):
        ok = 0.0 <= float(amount) <= 1.0
    if not ok:
        raise ConfigError(
            f"prune amount {amount!r} for {where} must be in [0, 1] (a fraction) "
            f"or an int in [0, {n}] ({unit})"
        )
    if _is_int(amount):
        return int(amount)
    return int(round(float(amount) * n))


def _check_axis(axis: object, ndim: int, where: str) -> int:
    if not _is_int(axis) or not -ndim <= int(axis) < ndim:
        raise ConfigError(
            f"axis {axis!r} for {where} must be an int in [{-ndim}, {ndim - 1}]"
        )
    return int(axis) % ndim


def _check_bool_mask(mask: object, shape: tuple[int, ...], where: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != tuple(shape):
        raise DataError(
            f"mask for {where} must be a bool array of shape {tuple(shape)}; "
            f"got {m.dtype} of shape {m.shape}"
        )
    return m


# --------------------------------------------------------------------------- pruning masks


def magnitude_mask(w: np.ndarray, amount: int | float, *, name: str = "weight") -> np.ndarray:
    """Unstructured L1 pruning mask of ``w`` (True = keep), same shape as ``w``.

    Removes exactly ``amount`` entries (an int count, or a float fraction of ``w.size`` rounded
    half to even) with the smallest ``|w|``. Ties are broken by flat (C-order) index: among equal
    magnitudes the lower index is removed first, so the result is deterministic.
    """
    arr = _as_weights(w, name)
    k = _count_to_prune(amount, arr.size, _where(name, arr.shape))
    keep = np.ones(arr.size, dtype=bool)
    order = np.argsort(np.abs(arr).ravel(), kind="stable")
    keep[order[:k]] = False
    return keep.reshape(arr.shape)


def global_magnitude_masks(
    weights: Mapping[str, np.ndarray], amount: int | float
) -> dict[str, np.ndarray]:
    """Masks for several tensors pruned against one magnitude threshold across all of them.

    Exactly ``amount`` entries are removed in total (an int count or a float fraction of the
    total number of weights). Ties are broken by position in the concatenation of the flattened
    tensors in the mapping's iteration order. Returns ``{name: bool mask}`` in the same order.
    """
    arrays = {key: _as_weights(w, str(key)) for key, w in weights.items()}
    total = sum(a.size for a in arrays.values())
    names = ", ".join(repr(key) for key in arrays)
    shapes = ", ".join(str(a.shape) for a in arrays.values())
    where = f"tensors [{names}] of shapes [{shapes}] ({total} weights in all)"
    k = _count_to_prune(amount, total, where)
    if not arrays:
        return {}
    flat = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
    keep = np.ones(total, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    out: dict[str, np.ndarray] = {}
    start = 0
    for key, a in arrays.items():
        out[key] = keep[start : start + a.size].reshape(a.shape)
        start += a.size
    return out


def structured_mask(
    w: np.ndarray,
    amount: int | float,
    *,
    axis: int = 0,
    norm: float = 2,
    name: str = "weight",
) -> np.ndarray:
    """Structured pruning: a 1-D keep vector (bool, length ``w.shape[axis]``) over the slices of
    ``w`` along ``axis`` (rows / output neurons for ``axis=0``).

    Each slice is scored by its L-``norm`` over all other axes (``norm`` > 0, ``np.inf`` allowed);
    exactly ``amount`` slices (an int count or a float fraction of ``w.shape[axis]``) with the
    lowest scores are removed, ties broken by the lower index first. Expand with
    ``np.expand_dims`` or indexing to apply it to ``w``.
    """
    arr = _as_weights(w, name)
    where = _where(name, arr.shape)
    if arr.ndim == 0:
        raise DataError(f"structured pruning needs a tensor with at least 1 axis; {where}")
    ax = _check_axis(axis, arr.ndim, where)
    if isinstance(norm, bool) or not isinstance(norm, (int, float, np.integer, np.floating)) or (
        not float(norm) > 0
    ):
        raise ConfigError(
            f"norm {norm!r} for structured pruning of {where} must be a number > 0 or np.inf"
        )
    n = arr.shape[ax]
    k = _count_to_prune(amount, n, where, unit=f"a count of slices along axis {ax}")
    slices = np.moveaxis(arr, ax, 0).reshape(n, -1)
    if slices.shape[1] == 0:
        scores = np.zeros(n)
    else:
        scores = np.linalg.norm(slices, ord=float(norm), axis=1)
    keep = np.ones(n, dtype=bool)
    keep[np.argsort(scores, kind="stable")[:k]] = False
    return keep


# --------------------------------------------------------------------------- quantization


@dataclass(frozen=True)
class QuantizedTensor:
    """Symmetric integer codes of a weight tensor: ``w ~ codes * scale``.

    ``codes``: int8, the tensor's shape, values in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``.
    ``scales``: float32, shape ``(1,)`` when ``axis is None`` (per tensor), else
    ``(codes.shape[axis],)`` (one per channel along ``axis``, which is stored non-negative).
    """

    codes: np.ndarray
    scales: np.ndarray
    axis: int | None
    bits: int

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1


def _check_quant_bits(bits: object, where: str) -> int:
    if not _is_int(bits) or int(bits) not in QUANT_BITS:
        raise ConfigError(f"bits {bits!r} for quantizing {where} must be one of {QUANT_BITS}")
    return int(bits)


def _scale_shape(ndim: int, axis: int | None) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel scale vector against the tensor."""
    if axis is None:
        return (1,) * ndim
    return tuple(-1 if i == axis else 1 for i in range(ndim))


def quantize_symmetric(
    w: np.ndarray, *, bits: int = 8, axis: int | None = None, name: str = "weight"
) -> QuantizedTensor:
    """Symmetric (zero point 0) quantization, per tensor (``axis=None``) or per channel.

    ``scale = max|w| / qmax`` over the tensor or each channel, stored as float32, with
    ``qmax = 2**(bits-1) - 1`` (127 for int8, 7 for int4); an all-zero channel (or an empty
    tensor) gets scale 1.0 and decodes to exact zeros. ``codes = clip(rint(w / scale), -qmax,
    qmax)`` with round half to even, so ``|w - dequantize(qt)| <= scale / 2`` elementwise (up to
    float32 rounding of the decoded value).
    """
    arr = _as_weights(w, name)
    where = _where(name, arr.shape)
    b = _check_quant_bits(bits, where)
    qmax = (1 << (b - 1)) - 1
    if axis is None:
        amax = np.array([np.abs(arr).max()]) if arr.size else np.zeros(1)
        ax = None
    else:
        if arr.ndim == 0:
            raise ConfigError(f"per-channel quantization needs at least 1 axis; {where}")
        ax = _check_axis(axis, arr.ndim, where)
        other = tuple(i for i in range(arr.ndim) if i != ax)
        amax = np.abs(arr).max(axis=other) if arr.size else np.zeros(arr.shape[ax])
    scales = (amax / qmax).astype(np.float32)
    scales[scales == 0] = 1.0  # also catches amax so small that amax / qmax underflows float32
    s = scales.astype(np.float64).reshape(_scale_shape(arr.ndim, ax))
    codes = np.clip(np.rint(arr / s), -qmax, qmax).astype(np.int8)
    return QuantizedTensor(codes=codes, scales=scales, axis=ax, bits=b)


def dequantize(qt: QuantizedTensor, *, name: str = "weight") -> np.ndarray:
    """Float32 ``codes * scale``. Raises :class:`DataError` when the codes or scales do not fit
    the tensor's bits, axis or shape (a corrupted or hand-built :class:`QuantizedTensor`)."""
    codes = np.asarray(qt.codes)
    scales = np.asarray(qt.scales)
    where = _where(name, codes.shape)
    b = _check_quant_bits(qt.bits, where)
    qmax = (1 << (b - 1)) - 1
    if codes.dtype != np.int8:
        raise DataError(f"codes of {where} must be int8, got {codes.dtype}")
    if codes.size and (codes.min() < -qmax or codes.max() > qmax):
        raise DataError(
            f"codes of {where} must be in [{-qmax}, {qmax}] for {b} bits; "
            f"got [{int(codes.min())}, {int(codes.max())}]"
        )
    if qt.axis is None:
        expected: tuple[int, ...] = (1,)
    else:
        if not _is_int(qt.axis) or not 0 <= qt.axis < codes.ndim:
            raise DataError(f"axis {qt.axis!r} of {where} must be an int in [0, {codes.ndim - 1}]")
        expected = (codes.shape[qt.axis],)
    if scales.shape != expected or scales.dtype != np.float32:
        raise DataError(
            f"scales of {where} must be float32 of shape {expected}; "
            f"got {scales.dtype} of shape {scales.shape}"
        )
    if scales.size and not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        raise DataError(f"scales of {where} must be finite and > 0")
    s = scales.astype(np.float64).reshape(_scale_shape(codes.ndim, qt.axis))
    return (codes.astype(np.float64) * s).astype(np.float32)


def pack_int4(codes: np.ndarray, *, name: str = "codes") -> np.ndarray:
    """Pack signed 4-bit codes (ints in ``[-8, 7]``, any shape, flattened in C order) two per
    byte, low nibble first. Returns uint8 of length ``ceil(n / 2)``; an odd length leaves the
    last high nibble 0."""
    c = np.asarray(codes)
    where = _where(name, c.shape)
    if c.dtype.kind not in "iu":
        raise DataError(f"{where} must hold integers to pack as int4, got {c.dtype}")
    flat = c.ravel().astype(np.int64)
    if flat.size and (flat.min() < INT4_MIN or flat.max() > INT4_MAX):
        raise DataError(
            f"{where} has values in [{int(flat.min())}, {int(flat.max())}]; int4 packing "
            f"needs [{INT4_MIN}, {INT4_MAX}]"
        )
    nib = (flat & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, n: int, *, name: str = "codes") -> np.ndarray:
    """Inverse of :func:`pack_int4`: the first ``n`` signed codes as a 1-D int8 array.

    ``packed`` must be 1-D uint8 of length exactly ``ceil(n / 2)``, and for odd ``n`` the
    unused last high nibble must be 0; anything else raises :class:`DataError`.
    """
    p = np.asarray(packed)
    where = _where(name, p.shape)
    if not _is_int(n) or int(n) < 0:
        raise ConfigError(f"n {n!r} for unpacking {where} must be an int >= 0")
    n = int(n)
    if p.dtype != np.uint8 or p.ndim != 1 or p.size != (n + 1) // 2:
        raise DataError(
            f"packed int4 {where} must be 1-D uint8 of length {(n + 1) // 2} to hold {n} "
            f"codes; got {p.dtype} of length {p.size if p.ndim == 1 else p.shape}"
        )
    if n % 2 and p[-1] >> 4:
        raise DataError(f"packed int4 {where}: the unused last high nibble is not 0")
    nib = np.empty(2 * p.size, dtype=np.int16)
    nib[0::2] = p & 0xF
    nib[1::2] = p >> 4
    nib = nib[:n]
    return np.where(nib >= 8, nib - 16, nib).astype(np.int8)


# --------------------------------------------------------------------------- weight sharing


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centroids`` (a midpoint goes to the lower one)."""
    mids = (centroids[:-1] + centroids[1:]) / 2
    return np.searchsorted(mids, x, side="left")


def kmeans_share(
    w: np.ndarray,
    *,
    bits: int,
    seed: int = 0,
    iters: int = 30,
    mask: np.ndarray | None = None,
    name: str = "weight",
) -> tuple[np.ndarray, np.ndarray]:
    """Weight sharing (Han et al., Deep Compression): 1-D k-means over the kept weights.

    Returns ``(codes, centroids)``: ``codes`` has ``w``'s shape, dtype uint8 for ``bits <= 8``
    else uint16; ``centroids`` is float32, sorted ascending, strictly increasing, of length
    ``<= 2**bits``, and every weight's code is its nearest centroid. ``mask`` (bool, True = keep)
    restricts clustering to the kept weights; masked weights get code 0 and must be zeroed at
    decode (``share_decode(..., mask=mask)``).

    Centroids start linearly spaced between the kept min and max, then up to ``iters`` Lloyd
    iterations run in float64. An empty cluster is moved to a kept weight drawn with probability
    proportional to its squared error (``np.random.default_rng(seed)``), and clusters still empty
    at the end are dropped, so the result is deterministic for a seed. If there are at most
    ``2**bits`` distinct kept values the centroids are exactly those values (lossless), which
    covers constant tensors. No kept weight (empty tensor, all masked) gives centroids ``[0.0]``.
    """
    arr = _as_weights(w, name)
    where = _where(name, arr.shape)
    if not _is_int(bits) or not 1 <= int(bits) <= 16:
        raise ConfigError(f"bits {bits!r} for weight sharing of {where} must be an int in [1, 16]")
    if not _is_int(iters) or int(iters) < 0:
        raise ConfigError(f"iters {iters!r} for weight sharing of {where} must be an int >= 0")
    if not _is_int(seed) or int(seed) < 0:
        raise ConfigError(f"seed {seed!r} for weight sharing of {where} must be an int >= 0")
    k = 1 << int(bits)
    code_dtype = np.uint8 if bits <= 8 else np.uint16
    keep = None if mask is None else _check_bool_mask(mask, arr.shape, where)
    x = arr.ravel() if keep is None else arr[keep]
    codes = np.zeros(arr.shape, dtype=code_dtype)
    if x.size == 0:
        return codes, np.zeros(1, dtype=np.float32)

    distinct = np.unique(x)
    if distinct.size <= k:
        centroids = distinct
    else:
        rng = np.random.default_rng(int(seed))
        centroids = np.linspace(distinct[0], distinct[-1], k)
        for _ in range(int(iters)):
            assign = _nearest(x, centroids)
            counts = np.bincount(assign, minlength=k)
            sums = np.bincount(assign, weights=x, minlength=k)
            new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                err = (x - centroids[assign]) ** 2
                # At most as many relocations as points with a positive error, without repeats.
                n_move = min(empty.size, int(np.count_nonzero(err > 0)))
                if n_move:
                    picks = rng.choice(x.size, size=n_move, replace=False, p=err / err.sum())
                    new[empty[:n_move]] = x[picks]
            new = np.sort(new)
            if np.array_equal(new, centroids):
                break
            centroids = new
        used = np.bincount(_nearest(x, centroids), minlength=centroids.size) > 0
        centroids = centroids[used]
    centroids = np.unique(centroids.astype(np.float32))
    c64 = centroids.astype(np.float64)
    kept_codes = _nearest(x, c64).astype(code_dtype)
    if keep is None:
        codes = kept_codes.reshape(arr.shape)
    else:
        codes[keep] = kept_codes
    return codes, centroids


def share_decode(
    codes: np.ndarray,
    centroids: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    name: str = "weight",
) -> np.ndarray:
    """Float32 ``centroids[codes]``, zero where ``mask`` (True = keep) is False. A code with no
    centroid raises :class:`DataError`."""
    c = np.asarray(codes)
    cents = np.asarray(centroids, dtype=np.float32)
    where = _where(name, c.shape)
    if c.dtype.kind not in "iu":
        raise DataError(f"codes of {where} must be integers, got {c.dtype}")
    if cents.ndim != 1 or cents.size == 0:
        raise DataError(f"centroids for {where} must be a non-empty 1-D array, got {cents.shape}")
    if c.size and (c.min() < 0 or c.max() >= cents.size):
        raise DataError(
            f"codes of {where} are in [{int(c.min())}, {int(c.max())}] but there are only "
            f"{cents.size} centroids; the codes do not match their codebook"
        )
    out = cents[c.astype(np.intp)]
    if mask is not None:
        out = np.where(_check_bool_mask(mask, c.shape, where), out, np.float32(0))
    return out


# --------------------------------------------------------------------------- low rank


def low_rank(
    w: np.ndarray,
    *,
    rank: int | None = None,
    energy: float | None = None,
    name: str = "weight",
) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD factors ``(a, b)`` of a 2-D ``w`` (m x n) with ``w ~ a @ b``: ``a`` is
    ``U_r * S_r`` (m x r), ``b`` is ``Vt_r`` (r x n), in float64.

    Give exactly one of ``rank`` (an int in ``[1, min(m, n)]``) or ``energy`` (a float in
    ``(0, 1]``: the smallest rank whose squared singular values sum to at least that fraction of
    the total). An all-zero matrix has rank 1 by energy. The Frobenius error is
    ``sqrt(sum of the dropped squared singular values)``.
    """
    arr = _as_weights(w, name)
    where = _where(name, arr.shape)
    if arr.ndim != 2:
        raise DataError(f"low-rank factorization needs a 2-D matrix; {where} has {arr.ndim} axes")
    if arr.size == 0:
        raise DataError(f"low-rank factorization needs a non-empty matrix; {where} is empty")
    full = min(arr.shape)
    if (rank is None) == (energy is None):
        raise ConfigError(
            f"low-rank factorization of {where} needs exactly one of rank or energy; "
            f"got rank={rank!r}, energy={energy!r}"
        )
    if rank is not None and (not _is_int(rank) or not 1 <= int(rank) <= full):
        raise ConfigError(f"rank {rank!r} for {where} must be an int in [1, {full}]")
    if energy is not None and (
        not isinstance(energy, (float, np.floating, int, np.integer))
        or isinstance(energy, bool)
        or not 0.0 < float(energy) <= 1.0
    ):
        raise ConfigError(f"energy {energy!r} for {where} must be a number in (0, 1]")
    u, s, vt = np.linalg.svd(arr, full_matrices=False)
    if rank is not None:
        r = int(rank)
    else:
        sq = s * s
        total = float(sq.sum())
        if total == 0.0:
            r = 1
        else:
            cum = np.cumsum(sq) / total
            r = min(int(np.searchsorted(cum, float(energy), side="left")) + 1, full)
    return u[:, :r] * s[:r], vt[:r].copy()
