"""model/generate.py: KV-cached logits equal the full forward for every feature; sampling is seeded and exact.

    python -m pytest tests/model/test_generate.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.model.generate import KVCache, generate, supports_kv_cache
from pgolf.model.gpt import GPT
from tests.model.conftest import ALL_ON, randomize, tiny_config

FEATURES = {
    "baseline_tied": {},
    "gqa_partial_rope_xsa": dict(num_heads=4, num_kv_heads=1, rope_dims=4, xsa_last_n=2, qk_gain_init=4.0),
    "smear_v1_bigram": dict(smear_gate="v1", bigram_vocab_size=32),
    "smear_v2_bigram_ve": dict(smear_gate="v2", bigram_vocab_size=32, ve_dim=8, ve_layers=(1, 3)),
    "parallel_sparse_gate_unet_gates": dict(parallel_start_layer=2, unet_skips="gates", sparse_attn_gate=True),
    "all_on_looping": ALL_ON,
    "all_on_doc_isolation_smear_v1": dict(ALL_ON, doc_isolation=True, smear_gate="v1"),
    "no_unet_skips_untied": dict(unet_skips="none", tie_embeddings=False),
}


def _model(overrides: dict, dtype=torch.float64) -> GPT:
    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(**overrides)).eval()).to(dtype)
    model.set_looping(True)  # a no-op without num_loops
    return model


def _sequence(B: int = 3, T: int = 20) -> torch.Tensor:
    seq = torch.randint(0, 64, (B, T), generator=torch.Generator().manual_seed(1))
    if T > 11:
        seq[0, 5] = seq[1, 9] = seq[2, 0] = seq[2, 11] = 1  # BOS tokens (bos_id = 1): document starts mid-row
    return seq


def _cached_logits(model: GPT, seq: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Feed seq through one KVCache in chunks of the given sizes; (B, T, V) logits of every position."""
    cache, out, t = KVCache(seq.size(0), seq.size(1), seq.device), [], 0
    with torch.no_grad():
        for n in chunks:
            out.append(model.logits(seq[:, t : t + n], cache))
            t += n
    assert t == seq.size(1) and cache.length == t
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("name", list(FEATURES))
def test_cached_logits_equal_full_forward_of_every_prefix(name):
    model, seq = _model(FEATURES[name]), _sequence()
    # prefill 3, then single tokens, with one 4-token chunk in the middle (bottom-right causal mask)
    inc = _cached_logits(model, seq, [3] + [1] * 8 + [4] + [1] * 5)
    with torch.no_grad():
        ref = torch.stack([model.logits(seq[:, : t + 1])[:, -1] for t in range(seq.size(1))], dim=1)
    torch.testing.assert_close(inc, ref, atol=1e-6, rtol=0)  # fp64 model: equal to the final fp32 cast


def test_cached_logits_fp32_within_float_rounding():
    model, seq = _model(ALL_ON, torch.float32), _sequence()
    inc = _cached_logits(model, seq, [1] * seq.size(1))
    with torch.no_grad():
        ref = model.logits(seq)  # causal: position t of the full forward = logits(prefix_t)[:, -1]
    torch.testing.assert_close(inc, ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["all_on_looping", "all_on_doc_isolation_smear_v1"])
def test_cached_generation_samples_the_same_tokens_as_full_recompute(name):
    model = _model(FEATURES[name])
    fast = generate(model, 5, 16, batch_size=2, seed=3)
    slow = generate(model, 5, 16, batch_size=2, seed=3, use_cache=False)
    assert torch.equal(fast, slow)


def test_generation_is_seeded_and_first_token_uniform_from_the_generator():
    model = _model({}, torch.float32)
    a = generate(model, 5, 12, batch_size=2, seed=7)
    assert a.shape == (5, 12) and a.dtype == torch.long
    assert int(a.min()) >= 0 and int(a.max()) < 64
    assert torch.equal(a, generate(model, 5, 12, batch_size=2, seed=7))
    assert not torch.equal(a, generate(model, 5, 12, batch_size=2, seed=8))
    # R0325: the first token of each batch is randint(0, V) from the seeded generator, before any sample
    first = torch.randint(0, 64, (2, 1), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[:2, :1], first)


def test_temperature_sharpens_the_distribution():
    model = _model({}, torch.float32)
    cold = generate(model, 4, 24, temperature=0.05, batch_size=4, seed=0)
    hot = generate(model, 4, 24, temperature=5.0, batch_size=4, seed=0)
    assert len(cold.unique()) < len(hot.unique())


def test_first_tokens_prompt_is_kept_and_continued():
    model = _model(FEATURES["smear_v2_bigram_ve"])
    prompt = torch.tensor([[5, 6, 7], [1, 2, 3]])
    out = generate(model, 2, 10, first_tokens=prompt, seed=0)
    assert torch.equal(out[:, :3], prompt)
    assert torch.equal(out, generate(model, 2, 10, first_tokens=prompt, seed=0, use_cache=False))
    single = generate(model, 2, 4, first_tokens=torch.tensor([9, 10]), seed=0)
    assert single[:, 0].tolist() == [9, 10]


def test_ntk_rope_falls_back_to_full_recompute():
    model = _model(dict(rope_ntk_seq_len=8))
    assert supports_kv_cache(model, 8) and not supports_kv_cache(model, 12)
    out = generate(model, 2, 12, seed=0)  # silently uses full recompute
    assert torch.equal(out, generate(model, 2, 12, seed=0, use_cache=False))
    with pytest.raises(ValueError, match="rope_ntk_seq_len"):
        generate(model, 2, 12, seed=0, use_cache=True)
    with pytest.raises(ValueError, match="rope_ntk_seq_len"), torch.no_grad():
        _cached_logits(model, _sequence(T=12), [12])


def test_training_flag_restored_and_bad_arguments_rejected():
    model = _model({}, torch.float32).train()
    generate(model, 1, 3)
    assert model.training
    with pytest.raises(ValueError, match="temperature"):
        generate(model, 1, 3, temperature=0.0)
    with pytest.raises(ValueError, match="positive"):
        generate(model, 0, 3)
    cache = KVCache(1, 4, "cpu")
    cache.append_tokens(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="KVCache holds 4 positions"):
        cache.append_tokens(torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_cached_logits_track_the_full_forward():
    model, seq = _model(dict(ALL_ON, doc_isolation=True), torch.float32).cuda(), _sequence().cuda()
    with torch.autocast("cuda", torch.bfloat16):
        inc = _cached_logits(model, seq, [3] + [1] * 17)
        with torch.no_grad():
            ref = model.logits(seq)
    torch.testing.assert_close(inc, ref, atol=0.1, rtol=0.05)  # bf16 rounding only
    out = generate(model, 3, 16, seed=0, device="cuda")
    assert out.is_cuda and torch.equal(out, generate(model, 3, 16, seed=0, device="cuda"))
