"""Per-column scalar quantization of features: parameters, encode, decode. numpy only.

Code layout (the same for every method and bit width):

* value codes are ``0 .. 2**bits - 1`` (dictionary: ``0 .. len(vocabulary) - 1``);
* special values get negative sentinel codes outside that range, so all ``2**bits`` levels stay
  available for real values and a special costs nothing in a column that has none:
  ``NaN -> -1`` (``CODE_NAN``), ``+inf -> -2`` (``CODE_POSINF``), ``-inf -> -3``
  (``CODE_NEGINF``), out-of-vocabulary category ``-> -4`` (``CODE_OOV``);
* null is not a code: a null input stays null in the code column (the Spark/Arrow layer carries the
  validity mask; these functions never see nulls).

Decoding maps ``-1/-2/-3`` back to ``NaN/+inf/-inf`` exactly and ``-4`` to a missing category.

Affine methods (``minmax``, ``percentile``, ``symmetric``) use the ONNX ``QuantizeLinear``
convention in float64, ``code = clip(rint(x / scale + zero_point), 0, qmax)`` with round-half-to-
even, and ``x' = (code - zero_point) * scale``. ``zero_point`` may be fractional (minmax puts the
fitted minimum exactly on code 0), which makes every value inside the fitted range decode within
``scale / 2``. ``quantile`` uses ``2**bits`` equal-frequency bins and decodes each bin to an
estimate of its median.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spark_compress.errors import ConfigError, DataError

BITS = (2, 4, 8, 16)
AFFINE_METHODS = ("minmax", "percentile", "symmetric")
NUMERIC_METHODS = AFFINE_METHODS + ("quantile",)
METHODS = NUMERIC_METHODS + ("dictionary",)

CODE_NAN = -1
CODE_POSINF = -2
CODE_NEGINF = -3
CODE_OOV = -4
MIN_CODE = CODE_OOV
SPECIAL_CODES = {"nan": CODE_NAN, "posinf": CODE_POSINF, "neginf": CODE_NEGINF, "oov": CODE_OOV}


class ConstantColumnWarning(UserWarning):
    """A column has a single distinct finite value (or none): it is encoded losslessly but wastes
    its bits; consider passing it through or dropping it."""


def check_bits(bits: object, *, where: str = "bits") -> int:
    """Return ``bits`` if it is one of :data:`BITS`, else raise :class:`ConfigError`."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ConfigError(
            f"The '{where}' parameter must be one of {{2, 4, 8, 16}}. Got {bits!r} instead."
        )
    return bits


def qmax_for(bits: int) -> int:
    """Largest value code for ``bits``: ``2**bits - 1``."""
    return (1 << check_bits(bits)) - 1


# --------------------------------------------------------------------------- affine


@dataclass(frozen=True)
class AffineQuantizer:
    """Affine quantizer for one column: ``code = clip(rint(x / scale + zero_point), 0, qmax)``.

    ``lo``/``hi`` are the fitted finite range (``None`` when the column had no finite value);
    values outside it are clipped to code ``0``/``qmax``.
    """

    method: str
    bits: int
    scale: float
    zero_point: float
    lo: float | None
    hi: float | None

    @property
    def qmax(self) -> int:
        return qmax_for(self.bits)


def choose_affine(
    lo: float | None, hi: float | None, *, bits: int, method: str = "minmax"
) -> AffineQuantizer:
    """Choose scale and zero point so that ``[lo, hi]`` covers the code range.

    ``minmax``/``percentile``: ``scale = (hi - lo) / qmax``, ``zero_point = -lo / scale``, so
    ``lo`` encodes to 0 and ``hi`` to ``qmax``. ``symmetric``: ``zero_point = 2**(bits-1)``
    (an integer, so 0.0 encodes and decodes exactly) and ``scale = max(|lo|, |hi|) /
    (2**(bits-1) - 1)``. A constant column (``lo == hi``) gets ``scale = 1`` and decodes exactly;
    an empty one (``lo is None``) gets ``scale = 1, zero_point = 0``; both warn.
    """
    check_bits(bits)
    if method not in AFFINE_METHODS:
        raise ConfigError(f"Affine method must be one of {AFFINE_METHODS}. Got {method!r}.")
    if (lo is None) != (hi is None):
        raise DataError("lo and hi must both be given or both be None")
    if lo is not None and not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise DataError(f"range [{lo}, {hi}] must be finite with lo <= hi")
    qmax = qmax_for(bits)
    if lo is None:
        warnings.warn("column has no finite values; it is encoded with scale 1",
                      ConstantColumnWarning, stacklevel=2)
        return AffineQuantizer(method, bits, 1.0, 0.0, None, None)
    lo, hi = float(lo), float(hi)
    if method == "symmetric":
        amax = max(abs(lo), abs(hi))
        zero_point = float(1 << (bits - 1))
        if lo == hi:
            warnings.warn(f"column is constant ({lo!r})", ConstantColumnWarning, stacklevel=2)
        if amax == 0.0:
            return AffineQuantizer(method, bits, 1.0, zero_point, lo, hi)
        return AffineQuantizer(method, bits, amax / ((1 << (bits - 1)) - 1), zero_point, lo, hi)
    if hi == lo:
        warnings.warn(f"column is constant ({lo!r}); it is encoded with scale 1",
                      ConstantColumnWarning, stacklevel=2)
        return AffineQuantizer(method, bits, 1.0, -lo + 0.0, lo, hi)
    scale = (hi - lo) / qmax
    if not math.isfinite(scale) or scale == 0.0:
        raise DataError(f"range [{lo}, {hi}] is too wide or too narrow for float64 quantization")
    return AffineQuantizer(method, bits, scale, -lo / scale + 0.0, lo, hi)  # no -0.0


def quantize_affine(
    x: np.ndarray, *, scale: float, zero_point: float, qmin: int, qmax: int
) -> np.ndarray:
    """ONNX ``QuantizeLinear`` on finite values: ``clip(rint(x / scale + zero_point), qmin, qmax)``.

    Returns int64. Non-finite inputs give unspecified codes; :func:`encode` handles them.
    """
    t = np.asarray(x, dtype=np.float64) / scale + zero_point
    np.rint(t, out=t)
    np.clip(t, qmin, qmax, out=t)
    t[~np.isfinite(t)] = 0
    return t.astype(np.int64)


def dequantize_affine(codes: np.ndarray, *, scale: float, zero_point: float) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(codes - zero_point) * scale`` in float64."""
    return (np.asarray(codes, dtype=np.float64) - zero_point) * scale


# --------------------------------------------------------------------------- quantile


@dataclass(frozen=True)
class QuantileQuantizer:
    """Equal-frequency bins: ``code = #{edges < x}``; code ``k`` decodes to ``values[k]``.

    ``edges`` has ``2**bits - 1`` non-decreasing entries, ``values`` has ``2**bits``.
    """

    bits: int
    edges: tuple[float, ...]
    values: tuple[float, ...]
    method: str = "quantile"

    @property
    def qmax(self) -> int:
        return qmax_for(self.bits)


def quantile_probabilities(bits: int) -> list[float]:
    """The ``2 * 2**bits + 1`` probabilities ``k / (2 * 2**bits)`` a quantile fit needs: bin
    edges at ``k / 2**bits`` and bin midpoints in between."""
    n = 2 << check_bits(bits)
    return [k / n for k in range(n + 1)]


def choose_quantile(quantiles: Sequence[float] | None, *, bits: int) -> QuantileQuantizer:
    """Build equal-frequency bins from the quantiles at :func:`quantile_probabilities`.

    Bin ``k`` is ``(edges[k-1], edges[k]]``. Its value is the quantile at the middle of the bin's
    probability mass; a value repeated often (a point mass, common in real data: zeros, integer
    features) owns its whole mass in one bin and decodes exactly. ``None`` (a column with no
    finite value) gives all-zero bins and warns.
    """
    check_bits(bits)
    levels = 1 << bits
    if quantiles is None:
        warnings.warn("column has no finite values; quantile bins are all 0",
                      ConstantColumnWarning, stacklevel=2)
        return QuantileQuantizer(bits, (0.0,) * (levels - 1), (0.0,) * levels)
    qs = np.asarray(quantiles, dtype=np.float64)
    if qs.shape != (2 * levels + 1,) or not np.all(np.isfinite(qs)):
        raise DataError(
            f"quantile fit for {bits} bits needs {2 * levels + 1} finite quantiles, "
            f"got shape {qs.shape}"
        )
    qs = np.maximum.accumulate(qs)  # sketches may return tiny inversions
    if qs[0] == qs[-1]:
        warnings.warn(f"column is constant ({float(qs[0])!r})", ConstantColumnWarning, stacklevel=2)
    edges = qs[2 : 2 * levels : 2]
    # Last grid index that still equals each bin's upper edge: with ``side="left"`` every value
    # equal to the edge falls into the bin, so its mass ends there.
    upper = qs[2 : 2 * levels + 1 : 2]
    last = np.searchsorted(qs, upper, side="right") - 1
    # Bin k holds the mass between the previous bin's end and its own.
    first = np.concatenate(([0], last[:-1]))
    mid = (first + last + 1) // 2
    values = qs[mid]
    return QuantileQuantizer(bits, tuple(edges.tolist()), tuple(values.tolist()))


# --------------------------------------------------------------------------- dictionary


@dataclass(frozen=True)
class DictionaryEncoder:
    """Categorical column: ``vocabulary[k]`` has code ``k``; anything else is ``CODE_OOV``.

    The vocabulary is ranked by frequency (most frequent first, ties by value) so that small
    codes are the common ones.
    """

    vocabulary: tuple
    max_categories: int
    method: str = "dictionary"

    @property
    def qmax(self) -> int:
        return max(len(self.vocabulary) - 1, 0)


def choose_dictionary(
    values: Sequence, counts: Sequence[int], *, max_categories: int
) -> DictionaryEncoder:
    """Keep the ``max_categories`` most frequent values (ties broken by value, ascending)."""
    if isinstance(max_categories, bool) or not isinstance(max_categories, int) or not (
        1 <= max_categories <= 2**31 - 8
    ):
        raise ConfigError(
            f"The 'max_categories' parameter must be an int in [1, 2147483640]. "
            f"Got {max_categories!r} instead."
        )
    if len(values) != len(counts):
        raise DataError("values and counts must have the same length")
    pairs = sorted(zip(values, counts), key=lambda vc: (-int(vc[1]), vc[0]))
    return DictionaryEncoder(tuple(v for v, _ in pairs[:max_categories]), max_categories)


def encode_dictionary(enc: DictionaryEncoder, x: np.ndarray) -> np.ndarray:
    """Codes (int64) of the non-null values ``x``; unknown values get ``CODE_OOV``."""
    x = np.asarray(x)
    if len(enc.vocabulary) == 0 or x.size == 0:
        return np.full(x.shape, CODE_OOV, dtype=np.int64)
    vocab = np.asarray(enc.vocabulary)
    order = np.argsort(vocab, kind="stable")
    sorted_vocab = vocab[order]
    pos = np.searchsorted(sorted_vocab, x)
    pos_clipped = np.minimum(pos, len(vocab) - 1)
    hit = sorted_vocab[pos_clipped] == x
    return np.where(hit, order[pos_clipped], CODE_OOV).astype(np.int64)


def decode_dictionary(enc: DictionaryEncoder, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(values, missing)``: ``values[i] = vocabulary[codes[i]]`` (an object array) and
    a mask of the out-of-vocabulary codes, whose value is unknown (``None``)."""
    codes = np.asarray(codes, dtype=np.int64)
    _check_codes(codes, len(enc.vocabulary) - 1, allowed=(CODE_OOV,), what="dictionary")
    vocab = np.empty(len(enc.vocabulary) + 1, dtype=object)
    vocab[:-1] = enc.vocabulary
    vocab[-1] = None
    missing = codes == CODE_OOV
    return vocab[np.where(missing, len(enc.vocabulary), codes)], missing


# --------------------------------------------------------------------------- encode / decode

Quantizer = AffineQuantizer | QuantileQuantizer


def encode(q: Quantizer, x: np.ndarray) -> np.ndarray:
    """Codes (int64) of the non-null values ``x``: value codes ``0..qmax`` for finite values
    (clipped to the fitted range) and the negative sentinels for NaN and infinities.
    The input is not modified."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if isinstance(q, AffineQuantizer):
        codes = quantize_affine(x, scale=q.scale, zero_point=q.zero_point, qmin=0, qmax=q.qmax)
    elif isinstance(q, QuantileQuantizer):
        codes = np.searchsorted(np.asarray(q.edges, dtype=np.float64), x, side="left")
        codes = codes.astype(np.int64)
    else:
        raise TypeError(f"cannot encode with {type(q).__name__}")
    if not finite.all():
        codes[np.isnan(x)] = CODE_NAN
        codes[x == np.inf] = CODE_POSINF
        codes[x == -np.inf] = CODE_NEGINF
    return codes


def decode(q: Quantizer, codes: np.ndarray) -> np.ndarray:
    """Float64 values of ``codes``; sentinels decode to NaN/+inf/-inf. A code outside the
    valid range raises :class:`DataError`."""
    codes = np.asarray(codes, dtype=np.int64)
    _check_codes(codes, q.qmax, allowed=(CODE_NAN, CODE_POSINF, CODE_NEGINF),
                 what=q.method)
    special = codes < 0
    safe = np.where(special, 0, codes)
    if isinstance(q, AffineQuantizer):
        out = dequantize_affine(safe, scale=q.scale, zero_point=q.zero_point)
    elif isinstance(q, QuantileQuantizer):
        out = np.asarray(q.values, dtype=np.float64)[safe]
    else:
        raise TypeError(f"cannot decode with {type(q).__name__}")
    if special.any():
        out[codes == CODE_NAN] = np.nan
        out[codes == CODE_POSINF] = np.inf
        out[codes == CODE_NEGINF] = -np.inf
    return out


def _check_codes(codes: np.ndarray, hi: int, *, allowed: tuple, what: str) -> None:
    if codes.size == 0:
        return
    bad = (codes > hi) | ((codes < 0) & ~np.isin(codes, allowed))
    if bad.any():
        first = int(codes[np.argmax(bad)])
        raise DataError(
            f"code {first} is not valid for this {what} column (valid: 0..{hi} and "
            f"{sorted(allowed)}); the data does not match its codebook"
        )


def code_range(q: Quantizer | DictionaryEncoder) -> tuple[int, int]:
    """The smallest and largest code ``q`` can produce, sentinels included."""
    if isinstance(q, DictionaryEncoder):
        return CODE_OOV, q.qmax
    return CODE_NEGINF, q.qmax


def error_stats(x: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
    """RMSE and max absolute error over the positions where ``x`` is finite."""
    x = np.asarray(x, dtype=np.float64)
    m = np.isfinite(x)
    if not m.any():
        return {"rmse": 0.0, "max_abs_error": 0.0}
    d = np.abs(x[m] - np.asarray(x_hat, dtype=np.float64)[m])
    return {"rmse": float(np.sqrt(np.mean(d * d))), "max_abs_error": float(d.max())}
