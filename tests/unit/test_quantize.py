"""spark_compress.core.quantize: affine, quantile and dictionary codes, specials, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spark_compress.core.quantize import (
    AFFINE_METHODS,
    BITS,
    CODE_NAN,
    CODE_NEGINF,
    CODE_OOV,
    CODE_POSINF,
    AffineQuantizer,
    ConstantColumnWarning,
    DictionaryEncoder,
    QuantileQuantizer,
    check_bits,
    choose_affine,
    choose_dictionary,
    choose_quantile,
    code_range,
    decode,
    decode_dictionary,
    dequantize_affine,
    encode,
    encode_dictionary,
    error_stats,
    qmax_for,
    quantile_probabilities,
    quantize_affine,
)
from spark_compress.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

SEED = 20240601


def _distributions(n: int = 2000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {
        "normal": rng.normal(size=n),
        "uniform": rng.uniform(-5.0, 17.0, size=n),
        "offset_normal": 1e3 + rng.normal(size=n),
        "lognormal": rng.lognormal(sigma=2.0, size=n),
        "cauchy": rng.standard_cauchy(size=n),
        "student_t2": rng.standard_t(2, size=n),
        "pareto": rng.pareto(1.2, size=n),
        "poisson": rng.poisson(3.0, size=n).astype(np.float64),
        "zero_inflated": np.where(rng.uniform(size=n) < 0.7, 0.0, rng.exponential(size=n)),
    }


# --------------------------------------------------------------------------- qparams / bits


@pytest.mark.parametrize("bits, qmax", [(2, 3), (4, 15), (8, 255), (16, 65535)])
def test_qmax_for(bits, qmax):
    assert qmax_for(bits) == qmax


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_check_bits_accepts_allowed_widths(bits):
    assert check_bits(bits) == bits


@pytest.mark.parametrize("bad", [3, 0, 1, 32, -8, True, 8.0, "8", None])
def test_check_bits_rejects(bad):
    expected = f"The 'bits' parameter must be one of {{2, 4, 8, 16}}. Got {bad!r} instead."
    with pytest.raises(ConfigError) as info:
        check_bits(bad)
    assert str(info.value) == expected


def test_check_bits_message_template_for_3():
    with pytest.raises(ConfigError) as info:
        check_bits(3)
    assert str(info.value) == "The 'bits' parameter must be one of {2, 4, 8, 16}. Got 3 instead."


def test_check_bits_names_the_parameter():
    with pytest.raises(ConfigError, match=r"^The 'columns\.V1\.bits' parameter .* Got 5 instead\.$"):
        check_bits(5, where="columns.V1.bits")


# --------------------------------------------------------------------------- affine: reference


def test_quantize_affine_onnx_reference_vector():
    # ONNX QuantizeLinear uint8 example: y = saturate(round(x / 2) + 128).
    x = np.array([0.0, 2.0, 3.0, 1000.0, -254.0, -1000.0])
    codes = quantize_affine(x, scale=2.0, zero_point=128.0, qmin=0, qmax=255)
    assert codes.dtype == np.int64
    assert codes.tolist() == [128, 129, 130, 255, 1, 0]


def test_quantize_affine_rounds_half_to_even():
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, 0.49, 0.51])
    codes = quantize_affine(x, scale=1.0, zero_point=0.0, qmin=-10, qmax=10)
    assert codes.tolist() == [0, 2, 2, 4, 0, -2, 0, 1]


def test_dequantize_affine():
    out = dequantize_affine(np.array([0, 128, 255]), scale=2.0, zero_point=128.0)
    assert out.dtype == np.float64
    assert out.tolist() == [-256.0, 0.0, 254.0]


def test_minmax_hand_computed():
    q = choose_affine(-1.0, 3.0, bits=2)
    # scale = (3 - (-1)) / 3 = 4/3, zero_point = 1 / (4/3) = 0.75
    assert q == AffineQuantizer("minmax", 2, 4.0 / 3.0, 0.75, -1.0, 3.0)
    # x / (4/3) + 0.75: -1 -> 0, 0 -> 0.75 -> 1, 1 -> 1.5 -> 2 (half to even), 3 -> 3
    x = np.array([-1.0, 0.0, 1.0, 3.0])
    codes = encode(q, x)
    assert codes.tolist() == [0, 1, 2, 3]
    # (code - 0.75) * 4/3: -1, 1/3, 5/3, 3
    np.testing.assert_allclose(decode(q, codes), [-1.0, 1.0 / 3.0, 5.0 / 3.0, 3.0], rtol=1e-15)
    # The fitted minimum and maximum land exactly on the end codes.
    assert decode(q, np.array([0]))[0] == -1.0
    assert decode(q, np.array([3]))[0] == 3.0


def test_minmax_clips_out_of_range():
    q = choose_affine(-1.0, 3.0, bits=2)
    assert encode(q, np.array([-100.0, -1.7, 3.7, 1e300])).tolist() == [0, 0, 3, 3]


def test_symmetric_hand_computed():
    q = choose_affine(-2.0, 1.0, bits=4, method="symmetric")
    # amax = 2, zero_point = 2**3 = 8, scale = 2 / (2**3 - 1) = 2/7
    assert q == AffineQuantizer("symmetric", 4, 2.0 / 7.0, 8.0, -2.0, 1.0)
    # x * 7/2 + 8: -2 -> 1, 0 -> 8, 0.5 -> 9.75 -> 10, 2 -> 15 (amax is in range), 5 -> clip 15
    codes = encode(q, np.array([-2.0, 0.0, 0.5, 2.0, 5.0, -5.0]))
    assert codes.tolist() == [1, 8, 10, 15, 15, 0]
    out = decode(q, codes)
    assert out[1] == 0.0
    np.testing.assert_allclose(out, [-2.0, 0.0, 4.0 / 7.0, 2.0, 2.0, -16.0 / 7.0], rtol=1e-15)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("lo, hi", [(-2.0, 1.0), (0.5, 9.0), (-7.25, -0.125), (-3.0, 3.0)])
def test_symmetric_zero_is_exact(bits, lo, hi):
    q = choose_affine(lo, hi, bits=bits, method="symmetric")
    assert q.zero_point == 2 ** (bits - 1)
    code = encode(q, np.array([0.0, -0.0]))
    assert code.tolist() == [2 ** (bits - 1)] * 2
    assert decode(q, code).tolist() == [0.0, 0.0]


def test_percentile_is_affine_over_the_clipped_range():
    q = choose_affine(10.0, 20.0, bits=4, method="percentile")
    # scale = 10 / 15 = 2/3, zero_point = -10 / (2/3) = -15
    assert q.method == "percentile"
    assert q.scale == pytest.approx(2.0 / 3.0, rel=1e-15)
    assert q.zero_point == pytest.approx(-15.0, rel=1e-15)
    # 12 -> 18 - 15 = 3, 15 -> 7.5 -> 8 (half to even), 19 -> 13.5 -> 14
    assert encode(q, np.array([10.0, 12.0, 15.0, 19.0, 20.0])).tolist() == [0, 3, 8, 14, 15]
    # Everything outside [10, 20] clips to the end codes.
    assert encode(q, np.array([-1e9, 9.99, 20.01, 1e9])).tolist() == [0, 0, 15, 15]


# --------------------------------------------------------------------------- affine: bound


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("method", AFFINE_METHODS)
def test_affine_decode_error_is_at_most_half_a_step(method, bits):
    for name, x in _distributions().items():
        if method == "percentile":
            lo, hi = (float(v) for v in np.quantile(x, [0.01, 0.99]))
        else:
            lo, hi = float(x.min()), float(x.max())
        q = choose_affine(lo, hi, bits=bits, method=method)
        codes = encode(q, x)
        assert codes.min() >= 0 and codes.max() <= q.qmax, name
        inside = (x >= lo) & (x <= hi)
        err = np.abs(decode(q, codes[inside]) - x[inside])
        bound = q.scale / 2 * (1 + 1e-9)
        assert err.max() <= bound, f"{name}: max error {err.max()!r} > scale/2 = {q.scale / 2!r}"
        if method == "percentile":
            assert (codes[x < lo] == 0).all(), name
            assert (codes[x > hi] == q.qmax).all(), name
        if method == "minmax":
            assert codes[np.argmin(x)] == 0 and codes[np.argmax(x)] == q.qmax, name


# --------------------------------------------------------------------------- affine: specials


SPECIALS = np.array([1.0, np.nan, np.inf, -np.inf, 2.0])


@pytest.mark.parametrize("method", AFFINE_METHODS)
def test_affine_specials_round_trip(method):
    q = choose_affine(0.0, 3.0, bits=2, method=method)
    codes = encode(q, SPECIALS)
    assert codes[1:4].tolist() == [CODE_NAN, CODE_POSINF, CODE_NEGINF] == [-1, -2, -3]
    assert 0 <= codes[0] <= q.qmax and 0 <= codes[4] <= q.qmax
    out = decode(q, codes)
    assert np.isnan(out[1])
    assert out[2] == np.inf
    assert out[3] == -np.inf
    assert np.isfinite(out[[0, 4]]).all()


def test_quantile_specials_round_trip():
    q = choose_quantile(list(range(9)), bits=2)
    codes = encode(q, SPECIALS)
    assert codes.tolist() == [0, CODE_NAN, CODE_POSINF, CODE_NEGINF, 0]
    out = decode(q, codes)
    assert np.isnan(out[1]) and out[2] == np.inf and out[3] == -np.inf
    assert out[[0, 4]].tolist() == [1.0, 1.0]


CONSTANTS = [5.0, -3.7, 0.1, 1e10, 123.456]


@pytest.mark.parametrize("method", AFFINE_METHODS)
@pytest.mark.parametrize("value", CONSTANTS)
def test_constant_column_decodes_exactly(method, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantColumnWarning)
        q = choose_affine(value, value, bits=8, method=method)
    codes = encode(q, np.array([value, value]))
    assert ((codes >= 0) & (codes <= q.qmax)).all()
    assert decode(q, codes).tolist() == [value, value]


@pytest.mark.parametrize("method", AFFINE_METHODS)
@pytest.mark.parametrize("value", CONSTANTS)
def test_constant_column_warns(method, value):
    # ConstantColumnWarning's contract: "a column has a single distinct finite value".
    with pytest.warns(ConstantColumnWarning, match="constant"):
        choose_affine(value, value, bits=8, method=method)


@pytest.mark.parametrize("method", AFFINE_METHODS)
def test_constant_zero_column_decodes_exactly_and_warns(method):
    with pytest.warns(ConstantColumnWarning, match="constant"):
        q = choose_affine(0.0, 0.0, bits=4, method=method)
    assert q.scale == 1.0
    assert decode(q, encode(q, np.array([0.0]))).tolist() == [0.0]


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("method", AFFINE_METHODS)
def test_empty_column_warns_and_codes_stay_in_range(method, bits):
    with pytest.warns(ConstantColumnWarning, match="no finite values"):
        q = choose_affine(None, None, bits=bits, method=method)
    assert (q.scale, q.zero_point, q.lo, q.hi) == (1.0, 0.0, None, None)
    codes = encode(q, np.array([5.0, -3.0, 0.0, 1e9, np.nan]))
    # scale 1, zero point 0: a finite value encodes to itself, clipped to 0..qmax.
    assert codes[:4].tolist() == [min(5, q.qmax), 0, 0, q.qmax]
    assert codes[4] == CODE_NAN
    assert decode(q, codes[:3]).tolist() == [float(min(5, q.qmax)), 0.0, 0.0]


def _quantizers():
    return [
        choose_affine(-1.0, 3.0, bits=4),
        choose_affine(-1.0, 3.0, bits=8, method="percentile"),
        choose_affine(-1.0, 3.0, bits=16, method="symmetric"),
        choose_quantile(list(range(9)), bits=2),
    ]


@pytest.mark.parametrize("q", _quantizers(), ids=lambda q: f"{q.method}-{q.bits}")
def test_empty_input(q):
    codes = encode(q, np.array([], dtype=np.float64))
    assert codes.shape == (0,) and codes.dtype == np.int64
    out = decode(q, np.array([], dtype=np.int64))
    assert out.shape == (0,) and out.dtype == np.float64


@pytest.mark.parametrize("q", _quantizers(), ids=lambda q: f"{q.method}-{q.bits}")
def test_inputs_are_not_mutated(q):
    x = np.array([-5.0, -1.0, 0.25, 2.0, 3.0, 99.0, np.nan, np.inf, -np.inf])
    x_before = x.copy()
    codes = encode(q, x)
    codes_before = codes.copy()
    decode(q, codes)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(codes, codes_before)


def test_encode_accepts_lists_and_ints():
    q = choose_affine(-1.0, 3.0, bits=2)
    assert encode(q, [-1, 0, 1, 3]).tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------- affine: errors


@pytest.mark.parametrize("code", [4, -5, 100, -4])
def test_affine_decode_rejects_invalid_codes(code):
    q = choose_affine(-1.0, 3.0, bits=2)
    with pytest.raises(DataError, match=rf"code {code} is not valid for this minmax column"):
        decode(q, np.array([0, 1, code, 2]))


def test_quantile_decode_rejects_invalid_codes():
    q = choose_quantile(list(range(9)), bits=2)
    with pytest.raises(DataError, match=r"code 4 is not valid for this quantile column"):
        decode(q, np.array([4]))
    with pytest.raises(DataError, match=r"code -4 is not valid for this quantile column"):
        decode(q, np.array([-4]))


def test_choose_affine_rejects_unknown_method():
    with pytest.raises(ConfigError, match=r"Affine method must be one of .* Got 'quantile'"):
        choose_affine(0.0, 1.0, bits=8, method="quantile")


def test_choose_affine_rejects_bad_bits():
    with pytest.raises(ConfigError, match=r"Got 3 instead"):
        choose_affine(0.0, 1.0, bits=3)


def test_choose_affine_needs_both_bounds():
    with pytest.raises(DataError, match="both be given or both be None"):
        choose_affine(0.0, None, bits=8)


@pytest.mark.parametrize("lo, hi", [(2.0, 1.0), (float("nan"), 1.0), (0.0, float("inf"))])
def test_choose_affine_rejects_bad_range(lo, hi):
    with pytest.raises(DataError, match=r"must be finite with lo <= hi"):
        choose_affine(lo, hi, bits=8)


def test_choose_affine_rejects_range_too_wide_for_float64():
    with pytest.raises(DataError, match="too wide or too narrow"):
        choose_affine(-1.7e308, 1.7e308, bits=8)


def test_encode_decode_reject_unknown_quantizer():
    enc = DictionaryEncoder(("a",), 1)
    with pytest.raises(TypeError, match="cannot encode with DictionaryEncoder"):
        encode(enc, np.array([1.0]))
    with pytest.raises(TypeError, match="cannot decode with DictionaryEncoder"):
        decode(enc, np.array([0]))


# --------------------------------------------------------------------------- quantile


def test_quantile_probabilities():
    assert quantile_probabilities(2) == [k / 8 for k in range(9)]
    assert quantile_probabilities(2) == [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert len(quantile_probabilities(16)) == 2 * 65536 + 1
    with pytest.raises(ConfigError, match="Got 3 instead"):
        quantile_probabilities(3)


def test_choose_quantile_hand_computed():
    # 0..16 with linear interpolation: the quantile at k/8 is 2k.
    x = np.arange(17, dtype=np.float64)
    qs = np.quantile(x, quantile_probabilities(2))
    assert qs.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
    q = choose_quantile(qs, bits=2)
    # Edges at probabilities 1/4, 1/2, 3/4; values at the bin midpoints 1/8, 3/8, 5/8, 7/8.
    assert q == QuantileQuantizer(2, (4.0, 8.0, 12.0), (2.0, 6.0, 10.0, 14.0))
    # Bin k is (edges[k-1], edges[k]]; beyond the fitted range values go to the end bins.
    x = np.array([-1.0, 0.0, 4.0, 4.5, 8.0, 8.01, 12.0, 16.0, 100.0])
    codes = encode(q, x)
    assert codes.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert decode(q, codes).tolist() == [2.0, 2.0, 2.0, 6.0, 6.0, 10.0, 10.0, 14.0, 14.0]


def test_choose_quantile_point_mass_in_the_middle():
    # 5 holds the probability mass from 2/8 to 6/8: it owns bins 0..2, bin 3 is (5, 8].
    q = choose_quantile([0, 1, 5, 5, 5, 5, 5, 7, 8], bits=2)
    assert q.edges == (5.0, 5.0, 5.0)
    # Bin 0 holds the mass 0..6/8 (median at 3/8 -> 5); bins 1, 2 are empty; bin 3 is 6/8..1.
    assert q.values == (5.0, 5.0, 5.0, 7.0)
    assert encode(q, np.array([0.0, 5.0, 5.5, 8.0])).tolist() == [0, 0, 3, 3]


def test_choose_quantile_point_mass_at_zero_bits2():
    x = np.concatenate([np.zeros(900), np.arange(1.0, 101.0)])
    qs = np.quantile(x, quantile_probabilities(2))
    # 90 % zeros: every quantile up to 7/8 is 0, the maximum is 100.
    assert qs.tolist() == [0.0] * 8 + [100.0]
    q = choose_quantile(qs, bits=2)
    assert q == QuantileQuantizer(2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 100.0))
    assert decode(q, encode(q, np.array([0.0, 1.0, 100.0]))).tolist() == [0.0, 100.0, 100.0]


@pytest.mark.parametrize("bits", BITS)
def test_choose_quantile_point_mass_at_zero_decodes_exactly(bits):
    x = np.concatenate([np.zeros(900), np.arange(1.0, 101.0)])
    q = choose_quantile(np.quantile(x, quantile_probabilities(bits)), bits=bits)
    codes = encode(q, x)
    out = decode(q, codes)
    assert (out[:900] == 0.0).all()
    assert codes[0] == 0


def test_choose_quantile_repairs_small_inversions():
    q = choose_quantile([0, 1, 2, 3, 2.9999, 5, 6, 7, 8], bits=2)
    assert q.edges == (2.0, 3.0, 6.0)
    assert list(q.values) == sorted(q.values)


@pytest.mark.parametrize("bits", BITS)
def test_quantile_decode_error_is_at_most_the_bin_width(bits):
    levels = 1 << bits
    for name, x in _distributions().items():
        qs = np.quantile(x, quantile_probabilities(bits))
        q = choose_quantile(qs, bits=bits)
        assert len(q.edges) == levels - 1 and len(q.values) == levels
        assert np.all(np.diff(q.values) >= 0), name
        assert np.all(np.diff(q.edges) >= 0), name
        codes = encode(q, x)
        assert codes.min() >= 0 and codes.max() <= levels - 1, name
        bounds = np.concatenate(([qs[0]], q.edges, [qs[-1]]))
        lower, upper = bounds[codes], bounds[codes + 1]
        assert np.all(x <= upper) and np.all((x > lower) | (codes == 0)), name
        err = np.abs(decode(q, codes) - x)
        assert np.all(err <= upper - lower), name


@pytest.mark.parametrize("bits", [2, 4])
def test_choose_quantile_constant_warns(bits):
    n = 2 * (1 << bits) + 1
    with pytest.warns(ConstantColumnWarning, match="constant"):
        q = choose_quantile([3.5] * n, bits=bits)
    assert decode(q, encode(q, np.array([3.5]))).tolist() == [3.5]


def test_choose_quantile_constant_warning_shows_the_plain_value():
    # The message is read by people: "constant (3.5)", as choose_affine says it, not a numpy repr.
    with pytest.warns(ConstantColumnWarning) as record:
        choose_quantile(np.full(9, 3.5), bits=2)
    assert [str(w.message) for w in record] == ["column is constant (3.5)"]


def test_choose_quantile_none_warns_and_is_all_zero():
    with pytest.warns(ConstantColumnWarning, match="no finite values"):
        q = choose_quantile(None, bits=2)
    assert q == QuantileQuantizer(2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0))
    assert decode(q, encode(q, np.array([-1.0, 0.0, 7.0]))).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("quantiles, got", [
    ([0.0] * 8, r"\(8,\)"),
    ([0.0] * 10, r"\(10,\)"),
    ([[0.0] * 9], r"\(1, 9\)"),
])
def test_choose_quantile_rejects_wrong_length(quantiles, got):
    with pytest.raises(DataError, match=rf"for 2 bits needs 9 finite quantiles, got shape {got}"):
        choose_quantile(quantiles, bits=2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_choose_quantile_rejects_non_finite(bad):
    qs = [0.0, 1, 2, 3, 4, 5, 6, 7, 8]
    qs[4] = bad
    with pytest.raises(DataError, match="needs 9 finite quantiles"):
        choose_quantile(qs, bits=2)


def test_choose_quantile_rejects_bad_bits():
    with pytest.raises(ConfigError, match="Got 8.0 instead"):
        choose_quantile(None, bits=8.0)


# --------------------------------------------------------------------------- dictionary


def test_choose_dictionary_ranks_by_frequency_then_value():
    enc = choose_dictionary(["b", "a", "c", "d"], [2, 3, 3, 1], max_categories=3)
    # a and c tie at 3 (a first), then b; d is beyond the cap.
    assert enc == DictionaryEncoder(("a", "c", "b"), 3)
    assert enc.qmax == 2


def test_choose_dictionary_ints():
    enc = choose_dictionary([10, 5, 7], [1, 1, 2], max_categories=5)
    assert enc.vocabulary == (7, 5, 10)
    assert enc.max_categories == 5


def test_choose_dictionary_accepts_numpy_counts():
    enc = choose_dictionary(np.array([3, 1, 2]), np.array([1, 9, 9]), max_categories=2)
    assert [int(v) for v in enc.vocabulary] == [1, 2]


def test_dictionary_strings_round_trip_with_oov():
    enc = choose_dictionary(["b", "a", "c", "d"], [2, 3, 3, 1], max_categories=3)
    x = np.array(["a", "zzzz", "c", "b", "d", ""], dtype=object)
    codes = encode_dictionary(enc, x)
    assert codes.dtype == np.int64
    assert codes.tolist() == [0, CODE_OOV, 1, 2, CODE_OOV, CODE_OOV]
    assert CODE_OOV == -4
    values, missing = decode_dictionary(enc, codes)
    assert values.tolist() == ["a", None, "c", "b", None, None]
    assert missing.tolist() == [False, True, False, False, True, True]


def test_dictionary_ints_round_trip_with_oov():
    enc = choose_dictionary([10, 5, 7], [1, 1, 2], max_categories=5)
    codes = encode_dictionary(enc, np.array([5, 6, 7, 10, 100, -5]))
    assert codes.tolist() == [1, -4, 0, 2, -4, -4]
    values, missing = decode_dictionary(enc, codes)
    assert values.tolist() == [5, None, 7, 10, None, None]
    assert missing.tolist() == [False, True, False, False, True, True]


def test_dictionary_empty_vocabulary():
    enc = choose_dictionary([], [], max_categories=3)
    assert enc.vocabulary == () and enc.qmax == 0
    assert encode_dictionary(enc, np.array(["x", "y"])).tolist() == [-4, -4]
    values, missing = decode_dictionary(enc, np.array([-4]))
    assert values.tolist() == [None] and missing.tolist() == [True]
    with pytest.raises(DataError, match="code 0 is not valid for this dictionary column"):
        decode_dictionary(enc, np.array([0]))


def test_dictionary_empty_input():
    enc = choose_dictionary(["a"], [1], max_categories=3)
    assert encode_dictionary(enc, np.array([], dtype=object)).shape == (0,)
    values, missing = decode_dictionary(enc, np.array([], dtype=np.int64))
    assert values.shape == (0,) and missing.shape == (0,)


def test_dictionary_input_not_mutated():
    enc = choose_dictionary(["b", "a"], [1, 2], max_categories=3)
    x = np.array(["b", "q", "a"], dtype=object)
    before = x.copy()
    codes = encode_dictionary(enc, x)
    codes_before = codes.copy()
    decode_dictionary(enc, codes)
    assert x.tolist() == before.tolist()
    assert codes.tolist() == codes_before.tolist()


@pytest.mark.parametrize("code", [-1, -2, -3, -5, 3])
def test_dictionary_decode_rejects_invalid_codes(code):
    enc = choose_dictionary(["a", "b", "c"], [3, 2, 1], max_categories=3)
    with pytest.raises(DataError, match=rf"code {code} is not valid for this dictionary column"):
        decode_dictionary(enc, np.array([0, code]))


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10", 2**31])
def test_choose_dictionary_rejects_bad_max_categories(bad):
    with pytest.raises(
        ConfigError, match=rf"'max_categories' parameter must be an int .* Got {bad!r} instead"
    ):
        choose_dictionary(["a"], [1], max_categories=bad)


def test_choose_dictionary_rejects_length_mismatch():
    with pytest.raises(DataError, match="values and counts must have the same length"):
        choose_dictionary(["a", "b"], [1], max_categories=3)


# --------------------------------------------------------------------------- helpers


def test_code_range():
    assert code_range(choose_affine(0.0, 1.0, bits=8)) == (-3, 255)
    assert code_range(choose_quantile(list(range(9)), bits=2)) == (-3, 3)
    assert code_range(DictionaryEncoder(("a", "b"), 5)) == (-4, 1)


def test_error_stats():
    x = np.array([1.0, 2.0, np.nan, 4.0])
    x_hat = np.array([1.5, 2.0, 0.0, 3.0])
    stats = error_stats(x, x_hat)
    # finite positions: errors 0.5, 0, 1 -> rmse sqrt(1.25 / 3)
    assert stats == {"rmse": pytest.approx((1.25 / 3) ** 0.5, rel=1e-15), "max_abs_error": 1.0}
    assert error_stats(np.array([np.nan]), np.array([0.0])) == {"rmse": 0.0, "max_abs_error": 0.0}
