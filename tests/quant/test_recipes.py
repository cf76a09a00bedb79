"""Recipes are data: role routing, the registry, lookup errors and .toml recipes.

    python -m pytest tests/quant/test_recipes.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.quant.recipe_file import recipe_from_dict
from pgolf.quant.recipes import RECIPES, QuantRecipe, TensorRule, get_recipe, tensor_role


@pytest.mark.parametrize("name, role", [
    ("tok_emb.weight", "embed"), ("lm_head.weight", "embed"),
    ("blocks.0.attn.c_q.weight", "attn"), ("blocks.10.attn.proj.weight", "attn"),
    ("blocks.3.mlp.fc.weight", "mlp"), ("blocks.3.mlp.proj.weight", "mlp"),
    ("bigram.proj.weight", "attn"),  # records' _classify_param: a non-MLP ".proj." counts as attention
    ("ve_shared.proj.weight", "attn"), ("bigram.embed.weight", "other"),
    ("blocks.0.attn_scale", "other"), ("skip_weights", "other"), ("smear.gate.weight", "other"),
])
def test_tensor_role_follows_the_records(name, role):
    assert tensor_role(name) == role


def test_registry_is_valid_and_holds_the_baseline():
    assert "int8-baseline" in RECIPES
    for key, recipe in RECIPES.items():
        assert recipe.name == key
        recipe.validate()
    base = get_recipe("int8-baseline")
    assert base.passthrough_max_numel == 65_536 and base.codec_hint == "zlib"
    assert base.rule_for("blocks.0.mlp.fc.weight").method == "int8_percentile"


def test_unknown_recipe_lists_valid_names():
    with pytest.raises(ValueError, match="int8-baseline"):
        get_recipe("int6-gptq-typo")
    with pytest.raises(ValueError, match="does not exist"):
        get_recipe("/nonexistent/recipe.toml")


def test_rules_first_match_wins_and_patterns_narrow():
    recipe = QuantRecipe(name="t", description="", rules=(
        TensorRule(role="mlp", method="rtn", bits=5, pattern="blocks.0.*"),
        TensorRule(role="mlp", method="rtn", bits=6),
        TensorRule(role="embed", method="passthrough"),
    )).validate()
    assert recipe.rule_for("blocks.0.mlp.fc.weight").bits == 5
    assert recipe.rule_for("blocks.1.mlp.fc.weight").bits == 6
    assert recipe.rule_for("tok_emb.weight").method == "passthrough"
    with pytest.raises(ValueError, match="no rule"):
        recipe.rule_for("blocks.0.attn.c_q.weight")


@pytest.mark.parametrize("rule, message", [
    (TensorRule(role="mlp", method="gptq-typo"), "unknown method"),
    (TensorRule(role="ffn", method="rtn"), "unknown role"),
    (TensorRule(role="mlp", method="rtn", bits=12), "bits"),
])
def test_validate_rejects_bad_rules(rule, message):
    with pytest.raises(ValueError, match=message):
        QuantRecipe(name="bad", description="", rules=(rule,)).validate()


def test_toml_recipe_file(tmp_path):
    path = tmp_path / "int6.toml"
    path.write_text(
        'description = "int6 rtn, int8 embeddings"\n'
        'passthrough_max_numel = 1024\n'
        '[[rules]]\nrole = "embed"\nmethod = "int8_percentile"\nbits = 8\n'
        '[[rules]]\nrole = "*"\nmethod = "rtn"\nbits = 6\n'
    )
    recipe = get_recipe(str(path))
    assert recipe.name == "int6" and recipe.passthrough_max_numel == 1024
    assert recipe.rule_for("tok_emb.weight").method == "int8_percentile"
    assert recipe.rule_for("blocks.0.attn.c_k.weight").bits == 6
    with pytest.raises(ValueError, match="unknown recipe keys"):
        recipe_from_dict({"name": "x", "rules": [], "bitz": 3})
    with pytest.raises(ValueError, match="unknown keys"):
        recipe_from_dict({"name": "x", "rules": [{"role": "*", "method": "rtn", "clip": 3}]})


def test_sigma_group_recipes_route_attention_by_attn_only():
    """R0427 / PR #1586 / PR #1962 `gptq_mixed_quantize`: ".attn." → ATTN σ, anything else → MATRIX σ (12.85), so the
    bigram and value-embedding projections get 12.85, not the attention σ; R0322's `_classify_param` keeps them
    attention (issue 13)."""
    from pgolf.quant.plan import route_tensors

    names = ["bigram.proj.weight", "ve_shared.proj.weight", "blocks.0.attn.proj.weight", "blocks.0.mlp.proj.weight",
             "tok_emb.weight", "bigram.embed.weight"]
    sd = {n: torch.zeros(64, 2048) for n in names}
    assert [tensor_role(n) for n in names] == ["attn", "attn", "attn", "mlp", "embed", "other"]
    for name in ("sota-lqer", "per-layer-clip", "hessian-adaptive-clip"):
        plan = route_tensors(sd, RECIPES[name])
        assert [plan[n].role for n in names] == ["other", "other", "attn", "mlp", "embed", "other"]
        assert plan["bigram.proj.weight"].params == {"clip_sigma": 12.85} == plan["ve_shared.proj.weight"].params
        assert plan["bigram.proj.weight"].method == "sdclip_gptq" and plan["bigram.proj.weight"].bits == 6
        assert plan["blocks.0.attn.proj.weight"].params == {"clip_sigma": 13.0}
        assert plan["bigram.embed.weight"].method == "int8_percentile"  # an embedding table: no Hessian
    plan = route_tensors(sd, RECIPES["gptq-lite"])
    assert plan["bigram.proj.weight"].role == "attn" and plan["bigram.proj.weight"].method == "gptq_lite"
