"""The model container: named numpy tensors plus a JSON spec in one ``.safetensors`` file.

Layout (``format_version`` 1): a standard safetensors file (8-byte little-endian header length,
JSON header, tensor bytes) whose ``__metadata__`` holds exactly one key, ``"spark_compress"``,
whose value is canonical JSON (sorted keys, no spaces, ASCII, no NaN)::

    {"format": "spark-compress-model", "format_version": 1,
     "spec": {...},                                   # the caller's JSON-able layer spec
     "tensors": {"w": {"encoding": "raw"},
                 "q": {"encoding": "zstd", "dtype": "I8", "shape": [64, 32]}},
     "payload_sha256": "<hex>",
     "signature": "<hex>"}                            # only when written with an hmac_key

A ``zstd`` tensor is stored as a 1-d ``U8`` tensor holding one zstandard frame (checksum and
content size written, no dictionary, single-threaded, fixed level); its original dtype and shape
are the ones recorded in ``tensors``.

``payload_sha256`` is SHA-256 over the *stored* tensors (after compression) in sorted name
order; for each tensor, four fields are fed, each as an 8-byte little-endian length followed by
the bytes: the UTF-8 name, the ASCII safetensors dtype (``"F32"``), the shape as canonical JSON
(``"[2,3]"``), and the raw little-endian tensor bytes.

``signature`` is HMAC-SHA256 with the caller's key over the canonical JSON of the metadata
without ``signature`` (which includes ``payload_sha256``, so it binds the tensor bytes too).

The reader validates the whole header itself before the safetensors library sees the bytes, then
the checksum, then the signature, then decompresses with a size cap. Pickle is never used and
object dtypes are refused. Every problem raises :class:`~spark_compress.errors.FormatError`.

Bounds, all checked on the declared sizes before any tensor is copied or decompressed, so what a
file can make the reader allocate is tied to the file's own size or to a documented cap:

* a raw tensor's byte count must equal shape x dtype and lie inside the file;
* a zstd tensor's recorded shape x dtype (its decompressed size) may not exceed
  :data:`ZSTD_MAX_RATIO` times its frame's length: the zstd format cannot expand further (a block
  decompresses to at most 128 KiB and takes at least 4 bytes: a 3-byte header and one RLE byte);
* every tensor holds at most :data:`MAX_ELEMENTS` elements (recorded shape), and all zstd tensors
  together decompress to at most ``max_decompressed_bytes`` (default
  :data:`MAX_DECOMPRESSED_BYTES`);
* decompression is streamed in 1 MiB reads and stops one chunk past the recorded size.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import struct
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from spark_compress.errors import ConfigError, FormatError

FORMAT = "spark-compress-model"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
METADATA_KEY = "spark_compress"
MAX_HEADER_BYTES = 100 * 1024 * 1024
# All zstd tensors of one file decompress to at most this many bytes (1 GiB).
MAX_DECOMPRESSED_BYTES = 1 << 30
# Elements of one tensor (raw shape or recorded zstd shape): 2^28, a 1 GiB float32 tensor.
MAX_ELEMENTS = 1 << 28
# The zstd format's largest expansion: 128 KiB out of a 4-byte block (3-byte header + RLE byte).
ZSTD_MAX_RATIO = (128 * 1024) // 4

# safetensors dtype code -> little-endian numpy dtype. BF16/F8 have no numpy dtype: refused.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}
_CODES = {dt: code for code, dt in DTYPES.items()}
_OBJECT_DTYPES = frozenset({"O", "OBJECT", "|O", "OBJ", "PICKLE"})
_ENCODINGS = ("raw", "zstd")
_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_CHUNK = 1 << 20


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII only; NaN and infinities are refused (``ValueError``)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def payload_digest(entries: Iterable[tuple[str, str, Iterable[int], bytes]]) -> str:
    """Hex SHA-256 of stored tensors given as ``(name, dtype_code, shape, raw_bytes)``.

    The entries are hashed in sorted name order, each field length-prefixed (module docstring).
    """
    h = hashlib.sha256()
    for name, code, shape, raw in sorted(entries, key=lambda e: e[0]):
        for field in (name.encode("utf-8"), code.encode("ascii"),
                      canonical_json([int(s) for s in shape]).encode("ascii"), bytes(raw)):
            h.update(struct.pack("<Q", len(field)))
            h.update(field)
    return h.hexdigest()


def _sign(meta: Mapping[str, Any], key: bytes) -> str:
    unsigned = {k: v for k, v in meta.items() if k != "signature"}
    return hmac.new(key, canonical_json(unsigned).encode("ascii"), hashlib.sha256).hexdigest()


def _zstd():
    import zstandard  # imported lazily: only containers with compressed tensors need it

    return zstandard


def _as_stored_array(name: Any, value: Any) -> tuple[np.ndarray, str]:
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise FormatError(f"tensor name {name!r} is not allowed: use a non-empty string other "
                          "than '__metadata__'")
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise FormatError(f"tensor {name!r}: object dtype cannot be stored; convert it to a "
                          f"numeric dtype ({', '.join(DTYPES)})")
    code = _CODES.get(arr.dtype.newbyteorder("<"))
    if code is None:
        raise FormatError(f"tensor {name!r}: dtype {arr.dtype} is not supported; use one of "
                          f"{', '.join(DTYPES)}")
    return np.asarray(arr, dtype=DTYPES[code], order="C"), code


def write_container(tensors: Mapping[str, np.ndarray], spec: Mapping, *,
                    compress: Iterable[str] = (), hmac_key: bytes | None = None,
                    zstd_level: int = 19) -> bytes:
    """The container bytes for ``tensors`` and ``spec``; the same input gives the same bytes.

    ``compress`` names tensors to store as zstandard frames at ``zstd_level`` (1..22); a tensor
    whose frame would not be smaller than its raw bytes (tiny or incompressible) is stored raw.
    ``hmac_key`` adds an HMAC-SHA256 ``signature``. Raises ``FormatError`` for a spec that is not
    JSON (or has NaN/inf), an unknown name in ``compress``, or an unsupported dtype.
    """
    if not isinstance(spec, Mapping):
        raise FormatError(f"spec must be a mapping, got {type(spec).__name__}")
    try:
        spec_obj = json.loads(canonical_json(dict(spec)))
    except (TypeError, ValueError) as exc:
        raise FormatError(f"spec is not canonical JSON (str keys, no NaN/inf): {exc}") from None
    if isinstance(zstd_level, bool) or not isinstance(zstd_level, int) or \
            not 1 <= zstd_level <= 22:
        raise FormatError(f"zstd_level must be an int in 1..22, got {zstd_level!r}")
    if hmac_key is not None and not isinstance(hmac_key, (bytes, bytearray)):
        raise FormatError(f"hmac_key must be bytes, got {type(hmac_key).__name__}")
    compress = frozenset(compress)
    unknown = sorted(compress - set(tensors))
    if unknown:
        raise FormatError(f"compress names tensors that are not given: {unknown}")

    stored: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    entries = []
    for name in sorted(tensors):
        arr, code = _as_stored_array(name, tensors[name])
        if name in compress:
            cctx = _zstd().ZstdCompressor(level=zstd_level, write_checksum=True,
                                          write_content_size=True, threads=0)
            frame = cctx.compress(arr.tobytes())
        if name in compress and len(frame) < arr.nbytes:
            info[name] = {"encoding": "zstd", "dtype": code, "shape": list(arr.shape)}
            arr, code = np.frombuffer(frame, dtype=np.uint8).copy(), "U8"
        else:
            info[name] = {"encoding": "raw"}
        stored[name] = arr
        entries.append((name, code, arr.shape, arr.tobytes()))

    meta: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                            "spec": spec_obj, "tensors": info,
                            "payload_sha256": payload_digest(entries)}
    if hmac_key is not None:
        meta["signature"] = _sign(meta, bytes(hmac_key))

    from safetensors.numpy import save

    return save(stored, metadata={METADATA_KEY: canonical_json(meta)})


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise FormatError(f"header: duplicate key {key!r} (a tensor name or field appears "
                              "twice)")
        seen[key] = value
    return seen


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_dtype(where: str, code: Any) -> np.dtype:
    if isinstance(code, str) and code.upper() in _OBJECT_DTYPES:
        raise FormatError(f"{where}: object dtype {code!r} is refused (never unpickled)")
    if not isinstance(code, str) or code not in DTYPES:
        raise FormatError(f"{where}: unknown dtype {code!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[code]


def _check_shape(where: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(_is_int(s) for s in shape):
        raise FormatError(f"{where}: shape must be a list of ints, got {shape!r}")
    if any(s < 0 for s in shape):
        raise FormatError(f"{where}: negative dimension in shape {shape}")
    return tuple(shape)


def _check_elements(where: str, shape: tuple[int, ...]) -> None:
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise FormatError(f"{where}: shape {list(shape)} holds {n} elements, more than the cap "
                          f"MAX_ELEMENTS={MAX_ELEMENTS} of one tensor (corrupt or crafted file)")


def _parse_header(data: bytes, max_header_bytes: int) -> tuple[dict, dict, int]:
    """(tensor entries, metadata, payload start), everything checked; no tensor is built."""
    if len(data) < 8:
        raise FormatError(f"truncated file: {len(data)} bytes, the header length alone needs 8")
    (n,) = struct.unpack("<Q", data[:8])
    if n > max_header_bytes:
        raise FormatError(f"header length {n} exceeds the cap of {max_header_bytes} bytes")
    if n > len(data) - 8:
        raise FormatError(f"header length {n} is larger than the {len(data) - 8} bytes left in "
                          "the file (truncated?)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError(f"header must be a JSON object, got {type(header).__name__}")

    raw_meta = header.pop("__metadata__", None)
    if raw_meta is None:
        raise FormatError("header: __metadata__ is missing (not a spark-compress model file)")
    if not isinstance(raw_meta, dict) or set(raw_meta) != {METADATA_KEY} or \
            not isinstance(raw_meta[METADATA_KEY], str):
        raise FormatError(f"__metadata__ must hold exactly one string key {METADATA_KEY!r}, got "
                          f"keys {sorted(raw_meta) if isinstance(raw_meta, dict) else raw_meta!r}")
    try:
        meta = json.loads(raw_meta[METADATA_KEY], object_pairs_hook=_reject_duplicates)
    except ValueError as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"__metadata__[{METADATA_KEY!r}] is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise FormatError(f"__metadata__[{METADATA_KEY!r}] must be a JSON object")
    if meta.get("format") != FORMAT:
        raise FormatError(f"metadata field 'format' is {meta.get('format')!r}, expected "
                          f"{FORMAT!r}")
    version = meta.get("format_version")
    if not _is_int(version) or version not in SUPPORTED_VERSIONS:
        raise FormatError(f"metadata field 'format_version' {version!r} is not supported; this "
                          f"reader supports {sorted(SUPPORTED_VERSIONS)} (upgrade spark-compress)")

    buffer_len = len(data) - 8 - n
    entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
        where = f"tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != _TENSOR_KEYS:
            raise FormatError(f"{where}: entry must have exactly the keys {sorted(_TENSOR_KEYS)}")
        dtype = _check_dtype(where, entry["dtype"])
        shape = _check_shape(where, entry["shape"])
        offsets = entry["data_offsets"]
        if not isinstance(offsets, list) or len(offsets) != 2 or \
                not all(_is_int(o) for o in offsets) or not 0 <= offsets[0] <= offsets[1]:
            raise FormatError(f"{where}: data_offsets must be [begin, end] with "
                              f"0 <= begin <= end, got {offsets!r}")
        begin, end = offsets
        if end > buffer_len:
            raise FormatError(f"{where}: data_offsets {offsets} point past the end of the "
                              f"{buffer_len}-byte data buffer")
        _check_elements(where, shape)
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise FormatError(f"{where}: byte count {end - begin} != shape {list(shape)} x "
                              f"{entry['dtype']} ({expected} bytes)")
        entries[name] = (dtype, shape, begin, end)

    position, previous = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin < position:
            raise FormatError(f"tensor {name!r}: data_offsets overlap tensor {previous!r} "
                              f"(begins at {begin}, previous ends at {position})")
        if begin > position:
            raise FormatError(f"tensor {name!r}: gap of {begin - position} bytes before its "
                              f"data_offsets (begins at {begin}, expected {position})")
        position, previous = end, name
    if position != buffer_len:
        raise FormatError(f"data buffer has {buffer_len - position} bytes not covered by any "
                          "tensor")
    return entries, meta, 8 + n


def _check_tensor_info(meta: dict, entries: dict, max_decompressed_bytes: int) -> dict:
    info = meta.get("tensors")
    if not isinstance(info, dict):
        raise FormatError("metadata field 'tensors' must be an object")
    if set(info) != set(entries):
        raise FormatError(f"metadata field 'tensors' lists {sorted(info)} but the file holds "
                          f"{sorted(entries)}")
    total = 0
    checked = {}
    for name in sorted(info):
        where = f"tensor {name!r}"
        item = info[name]
        encoding = item.get("encoding") if isinstance(item, dict) else None
        if encoding == "raw" and set(item) == {"encoding"}:
            checked[name] = None
            continue
        if encoding != "zstd" or set(item) != {"encoding", "dtype", "shape"}:
            raise FormatError(f"{where}: metadata entry {item!r} is not a known encoding "
                              f"{_ENCODINGS}")
        dtype = _check_dtype(f"{where} (recorded)", item["dtype"])
        shape = _check_shape(f"{where} (recorded)", item["shape"])
        stored_dtype, stored_shape = entries[name][:2]
        if stored_dtype != DTYPES["U8"] or len(stored_shape) != 1:
            raise FormatError(f"{where}: a zstd tensor must be stored as 1-d U8")
        _check_elements(f"{where} (recorded)", shape)
        size = math.prod(shape) * dtype.itemsize
        if size > ZSTD_MAX_RATIO * stored_shape[0]:
            raise FormatError(f"{where}: recorded shape {list(shape)} x {item['dtype']} is "
                              f"{size} bytes, more than a {stored_shape[0]}-byte zstd frame can "
                              f"hold (at most {ZSTD_MAX_RATIO}x; decompression bomb refused)")
        total += size
        if total > max_decompressed_bytes:
            raise FormatError(f"{where}: decompressed size would exceed max_decompressed_bytes="
                              f"{max_decompressed_bytes} (decompression bomb?)")
        checked[name] = (dtype, shape, size)
    return checked


def _decompress(name: str, blob: bytes, size: int) -> bytes:
    zstd = _zstd()
    where = f"tensor {name!r}"
    try:
        params = zstd.get_frame_parameters(blob)
    except zstd.ZstdError as exc:
        raise FormatError(f"{where}: compressed stream is corrupt: {exc}") from None
    if params.content_size not in (size, zstd.CONTENTSIZE_UNKNOWN):
        raise FormatError(f"{where}: compressed frame declares {params.content_size} bytes but "
                          f"the recorded shape x dtype is {size} (decompression bomb?)")
    out = bytearray()
    try:
        # Bounded reads: never hold more than the recorded size plus one chunk.
        reader = zstd.ZstdDecompressor().stream_reader(io.BytesIO(blob),
                                                       read_across_frames=False)
        while True:
            chunk = reader.read(min(_CHUNK, size + 1 - len(out)))
            if not chunk:
                break
            out += chunk
            if len(out) > size:
                raise FormatError(f"{where}: compressed stream expands past the recorded "
                                  f"{size} bytes (decompression bomb refused)")
    except zstd.ZstdError as exc:
        raise FormatError(f"{where}: compressed stream is corrupt: {exc}") from None
    if len(out) != size:
        raise FormatError(f"{where}: compressed stream holds {len(out)} bytes, the recorded "
                          f"shape x dtype needs {size}")
    return bytes(out)


def read_container(data: bytes, *, hmac_key: bytes | None = None,
                   require_signature: bool = False, max_header_bytes: int = MAX_HEADER_BYTES,
                   max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
                   check: Callable[[Any, dict[str, tuple[str, tuple[int, ...]]]], None]
                   | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors (writable copies, original dtype and shape) and the spec in ``data``.

    Order of checks: header structure, offsets and size bounds (module docstring), metadata
    format/version, ``payload_sha256``, signature, then ``check``, then decompression capped at
    the recorded size. ``check(spec, declared)``, if given, sees the spec and every tensor's
    declared ``(dtype code, shape)`` (the recorded original for a zstd tensor) before any tensor
    is copied or decompressed, so a caller can refuse shapes its own format does not allow
    before they cost memory; it raises to refuse. With ``hmac_key`` the file must be signed with
    that key; without it a signature is not checked, and an unsigned file is refused only if
    ``require_signature``. ``require_signature`` without ``hmac_key`` is a ``ConfigError``; every
    problem with the bytes is a ``FormatError``.
    """
    if require_signature and hmac_key is None:
        raise ConfigError("require_signature=True needs hmac_key to verify the signature")
    data = bytes(data)
    entries, meta, start = _parse_header(data, max_header_bytes)
    info = _check_tensor_info(meta, entries, max_decompressed_bytes)

    stored = {}
    for name, (dtype, shape, begin, end) in entries.items():
        stored[name] = (_CODES[dtype], shape, data[start + begin:start + end])
    digest = payload_digest((name, code, shape, raw) for name, (code, shape, raw)
                            in stored.items())
    if not isinstance(meta.get("payload_sha256"), str) or \
            not hmac.compare_digest(meta["payload_sha256"].encode(), digest.encode()):
        raise FormatError(f"payload checksum mismatch: metadata records "
                          f"{meta.get('payload_sha256')!r}, tensor data hashes to {digest!r} "
                          "(file corrupted or tampered with)")

    signature = meta.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise FormatError("metadata field 'signature' must be a hex string")
    if signature is None and (require_signature or hmac_key is not None):
        raise FormatError("signature missing: the file is unsigned but a signed file is "
                          "required")
    if hmac_key is not None and not hmac.compare_digest(signature.encode(),
                                                       _sign(meta, bytes(hmac_key)).encode()):
        raise FormatError("signature mismatch: metadata or tensors were tampered with, or the "
                          "hmac_key is wrong")
    if check is not None:
        declared = {name: (_CODES[dtype], shape) if info[name] is None
                    else (_CODES[info[name][0]], info[name][1])
                    for name, (dtype, shape, _, _) in entries.items()}
        check(meta["spec"], declared)

    tensors: dict[str, np.ndarray] = {}
    for name in sorted(entries):
        code, shape, raw = stored[name]
        if info[name] is None:
            arr = np.frombuffer(raw, dtype=DTYPES[code]).reshape(shape).copy()
        else:
            dtype, shape, size = info[name]
            arr = np.frombuffer(_decompress(name, raw, size), dtype=dtype).reshape(shape).copy()
        tensors[name] = arr
    return tensors, meta["spec"]
