"""Config system: presets parse and build models, overrides are typed, typos list the valid names.

    python -m pytest tests/test_config.py -q
"""

from __future__ import annotations

import pytest

from pgolf.config import build_config, load_preset, parse_overrides, preset_names
from pgolf.record_env import env_layer
from pgolf.model.gpt import GPT


def test_required_presets_exist():
    assert {"cpu-demo", "cpu-smoke", "record-11l", "sota-sp8192"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_parses_and_builds_a_model(name):
    cfg = build_config([(name, load_preset(name))])
    model = GPT(cfg.model)
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    if name == "record-11l":  # the 2026-03-22/23 records' 11L stack: ~27M parameters (docs/techniques.md#shapes)
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


# ------------------------------------------------------------------------------------------------ ranges, strict TOML

@pytest.mark.parametrize("override, message", [
    (("train.log_every", "0"), "train.log_every=0: expected a value ≥ 1"),
    (("train.train_seq_len", "0"), "train.train_seq_len=0: expected a value ≥ 1"),
    (("model.num_layers", "0"), "model.num_layers=0: expected a value ≥ 1"),
    (("model.num_heads", "0"), "model.num_heads=0: expected a value ≥ 1"),
    (("model.num_kv_heads", "0"), "model.num_kv_heads=0"),
    (("train.iterations", "-5"), "train.iterations=-5: expected a value ≥ 1"),
    (("train.matrix_lr", "nan"), "train.matrix_lr=nan: expected a finite number"),
    (("train.embed_lr", "inf"), "train.embed_lr=inf: expected a finite number"),
    (("train.matrix_lr", "-0.1"), "train.matrix_lr=-0.1: expected a value ≥ 0"),
    (("train.ema_decay", "1.5"), "train.ema_decay=1.5: expected a value in [0, 1]"),
    (("data.val_fraction", "-0.1"), "data.val_fraction=-0.1"),
    (("eval.batch_seqs", "0"), "eval.batch_seqs=0"),
    (("pack.fit_sigma_multipliers", "1.0,nan"), "pack.fit_sigma_multipliers=nan: expected a finite number"),
    (("model.bos_id", "4096"), "model.bos_id=4096: expected an id below model.vocab_size"),
])
def test_out_of_range_values_are_one_line_errors_naming_the_field(override, message):
    with pytest.raises(ValueError) as e:
        build_config([("preset", load_preset("cpu-smoke")), ("overrides", parse_overrides([override]))])
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("toml_text, message", [
    ("[train]\nmatrix_lr = true", "train.matrix_lr=True is a boolean, expected a number"),
    ("[run]\nname = 5", "run.name=5 is an integer, expected a string"),
    ("[train]\niterations = 2.5", "train.iterations=2.5 is a number, expected an integer"),
    ("[train]\niterations = \"100\"", "train.iterations='100' is a string, expected an integer"),
    ("[model]\ntie_embeddings = 1", "model.tie_embeddings=1 is an integer, expected a boolean"),
    ("[model]\nmlp_act = 3", "model.mlp_act=3 is not one of"),
    ("[model]\nve_layers = 9", "model.ve_layers=9 is an integer, expected a list"),
    ("[train]\nmatrix_lr = nan", "train.matrix_lr=nan: expected a finite number"),
])
def test_toml_values_are_typed_strictly(tmp_path, toml_text, message):
    from pgolf.config import load_toml

    path = tmp_path / "c.toml"
    path.write_text(toml_text + "\n")
    with pytest.raises(ValueError) as e:
        build_config([("preset", load_preset("cpu-smoke")), (f"config file {path}", load_toml(path))])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_strict_toml_still_accepts_well_typed_values(tmp_path):
    from pgolf.config import load_toml

    path = tmp_path / "c.toml"
    path.write_text("[train]\nmatrix_lr = 1\niterations = 7\n[model]\nve_layers = [0, 1]\nve_dim = 16\n"
                    "[run]\nname = \"x\"\n")
    cfg = build_config([("preset", load_preset("cpu-smoke")), ("file", load_toml(path))])
    assert cfg.train.matrix_lr == 1.0 and isinstance(cfg.train.matrix_lr, float)
    assert cfg.model.ve_layers == (0, 1) and cfg.run.name == "x" and cfg.train.iterations == 7


def test_every_range_names_a_real_field():
    import dataclasses

    from pgolf.config import FIELD_RANGES, SECTIONS

    fields = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert set(FIELD_RANGES) <= fields, sorted(set(FIELD_RANGES) - fields)
    defaults = build_config([])  # the defaults themselves are in range
    assert defaults.train.log_every >= 1


def test_cli_refuses_bad_values_with_rc_2_and_no_run_dir(tmp_path, capsys):
    from pgolf.cli import main

    rc = main(["train", "--preset", "cpu-smoke", "--run.out_dir", str(tmp_path), "--run.name", "bad",
               "--train.log_every", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.log_every=0" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
