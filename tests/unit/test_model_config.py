"""The model job's TOML config."""

from __future__ import annotations

import pytest

from spark_compress.core.compress import LayerPlan
from spark_compress.errors import ConfigError
from spark_compress.io.model_config import load_model_config, parse_model_config

pytestmark = pytest.mark.unit

EXAMPLE = """
[plan]
prune = 0.8
structured = false
quantize = "int8"
kmeans_bits = 4
rank = 0
[layers.0]
prune = 0.5
[eval]
label = "label"
features = ["f0", "f1"]
"""


def test_issue_example(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text(EXAMPLE)
    cfg = load_model_config(p)
    assert cfg.plan.default == LayerPlan(prune=0.8, quantize="int8", kmeans_bits=4)
    assert cfg.plan.for_layer(0) == LayerPlan(prune=0.5, quantize="int8", kmeans_bits=4)
    assert cfg.plan.for_layer(1) == cfg.plan.default
    assert (cfg.eval.label, cfg.eval.features) == ("label", ("f0", "f1"))
    assert cfg.bias_correction_rows == 0 and cfg.plan.seed == 0
    assert (cfg.finetune_epochs, cfg.finetune_rows, cfg.source) == (0, 50000, str(p))


def test_array_features_and_extras():
    cfg = parse_model_config({"plan": {"quantize": "kmeans", "kmeans_bits": 2, "seed": 3,
                                       "global_prune": True, "bias_correction": 2000,
                                       "finetune_epochs": 3, "finetune_rows": 1000},
                              "eval": {"label": "y", "features": "pixels"}})
    assert cfg.eval.features == "pixels"
    assert (cfg.plan.seed, cfg.plan.global_prune, cfg.bias_correction_rows) == (3, True, 2000)
    assert (cfg.finetune_epochs, cfg.finetune_rows) == (3, 1000)


def test_layers_by_name_and_from_the_end_and_energy_overrides_rank():
    cfg = parse_model_config({"plan": {"rank": 4, "quantize": "int8"},
                              "layers": {"fc1": {"energy": 0.9}, "-1": {"rank": 0},
                                         "2": {"prune": 0.5}}})
    assert cfg.plan.layers == {
        "fc1": LayerPlan(quantize="int8", energy=0.9),       # energy replaces the default rank
        "-1": LayerPlan(quantize="int8"),
        2: LayerPlan(quantize="int8", rank=4, prune=0.5),
    }


@pytest.mark.parametrize("doc,match", [
    ({"plan": {"prune": 1.5}}, r"'prune' parameter of m.toml: \[plan\] must be a fraction in \[0, 1\]"),
    ({"plan": {"quantize": "int3"}}, r"'quantize'.*int3"),
    ({"plan": {"prunee": 0.5}}, r"m.toml: unknown key 'prunee' in \[plan\]"),
    ({"layers": {"0": {"prune": 2}}}, r"'prune' parameter of m.toml: \[layers.0\]"),
    ({"layers": {"first": 0.1}}, r"\[layers.first\] must be a table \(a layer index"),
    ({"layers": {"-1": {"rank": 2, "energy": 0.9}}}, r"\[layers.-1\] sets both rank=2"),
    ({"plan": {"energy": 2.0}}, r"'energy' parameter of m.toml: \[plan\]"),
    ({"layers": {"0": {"seed": 1}}}, r"unknown key 'seed' in \[layers.0\]"),
    ({"eval": {"features": []}}, r"\[eval\] features"),
    ({"eval": {"label": 3}}, r"\[eval\] label"),
    ({"evaluate": {}}, r"unknown section or key 'evaluate'"),
    ({"plan": {"seed": -1}}, r"\[plan\] seed: must be an integer >= 0"),
])
def test_errors_name_file_and_key(doc, match):
    with pytest.raises(ConfigError, match=match):
        parse_model_config(doc, source="m.toml")
