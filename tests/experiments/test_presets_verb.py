"""`pgolf presets NAME`: what a preset sets against the defaults, with its file's comments.

    python -m pytest tests/experiments/test_presets_verb.py -q
"""

from __future__ import annotations

from pgolf.cli import main
from pgolf.config import RunConfig, load_preset


def test_presets_name_lists_every_field_it_sets_with_default_and_reason(capsys):
    assert main(["presets", "record-11l"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("preset record-11l: the 11-layer 512-d sp1024 stack")
    sets = load_preset("record-11l")
    defaults = RunConfig().to_dict()
    changed = 0
    for sec, fields in sets.items():
        for key, value in fields.items():
            line = next(ln for ln in out.splitlines() if ln.startswith(f"  --{sec}.{key} "))
            same = value == defaults[sec][key] or (isinstance(value, list) and list(defaults[sec][key]) == value)
            changed += not same
            assert ("(= default)" in line) == same, line
    assert "--model.num_layers 11  (default 9)" in out and "--model.ln_scale true  (default false)" in out
    assert "--train.ema_warmup false  (default true)  # the records' EMA: constant decay" in out
    assert f"{changed} fields differ from the defaults" in out


def test_presets_unknown_name_is_one_line(capsys):
    assert main(["presets", "record-12l"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'record-12l' (did you mean 'record-11l'?)" in err and len(err.splitlines()) == 1
