"""Shared tiny-model factory for the model tests (CPU, fp32, a few thousand parameters)."""

from __future__ import annotations

import pytest
import torch

from pgolf.model.config import GPTConfig
from pgolf.model.gpt import GPT

TINY = dict(vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2.0, bos_id=1,
            gate_window=8, bigram_dim=16)

# Every switch on at once (no doc isolation): looping, XSA, smear v2, bigram, VE, parallel lanes, gates, partial RoPE.
ALL_ON = dict(num_layers=5, num_loops=1, loop_start=1, loop_end=2, xsa_last_n=3, smear_gate="v2", bigram_vocab_size=32,
              ve_dim=8, ve_layers=(3, 4), parallel_start_layer=3, sparse_attn_gate=True, unet_skips="gates",
              rope_dims=4, ln_scale=True, mlp_act="leaky_relu2", tie_embeddings=False)


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig(**{**TINY, **overrides})


def randomize(model: GPT, std: float = 0.3, seed: int = 0) -> GPT:
    """Give every parameter random values, so zero-init paths (out-projections, gates, λ) carry signal in tests."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if p.ndim <= 1 and p.numel() > 8 else 0.0))
    return model


@pytest.fixture
def make_model():
    """make_model(random=True, **overrides) -> GPT in eval mode built from the tiny config."""

    def build(random: bool = True, **overrides) -> GPT:
        torch.manual_seed(0)
        model = GPT(tiny_config(**overrides)).eval()
        return randomize(model) if random else model

    return build
