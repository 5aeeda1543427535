"""docs/config.md cannot drift: each config module's REFERENCE table lists exactly the keys its
validator accepts, every example passes the validator, every default is what a document without
the key gets, and docs/config.md is the generator's output for these tables.

The validator's accepted keys are read from its own answers, not from its code: an unknown key
gets "unknown key 'K' in [T]; allowed keys: a, b." (and an unknown table "allowed: t1, t2."), so
the test holds whatever the validator's implementation, and a key added to a validator without a
REFERENCE entry (or the reverse) fails here, naming it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from spark_compress.errors import ConfigError
from spark_compress.io import config as feature_config
from spark_compress.io import model_config, score_config
from spark_compress.io.config import NO_DEFAULT

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
UNKNOWN = "zz_not_a_key"

MODULES = {
    "feature": (feature_config, feature_config.parse_feature_config),
    "model": (model_config, model_config.parse_model_config),
    "score": (score_config, score_config.parse_score_config),
}
FIX = ("Add one ConfigKey per key to the module's REFERENCE (type, doc, example, default), then "
       "run python scripts/gen_config_reference.py.")
# The placeholder of a per-name table (columns.NAME, layers.X) and the name the test uses.
INSTANCE = "some_name"


def generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference",
                                                  REPO / "scripts" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split(table: str) -> tuple[str, bool]:
    """``"columns.NAME"`` -> ``("columns", True)``; ``"defaults"`` -> ``("defaults", False)``."""
    section, _, rest = table.partition(".")
    return section, bool(rest)


def _doc(table: str, values: dict) -> dict:
    section, per_name = _split(table)
    return {section: {INSTANCE: values} if per_name else values}


def _allowed(parse, doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(doc, source="ref.toml")
    m = re.search(r"allowed(?: keys)?: (.*?)\.?$", str(e.value))
    assert m, f"the validator's message lists no allowed keys: {e.value}"
    return [k.strip() for k in m.group(1).split(",")]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_reference_lists_exactly_the_tables_the_validator_accepts(name):
    module, parse = MODULES[name]
    tables = {_split(k.table)[0] for k in module.REFERENCE}
    accepted = set(_allowed(parse, {UNKNOWN: {}}))
    assert accepted == tables, (
        f"{module.__file__}: tables the validator accepts but REFERENCE lacks: "
        f"{sorted(accepted - tables)}; in REFERENCE but refused: {sorted(tables - accepted)}. "
        f"{FIX}")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_reference_lists_exactly_the_keys_the_validator_accepts(name):
    module, parse = MODULES[name]
    by_table: dict[str, set[str]] = {}
    for k in module.REFERENCE:
        by_table.setdefault(k.table, set()).add(k.key)
    for table, keys in by_table.items():
        accepted = set(_allowed(parse, _doc(table, {UNKNOWN: 1})))
        missing, extra = accepted - keys, keys - accepted
        assert not missing and not extra, (
            f"{module.__file__} [{table}]: accepted by the validator but not in REFERENCE: "
            f"{sorted(missing)}; in REFERENCE but refused: {sorted(extra)}. {FIX}")


def _entries():
    return [pytest.param(module, parse, k, id=f"{name}:{k.table}.{k.key}")
            for name, (module, parse) in sorted(MODULES.items()) for k in module.REFERENCE]


@pytest.mark.parametrize("module, parse, key", _entries())
def test_each_example_passes_the_validator(module, parse, key):
    parse(_doc(key.table, {**key.requires, key.key: key.example}), source="ref.toml")


@pytest.mark.parametrize("module, parse, key", _entries())
def test_each_default_is_what_a_document_without_the_key_gets(module, parse, key):
    assert key.doc.strip() and key.type.strip()
    if key.default is NO_DEFAULT or key.attribute is None:
        # The meaning of absence is said in words (a fallback to another table, "required").
        assert key.default_note, f"{key.table}.{key.key}: a default or a default_note"
        return
    value = parse({}, source="ref.toml")
    for part in key.attribute.split("."):
        value = getattr(value, part)
    assert value == key.default, f"[{key.table}] {key.key}"


def test_docs_config_md_is_the_generated_reference():
    gen = generator()
    text = gen.render()
    current = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert current == text, ("docs/config.md differs from the REFERENCE tables: run "
                             "python scripts/gen_config_reference.py")
    # Every key of every table appears in it.
    for _, (module, _) in MODULES.items():
        for k in module.REFERENCE:
            assert f"| `{k.key}` |" in text and f"### `[{k.table}]`" in text


def test_generator_check_mode(tmp_path, monkeypatch, capsys):
    gen = generator()
    monkeypatch.setattr(gen, "DOC", tmp_path / "docs" / "config.md")
    monkeypatch.setattr(gen, "REPO", tmp_path)
    assert gen.main(["--check"]) == 1
    assert "docs/config.md is out of date" in capsys.readouterr().err
    assert gen.main([]) == 0
    assert (tmp_path / "docs" / "config.md").read_text(encoding="utf-8") == gen.render()
    assert gen.main(["--check"]) == 0
