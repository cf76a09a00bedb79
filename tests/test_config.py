"""Config system: presets parse and build models, overrides are typed, typos list the valid names.

    python -m pytest tests/test_config.py -q
"""

from __future__ import annotations

import pytest

from pgolf.config import build_config, env_layer, load_preset, parse_overrides, preset_names
from pgolf.model.gpt import GPT


def test_required_presets_exist():
    assert {"cpu-demo", "cpu-smoke", "record-11l", "sota-sp8192"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_parses_and_builds_a_model(name):
    cfg = build_config([(name, load_preset(name))])
    model = GPT(cfg.model)
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    if name == "record-11l":  # the 2026-03-22/23 records' 11L stack: ~27M parameters (parameter-golf.md §3.1)
        assert 26_000_000 < counts["total"] < 28_000_000
    if name == "sota-sp8192":  # R0427: 35,945,671 parameters
        assert 35_500_000 < counts["total"] < 36_500_000


def test_overrides_are_typed_and_layered():
    cfg = build_config([
        ("preset", load_preset("cpu-smoke")),
        ("cli", parse_overrides([("train.matrix_lr", "0.026"), ("model.num_layers", "3"),
                                 ("model.ln_scale", "true"), ("model.ve_layers", "1,2"), ("model.ve_dim", "16")])),
    ])
    assert cfg.train.matrix_lr == 0.026 and cfg.model.num_layers == 3 and cfg.model.ln_scale is True
    assert cfg.model.ve_layers == (1, 2)
    assert cfg.train.train_seq_len == 64  # from the preset, untouched


@pytest.mark.parametrize("override, message", [
    (("trian.matrix_lr", "1"), "did you mean 'train'"),
    (("train.matrx_lr", "1"), "did you mean 'matrix_lr'"),
    (("train.matrix_lr", "fast"), "train.matrix_lr='fast' is not a number"),
    (("model.mlp_act", "gelu"), "not one of 'relu2', 'leaky_relu2'"),
    (("model.num_layers", "2.5"), "is not an integer"),
])
def test_bad_overrides_name_the_field_and_the_choices(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_config([("cli", parse_overrides([override]))])


def test_unknown_field_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_config([("cli", parse_overrides([("eval.strid", "64")]))])
    assert "valid eval fields: seq_len, stride, batch_seqs" in str(e.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="valid presets: cpu-demo"):
        load_preset("cpu-dmeo")


def test_cross_field_validation():
    with pytest.raises(ValueError, match="model.num_heads=6 must be a multiple of model.num_kv_heads=4"):
        build_config([("cli", parse_overrides([("model.num_heads", "6"), ("model.model_dim", "384")]))])


def test_from_env_ports_a_record_command():
    layer, notes = env_layer({"MATRIX_LR": "0.026", "NUM_LAYERS": "11", "MUON_ROW_NORMALIZE": "1",
                              "VE_LAYERS": "9,10", "WARMDOWN_ITERS": "3500", "HOME": "/root"})
    cfg = build_config([("env", layer)])
    assert cfg.train.matrix_lr == 0.026 and cfg.model.num_layers == 11
    assert cfg.train.muon_row_normalize is True and cfg.model.ve_layers == (9, 10)
    assert len(notes) == 1 and "WARMDOWN_ITERS" in notes[0] and "warmdown_frac" in notes[0]


def test_config_round_trips_through_dict():
    from pgolf.config import config_from_dict

    cfg = build_config([("preset", load_preset("sota-sp8192"))])
    assert config_from_dict(cfg.to_dict()) == cfg
