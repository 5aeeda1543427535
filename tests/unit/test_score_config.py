"""The scoring job's TOML config."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_compress.errors import ConfigError
from spark_compress.io.score_config import ScoreConfig, load_score_config, parse_score_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_the_shipped_example():
    assert load_score_config(None) == ScoreConfig()
    cfg = load_score_config(REPO / "conf" / "score.toml")
    assert (cfg.method, cfg.batch_size, cfg.codes, cfg.features) == ("auto", 8192, "fold", None)
    assert cfg.passthrough_codes == ScoreConfig().passthrough_codes == "decode"


def test_values():
    cfg = parse_score_config({"score": {"features": ["a", "b"], "passthrough": ["id"],
                                        "method": "arrow", "batch_size": 100,
                                        "codes": "decode", "prediction_col": "p"}})
    assert (cfg.features, cfg.passthrough, cfg.method, cfg.batch_size, cfg.codes,
            cfg.prediction_col) == (("a", "b"), ("id",), "arrow", 100, "decode", "p")
    assert parse_score_config({"score": {"features": "pixels"}}).features == "pixels"
    assert parse_score_config({"score": {"passthrough_codes": "drop"}}).passthrough_codes \
        == "drop"


@pytest.mark.parametrize("doc,match", [
    ({"score": {"batchsize": 1}}, r"s.toml: unknown key 'batchsize' in \[score\]"),
    ({"scoring": {}}, r"s.toml: unknown section or key 'scoring'"),
    ({"score": {"method": "gpu"}}, r"\[score\] method: must be one of auto, expression, arrow"),
    ({"score": {"batch_size": 0}}, r"\[score\] batch_size: must be an integer >= 1"),
    ({"score": {"codes": "raw"}}, r"\[score\] codes: must be one of fold, decode"),
    ({"score": {"passthrough_codes": "raw"}},
     r"\[score\] passthrough_codes: must be one of decode, drop. Got 'raw'"),
    ({"score": {"passthrough": ["id", "id"]}}, r"\[score\] passthrough: a column is listed"),
    ({"score": {"features": []}}, r"\[score\] features"),
    ({"score": {"prediction_col": "x", "probability_col": "x"}}, r"both 'x'"),
])
def test_errors_name_file_and_key(doc, match):
    with pytest.raises(ConfigError, match=match):
        parse_score_config(doc, source="s.toml")


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_score_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[score\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_score_config(tmp_path / "bad.toml")
