"""Every TOML table a config error suggests is valid TOML that addresses the named column or
layer, also for names with spaces, dots, quotes or backslashes (``[columns."mean radius"]``, not
the invalid ``[columns.mean radius]``)."""

from __future__ import annotations

import re
import tomllib

import pytest

from spark_compress.errors import ConfigError
from spark_compress.io.config import parse_feature_config, toml_key, toml_table
from spark_compress.io.model_config import parse_model_config

pytestmark = pytest.mark.unit

# A table header in a message: brackets around bare or quoted keys joined by dots.
HEADER = re.compile(r'\[(?:[A-Za-z0-9_.-]|"(?:[^"\\]|\\.)*")+\]')

NAMES = ["Amount", "mean radius", "a.b", 'say "hi"', "back\\slash", "tab\there", "größe", "-1",
         "0"]


def headers(message: str) -> list[str]:
    return HEADER.findall(message)


@pytest.mark.parametrize("name", NAMES)
def test_toml_table_parses_back_to_the_same_key(name):
    doc = tomllib.loads(f'{toml_table("columns", name)}\nmethod = "minmax"\n')
    assert doc == {"columns": {name: {"method": "minmax"}}}


def test_toml_key_is_bare_only_when_toml_allows_it():
    assert [toml_key(k) for k in ("Amount", "V_1", "capital-gain", "-1")] == [
        "Amount", "V_1", "capital-gain", "-1"]
    assert toml_key("mean radius") == '"mean radius"'
    assert toml_key("a.b") == '"a.b"'
    assert toml_key('say "hi"') == '"say \\"hi\\""'
    assert toml_key("") == '""'


@pytest.mark.parametrize("name", NAMES)
def test_column_not_a_table_suggests_a_header_that_parses(name):
    with pytest.raises(ConfigError) as e:
        parse_feature_config({"columns": {name: 3}}, source="f.toml")
    message = str(e.value)
    assert f'{toml_table("columns", name)} method = "minmax"' in message
    found = headers(message)
    assert found, message
    for header in found:
        # The suggestion, as a user would paste it: the header on its line, then the key.
        fixed = tomllib.loads(f'{header}\nmethod = "minmax"\n')
        assert fixed == {"columns": {name: {"method": "minmax"}}}, message
        assert parse_feature_config(fixed).columns[name].method == "minmax"


def test_the_issue_example_mean_radius():
    with pytest.raises(ConfigError, match=r'\[columns\."mean radius"\] method = "minmax"'):
        parse_feature_config({"columns": {"mean radius": "quantile"}}, source="f.toml")
    with pytest.raises(ConfigError, match=r"unknown key 'clipp' in \[columns\.\"mean radius\"\]"):
        parse_feature_config({"columns": {"mean radius": {"clipp": 0.1}}}, source="f.toml")


@pytest.mark.parametrize("name", ["mean radius", "a.b"])
def test_passthrough_conflict_names_a_header_that_parses(name):
    with pytest.raises(ConfigError) as e:
        parse_feature_config({"job": {"passthrough": [name]}, "columns": {name: {"bits": 4}}})
    (header,) = headers(str(e.value).split("also has a", 1)[1])
    assert tomllib.loads(f"{header}\nbits = 4\n") == {"columns": {name: {"bits": 4}}}


@pytest.mark.parametrize("name", ["fc 1", "encoder.fc1", "0"])
def test_layer_messages_name_a_header_that_parses(name):
    with pytest.raises(ConfigError) as e:
        parse_model_config({"layers": {name: 0.5}}, source="m.toml")
    (header, *_) = headers(str(e.value))
    assert tomllib.loads(f"{header}\nprune = 0.5\n") == {"layers": {name: {"prune": 0.5}}}
    with pytest.raises(ConfigError) as e:
        parse_model_config({"layers": {name: {"seed": 1}}}, source="m.toml")
    assert f"unknown key 'seed' in {toml_table('layers', name)}" in str(e.value)
