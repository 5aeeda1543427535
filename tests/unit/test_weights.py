"""spark_compress.core.weights: pruning masks, symmetric quantization, int4 packing, k-means
weight sharing, low rank; hand-computed expectations and every error path."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spark_compress.core.weights import (
    QuantizedTensor,
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

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# |values| are 1..20, each once, so pruning 10 keeps exactly |w| >= 11.
W45 = np.array(
    [
        [-20.0, 1.0, 19.0, -2.0, 18.0],
        [3.0, -17.0, 4.0, 16.0, -5.0],
        [15.0, 6.0, -14.0, 7.0, 13.0],
        [-8.0, 12.0, 9.0, -11.0, 10.0],
    ]
)
KEEP45 = np.array(
    [
        [True, False, True, False, True],
        [False, True, False, True, False],
        [True, False, True, False, True],
        [False, True, False, True, False],
    ]
)


# --------------------------------------------------------------------------- magnitude


def test_magnitude_mask_prunes_exactly_count_and_fraction():
    mask = magnitude_mask(W45, 10)
    assert mask.dtype == np.bool_ and mask.shape == (4, 5)
    np.testing.assert_array_equal(mask, KEEP45)
    np.testing.assert_array_equal(magnitude_mask(W45, 0.5), KEEP45)
    assert magnitude_mask(W45, 0).all()
    assert not magnitude_mask(W45, 20).any()
    assert not magnitude_mask(W45, 1.0).any()


def test_magnitude_mask_ties_go_by_flat_index():
    w = np.array([[1.0, -1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(magnitude_mask(w, 2), [[False, False], [True, True]])
    np.testing.assert_array_equal(magnitude_mask(w, 1), [[False, True], [True, True]])


def test_magnitude_mask_fraction_rounds_half_to_even():
    w = np.arange(1.0, 11.0)
    assert np.count_nonzero(~magnitude_mask(w, 0.25)) == 2  # 2.5 -> 2
    assert np.count_nonzero(~magnitude_mask(w, 0.35)) == 4  # 3.5 -> 4


def test_magnitude_mask_empty_and_scalar():
    assert magnitude_mask(np.zeros((0, 3)), 0.5).shape == (0, 3)
    assert magnitude_mask(np.float64(3.0), 1).shape == ()
    assert not magnitude_mask(np.float64(3.0), 1)


def test_global_masks_use_one_threshold_across_layers():
    a = np.array([[0.5, -3.0], [2.0, 0.1]])
    b = np.array([1.0, -0.2, 4.0])
    masks = global_magnitude_masks({"a": a, "b": b}, 3)  # removes 0.1, 0.2, 0.5
    assert list(masks) == ["a", "b"]
    np.testing.assert_array_equal(masks["a"], [[False, True], [True, False]])
    np.testing.assert_array_equal(masks["b"], [True, False, True])
    masks = global_magnitude_masks({"a": a, "b": b}, 0.5)  # round(3.5) = 4: also 1.0
    np.testing.assert_array_equal(masks["a"], [[False, True], [True, False]])
    np.testing.assert_array_equal(masks["b"], [False, False, True])
    assert global_magnitude_masks({}, 0.5) == {}


# --------------------------------------------------------------------------- structured


def test_structured_mask_by_row_norms():
    w = np.array([[3.0, 4.0], [1.0, 1.0], [0.0, -6.0]])  # L2: 5, 1.41, 6; L1: 7, 2, 6
    np.testing.assert_array_equal(structured_mask(w, 1), [True, False, True])
    np.testing.assert_array_equal(structured_mask(w, 2), [False, False, True])
    np.testing.assert_array_equal(structured_mask(w, 2, norm=1), [True, False, False])
    np.testing.assert_array_equal(structured_mask(w, 1, norm=np.inf), [True, False, True])
    # columns: L2 sqrt(10), sqrt(53)
    np.testing.assert_array_equal(structured_mask(w, 1, axis=1), [False, True])
    np.testing.assert_array_equal(structured_mask(w, 0.5, axis=-1), [False, True])
    np.testing.assert_array_equal(structured_mask(w, 0.34), [True, False, True])  # 1.02 -> 1


def test_structured_mask_conv_shaped_and_ties():
    w = np.ones((4, 2, 3, 3))
    w[2] *= 0.5
    np.testing.assert_array_equal(structured_mask(w, 1), [True, True, False, True])
    np.testing.assert_array_equal(structured_mask(w, 2), [False, True, False, True])


# --------------------------------------------------------------------------- quantization

W23 = np.array([[127.0, -63.5, 0.5], [-254.0, 1.0, 3.0]])


def test_int8_per_channel_codes_and_scales_by_hand():
    qt = quantize_symmetric(W23, bits=8, axis=0)
    assert qt.codes.dtype == np.int8 and qt.scales.dtype == np.float32
    assert qt.axis == 0 and qt.bits == 8
    np.testing.assert_array_equal(qt.scales, [1.0, 2.0])
    # -63.5 -> -64 and 0.5 -> 0, 0.5 (1/2) -> 0, 1.5 (3/2) -> 2: round half to even
    np.testing.assert_array_equal(qt.codes, [[127, -64, 0], [-127, 0, 2]])
    np.testing.assert_array_equal(dequantize(qt), [[127.0, -64.0, 0.0], [-254.0, 0.0, 4.0]])
    assert dequantize(qt).dtype == np.float32


def test_int8_per_tensor_codes_by_hand():
    qt = quantize_symmetric(W23, bits=8)
    assert qt.axis is None
    np.testing.assert_array_equal(qt.scales, [2.0])
    np.testing.assert_array_equal(qt.codes, [[64, -32, 0], [-127, 0, 2]])


def test_negative_axis_is_stored_normalised():
    qt = quantize_symmetric(W23, axis=-1)
    assert qt.axis == 1
    np.testing.assert_allclose(qt.scales, np.float32([254 / 127, 63.5 / 127, 3 / 127]))


def test_all_zero_channel_gets_scale_one_and_decodes_to_zero():
    w = np.array([[0.0, 0.0], [-1.0, 0.5]])
    qt = quantize_symmetric(w, axis=0)
    assert qt.scales[0] == 1.0
    np.testing.assert_array_equal(dequantize(qt)[0], [0.0, 0.0])
    qt = quantize_symmetric(np.zeros(4), bits=4)
    np.testing.assert_array_equal(qt.scales, [1.0])
    np.testing.assert_array_equal(dequantize(qt), np.zeros(4, dtype=np.float32))


def test_int4_codes_stay_in_range():
    w = np.random.default_rng(1).normal(size=(8, 16))
    qt = quantize_symmetric(w, bits=4, axis=0)
    assert qt.codes.min() >= -7 and qt.codes.max() <= 7
    np.testing.assert_array_equal(np.abs(qt.codes).max(axis=1), np.full(8, 7))
    np.testing.assert_allclose(qt.scales, np.abs(w).max(axis=1) / 7, rtol=1e-6)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("axis", [None, 0, 1, 2])
def test_dequantize_error_within_half_scale(bits, axis):
    w = np.random.default_rng(bits).normal(scale=3.0, size=(5, 7, 3)).astype(np.float32)
    qt = quantize_symmetric(w, bits=bits, axis=axis)
    deq = dequantize(qt)
    assert deq.shape == w.shape
    shape = (1, 1, 1) if axis is None else tuple(-1 if i == axis else 1 for i in range(3))
    half = qt.scales.astype(np.float64).reshape(shape) / 2
    err = np.abs(w.astype(np.float64) - deq.astype(np.float64))
    assert np.all(err <= half * (1 + 1e-6))


def test_quantize_empty_and_scalar():
    qt = quantize_symmetric(np.zeros((0, 3)), axis=1)
    assert qt.codes.shape == (0, 3)
    np.testing.assert_array_equal(qt.scales, np.ones(3, dtype=np.float32))
    assert dequantize(qt).shape == (0, 3)
    qt = quantize_symmetric(np.float64(-2.0), bits=4)
    assert qt.codes.shape == () and int(qt.codes) == -7
    assert float(dequantize(qt)) == pytest.approx(-2.0)


def test_quantized_tensor_is_frozen():
    qt = quantize_symmetric(W23)
    with pytest.raises(AttributeError):
        qt.bits = 4  # type: ignore[misc]


# --------------------------------------------------------------------------- int4 packing


def test_pack_int4_golden_bytes():
    packed = pack_int4(np.array([-8, 7, -1, 0, 3], dtype=np.int8))
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [0x78, 0x0F, 0x03])
    np.testing.assert_array_equal(unpack_int4(packed, 5), [-8, 7, -1, 0, 3])


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 33])
def test_pack_unpack_round_trip(n):
    codes = np.random.default_rng(n).integers(-8, 8, size=n).astype(np.int8)
    packed = pack_int4(codes)
    assert packed.shape == ((n + 1) // 2,)
    out = unpack_int4(packed, n)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, codes)


def test_pack_quantized_int4_codes_round_trip_2d():
    qt = quantize_symmetric(np.random.default_rng(0).normal(size=(3, 5)), bits=4)
    back = unpack_int4(pack_int4(qt.codes), qt.codes.size).reshape(qt.codes.shape)
    np.testing.assert_array_equal(back, qt.codes)


# --------------------------------------------------------------------------- k-means sharing


def test_kmeans_is_deterministic_and_sorted():
    w = np.random.default_rng(7).normal(size=(20, 30))
    c1, k1 = kmeans_share(w, bits=3, seed=5)
    c2, k2 = kmeans_share(w, bits=3, seed=5)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(k1, k2)
    assert c1.dtype == np.uint8 and c1.shape == w.shape
    assert k1.dtype == np.float32 and 1 <= k1.size <= 8
    assert np.all(np.diff(k1) > 0)
    # every code is the nearest centroid
    dist = np.abs(w[..., None] - k1.astype(np.float64))
    np.testing.assert_array_equal(
        np.abs(w - k1[c1]), dist.min(axis=-1).astype(np.float64)
    )


def test_kmeans_finds_three_obvious_clusters():
    rng = np.random.default_rng(3)
    centres = np.array([-4.0, 0.0, 7.0])
    labels = rng.integers(0, 3, size=300)
    w = centres[labels] + rng.uniform(-0.05, 0.05, size=300)
    codes, cents = kmeans_share(w, bits=2)
    for c in centres:
        assert np.min(np.abs(cents - c)) < 0.05
    assert np.max(np.abs(share_decode(codes, cents) - w)) < 0.1


def test_kmeans_four_clusters_exact_means():
    w = np.array([-3.1, -2.9, -1.1, -0.9, 1.9, 2.1, 5.9, 6.1])
    codes, cents = kmeans_share(w, bits=2, iters=30)
    np.testing.assert_allclose(cents, [-3.0, -1.0, 2.0, 6.0], atol=1e-6)
    np.testing.assert_array_equal(codes, [0, 0, 1, 1, 2, 2, 3, 3])


def test_kmeans_few_distinct_values_is_lossless():
    w = np.array([3.0, 1.0, 3.0, 1.0, 2.0])
    codes, cents = kmeans_share(w, bits=2)
    np.testing.assert_array_equal(cents, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(codes, [2, 0, 2, 0, 1])
    codes, cents = kmeans_share(np.full((2, 3), 5.0), bits=4)
    np.testing.assert_array_equal(cents, [5.0])
    np.testing.assert_array_equal(codes, np.zeros((2, 3)))


def test_kmeans_empty_and_fully_masked():
    codes, cents = kmeans_share(np.zeros((0, 3)), bits=2)
    assert codes.shape == (0, 3)
    np.testing.assert_array_equal(cents, [0.0])
    w = np.ones((2, 2))
    codes, cents = kmeans_share(w, bits=2, mask=np.zeros((2, 2), dtype=bool))
    np.testing.assert_array_equal(share_decode(codes, cents, mask=np.zeros((2, 2), bool)), 0)


def test_kmeans_clusters_only_kept_weights():
    w = np.array([100.0, 1.0, 1.2, -50.0, 3.0, 3.2])
    mask = np.array([False, True, True, False, True, True])
    codes, cents = kmeans_share(w, bits=1, mask=mask)
    np.testing.assert_allclose(cents, [1.1, 3.1], rtol=1e-6)
    np.testing.assert_array_equal(codes, [0, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(
        share_decode(codes, cents, mask=mask), [0.0, 1.1, 1.1, 0.0, 3.1, 3.1], rtol=1e-6
    )


def test_kmeans_relocates_empty_clusters_deterministically():
    # Linear init between 0-ish and 100 leaves 6 of 8 clusters empty; they move into the bulk.
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.normal(0.0, 0.1, 500), [99.0, 100.0]])
    codes, cents = kmeans_share(w, bits=3, seed=1)
    assert cents.size == 8 and np.all(np.diff(cents) > 0)
    np.testing.assert_array_equal(np.unique(codes), np.arange(8))
    assert np.max(np.abs(share_decode(codes, cents) - w)[:500]) < 0.15
    again = kmeans_share(w, bits=3, seed=1)
    np.testing.assert_array_equal(again[0], codes)
    np.testing.assert_array_equal(again[1], cents)


def test_kmeans_more_than_8_bits_uses_uint16():
    w = np.random.default_rng(0).normal(size=2000)
    codes, cents = kmeans_share(w, bits=9, iters=3)
    assert codes.dtype == np.uint16 and cents.size <= 512
    assert int(codes.max()) == cents.size - 1


# --------------------------------------------------------------------------- low rank

# 3 * u1 v1^T + 1 * u2 v2^T with orthonormal u1, u2, v1, v2: singular values 3, 1, 0.
W_RANK2 = np.array([[1.5, 0.5, 0.0], [1.5, -0.5, 0.0], [1.5, 0.5, 0.0], [1.5, -0.5, 0.0]])


def test_low_rank_by_rank():
    a, b = low_rank(W_RANK2, rank=2)
    assert a.shape == (4, 2) and b.shape == (2, 3)
    np.testing.assert_allclose(a @ b, W_RANK2, atol=1e-12)
    a, b = low_rank(W_RANK2, rank=1)
    np.testing.assert_allclose(a @ b, [[1.5, 0.0, 0.0]] * 4, atol=1e-12)
    assert np.linalg.norm(W_RANK2 - a @ b) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("energy", "rank"), [(0.5, 1), (0.9, 1), (0.91, 2), (0.999999, 2), (1.0, 2), (1, 2)]
)
def test_low_rank_by_energy(energy, rank):  # squared singular values 9, 1, 0: 90% at rank 1
    a, b = low_rank(W_RANK2, energy=energy)
    assert a.shape == (4, rank) and b.shape == (rank, 3)


def test_low_rank_zero_matrix():
    a, b = low_rank(np.zeros((3, 2)), energy=0.9)
    assert a.shape == (3, 1)
    np.testing.assert_array_equal(a @ b, np.zeros((3, 2)))


# --------------------------------------------------------------------------- purity


def test_inputs_not_mutated():
    w = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    mask = w > 0
    w0, mask0 = w.copy(), mask.copy()
    magnitude_mask(w, 0.5)
    global_magnitude_masks({"w": w}, 3)
    structured_mask(w, 2)
    qt = quantize_symmetric(w, bits=4, axis=0)
    codes0, scales0 = qt.codes.copy(), qt.scales.copy()
    dequantize(qt)
    pack_int4(qt.codes)
    codes, cents = kmeans_share(w, bits=2, mask=mask)
    c0, k0 = codes.copy(), cents.copy()
    share_decode(codes, cents, mask=mask)
    low_rank(w, energy=0.9)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(mask, mask0)
    np.testing.assert_array_equal(qt.codes, codes0)
    np.testing.assert_array_equal(qt.scales, scales0)
    np.testing.assert_array_equal(codes, c0)
    np.testing.assert_array_equal(cents, k0)


def test_weights_module_imports_with_heavy_libraries_blocked():
    script = textwrap.dedent("""
        import sys
        BLOCKED = {"pyspark", "pandas", "sklearn", "torch", "scipy"}
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked in this test")
                return None
        sys.meta_path.insert(0, Blocker())
        import spark_compress.core.weights
    """)
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)


# --------------------------------------------------------------------------- errors


def test_amount_error_names_tensor_and_shape():
    w = np.zeros((256, 784), dtype=np.float32)
    msg = (
        "prune amount 1.5 for tensor 'layers.0.weight' of shape (256, 784) must be in [0, 1] "
        "(a fraction) or an int in [0, 200704] (a count)"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        magnitude_mask(w, 1.5, name="layers.0.weight")


@pytest.mark.parametrize("amount", [-1, 21, -0.1, float("nan"), True, "0.5", None])
def test_magnitude_mask_bad_amount(amount):
    with pytest.raises(ConfigError, match=r"prune amount .* tensor 'weight' of shape \(4, 5\)"):
        magnitude_mask(W45, amount)


def test_global_masks_bad_amount_names_all_tensors():
    with pytest.raises(ConfigError, match=r"tensors \['a', 'b'\] of shapes \[\(2,\), \(3,\)\]"):
        global_magnitude_masks({"a": np.ones(2), "b": np.ones(3)}, 6)


def test_bad_weights_are_data_errors():
    with pytest.raises(DataError, match=r"tensor 'fc' of shape \(2,\) has 1 non-finite"):
        magnitude_mask(np.array([1.0, np.nan]), 1, name="fc")
    with pytest.raises(DataError, match=r"tensor 'b' of shape \(1,\) has 1 non-finite"):
        global_magnitude_masks({"a": np.ones(2), "b": np.array([np.inf])}, 1)
    with pytest.raises(DataError, match=r"tensor 'weight' of shape \(2,\) has dtype <U1"):
        quantize_symmetric(np.array(["a", "b"]))
    with pytest.raises(DataError, match="non-finite"):
        kmeans_share(np.array([1.0, -np.inf]), bits=2)
    with pytest.raises(DataError, match="non-finite"):
        low_rank(np.array([[1.0, np.nan]]), rank=1)


def test_structured_mask_errors():
    w = np.ones((3, 2))
    with pytest.raises(
        ConfigError, match=r"or an int in \[0, 3\] \(a count of slices along axis 0\)"
    ):
        structured_mask(w, 4)
    with pytest.raises(ConfigError, match=r"axis 2 for tensor 'weight' of shape \(3, 2\)"):
        structured_mask(w, 1, axis=2)
    with pytest.raises(ConfigError, match=r"axis 0.5 .* must be an int in \[-2, 1\]"):
        structured_mask(w, 1, axis=0.5)
    for norm in (0, -1, "fro", True):
        with pytest.raises(ConfigError, match=r"norm .* of tensor 'weight' of shape \(3, 2\)"):
            structured_mask(w, 1, norm=norm)
    with pytest.raises(DataError, match=r"at least 1 axis; tensor 'weight' of shape \(\)"):
        structured_mask(np.float64(1.0), 0)


def test_quantize_errors():
    with pytest.raises(ConfigError, match=r"bits 3 for quantizing tensor 'w' of shape \(2, 3\)"):
        quantize_symmetric(W23, bits=3, name="w")
    with pytest.raises(ConfigError, match=r"axis 2 for tensor 'weight' of shape \(2, 3\)"):
        quantize_symmetric(W23, axis=2)
    with pytest.raises(ConfigError, match=r"per-channel .* shape \(\)"):
        quantize_symmetric(np.float64(1.0), axis=0)


def test_dequantize_errors():
    good = quantize_symmetric(W23, axis=0)
    codes16 = good.codes.astype(np.int16)
    with pytest.raises(DataError, match=r"codes of tensor 'weight' of shape \(2, 3\) must be int8"):
        dequantize(QuantizedTensor(codes16, good.scales, 0, 8))
    with pytest.raises(DataError, match=r"must be in \[-7, 7\] for 4 bits; got \[-127, 127\]"):
        dequantize(QuantizedTensor(good.codes, good.scales, 0, 4))
    with pytest.raises(DataError, match=r"scales .* must be float32 of shape \(3,\)"):
        dequantize(QuantizedTensor(good.codes, good.scales, 1, 8))
    with pytest.raises(DataError, match=r"scales .* must be float32 of shape \(2,\); got float64"):
        dequantize(QuantizedTensor(good.codes, good.scales.astype(np.float64), 0, 8))
    with pytest.raises(DataError, match="must be finite and > 0"):
        dequantize(QuantizedTensor(good.codes, np.float32([1.0, 0.0]), 0, 8))
    with pytest.raises(DataError, match=r"axis 5 of tensor 'weight' of shape \(2, 3\)"):
        dequantize(QuantizedTensor(good.codes, good.scales, 5, 8))
    with pytest.raises(ConfigError, match="bits 2 for quantizing"):
        dequantize(QuantizedTensor(good.codes, good.scales, 0, 2))


def test_pack_unpack_errors():
    with pytest.raises(DataError, match=r"tensor 'codes' of shape \(2,\) has values in \[-9, 0\]"):
        pack_int4(np.array([-9, 0]))
    with pytest.raises(DataError, match=r"must hold integers to pack as int4, got float64"):
        pack_int4(np.array([1.0]))
    with pytest.raises(DataError, match=r"must be 1-D uint8 of length 2 to hold 3 codes"):
        unpack_int4(np.zeros(1, dtype=np.uint8), 3)
    with pytest.raises(DataError, match=r"got int8 of length 2"):
        unpack_int4(np.zeros(2, dtype=np.int8), 3)
    with pytest.raises(DataError, match="unused last high nibble is not 0"):
        unpack_int4(np.array([0x10], dtype=np.uint8), 1)
    with pytest.raises(ConfigError, match=r"n -1 for unpacking"):
        unpack_int4(np.zeros(0, dtype=np.uint8), -1)


def test_kmeans_errors():
    w = np.ones((2, 2))
    for bits in (0, 17, 2.0, None):
        with pytest.raises(ConfigError, match=r"bits .* weight sharing of tensor 'weight'"):
            kmeans_share(w, bits=bits)
    with pytest.raises(ConfigError, match=r"iters -1 .* shape \(2, 2\) must be an int >= 0"):
        kmeans_share(w, bits=2, iters=-1)
    with pytest.raises(ConfigError, match=r"seed -3 .* must be an int >= 0"):
        kmeans_share(w, bits=2, seed=-3)
    with pytest.raises(DataError, match=r"mask for tensor 'weight' of shape \(2, 2\) must be a "
                                        r"bool array of shape \(2, 2\); got bool of shape \(4,\)"):
        kmeans_share(w, bits=2, mask=np.ones(4, dtype=bool))
    with pytest.raises(DataError, match=r"got float64 of shape \(2, 2\)"):
        kmeans_share(w, bits=2, mask=np.ones((2, 2)))


def test_share_decode_errors():
    cents = np.float32([0.0, 1.0])
    with pytest.raises(DataError, match=r"codes of tensor 'weight' of shape \(2,\) are in "
                                        r"\[0, 2\] but there are only 2 centroids"):
        share_decode(np.array([0, 2], dtype=np.uint8), cents)
    with pytest.raises(DataError, match="must be integers, got float64"):
        share_decode(np.array([0.0]), cents)
    with pytest.raises(DataError, match=r"non-empty 1-D array, got \(0,\)"):
        share_decode(np.array([0]), np.float32([]))
    with pytest.raises(DataError, match=r"mask for tensor 'weight' of shape \(1,\)"):
        share_decode(np.array([0]), cents, mask=np.ones(2, dtype=bool))


def test_low_rank_errors():
    with pytest.raises(DataError, match=r"2-D matrix; tensor 'fc' of shape \(3,\) has 1 axes"):
        low_rank(np.ones(3), rank=1, name="fc")
    with pytest.raises(DataError, match=r"non-empty matrix; tensor 'weight' of shape \(0, 3\)"):
        low_rank(np.ones((0, 3)), rank=1)
    with pytest.raises(ConfigError, match=r"shape \(4, 3\) needs exactly one of rank or energy"):
        low_rank(W_RANK2)
    with pytest.raises(ConfigError, match="got rank=1, energy=0.9"):
        low_rank(W_RANK2, rank=1, energy=0.9)
    for rank in (0, 4, 1.0, True):
        with pytest.raises(ConfigError, match=r"rank .* of shape \(4, 3\) must be an int in "
                                              r"\[1, 3\]"):
            low_rank(W_RANK2, rank=rank)
    for energy in (0.0, 1.5, -0.1, float("nan"), "0.9", True):
        with pytest.raises(ConfigError, match=r"energy .* of shape \(4, 3\) must be a number in "
                                              r"\(0, 1\]"):
            low_rank(W_RANK2, energy=energy)
