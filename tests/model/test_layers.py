"""Layers and extras: CastedLinear (weight_fn, hooks), RoPE, XSA, MLP activations, SmearGate, BigramHash.

    python -m pytest tests/model/test_layers.py -q
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pgolf.model.extras import BigramHash, SmearGate
from pgolf.model.layers import MLP, CastedLinear, CausalSelfAttention, Rotary, apply_rotary


def test_casted_linear_casts_to_input_dtype_and_applies_weight_fn():
    lin = CastedLinear(4, 3)
    x = torch.randn(2, 4)
    assert lin.weight_fn is None and lin.bias is None
    torch.testing.assert_close(lin(x), x @ lin.weight.T)
    assert lin(x.bfloat16()).dtype == torch.bfloat16 and lin.weight.dtype == torch.float32
    lin.weight_fn = torch.round
    torch.testing.assert_close(lin(x), x @ torch.round(lin.weight).T)
    assert set(lin.state_dict()) == {"weight"}


def test_mlp_proj_hook_sees_the_post_activation():
    seen = {}
    for act, ref in (("relu2", lambda h: F.relu(h).square()), ("leaky_relu2", lambda h: F.leaky_relu(h, 0.5).square())):
        mlp = MLP(8, 16, act)
        mlp.proj.register_forward_hook(lambda m, inp, out: seen.__setitem__("x", inp[0]))
        x = torch.randn(2, 3, 8)
        mlp(x)
        torch.testing.assert_close(seen["x"], ref(mlp.fc(x)))


def test_rotary_is_relative_and_partial():
    rot = Rotary(rope_dims=4, base=10000.0)
    cos, sin = rot(12, torch.device("cpu"))
    assert cos.shape == (1, 12, 1, 2)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=gen), torch.randn(1, 1, 1, 8, generator=gen)
    def score(i: int, j: int) -> torch.Tensor:
        qi = apply_rotary(q, cos[:, i:i + 1], sin[:, i:i + 1])
        kj = apply_rotary(k, cos[:, j:j + 1], sin[:, j:j + 1])
        return (qi * kj).sum()
    torch.testing.assert_close(score(5, 2), score(9, 6))  # depends on i − j only
    out = apply_rotary(q, cos[:, 3:4], sin[:, 3:4])
    assert torch.equal(out[..., 4:], q[..., 4:])  # dims past rope_dims pass through
    ntk = Rotary(rope_dims=4, base=10000.0, ntk_seq_len=8)
    torch.testing.assert_close(ntk(8, torch.device("cpu"))[0], rot(8, torch.device("cpu"))[0])
    assert not torch.allclose(ntk(12, torch.device("cpu"))[0], cos)  # longer than 8: NTK-scaled base


def test_xsa_removes_the_own_value_direction_per_group():
    gen = torch.Generator().manual_seed(1)
    y, v = torch.randn(2, 5, 4, 8, generator=gen), torch.randn(2, 5, 2, 8, generator=gen)
    out = CausalSelfAttention.exclusive(y, v)
    v_per_head = F.normalize(v, dim=-1).repeat_interleave(2, dim=2)  # query head h shares kv head h // 2
    assert (out * v_per_head).sum(-1).abs().max() < 1e-5
    torch.testing.assert_close(out + (y * v_per_head).sum(-1, keepdim=True) * v_per_head, y)


def test_smear_gates_match_their_formulas():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 6, generator=gen)
    idx = torch.tensor([[5, 1, 7, 8]])  # BOS at position 1
    v1 = SmearGate("v1", 6, 3, bos_id=1)
    with torch.no_grad():
        v1.gate.copy_(torch.randn(6, generator=gen))
    g = torch.sigmoid(v1.gate)
    prev = torch.stack([torch.zeros(6), torch.zeros(6), x[0, 1], x[0, 2]])  # zero at t=0 and at the BOS
    torch.testing.assert_close(v1(x, idx)[0], (1 - g) * x[0] + g * prev)
    v2 = SmearGate("v2", 6, 3, bos_id=1)
    torch.testing.assert_close(v2(x, idx), x)  # λ = 0 and W = 0: identity at init
    with torch.no_grad():
        v2.lam.fill_(0.7)
        v2.gate.weight.copy_(torch.randn(1, 3, generator=gen))
    gate = 0.7 * torch.sigmoid(x[0, :, :3] @ v2.gate.weight.T)  # (T, 1)
    torch.testing.assert_close(v2(x, idx)[0], x[0] + gate * prev)


def test_bigram_hash_formula_and_bos_fix():
    big = BigramHash(buckets=32, bigram_dim=4, dim=8, bos_id=1)
    idx = torch.tensor([[3, 9, 1, 40]])
    expected = [31, (36313 * 9 ^ 27191 * 3) % 31, 31, (36313 * 40 ^ 27191 * 1) % 31]
    assert big.hash(idx).tolist() == [expected]
    no_fix = BigramHash(buckets=32, bigram_dim=4, dim=8, bos_id=None)
    assert no_fix.hash(idx)[0, 2].item() == (36313 * 1 ^ 27191 * 9) % 31
    assert not big(idx).any()  # zero-init table


def test_rotary_cache_filled_under_inference_mode_serves_a_training_forward():
    rot = Rotary(rope_dims=4, base=10000.0)
    with torch.inference_mode():
        cos_inf, _ = rot(6, torch.device("cpu"))
    cos, sin = rot(6, torch.device("cpu"))  # same length: served from the cache
    assert cos is cos_inf and not cos.is_inference()
    x = torch.randn(1, 6, 1, 4, requires_grad=True)
    apply_rotary(x, cos, sin).square().sum().backward()  # raised "Inference tensors cannot be saved for backward"
    assert x.grad is not None and torch.isfinite(x.grad).all()
