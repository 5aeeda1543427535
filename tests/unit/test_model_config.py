"""The model job's TOML config."""

from __future__ import annotations

import numpy as np
import pytest

from spark_compress.core.compress import LayerPlan, resolve_plan
from spark_compress.core.model import Dense, Model
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
[layers."#0"]
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
    assert cfg.plan.layers == {"#0": LayerPlan(prune=0.5, quantize="int8", kmeans_bits=4)}
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


def test_layer_keys_stay_as_written_and_energy_overrides_rank():
    # Keys are not interpreted here: "2" stays the *name* "2", "#-1" a position (resolve_plan
    # maps both against the model; tests/unit/test_compress.py covers that).
    cfg = parse_model_config({"plan": {"rank": 4, "quantize": "int8"},
                              "layers": {"fc1": {"energy": 0.9}, "#-1": {"rank": 0},
                                         "2": {"prune": 0.5}}})
    assert cfg.plan.layers == {
        "fc1": LayerPlan(quantize="int8", energy=0.9),       # energy replaces the default rank
        "#-1": LayerPlan(quantize="int8"),
        "2": LayerPlan(quantize="int8", rank=4, prune=0.5),
    }


def test_toml_layer_keys_on_a_numerically_named_model(tmp_path):
    # A PyTorch nn.Sequential export names its Dense layers "0", "2", "4": [layers.2] is the
    # layer named "2" (the second one), [layers."#2"] the third, and [layers.1] is refused.
    model = Model("regression", tuple(
        Dense(np.ones((2, 2), np.float32), None, "relu" if i < 2 else "identity", name)
        for i, name in enumerate(["0", "2", "4"])), 2)
    p = tmp_path / "m.toml"
    p.write_text('[plan]\n[layers.2]\nprune = 0.5\n[layers."#2"]\nquantize = "int8"\n')
    plan = resolve_plan(load_model_config(p).plan, model)
    assert plan.layers == {1: LayerPlan(prune=0.5), 2: LayerPlan(quantize="int8")}
    p.write_text('[plan]\n[layers.1]\nprune = 0.5\n')
    with pytest.raises(ConfigError, match=r"the plan names layer '1', which the model does not "
                                          r"have; it has 3 layer\(s\): #0 '0', #1 '2', #2 '4'; a "
                                          r"plan key is a layer name: for the layer at position "
                                          r"1 write '#1' \(\[layers.\"#1\"\] in TOML\)"):
        resolve_plan(load_model_config(p).plan, model)


@pytest.mark.parametrize("doc,match", [
    ({"plan": {"prune": 1.5}}, r"'prune' parameter of m.toml: \[plan\] must be a fraction in \[0, 1\]"),
    ({"plan": {"quantize": "int3"}}, r"'quantize'.*int3"),
    ({"plan": {"prunee": 0.5}}, r"m.toml: unknown key 'prunee' in \[plan\]"),
    ({"layers": {"0": {"prune": 2}}}, r"'prune' parameter of m.toml: \[layers.0\]"),
    ({"layers": {"first": 0.1}}, r"\[layers.first\] must be a table \(a layer name such as "
                                 r"\[layers.fc1\], or a position such as \[layers.\"#0\"\]"),
    ({"layers": {"#-1": {"rank": 2, "energy": 0.9}}}, r"\[layers.\"#-1\"\] sets both rank=2"),
    ({"layers": {"#x": {"prune": 0.5}}}, r"m.toml: \[layers.\"#x\"\]: plan layer key '#x' is "
                                         r"not a position: write '#' followed by an integer"),
    ({"layers": {"": {"prune": 0.5}}}, r"m.toml: \[layers.\"\"\]: plan layer key '' is empty"),
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
