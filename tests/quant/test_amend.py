"""Per-role knobs (issue 18): `--quant.ROLE.KNOB VALUE` and a recipe file's `[[amend]]` change exactly that role's
tensors; one calibration default for every registered recipe; the calibration resolved in one place.

    python -m pytest tests/quant/test_amend.py -q
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.config import build_config, load_preset, parse_overrides
from pgolf.overrides import split_overrides
from pgolf.quant.amend import amend_rules, parse_role_overrides
from pgolf.quant.apply import quantize_state_dict
from pgolf.quant.recipes import DEFAULT_CALIB_SEQS, RECIPES, ROLES, get_recipe, recipe_for
from tests.quant import identity


def _cfg(*args: str):
    return build_config([("preset", load_preset("cpu-smoke")), ("cli", parse_overrides(split_overrides(list(args))))])


def _quantize(recipe):
    sd, hs = identity.inputs()
    return quantize_state_dict(sd, identity.small(recipe), hessians=hs)[0]


def test_a_role_override_changes_exactly_that_roles_tensors():
    cfg = _cfg("--quant.recipe", "sota-lqer", "--quant.mlp.bits", "5")
    assert cfg.quant.rule_overrides == "mlp.bits=5"
    base, amended = get_recipe("sota-lqer"), recipe_for(cfg.quant)
    assert amended.name == "sota-lqer[mlp.bits=5]"
    a = _quantize(dataclasses.replace(base, lqer_top_k=0))
    b = _quantize(dataclasses.replace(amended, lqer_top_k=0))
    changed = {n for n in a.tensors if not torch.equal(a.tensors[n].q, b.tensors[n].q)}
    mlp = {n for n in a.tensors if base.role_of(n) == "mlp"}
    assert changed == mlp and mlp
    assert all(b.tensors[n].bits == 5 and int(b.tensors[n].q.abs().max()) <= 15 for n in mlp)


def test_a_param_override_on_a_role_without_its_own_rule():
    """'other' tensors fall through to the '*' rule: the override copies that rule for 'other' only."""
    cfg = _cfg("--quant.recipe", "gptq-lite", "--quant.embed.percentile", "99.0", "--quant.attn.bits", "5")
    recipe = recipe_for(cfg.quant)
    star = [r for r in recipe.rules if r.role == "*"][0]
    embed = [r for r in recipe.rules if r.role == "embed"][0]
    assert embed.params == {"percentile": 99.0} and star.params == {"percentile": 99.99984}
    assert [r.bits for r in recipe.rules if r.role == "attn"] == [5]
    a, b = _quantize(get_recipe("gptq-lite")), _quantize(recipe)
    changed = {n for n in a.tensors if not torch.equal(a.tensors[n].q, b.tensors[n].q)}
    assert {recipe.role_of(n) for n in changed} == {"embed", "attn"}
    assert changed == {n for n in a.tensors if recipe.role_of(n) in ("embed", "attn")}


def test_a_knob_the_method_does_not_take_is_refused():
    with pytest.raises(ValueError, match="method 'sdclip_gptq' takes no parameter 'percentile'"):
        recipe_for(_cfg("--quant.recipe", "sota-lqer", "--quant.mlp.percentile", "99").quant)


@pytest.mark.parametrize("bad,match", [("mlp.bits=9", "bits must be an integer"), ("x.bits=5", "unknown role"),
                                       ("mlpbits=5", "ROLE.KNOB=VALUE")])
def test_bad_role_overrides_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_role_overrides(bad, ROLES)


@pytest.mark.parametrize("args,match", [(("--quant.mlp.bits", "9"), "bits must be an integer"),
                                        (("--quant.x.bits", "5"), "unknown role 'x'")])
def test_bad_role_overrides_on_the_command_line_name_the_override(args, match):
    with pytest.raises(ValueError, match=match):
        _cfg(*args)


def test_recipe_file_amends_one_rule_of_its_base(tmp_path):
    path = tmp_path / "mlp5.toml"
    path.write_text('base = "sota-lqer"\n[[amend]]\nrole = "mlp"\nbits = 5\nparams = { clip_sigma = 10.0 }\n')
    recipe, base = get_recipe(path), get_recipe("sota-lqer")
    assert len(recipe.rules) == len(base.rules)
    for r, r0 in zip(recipe.rules, base.rules):
        if r.role == "mlp":
            assert (r.bits, r.params) == (5, {"clip_sigma": 10.0})
        else:
            assert r == r0
    assert recipe.lqer_top_k == base.lqer_top_k and recipe.gate_pattern == base.gate_pattern
    path.write_text('base = "sota-lqer"\n[[amend]]\nrole = "mlp"\nsigma = 5\n')
    with pytest.raises(ValueError, match="amend 0 needs role"):
        get_recipe(path)


def test_amend_to_another_method_drops_the_old_params():
    rules = get_recipe("int8-baseline").rules
    out = amend_rules(rules, role="mlp", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.0})
    assert out[0].role == "mlp" and out[0].params == {"clip_sigma": 12.0} and out[1:] == rules


def test_one_calibration_default_for_every_recipe():
    hessian = {n: r for n, r in RECIPES.items() if r.needs_hessians}
    assert {r.calib_seqs for r in hessian.values()} == {DEFAULT_CALIB_SEQS}
    # only ar-calib-gptq reproduces a record's calibration shape (R0325: 64 × 2048 self-generated at T = 0.8)
    assert {n for n, r in hessian.items() if r.calib_seq_len} == {"ar-calib-gptq"}


def test_calibration_is_resolved_in_one_place():
    q = _cfg("--quant.calib_seqs", "8").quant
    c = q.calibration_for(get_recipe("ar-calib-gptq"), train_seq_len=128)
    assert (c.source, c.seqs, c.seq_len, c.temperature, c.batch_size) == ("selfgen", 8, 2048, 0.8, 8)
    c = _cfg().quant.calibration_for(get_recipe("sota-lqer"), train_seq_len=128, seqs=4)
    assert (c.source, c.seqs, c.seq_len, c.batch_size) == ("train", 4, 128, 4)


def test_quantize_help_lists_the_role_knobs_and_amend(capsys):
    from pgolf.cli import main

    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert "--quant.mlp.bits 5 --quant.attn.clip_sigma 13" in out and "[[amend]]" in out


def test_role_knobs_from_a_config_file_table(tmp_path):
    """`[quant.mlp] bits = 5` in a run config file is the same override as --quant.mlp.bits 5."""
    from pgolf.overrides import resolve_config

    path = tmp_path / "run.toml"
    path.write_text('[quant]\nrecipe = "sota-lqer"\n[quant.mlp]\nbits = 5\nclip_sigma = 10.0\n')
    cfg, _ = resolve_config("cpu-smoke", ["--quant.attn.bits", "7"], config_file=str(path))
    assert cfg.quant.rule_overrides == "mlp.bits=5,mlp.clip_sigma=10.0,attn.bits=7"
    rules = {r.role: r for r in recipe_for(cfg.quant).rules}
    assert (rules["mlp"].bits, rules["mlp"].params, rules["attn"].bits) == (5, {"clip_sigma": 10.0}, 7)
