"""The single-file script drops `pgolf.pack.validate.expected_tensors` where only stripped checks read its result
(pgolf.experiments.strip `_PURE_CALLS`): that is exact only while the meta-device build has no side effect."""

from __future__ import annotations

import torch

from pgolf.model.config import GPTConfig
from pgolf.pack.validate import expected_tensors


def test_the_meta_build_of_expected_tensors_draws_no_random_numbers():
    cfg = GPTConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=256, bigram_vocab_size=64,
                    bigram_dim=16, xsa_last_n=1, smear_gate="v2")
    torch.manual_seed(0)
    before = torch.get_rng_state()
    table = expected_tensors(cfg)
    assert torch.equal(torch.get_rng_state(), before)
    assert "tok_emb.weight" in table and table["tok_emb.weight"] == ((256, 64), "float32")
