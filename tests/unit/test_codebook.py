"""spark_compress.io.codebook: round trip, deterministic bytes, one corrupted file per reason."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Callable

import numpy as np
import pytest

from spark_compress.core.quantize import (
    ConstantColumnWarning,
    DictionaryEncoder,
    choose_affine,
    choose_dictionary,
    choose_quantile,
    quantile_probabilities,
)
from spark_compress.io import codebook as codebook_module
from spark_compress.io.codebook import (
    Codebook,
    ColumnCodebook,
    code_type_for,
    parse_codebook,
    read_codebook,
    write_codebook,
)
from spark_compress.errors import FormatError

pytestmark = pytest.mark.unit


def _full_codebook() -> Codebook:
    with pytest.warns(ConstantColumnWarning):
        empty = choose_affine(None, None, bits=8)
    quantile = choose_quantile(np.quantile(np.arange(17.0), quantile_probabilities(2)), bits=2)
    fit = {"count": 10, "null_count": 1, "nan_count": 0, "posinf_count": 0,
           "neginf_count": 0, "min": -1.0, "max": 3.0}
    return Codebook(
        columns=(
            ColumnCodebook("V1", "double", choose_affine(-1.0, 3.0, bits=8), fit=fit),
            ColumnCodebook("Amount", "double",
                           choose_affine(-2.5, 7.25, bits=4, method="percentile"), clip=0.001),
            ColumnCodebook("V2", "float", choose_affine(-2.0, 1.0, bits=16, method="symmetric")),
            ColumnCodebook("V3", "double", quantile),
            ColumnCodebook("carrier", "string",
                           choose_dictionary(["JFK", "LAX", "SFO"], [5, 9, 2],
                                             max_categories=1000)),
            ColumnCodebook("zone", "bigint",
                           choose_dictionary([3, 1, 2], [1, 1, 1], max_categories=2)),
            ColumnCodebook("V4", "double", empty),
        ),
        passthrough=("id", "Class"),
    )


def _tiny_codebook() -> Codebook:
    fit = {"count": 4, "null_count": 0, "min": -1.0, "max": 3.0}
    return Codebook(
        columns=(ColumnCodebook("x", "double", choose_affine(-1.0, 3.0, bits=2), fit=fit),),
        passthrough=("id",),
    )


def _resign(doc: dict) -> str:
    """Re-compute the checksum after editing, so parsing reaches the check under test.
    The canonical form is spelled out here on purpose: it pins the checksum definition."""
    doc = {k: v for k, v in doc.items() if k != "sha256"}
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    doc["sha256"] = hashlib.sha256(canon.encode("utf-8")).hexdigest()
    return json.dumps(doc, indent=2, sort_keys=True)


def _tampered(edit: Callable[[dict], None]) -> str:
    doc = json.loads(_full_codebook().to_json())
    edit(doc)
    return _resign(doc)


def _column(doc: dict, name: str) -> dict:
    (col,) = [c for c in doc["columns"] if c["name"] == name]
    return col


# --------------------------------------------------------------------------- round trip


def test_round_trip_every_method():
    cb = _full_codebook()
    back = parse_codebook(cb.to_json())
    assert back == cb
    assert [c.method for c in back.columns] == [
        "minmax", "percentile", "symmetric", "quantile", "dictionary", "dictionary", "minmax"]
    assert back.column("carrier").encoder.vocabulary == ("LAX", "JFK", "SFO")
    assert back.column("zone").encoder.vocabulary == (1, 2)
    assert all(type(v) is int for v in back.column("zone").encoder.vocabulary)
    assert back.column("Amount").clip == 0.001
    assert back.column("V4").encoder.lo is None and back.column("V4").encoder.hi is None
    assert back.passthrough == ("id", "Class")


def test_round_trip_preserves_floats_bit_for_bit():
    cb = Codebook((ColumnCodebook("x", "double", choose_affine(0.1, 0.7, bits=16)),))
    enc = parse_codebook(cb.to_json()).column("x").encoder
    assert enc.scale == (0.7 - 0.1) / 65535
    assert enc.zero_point == cb.columns[0].encoder.zero_point


def test_column_lookup_unknown_name():
    with pytest.raises(KeyError, match="nope"):
        _full_codebook().column("nope")


def test_to_json_is_deterministic_and_sorted():
    cb = _full_codebook()
    text = cb.to_json()
    assert text == _full_codebook().to_json()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_embedded_checksum_covers_everything_else():
    doc = json.loads(_full_codebook().to_json())
    rest = {k: v for k, v in doc.items() if k != "sha256"}
    canon = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    assert doc["sha256"] == hashlib.sha256(canon.encode("utf-8")).hexdigest()


def test_to_json_layout():
    doc = json.loads(_full_codebook().to_json())
    assert doc["format"] == "spark-compress-codebook"
    assert doc["format_version"] == 1
    assert doc["codes"] == {"nan": -1, "posinf": -2, "neginf": -3, "oov": -4}
    v1 = _column(doc, "V1")
    assert v1 == {"name": "V1", "method": "minmax", "bits": 8, "source_type": "double",
                  "code_type": "smallint", "scale": 4.0 / 255, "zero_point": 1.0 / (4.0 / 255),
                  "lo": -1.0, "hi": 3.0,
                  "fit": {"count": 10, "null_count": 1, "nan_count": 0, "posinf_count": 0,
                          "neginf_count": 0, "min": -1.0, "max": 3.0}}
    assert _column(doc, "Amount")["clip"] == 0.001
    assert "clip" not in v1
    v3 = _column(doc, "V3")
    assert (v3["edges"], v3["values"]) == ([4.0, 8.0, 12.0], [2.0, 6.0, 10.0, 14.0])
    carrier = _column(doc, "carrier")
    assert carrier["vocabulary"] == ["LAX", "JFK", "SFO"]
    assert carrier["max_categories"] == 1000


def test_golden_bytes():
    # A different digest means the bytes of the file format changed: if that is intended, bump
    # codebook FORMAT_VERSION (and keep reading version 1) before updating these constants.
    text = _tiny_codebook().to_json()
    assert json.loads(text)["sha256"] == (
        "158b684a5d9699f12331e4880f1aac20f3a95d9ecee3eab0c719ccc6fc377792")
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == (
        "c4710ac0feb9a94775cc89c33613bc0da62fac08bdc224ff499f79191c2606e0")


# --------------------------------------------------------------------------- code types


@pytest.mark.parametrize("bits, code_type", [(2, "tinyint"), (4, "tinyint"), (8, "smallint"),
                                             (16, "int")])
def test_code_type_for_affine_and_quantile(bits, code_type):
    assert code_type_for(choose_affine(0.0, 1.0, bits=bits)) == code_type
    n = 2 * (1 << bits) + 1
    assert code_type_for(choose_quantile(np.linspace(0.0, 1.0, n), bits=bits)) == code_type


@pytest.mark.parametrize("size, code_type", [
    (0, "tinyint"), (1, "tinyint"), (124, "tinyint"), (128, "tinyint"),  # codes -4..127
    (129, "smallint"), (200, "smallint"), (32768, "smallint"),
    (32769, "int"),
])
def test_code_type_for_dictionary(size, code_type):
    enc = DictionaryEncoder(tuple(range(size)), max(size, 1))
    assert code_type_for(enc) == code_type
    assert ColumnCodebook("c", "bigint", enc).code_type == code_type


@pytest.mark.parametrize("size, bits", [(0, 1), (1, 1), (2, 2), (3, 2), (124, 7), (128, 8)])
def test_dictionary_bits(size, bits):
    assert ColumnCodebook("c", "bigint", DictionaryEncoder(tuple(range(size)), 200)).bits == bits


# --------------------------------------------------------------------------- files


def test_write_then_read(tmp_path):
    cb = _full_codebook()
    path = tmp_path / "codebook.json"
    write_codebook(cb, path)
    assert path.read_bytes() == cb.to_json().encode("utf-8")
    assert read_codebook(path) == cb
    assert read_codebook(str(path)) == cb


def test_read_missing_file(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(FormatError, match=rf"cannot read codebook {re.escape(str(path))}"):
        read_codebook(path)


def test_read_directory(tmp_path):
    with pytest.raises(FormatError, match="cannot read codebook"):
        read_codebook(tmp_path)


def test_read_not_utf8(tmp_path):
    path = tmp_path / "codebook.json"
    path.write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(FormatError, match="cannot read codebook"):
        read_codebook(path)


def test_read_rejects_oversized_file(tmp_path, monkeypatch):
    path = tmp_path / "codebook.json"
    write_codebook(_tiny_codebook(), path)
    monkeypatch.setattr(codebook_module, "MAX_BYTES", 100)
    with pytest.raises(FormatError, match=r"codebook is \d+ bytes, more than the 100 allowed"):
        read_codebook(path)


def test_read_errors_name_the_file(tmp_path):
    path = tmp_path / "codebook.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(FormatError, match=rf"^{re.escape(str(path))}: not valid codebook JSON"):
        read_codebook(path)


# --------------------------------------------------------------------------- corrupted files


def test_not_json():
    with pytest.raises(FormatError, match=r"<codebook>: not valid codebook JSON .*corrupt or "
                                          r"truncated"):
        parse_codebook("this is not json")


def test_truncated():
    text = _full_codebook().to_json()
    with pytest.raises(FormatError, match="not valid codebook JSON"):
        parse_codebook(text[: len(text) // 2])


def test_empty_file():
    with pytest.raises(FormatError, match="not valid codebook JSON"):
        parse_codebook("")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literal(literal):
    text = _full_codebook().to_json().replace('"hi": 3.0', f'"hi": {literal}', 1)
    assert literal in text
    with pytest.raises(FormatError, match=rf"not valid codebook JSON \(non-finite number "
                                          rf"{literal}\)"):
        parse_codebook(text)


def test_overflowing_number():
    # 1e999 is valid JSON syntax but parses to float('inf') without a NaN/Infinity literal.
    text = _full_codebook().to_json().replace('"hi": 3.0', '"hi": 1e999', 1)
    assert "1e999" in text
    with pytest.raises(FormatError):
        parse_codebook(text)


def test_deeply_nested_json():
    with pytest.raises(FormatError):
        parse_codebook("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("text", ["[]", '"codebook"', "1", "null"])
def test_not_an_object(text):
    with pytest.raises(FormatError, match="not a spark-compress codebook"):
        parse_codebook(text)


def test_wrong_format_name():
    text = _full_codebook().to_json().replace('"spark-compress-codebook"', '"spark-compress-model"')
    with pytest.raises(FormatError, match=r"not a spark-compress codebook \(format is not "
                                          r"'spark-compress-codebook'\)"):
        parse_codebook(text)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unsupported_format_version(version):
    text = _tampered(lambda d: d.update(format_version=version))
    with pytest.raises(FormatError, match=rf"format_version {re.escape(repr(version))} is not "
                                          rf"supported .*reads version 1"):
        parse_codebook(text)


def test_checksum_mismatch_after_editing_a_number():
    text = _full_codebook().to_json()
    edited = text.replace('"hi": 7.25', '"hi": 7.5', 1)
    assert edited != text
    with pytest.raises(FormatError, match="checksum mismatch: the file was modified"):
        parse_codebook(edited)


def test_checksum_missing():
    doc = json.loads(_full_codebook().to_json())
    del doc["sha256"]
    with pytest.raises(FormatError, match="checksum mismatch"):
        parse_codebook(json.dumps(doc))


def test_checksum_not_a_string():
    doc = json.loads(_full_codebook().to_json())
    doc["sha256"] = 12345
    with pytest.raises(FormatError, match="checksum mismatch"):
        parse_codebook(json.dumps(doc))


def test_special_codes_changed():
    text = _tampered(lambda d: d["codes"].update(nan=-9))
    with pytest.raises(FormatError, match="special codes .* differ from"):
        parse_codebook(text)


@pytest.mark.parametrize("passthrough", ["id", [1], None])
def test_passthrough_not_a_list_of_names(passthrough):
    text = _tampered(lambda d: d.update(passthrough=passthrough))
    with pytest.raises(FormatError, match="'passthrough' must be a list of column names"):
        parse_codebook(text)


def test_columns_not_a_list():
    text = _tampered(lambda d: d.update(columns={"V1": {}}))
    with pytest.raises(FormatError, match="'columns' must be a list"):
        parse_codebook(text)


def test_column_without_name():
    text = _tampered(lambda d: d["columns"][1].pop("name"))
    with pytest.raises(FormatError, match=r"columns\[1\]: each column needs a 'name'"):
        parse_codebook(text)


def test_column_without_source_type():
    text = _tampered(lambda d: _column(d, "V1").pop("source_type"))
    with pytest.raises(FormatError, match="column 'V1': 'source_type' missing"):
        parse_codebook(text)


def test_fit_not_an_object():
    text = _tampered(lambda d: _column(d, "V1").update(fit=[1, 2]))
    with pytest.raises(FormatError, match="column 'V1': 'fit' must be an object"):
        parse_codebook(text)


@pytest.mark.parametrize("bits", [3, True, "8", None])
def test_bad_bits(bits):
    text = _tampered(lambda d: _column(d, "V1").update(bits=bits))
    with pytest.raises(FormatError, match=rf"column 'V1': bits {re.escape(repr(bits))} is not "
                                          rf"one of \(2, 4, 8, 16\)"):
        parse_codebook(text)


@pytest.mark.parametrize("name", ["V1", "V3"])
def test_float_bits(name):
    # 8.0 == 8, so a float width must be rejected explicitly, as a FormatError naming the column.
    text = _tampered(lambda d: _column(d, name).update(bits=float(_column(d, name)["bits"])))
    with pytest.raises(FormatError, match=rf"column '{name}': bits"):
        parse_codebook(text)


def test_wrong_edges_length():
    text = _tampered(lambda d: _column(d, "V3")["edges"].pop())
    with pytest.raises(FormatError, match=r"column 'V3': 'edges' must be a list of 3 numbers"):
        parse_codebook(text)


def test_wrong_values_length():
    text = _tampered(lambda d: _column(d, "V3")["values"].append(20.0))
    with pytest.raises(FormatError, match=r"column 'V3': 'values' must be a list of 4 numbers"):
        parse_codebook(text)


def test_decreasing_edges():
    text = _tampered(lambda d: _column(d, "V3").update(edges=[4.0, 12.0, 8.0]))
    with pytest.raises(FormatError, match="column 'V3': quantile edges must be non-decreasing"):
        parse_codebook(text)


def test_edge_not_a_number():
    text = _tampered(lambda d: _column(d, "V3").update(edges=[4.0, "8", 12.0]))
    with pytest.raises(FormatError, match="column 'V3': 'edges' must be a finite number, got '8'"):
        parse_codebook(text)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_scale_not_positive(scale):
    text = _tampered(lambda d: _column(d, "V1").update(scale=scale))
    with pytest.raises(FormatError, match=rf"column 'V1': scale must be > 0, got {scale}"):
        parse_codebook(text)


@pytest.mark.parametrize("key", ["scale", "zero_point"])
def test_affine_parameter_missing(key):
    text = _tampered(lambda d: _column(d, "V1").pop(key))
    with pytest.raises(FormatError, match=rf"column 'V1': '{key}' must be a finite number, "
                                          rf"got None"):
        parse_codebook(text)


def test_scale_is_a_bool():
    text = _tampered(lambda d: _column(d, "V1").update(scale=True))
    with pytest.raises(FormatError, match="'scale' must be a finite number, got True"):
        parse_codebook(text)


def test_percentile_without_clip():
    text = _tampered(lambda d: _column(d, "Amount").pop("clip"))
    with pytest.raises(FormatError, match="column 'Amount': 'clip' must be a finite number"):
        parse_codebook(text)


@pytest.mark.parametrize("method", ["foo", None])
def test_unknown_method(method):
    text = _tampered(lambda d: _column(d, "V1").update(method=method))
    with pytest.raises(FormatError, match=rf"column 'V1': unknown method {re.escape(repr(method))}"):
        parse_codebook(text)


def test_duplicate_column_names():
    text = _tampered(lambda d: _column(d, "V2").update(name="V1"))
    with pytest.raises(FormatError, match=r"column name\(s\) 'V1' appear twice"):
        parse_codebook(text)


def test_column_also_in_passthrough():
    text = _tampered(lambda d: d["passthrough"].append("V1"))
    with pytest.raises(FormatError, match=r"column name\(s\) 'V1' appear twice"):
        parse_codebook(text)


@pytest.mark.parametrize("name, code_type, expected", [
    ("V1", "tinyint", "smallint"),  # 8 bits: codes up to 255 do not fit
    ("V1", "int", "smallint"),
    ("V3", None, "tinyint"),
    ("carrier", "bigint", "tinyint"),
])
def test_wrong_code_type(name, code_type, expected):
    text = _tampered(lambda d: _column(d, name).update(code_type=code_type))
    with pytest.raises(FormatError, match=rf"column '{name}': code_type {re.escape(repr(code_type))}"
                                          rf" .*\(expected '{expected}'\)"):
        parse_codebook(text)


@pytest.mark.parametrize("vocabulary", [
    ["LAX", "JFK", "LAX"],  # duplicate
    ["LAX", 1.5],  # float
    ["LAX", True],  # bool
    ["LAX", None],
    "LAX",
])
def test_bad_vocabulary(vocabulary):
    text = _tampered(lambda d: _column(d, "carrier").update(vocabulary=vocabulary))
    with pytest.raises(FormatError, match="column 'carrier': 'vocabulary' must be a list of "
                                          "distinct strings or integers"):
        parse_codebook(text)


@pytest.mark.parametrize("cap", [2, 0, True, "1000", None])
def test_bad_max_categories(cap):
    text = _tampered(lambda d: _column(d, "carrier").update(max_categories=cap))
    with pytest.raises(FormatError, match="column 'carrier': 'max_categories' must be an int >= "
                                          "the vocabulary size"):
        parse_codebook(text)


def test_error_names_the_source():
    with pytest.raises(FormatError, match=r"^models/cb\.json: not a spark-compress codebook"):
        parse_codebook("{}", source="models/cb.json")
