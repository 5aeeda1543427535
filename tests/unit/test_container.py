"""The model container: round trips, determinism, golden bytes and one malicious file per reason.

The builders under "Malicious files" edit the bytes of a valid container (like safetensors'
``attacks/``); each produces a file the reader must refuse with a FormatError.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

from spark_compress.errors import ConfigError, FormatError
from spark_compress.io import container
from spark_compress.io.container import payload_digest, read_container, write_container

pytestmark = pytest.mark.unit

KEY = b"test-key"
SPEC = {"layers": [{"kind": "dense", "in": 4, "out": 2, "scale": 0.125}], "name": "tiny"}


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "i8": rng.integers(-128, 128, size=(5,), dtype=np.int8),
        "u8": rng.integers(0, 256, size=(2, 2, 2), dtype=np.uint8),
        "i16": rng.integers(-30000, 30000, size=(7,), dtype=np.int16),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(-3, dtype=np.int16),
    }


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype, name
        assert got[name].shape == arr.shape, name
        np.testing.assert_array_equal(got[name], arr)


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [(), ("i8", "f32", "empty", "scalar"), tuple(_tensors())])
@pytest.mark.parametrize("key", [None, KEY])
def test_round_trip(compress, key):
    tensors = _tensors()
    data = write_container(tensors, SPEC, compress=compress, hmac_key=key)
    got, spec = read_container(data, hmac_key=key)
    _assert_same(got, tensors)
    assert spec == SPEC


def test_returned_arrays_are_writable_copies():
    data = write_container(_tensors(), SPEC)
    got, _ = read_container(data)
    for arr in got.values():
        assert arr.flags.writeable and arr.flags.owndata


def test_big_endian_input_is_stored_little_endian():
    arr = np.arange(6, dtype=">i2").reshape(2, 3)
    got, _ = read_container(write_container({"w": arr}, {}))
    assert got["w"].dtype == np.dtype("<i2")
    np.testing.assert_array_equal(got["w"], arr)


def test_no_tensors():
    got, spec = read_container(write_container({}, {"empty": True}))
    assert got == {} and spec == {"empty": True}


def test_compression_shrinks_sparse_int8():
    rng = np.random.default_rng(1)
    w = np.where(rng.random((64, 256)) < 0.95, 0, rng.integers(-8, 8, (64, 256))).astype(np.int8)
    raw = write_container({"w": w}, SPEC)
    packed = write_container({"w": w}, SPEC, compress=["w"])
    assert len(packed) < 0.25 * len(raw), (len(packed), len(raw))
    _assert_same(read_container(packed)[0], {"w": w})


def test_tensor_that_zstd_would_grow_is_stored_raw():
    # A zstd frame costs at least 9 bytes of header and checksum: 3 random bytes only grow.
    t = {"tiny": np.array([7, -3, 100], np.int8), "zeros": np.zeros(1000, np.int8)}
    data = write_container(t, SPEC, compress=["tiny", "zeros"])
    n = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"]["spark_compress"])
    assert meta["tensors"]["tiny"] == {"encoding": "raw"}
    assert meta["tensors"]["zeros"] == {"encoding": "zstd", "dtype": "I8", "shape": [1000]}
    _assert_same(read_container(data)[0], t)


def test_signed_file_reads_without_key():
    data = write_container(_tensors(), SPEC, hmac_key=KEY)
    got, spec = read_container(data)
    assert spec == SPEC


def test_module_never_uses_pickle():
    source = Path(container.__file__).read_text()
    for banned in ("import pickle", "allow_pickle", "np.load(", "numpy.load("):
        assert banned not in source


# --- determinism and golden bytes --------------------------------------------------------------

_DETERMINISM_SCRIPT = """
import hashlib, sys
import numpy as np
from spark_compress.io.container import write_container
rng = np.random.default_rng(0)
t = {n: rng.integers(-100, 100, size=(8, 16)).astype(d) for n, d in
     [("zeta", np.int8), ("alpha", np.float32), ("mid", np.int16), ("b", np.uint8)]}
spec = {"z": 1, "a": [1.5, {"y": None, "b": "x"}]}
data = write_container(t, spec, compress=["mid", "b"], hmac_key=b"k")
print(hashlib.sha256(data).hexdigest())
"""


def test_deterministic_across_processes():
    root = Path(__file__).resolve().parents[2]
    digests = set()
    for seed in ("1", "2", "12345"):
        out = subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT], cwd=root, check=True,
                             capture_output=True, text=True,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin",
                                  "PYTHONPATH": str(root)})
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


# A change of this digest is a change of the file format: bump FORMAT_VERSION and keep a reader
# for version 1. (Uncompressed on purpose: zstd output may change with the libzstd version.)
GOLDEN_SHA256 = "1586e37e3fa8354300b35c28cf49a447899558598c1ad8944b2fcf17a8c1b571"


def test_golden_bytes():
    tensors = {"w": np.array([[1.0, -2.0], [0.5, 0.0]], dtype=np.float32),
               "b": np.array([1, -1], dtype=np.int8), "s": np.array(7, dtype=np.int16)}
    data = write_container(tensors, {"layers": ["dense"], "version": 1}, hmac_key=b"golden")
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256


# --- writer errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("tensors, spec, kwargs, match", [
    ({"o": np.array([object()], dtype=object)}, {}, {}, "tensor 'o': object dtype"),
    ({"c": np.zeros(2, dtype=np.complex64)}, {}, {}, "tensor 'c': dtype complex64"),
    ({"__metadata__": np.zeros(1)}, {}, {}, "tensor name '__metadata__'"),
    ({"a": np.zeros(1)}, {"x": float("nan")}, {}, "spec is not canonical JSON"),
    ({"a": np.zeros(1)}, {"x": object()}, {}, "spec is not canonical JSON"),
    ({"a": np.zeros(1)}, [1], {}, "spec must be a mapping"),
    ({"a": np.zeros(1)}, {}, {"compress": ["b"]}, r"compress names .*\['b'\]"),
    ({"a": np.zeros(1)}, {}, {"zstd_level": 0}, "zstd_level"),
    ({"a": np.zeros(1)}, {}, {"hmac_key": "str"}, "hmac_key must be bytes"),
])
def test_writer_refuses(tensors, spec, kwargs, match):
    with pytest.raises(FormatError, match=match):
        write_container(tensors, spec, **kwargs)


# --- malicious files ---------------------------------------------------------------------------

def _valid(**kwargs) -> bytes:
    """Two F32 tensors of 4 values: 'a' at [0, 16], 'b' at [16, 32]."""
    return write_container({"a": np.arange(4, dtype=np.float32),
                            "b": np.arange(4, 8, dtype=np.float32)}, SPEC, **kwargs)


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header: dict | bytes, payload: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def _edit(data: bytes, fn) -> bytes:
    """Apply ``fn(header)`` to the parsed header and re-serialise; the payload is unchanged."""
    header, payload = _split(data)
    fn(header)
    return _join(header, payload)


def _edit_meta(data: bytes, fn) -> bytes:
    def apply(header):
        meta = json.loads(header["__metadata__"]["spark_compress"])
        fn(meta)
        header["__metadata__"]["spark_compress"] = json.dumps(meta)
    return _edit(data, apply)


def _assemble(stored: dict[str, tuple[str, list[int], bytes]], info: dict) -> bytes:
    """A file from stored tensors ``name -> (dtype code, shape, bytes)`` with a valid checksum."""
    header, payload = {}, b""
    for name, (code, shape, raw) in sorted(stored.items()):
        header[name] = {"dtype": code, "shape": shape,
                        "data_offsets": [len(payload), len(payload) + len(raw)]}
        payload += raw
    meta = {"format": container.FORMAT, "format_version": 1, "spec": SPEC, "tensors": info,
            "payload_sha256": payload_digest((n, c, s, r) for n, (c, s, r) in stored.items())}
    header["__metadata__"] = {"spark_compress": json.dumps(meta)}
    return _join(header, payload)


def _zstd_tensor(content: bytes, *, recorded_shape: list[int], content_size: bool = True,
                 blob: bytes | None = None) -> bytes:
    if blob is None:
        blob = zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(content)
    return _assemble({"w": ("U8", [len(blob)], blob)},
                     {"w": {"encoding": "zstd", "dtype": "I8", "shape": recorded_shape}})


def _set(name, key, value):
    return lambda h: h[name].__setitem__(key, value)


def _corrupt_stream() -> bytes:
    blob = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(
        bytes(range(256)) * 4))
    blob[len(blob) // 2] ^= 0xFF
    return _zstd_tensor(b"", recorded_shape=[1024], blob=bytes(blob))


def _header_length(data: bytes, n: int) -> bytes:
    return struct.pack("<Q", n) + data[8:]


def _flip_payload_byte(data: bytes) -> bytes:
    out = bytearray(data)
    out[-1] ^= 0x01
    return bytes(out)


def _tamper_spec(data: bytes) -> bytes:
    return _edit_meta(data, lambda m: m["spec"].__setitem__("name", "evil"))


def _duplicate_name(data: bytes) -> bytes:
    header, payload = _split(data)
    meta = json.dumps(header["__metadata__"])
    raw = ('{"__metadata__":%s,"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
           '"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}' % meta).encode()
    return _join(raw, payload)


def _not_json(data: bytes) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    return data[:8] + b"{not json".ljust(n) + data[8 + n:]


ATTACKS = {
    "truncated": (lambda d: d[:5], "truncated file: 5 bytes"),
    "header_longer_than_file": (lambda d: _header_length(d, len(d)), "larger than the"),
    "header_over_cap": (lambda d: _header_length(d, 2**63), "exceeds the cap"),
    "header_not_json": (_not_json, "header is not JSON"),
    "header_not_object": (lambda d: _join(b"[1, 2]", b""), "must be a JSON object"),
    "overlap": (lambda d: _edit(d, _set("b", "data_offsets", [12, 28])),
                "tensor 'b': data_offsets overlap tensor 'a'"),
    "gap": (lambda d: _edit(d, _set("b", "data_offsets", [20, 36])) + b"\0" * 4,
            "tensor 'b': gap of 4 bytes"),
    "past_end": (lambda d: d[:-4], "tensor 'b': data_offsets .* past the end"),
    "uncovered_tail": (lambda d: d + b"\0" * 8, "8 bytes not covered"),
    "byte_count": (lambda d: _edit(d, _set("a", "shape", [3])),
                   r"tensor 'a': byte count 16 != shape \[3\] x F32 \(12 bytes\)"),
    "shape_overflow": (lambda d: _edit(d, _set("a", "shape", [2**40, 2**40])),
                       r"tensor 'a': shape \[1099511627776, 1099511627776\] holds .* more than "
                       "the cap MAX_ELEMENTS=268435456"),
    "unknown_dtype": (lambda d: _edit(d, _set("a", "dtype", "X99")),
                      "tensor 'a': unknown dtype 'X99'"),
    "object_dtype": (lambda d: _edit(d, _set("a", "dtype", "O")),
                     "tensor 'a': object dtype 'O' is refused"),
    "negative_shape": (lambda d: _edit(d, _set("a", "shape", [-4])),
                       "tensor 'a': negative dimension"),
    "shape_not_ints": (lambda d: _edit(d, _set("a", "shape", [4.0])),
                       "tensor 'a': shape must be a list of ints"),
    "offsets_reversed": (lambda d: _edit(d, _set("a", "data_offsets", [16, 0])),
                         "tensor 'a': data_offsets must be"),
    "extra_entry_key": (lambda d: _edit(d, _set("a", "pickle", True)),
                        "tensor 'a': entry must have exactly"),
    "duplicate_name": (_duplicate_name, "duplicate key 'a'"),
    "missing_metadata": (lambda d: _edit(d, lambda h: h.pop("__metadata__")),
                         "__metadata__ is missing"),
    "extra_metadata_key": (lambda d: _edit(d, lambda h: h["__metadata__"].__setitem__("x", "1")),
                           "__metadata__ must hold exactly one"),
    "metadata_not_json": (lambda d: _edit(d, lambda h: h["__metadata__"].__setitem__(
        "spark_compress", "{oops")), r"__metadata__\['spark_compress'\] is not JSON"),
    "wrong_format": (lambda d: _edit_meta(d, lambda m: m.__setitem__("format", "other")),
                     "'format' is 'other', expected 'spark-compress-model'"),
    "unsupported_version": (lambda d: _edit_meta(d, lambda m: m.__setitem__("format_version", 2)),
                            "'format_version' 2 is not supported"),
    "tensor_list_mismatch": (lambda d: _edit_meta(d, lambda m: m["tensors"].pop("b")),
                             r"'tensors' lists \['a'\] but the file holds \['a', 'b'\]"),
    "unknown_encoding": (lambda d: _edit_meta(
        d, lambda m: m["tensors"].__setitem__("a", {"encoding": "lz4"})),
        "tensor 'a': metadata entry .* not a known encoding"),
    "zstd_not_u8": (lambda d: _edit_meta(d, lambda m: m["tensors"].__setitem__(
        "a", {"encoding": "zstd", "dtype": "I8", "shape": [16]})), "must be stored as 1-d U8"),
    "payload_tampered": (_flip_payload_byte, "payload checksum mismatch"),
    "bomb_declared_size": (lambda d: _zstd_tensor(bytes(1 << 20), recorded_shape=[16]),
                           "tensor 'w': compressed frame declares 1048576 bytes"),
    "bomb_unknown_size": (lambda d: _zstd_tensor(bytes(1 << 20), recorded_shape=[16],
                                                 content_size=False),
                          "tensor 'w': compressed stream expands past the recorded 16 bytes"),
    "stream_short": (lambda d: _zstd_tensor(bytes(8), recorded_shape=[16], content_size=False),
                     "tensor 'w': compressed stream holds 8 bytes"),
    "stream_garbage": (lambda d: _zstd_tensor(b"", recorded_shape=[4], blob=b"\x01" * 12),
                       "tensor 'w': compressed stream is corrupt"),
    "stream_corrupt": (lambda d: _corrupt_stream(), "tensor 'w': compressed stream is corrupt"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_malicious_file_refused(attack):
    build, match = ATTACKS[attack]
    with pytest.raises(FormatError, match=match):
        read_container(build(_valid()))


def test_attack_builders_start_from_a_valid_file():
    _assert_same(read_container(_valid())[0], {"a": np.arange(4, dtype=np.float32),
                                               "b": np.arange(4, 8, dtype=np.float32)})
    got, _ = read_container(_zstd_tensor(bytes(16), recorded_shape=[16], content_size=False))
    np.testing.assert_array_equal(got["w"], np.zeros(16, np.int8))


def test_header_cap_argument():
    with pytest.raises(FormatError, match="exceeds the cap of 64 bytes"):
        read_container(_valid(), max_header_bytes=64)


def test_decompressed_size_cap():
    data = write_container({"w": np.zeros(4096, np.int8)}, {}, compress=["w"])
    with pytest.raises(FormatError, match="tensor 'w': decompressed size would exceed"):
        read_container(data, max_decompressed_bytes=4095)
    assert read_container(data, max_decompressed_bytes=4096)[0]["w"].shape == (4096,)


# --- signatures --------------------------------------------------------------------------------

def test_metadata_tampered_with_valid_checksum_fails_signature():
    data = _tamper_spec(_valid(hmac_key=KEY))
    assert read_container(data)[1]["name"] == "evil"  # checksum alone does not cover the spec
    with pytest.raises(FormatError, match="signature mismatch"):
        read_container(data, hmac_key=KEY)


def test_payload_tampered_with_recomputed_checksum_fails_signature():
    header, payload = _split(_valid(hmac_key=KEY))
    payload = payload[:-1] + bytes([payload[-1] ^ 1])
    meta = json.loads(header["__metadata__"]["spark_compress"])
    meta["payload_sha256"] = payload_digest([
        (n, e["dtype"], e["shape"], payload[e["data_offsets"][0]:e["data_offsets"][1]])
        for n, e in header.items() if n != "__metadata__"])
    header["__metadata__"]["spark_compress"] = json.dumps(meta)
    with pytest.raises(FormatError, match="signature mismatch"):
        read_container(_join(header, payload), hmac_key=KEY)


def test_wrong_key_fails_signature():
    with pytest.raises(FormatError, match="signature mismatch"):
        read_container(_valid(hmac_key=KEY), hmac_key=b"other")


def test_missing_signature_refused_when_required():
    with pytest.raises(FormatError, match="signature missing"):
        read_container(_valid(), hmac_key=KEY, require_signature=True)


def test_unsigned_file_refused_when_key_given():
    with pytest.raises(FormatError, match="signature missing"):
        read_container(_valid(), hmac_key=KEY)


def test_stripped_signature_refused_when_required():
    data = _edit_meta(_valid(hmac_key=KEY), lambda m: m.pop("signature"))
    assert read_container(data)[1] == SPEC
    with pytest.raises(FormatError, match="signature missing"):
        read_container(data, hmac_key=KEY, require_signature=True)


def test_require_signature_needs_key():
    with pytest.raises(ConfigError, match="require_signature=True needs hmac_key"):
        read_container(_valid(hmac_key=KEY), require_signature=True)


@pytest.mark.parametrize("field, value", [("signature", "\u00e9" * 64), ("signature", 7),
                                          ("payload_sha256", "\u00e9")])
def test_non_hex_digest_fields_refused(field, value):
    data = _edit_meta(_valid(hmac_key=KEY), lambda m: m.__setitem__(field, value))
    with pytest.raises(FormatError, match="signature mismatch|must be a hex string|checksum"):
        read_container(data, hmac_key=KEY)


# --- bounds: what a file can make the reader allocate ------------------------------------------

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
            read_container(data, **kw)
    assert _peak_of(load) < 4 * 2 ** 20


def test_recorded_size_past_what_the_frame_can_hold_refused():
    blob = zstandard.ZstdCompressor(level=3).compress(bytes(16))
    assert container.ZSTD_MAX_RATIO * len(blob) < 2 ** 26
    _refused_small(_zstd_tensor(b"", recorded_shape=[2 ** 26], blob=blob),
                   rf"tensor 'w': recorded shape \[67108864\] x I8 is 67108864 bytes, more than "
                   rf"a {len(blob)}-byte zstd frame can hold")


def test_zeros_compress_close_to_but_within_the_format_bound():
    blob = zstandard.ZstdCompressor(level=22).compress(bytes(2 ** 24))
    assert 0.9 * container.ZSTD_MAX_RATIO < 2 ** 24 / len(blob) <= container.ZSTD_MAX_RATIO


def test_recorded_shape_over_the_element_cap_refused():
    blob = zstandard.ZstdCompressor(level=3).compress(bytes(16))
    _refused_small(_zstd_tensor(b"", recorded_shape=[2 ** 20, 2 ** 20], blob=blob),
                   r"tensor 'w' \(recorded\): shape \[1048576, 1048576\] holds 1099511627776 "
                   "elements, more than the cap MAX_ELEMENTS=268435456")


def test_real_bomb_refused_by_the_decompression_cap_before_decompressing():
    bomb = _zstd_tensor(bytes(2 ** 26), recorded_shape=[2 ** 26])  # 64 MiB in a few KB
    assert len(bomb) < 4000
    _refused_small(bomb, "tensor 'w': decompressed size would exceed max_decompressed_bytes",
                   max_decompressed_bytes=2 ** 20)


def test_check_sees_declared_shapes_before_anything_is_decompressed():
    bomb = _zstd_tensor(bytes(2 ** 26), recorded_shape=[2 ** 26])
    seen = []

    def check(spec, declared):
        seen.append((spec, declared))
        raise FormatError("refused by the caller")

    _refused_small(bomb, "refused by the caller", check=check)
    assert seen == [(SPEC, {"w": ("I8", (2 ** 26,))})]
    raw = _valid()
    read_container(raw, check=lambda spec, declared: seen.append(declared))
    assert seen[-1] == {"a": ("F32", (4,)), "b": ("F32", (4,))}
