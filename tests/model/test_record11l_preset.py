"""The record-11l preset reproduces R0322/R0323: their SmearGate and BigramHash have no BOS fix (PR #1851 added it,
R0427 uses it), so the preset's logits equal R0323's forward written from the record's definitions (below).

    python -m pytest tests/model/test_record11l_preset.py -q
"""

from __future__ import annotations

import dataclasses
import math

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


def _rope(x: torch.Tensor, T: int, rd: int, base: float = 10000.0, train_len: int = 1024) -> torch.Tensor:
    """R0323 Rotary (NTK base past train_seq_len=1024) + apply_rotary_emb on the first rd dims; x (B, T, H, D)."""
    if T > train_len:
        base = base * ((T / train_len) ** (rd / (rd - 2)))
    inv = 1.0 / (base ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))
    f = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    cos, sin = f.cos()[None, :, None, :], f.sin()[None, :, None, :]
    half = rd // 2
    x1, x2, rest = x[..., :half], x[..., half:rd], x[..., rd:]
    return torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos, rest), dim=-1)


def record_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """R0323 `GPT.forward_logits` (its Block, CausalSelfAttention with XSA and partial RoPE, LeakyReLU(0.5)² MLP,
    ValueEmbedding, U-Net skips, tied softcapped head) written from the record's definitions, on the weights of
    `model` (the records' names; R0323's banks hold the same matrices per layer)."""
    sd, cfg = model.state_dict(), model.cfg
    B, T = idx.shape
    L, C, H, Hkv = cfg.num_layers, cfg.model_dim, cfg.num_heads, cfg.num_kv_heads
    D = C // H
    x0 = x = record_embed(model, idx)
    ve = F.linear(F.embedding(idx, sd["ve_shared.embed.weight"]), sd["ve_shared.proj.weight"])
    ve = ve * sd["ve_shared.scale"]

    def block(i: int, x: torch.Tensor) -> torch.Tensor:
        w = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        x_in = w["resid_mix"][0] * x + w["resid_mix"][1] * x0
        ln = 1.0 / math.sqrt(i + 1)
        n = F.rms_norm(x_in, (C,)) * ln
        q = F.linear(n, w["attn.c_q.weight"]).reshape(B, T, H, D)
        k = F.linear(n, w["attn.c_k.weight"]).reshape(B, T, Hkv, D)
        v = F.linear(n, w["attn.c_v.weight"])
        if i in cfg.ve_layers:
            v = v + ve * sd[f"ve_layer_scales.{list(cfg.ve_layers).index(i)}"]
        v = v.reshape(B, T, Hkv, D)
        q, k = F.rms_norm(q, (D,)), F.rms_norm(k, (D,))
        q, k = _rope(q, T, cfg.rope_dims), _rope(k, T, cfg.rope_dims)
        q = q * w["attn.q_gain"][None, None, :, None]
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=True).transpose(1, 2)
        if i >= L - cfg.xsa_last_n:  # _xsa_efficient
            yg = y.reshape(B, T, Hkv, H // Hkv, D)
            vn = F.normalize(v, dim=-1).unsqueeze(-2)
            y = (yg - (yg * vn).sum(-1, keepdim=True) * vn).reshape(B, T, H, D)
        x_out = x_in + w["attn_scale"] * F.linear(y.reshape(B, T, C), w["attn.proj.weight"])
        hid = F.leaky_relu(F.linear(F.rms_norm(x_out, (C,)) * ln, w["mlp.fc.weight"]), negative_slope=0.5)
        return x_out + w["mlp_scale"] * F.linear(hid.square(), w["mlp.proj.weight"])

    enc, skips = L // 2, []
    for i in range(enc):
        x = block(i, x)
        skips.append(x)
    for i in range(L - enc):
        if skips:
            x = x + sd["skip_weights"][i] * skips.pop()
        x = block(enc + i, x)
    z = F.linear(F.rms_norm(x, (C,)), sd["tok_emb.weight"])
    return cfg.logit_softcap * torch.tanh(z / cfg.logit_softcap)


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
    torch.testing.assert_close(ours, record_logits(model, idx), rtol=0, atol=0)  # the whole R0323 forward
    long = torch.randint(2, cfg.vocab_size, (1, 1100), generator=torch.Generator().manual_seed(3))
    long[0, [0, 500, 900]] = cfg.bos_id  # past train_seq_len 1024: the NTK-scaled RoPE base
    torch.testing.assert_close(model.logits(long), record_logits(model, long), rtol=0, atol=0)
    model._embed = lambda i: record_embed(model, i)  # the records' embedding stage, pgolf's blocks and head
    torch.testing.assert_close(ours, model.logits(idx), rtol=0, atol=0)


@torch.no_grad()
def test_the_bos_fix_would_change_the_record_logits():
    """The R0427 BOS fix (the GPTConfig default) changes every row with a BOS after position 0 — why the preset
    turns it off."""
    model, idx = _model(smear_bos_fix=True)
    delta = (model.logits(idx) - record_logits(model, idx)).abs().amax(-1)  # (B, T)
    assert delta[0, 17:].max() > 1e-3 and delta[1, 33:].max() > 1e-3
    assert delta[0, :17].max() == 0 and delta[1, :33].max() == 0  # causal: nothing before the first inner BOS
