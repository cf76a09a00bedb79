"""The record-11l preset reproduces R0322/R0323: their SmearGate and BigramHash have no BOS fix (PR #1851 added it,
R0427 uses it), so the preset's logits equal a GPT whose embedding stage is built from the records' definitions.

    python -m pytest tests/model/test_record11l_preset.py -q
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from pgolf.config import build_config, load_preset
from pgolf.eval.coverage import informative_init
from pgolf.model.gpt import GPT


def record_embed(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """x0 as R0322/R0323 `GPT.forward` computes it, from their definitions as shipped: tok_emb + BigramHashEmbedding
    (h_0 = V_b − 1, h_t = (36313·t_t XOR 27191·t_{t−1}) mod (V_b − 1), int32) → F.rms_norm → SmearGate
    ((1 − σ(g))·x + σ(g)·x_prev, x_prev = [0, x_0 … x_{T−2}]); no position is treated differently at a BOS."""
    t = idx.to(torch.int32)
    mod = model.bigram.buckets - 1
    h = torch.empty_like(t)
    h[:, 0] = mod
    h[:, 1:] = torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]) % mod
    bigram = model.bigram.proj(model.bigram.embed(h.long())) * model.bigram.scale.to(model.tok_emb.weight.dtype)
    x = model.tok_emb(idx) + bigram
    x = F.rms_norm(x, (x.size(-1),))
    g = torch.sigmoid(model.smear.gate.to(dtype=x.dtype))[None, None, :]
    x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
    return (1 - g) * x + g * x_prev


def _model(**overrides) -> tuple[GPT, torch.Tensor]:
    cfg = build_config([("preset", load_preset("record-11l"))]).model
    cfg = dataclasses.replace(cfg, num_layers=4, xsa_last_n=2, ve_layers=(2, 3), **overrides)  # CPU-sized depth
    torch.manual_seed(0)
    model = informative_init(GPT(cfg)).eval()
    with torch.no_grad():  # zero-initialised at the start of training: give the bigram and smear paths weight
        model.bigram.embed.weight.normal_(0, 0.5)
        model.smear.gate.normal_(0, 1.0)
    idx = torch.randint(2, cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    idx[0, [0, 17, 40]] = cfg.bos_id  # rows with BOS at the start and inside
    idx[1, 33] = cfg.bos_id
    return model, idx


@torch.no_grad()
def test_record_11l_logits_equal_the_r0323_definitions():
    cfg = build_config([("preset", load_preset("record-11l"))]).model
    assert cfg.smear_bos_fix is False and cfg.smear_gate == "v1" and cfg.bigram_vocab_size == 2048
    model, idx = _model()
    ours = model.logits(idx)
    model._embed = lambda i: record_embed(model, i)  # the records' embedding stage, the same blocks and head
    torch.testing.assert_close(ours, model.logits(idx), rtol=0, atol=0)


@torch.no_grad()
def test_the_bos_fix_would_change_the_record_logits():
    """The R0427 BOS fix (the GPTConfig default) changes every row with a BOS after position 0 — why the preset
    turns it off."""
    model, idx = _model(smear_bos_fix=True)
    fixed = model.logits(idx)
    model._embed = lambda i: record_embed(model, i)
    delta = (fixed - model.logits(idx)).abs().amax(-1)  # (B, T)
    assert delta[0, 17:].max() > 1e-3 and delta[1, 33:].max() > 1e-3
    assert delta[0, :17].max() == 0 and delta[1, :33].max() == 0  # causal: nothing before the first inner BOS
