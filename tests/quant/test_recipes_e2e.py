"""Every registered recipe end to end on a tiny GPT with real collected Hessians: quantize → encode_artifact →
decode_artifact → dequantize → strict load into GPT; GPTQ beats RTN in output space; mixed precision keeps the
mean bits; a recipe file overriding a registered recipe works from the CLI.

    python -m pytest tests/quant/test_recipes_e2e.py -q
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.model.gpt import GPT
from pgolf.pack.container import decode_artifact, encode_artifact
from pgolf.quant.allocate import mean_bits
from pgolf.quant.apply import dequantize_state, quantize_state_dict
from pgolf.quant.calibration import calibration_batches
from pgolf.quant.clip import sdclip_scale
from pgolf.quant.gptq import gptq_quantize
from pgolf.quant.hessian_math import output_error
from pgolf.quant.hessian import collect_hessians
from pgolf.quant.primitives import quantize_rtn
from pgolf.quant.recipes import RECIPES, get_recipe
from tests.model.conftest import randomize, tiny_config

CFG = dict(model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0, sparse_attn_gate=True, vocab_size=128)


@pytest.fixture(scope="module")
def model_and_hessians():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(**CFG)).eval(), std=0.1)
    calib = calibration_batches("random", vocab_size=128, num_seqs=8, seq_len=32, batch_size=4, seed=0)
    return model, collect_hessians(model, calib.batches).h


def _small(recipe):
    """The registered recipe with the passthrough threshold lowered so that the tiny model's matrices are quantized."""
    return dataclasses.replace(recipe, passthrough_max_numel=1024)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_round_trips_through_the_artifact(name, model_and_hessians):
    model, hessians = model_and_hessians
    recipe = _small(RECIPES[name])
    sd = model.state_dict()
    qs, rows = quantize_state_dict(sd, recipe, hessians=hessians if recipe.needs_hessians else None)
    blob = encode_artifact(qs, {"recipe": recipe.name}, "zlib")
    qs2, manifest = decode_artifact(blob)
    assert manifest["recipe"] == recipe.name
    w = dequantize_state(qs2)
    assert list(w) == list(sd)
    fresh = GPT(tiny_config(**CFG))
    fresh.load_state_dict(w, strict=True)
    by_name = {r["name"]: r for r in rows}
    for n, qt in qs.tensors.items():  # artifact codes are exactly what was quantized; report mse is the real one
        assert torch.equal(qs2.tensors[n].q, qt.q)
        assert by_name[n]["mse"] == pytest.approx(float((sd[n].double() - w[n].double()).pow(2).mean()), rel=1e-6)
    c_q = by_name["blocks.0.attn.c_q.weight"]
    assert c_q["method"] != "passthrough" and c_q["zlib_bytes"] > 0
    if recipe.needs_hessians:
        assert c_q["hessian_err"] is not None and c_q["damp"] is not None and c_q["escalations"] == 0
    if recipe.gate_pattern:
        assert by_name["blocks.0.attn.gate.weight"]["method"] == "gate_int8_row"
    if recipe.lqer_top_k:
        assert sum(r["lqer"] is not None for r in rows) >= 1
    x = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        ref, out = model(x, x), fresh.eval()(x, x)
    assert abs(float(out) - float(ref)) < 0.5  # a usable model, not garbage


def test_hessian_recipe_without_hessians_names_recipe_and_tensor(model_and_hessians):
    model, _ = model_and_hessians
    with pytest.raises(ValueError, match=r"recipe 'sdclip'.*needs a Hessian for tensor 'tok_emb\.weight'"):
        quantize_state_dict(model.state_dict(), _small(RECIPES["sdclip"]))


def test_gptq_beats_rtn_in_output_space_on_model_hessians(model_and_hessians):
    model, hessians = model_and_hessians
    sd = model.state_dict()
    ratios = []
    for name in ("blocks.0.attn.c_q.weight", "blocks.1.mlp.fc.weight", "blocks.1.mlp.proj.weight"):
        W, H = sd[name].float(), hessians[name]
        s = sdclip_scale(W, 12.85, 6)
        qt, info = gptq_quantize(W, H, 6, s)
        e_gptq = output_error(W, qt.dequantize(), H)
        e_rtn = output_error(W, quantize_rtn(W, 6, s).dequantize(), H)
        ratios.append(e_gptq / e_rtn)
    assert max(ratios) < 0.95, ratios


def test_mixed_precision_preserves_mean_bits_on_a_model(model_and_hessians):
    model, hessians = model_and_hessians
    _, rows = quantize_state_dict(model.state_dict(), _small(RECIPES["hessian-mixed-precision"]), hessians=hessians)
    mat = [r for r in rows if r["role"] in ("mlp", "attn") and r["method"] == "sdclip_gptq"]
    bits = {r["name"]: r["bits"] for r in mat}
    assert set(bits.values()) == {5, 6, 7}
    assert mean_bits(bits, {r["name"]: r["numel"] for r in mat}) == pytest.approx(6.0, abs=0.05)
    sig = [r["sigma"] for r in mat]
    assert len(set(sig)) > 1 and all(6.0 <= s <= 24.0 for s in sig)  # adaptive σ, clamped


def test_recipe_file_overrides_a_registered_recipe(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "sdclip"\nlqer_top_k = 2\ncodec_hint = "lzma"\n')
    r = get_recipe(path)
    assert r.name == "mine" and r.lqer_top_k == 2 and r.rules == RECIPES["sdclip"].rules and r.needs_hessians
    path.write_text('base = "nope"\n')
    with pytest.raises(ValueError, match="base recipe 'nope' unknown"):
        get_recipe(path)
