"""spark_compress.io.config: the feature job's TOML config and its error messages."""

from __future__ import annotations

import re

import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from spark_compress.errors import ConfigError
from spark_compress.io.config import (
    ColumnSettings,
    Defaults,
    FeatureConfig,
    load_feature_config,
    parse_feature_config,
)

pytestmark = pytest.mark.unit

SOURCE = "conf/features.toml"

EXAMPLE = """
[job]
passthrough = ["id", "Class"]

[defaults]
method = "minmax"
bits = 8

[columns.Amount]
method = "percentile"
clip = 0.001

[columns.carrier]
method = "dictionary"
max_categories = 1000
"""


def _parse(text: str) -> FeatureConfig:
    return parse_feature_config(tomllib.loads(text), source=SOURCE)


def _raises(text: str, pattern: str) -> None:
    """Parse ``text`` and expect a ConfigError whose message starts with the file name."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(SOURCE)}: {pattern}"):
        _parse(text)


# --------------------------------------------------------------------------- valid configs


def test_example_from_the_issue():
    cfg = _parse(EXAMPLE)
    assert cfg.source == SOURCE
    assert cfg.passthrough == ("id", "Class")
    assert cfg.drop == ()
    assert cfg.defaults == Defaults(method="minmax", bits=8, clip=0.001, max_categories=1000,
                                    strings="error")
    assert dict(cfg.columns) == {
        "Amount": ColumnSettings(method="percentile", clip=0.001),
        "carrier": ColumnSettings(method="dictionary", max_categories=1000),
    }
    assert cfg.relative_error is None


def test_example_settings_for():
    cfg = _parse(EXAMPLE)
    assert cfg.settings_for("Amount") == ColumnSettings("percentile", 8, 0.001, 1000)
    assert cfg.settings_for("carrier") == ColumnSettings("dictionary", 8, 0.001, 1000)
    assert cfg.settings_for("V1") == ColumnSettings("minmax", 8, 0.001, 1000)


def test_settings_for_overrides_each_field():
    cfg = _parse("""
        [defaults]
        method = "quantile"
        bits = 4
        clip = 0.01
        max_categories = 50
        strings = "dictionary"

        [columns.a]
        bits = 16

        [columns.b]
        method = "symmetric"
        clip = 0.05
        max_categories = 7
    """)
    assert cfg.defaults.strings == "dictionary"
    assert cfg.settings_for("a") == ColumnSettings("quantile", 16, 0.01, 50)
    assert cfg.settings_for("b") == ColumnSettings("symmetric", 4, 0.05, 7)
    assert cfg.settings_for("other") == ColumnSettings("quantile", 4, 0.01, 50)


def test_empty_config_gives_defaults():
    cfg = parse_feature_config({})
    assert cfg == FeatureConfig()
    assert cfg.settings_for("x") == ColumnSettings("minmax", 8, 0.001, 1000)


def test_drop_and_fit():
    cfg = _parse("""
        [job]
        passthrough = ["id"]
        drop = ["junk", "tmp"]

        [fit]
        relative_error = 0.0001
    """)
    assert cfg.drop == ("junk", "tmp")
    assert cfg.relative_error == 0.0001


def test_load_example_from_file(tmp_path):
    path = tmp_path / "features.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    cfg = load_feature_config(path)
    assert cfg.source == str(path)
    assert cfg.settings_for("Amount") == ColumnSettings("percentile", 8, 0.001, 1000)
    assert load_feature_config(str(path)) == cfg


# --------------------------------------------------------------------------- errors


def test_unknown_section():
    _raises("[jobs]\npassthrough = []\n",
            r"unknown section or key 'jobs'; allowed: job, defaults, columns, fit, gate\.")


def test_unknown_top_level_key():
    _raises('method = "minmax"\n', r"unknown section or key 'method'")


def test_unknown_key_in_defaults():
    _raises("[defaults]\nbit = 8\n",
            r"unknown key 'bit' in \[defaults\]; allowed keys: method, bits, clip, "
            r"max_categories, strings\.")


def test_unknown_key_in_column():
    _raises('[columns.Amount]\nmethod = "percentile"\nclipp = 0.01\n',
            r"unknown key 'clipp' in \[columns\.Amount\]; allowed keys: method, bits, clip, "
            r"max_categories\.")


def test_strings_is_only_a_default():
    _raises('[columns.a]\nstrings = "dictionary"\n', r"unknown key 'strings' in \[columns\.a\]")


def test_unknown_key_in_job():
    _raises('[job]\npassthru = ["id"]\n', r"unknown key 'passthru' in \[job\]")


def test_unknown_key_in_fit():
    _raises("[fit]\naccuracy = 10\n", r"unknown key 'accuracy' in \[fit\]")


@pytest.mark.parametrize("value, shown", [("3", "3"), ("true", "True"), ('"8"', "'8'"),
                                          ("0", "0"), ("32", "32")])
def test_bad_bits_in_defaults(value, shown):
    _raises(f"[defaults]\nbits = {value}\n",
            rf"\[defaults\] bits: bits must be one of 2, 4, 8, 16\. Got {shown}\.")


def test_bad_bits_in_column():
    _raises("[columns.V1]\nbits = 3\n", r"\[columns\.V1\] bits: .*Got 3\.")


@pytest.mark.parametrize("table", ["defaults", "columns.V1"])
def test_unknown_method(table):
    _raises(f'[{table}]\nmethod = "foo"\n',
            rf"\[{re.escape(table)}\] method: method must be one of minmax, percentile, "
            rf"symmetric, quantile, dictionary\. Got 'foo'\.")


@pytest.mark.parametrize("value, shown", [("0.6", "0.6"), ("0", "0"), ("0.5", "0.5"),
                                          ("-0.1", "-0.1"), ("nan", "nan"), ("true", "True"),
                                          ('"0.01"', "'0.01'")])
def test_bad_clip(value, shown):
    _raises(f"[columns.Amount]\nclip = {value}\n",
            rf"\[columns\.Amount\] clip: clip is the fraction clipped at each tail and must be "
            rf"in \(0, 0\.5\), for example 0\.001\. Got {shown}\.")


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-3", "-3"), ("1.5", "1.5"),
                                          ("true", "True"), ("2147483641", "2147483641")])
def test_bad_max_categories(value, shown):
    _raises(f"[columns.carrier]\nmax_categories = {value}\n",
            rf"\[columns\.carrier\] max_categories: max_categories must be an integer >= 1\. "
            rf"Got {shown}\.")


def test_bad_strings_policy():
    _raises('[defaults]\nstrings = "ignore"\n',
            r"\[defaults\] strings: strings must be one of error, dictionary, passthrough\. "
            r"Got 'ignore'\.")


@pytest.mark.parametrize("value", ["0", "0.1", "-0.001"])
def test_bad_relative_error(value):
    _raises(f"[fit]\nrelative_error = {value}\n",
            rf"\[fit\] relative_error: relative_error must be in \(0, 0\.1\)")


@pytest.mark.parametrize("key", ["passthrough", "drop"])
@pytest.mark.parametrize("value", ['"id"', "[1, 2]", '[""]', "{ a = 1 }"])
def test_names_not_a_list_of_strings(key, value):
    _raises(f"[job]\n{key} = {value}\n",
            rf"\[job\] {key}: must be a list of column names\. Got ")


def test_duplicate_in_passthrough():
    _raises('[job]\npassthrough = ["id", "Class", "id"]\n',
            r"\[job\] passthrough: column\(s\) listed twice: id\.")


def test_column_in_passthrough_and_columns():
    _raises('[job]\npassthrough = ["Amount"]\n[columns.Amount]\nbits = 4\n',
            r"column 'Amount' is in \[job\] passthrough and also has a \[columns\.Amount\] "
            r"table; keep one\.")


def test_column_in_drop_and_columns():
    _raises('[job]\ndrop = ["Amount"]\n[columns.Amount]\nbits = 4\n',
            r"column 'Amount' is in \[job\] drop and also has a \[columns\.Amount\] table")


def test_column_in_passthrough_and_drop():
    _raises('[job]\npassthrough = ["id", "x"]\ndrop = ["x", "id"]\n',
            r"column\(s\) id, x in both \[job\] passthrough and drop; keep one\.")


def test_column_not_a_table():
    _raises("[columns]\nAmount = 8\n", r"\[columns\.Amount\] must be a table")


@pytest.mark.parametrize("section", ["job", "defaults", "columns", "fit"])
def test_section_not_a_table(section):
    _raises(f"{section} = 1\n", rf"\[{section}\] must be a table\.")


def test_invalid_toml_file(tmp_path):
    path = tmp_path / "features.toml"
    path.write_text("[defaults]\nbits = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid TOML: "):
        load_feature_config(path)


def test_not_utf8_file(tmp_path):
    path = tmp_path / "features.toml"
    path.write_bytes(b'[defaults]\nmethod = "\xff"\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid TOML: "):
        load_feature_config(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^cannot read config file {re.escape(str(path))}: "
                                          rf"No such file or directory"):
        load_feature_config(path)


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "features.toml"
    path.write_text("[defaults]\nbits = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: \[defaults\] bits: "):
        load_feature_config(path)
