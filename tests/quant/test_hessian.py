"""quant/hessian.py: streamed H = batch H, q/k/v share H, head H from GPT.hidden, looped layers sum every pass.

    python -m pytest tests/quant/test_hessian.py -q
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.model.gpt import GPT
from pgolf.model.layers import CastedLinear
from pgolf.quant.hessian import HessianAccumulator, Hessians, collect_hessians
from tests.model.conftest import ALL_ON, randomize, tiny_config

LOOPED = dict(num_layers=5, num_loops=2, loop_start=1, loop_end=2)


def _model(**overrides) -> GPT:
    torch.manual_seed(0)
    return randomize(GPT(tiny_config(**overrides)).eval())


def _batches(n: int = 3, B: int = 2, T: int = 16, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (B, T), generator=gen) for _ in range(n)]


def _linear_names(model: GPT) -> set[str]:
    return {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, CastedLinear)}


def test_streamed_accumulation_equals_one_concatenated_batch():
    xs = [torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    streamed, whole = HessianAccumulator(), HessianAccumulator()
    for x in xs:
        streamed.update("w", x)
    whole.update("w", torch.cat(xs))
    torch.testing.assert_close(streamed.result()["w"], whole.result()["w"], rtol=1e-5, atol=1e-5)
    x2 = torch.cat(xs).reshape(-1, 16).double()
    torch.testing.assert_close(streamed.result(divide_by=5)["w"].double(), x2.T @ x2 / 5, rtol=1e-5, atol=1e-5)
    assert streamed.rows["w"] == whole.rows["w"] == 5 * 3 * 7


def test_collect_over_k_batches_equals_one_concatenated_batch():
    model, batches = _model(**ALL_ON), _batches(4)
    model.set_looping(True)
    streamed = collect_hessians(model, batches)
    whole = collect_hessians(model, [torch.cat(batches)])
    assert streamed.num_batches == 4 and whole.num_batches == 1
    assert streamed.num_tokens == whole.num_tokens == 4 * 2 * 16
    assert streamed.h.keys() == whole.h.keys()
    for name in streamed.h:  # H = Σ XᵀX / n_batches
        torch.testing.assert_close(streamed.h[name] * 4, whole.h[name], rtol=1e-4, atol=1e-4)


def test_every_casted_linear_is_collected_and_hessians_are_symmetric_psd():
    model = _model(**ALL_ON)  # untied: lm_head gets the head Hessian, tok_emb none
    model.set_looping(True)
    hs = collect_hessians(model, _batches())
    assert isinstance(hs, Hessians) and hs.seconds >= 0
    assert set(hs.h) == _linear_names(model)
    assert "tok_emb.weight" not in hs.h
    for name, H in hs.h.items():
        w = model.get_parameter(name)
        assert H.dtype == torch.float32 and H.shape == (w.shape[1], w.shape[1]), name
        torch.testing.assert_close(H, H.T, rtol=0, atol=1e-5 * H.abs().max().item())
        eig = torch.linalg.eigvalsh(H.double())
        assert eig.min() >= -1e-6 * eig.max(), name


def test_q_k_v_share_one_hessian():
    hs = collect_hessians(_model(**ALL_ON), _batches())
    for i in range(5):
        q = hs.h[f"blocks.{i}.attn.c_q.weight"]
        assert torch.equal(q, hs.h[f"blocks.{i}.attn.c_k.weight"])
        assert torch.equal(q, hs.h[f"blocks.{i}.attn.c_v.weight"])
        assert not torch.equal(q, hs.h[f"blocks.{i}.mlp.fc.weight"])  # the MLP reads the post-attention residual


def test_tied_embedding_hessian_is_the_final_hidden_state_second_moment():
    model, batches = _model(), _batches()
    hs = collect_hessians(model, batches)
    C = model.cfg.model_dim
    with torch.no_grad():
        hid = torch.cat([model.hidden(b).reshape(-1, C) for b in batches]).double()  # (N, C)
    H = hs.h["tok_emb.weight"]
    assert H.shape == (C, C)
    torch.testing.assert_close(H.double(), hid.T @ hid / len(batches), rtol=1e-5, atol=1e-5)
    assert "tok_emb.weight" not in collect_hessians(model, batches, include_embedding=False).h


def test_mlp_down_projection_sees_the_post_activation():
    model, batches = _model(mlp_act="leaky_relu2"), _batches()
    mlp = model.blocks[1].mlp
    seen: list[torch.Tensor] = []
    handle = mlp.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        hs = collect_hessians(model, batches)
    finally:
        handle.remove()
    u = torch.cat([s.reshape(-1, s.size(-1)) for s in seen]).double()  # (N, C) MLP input
    act = F.leaky_relu(u @ mlp.fc.weight.double().T, 0.5).square()  # (N, hidden)
    torch.testing.assert_close(hs.h["blocks.1.mlp.fc.weight"].double(), u.T @ u / 3, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hs.h["blocks.1.mlp.proj.weight"].double(), act.T @ act / 3, rtol=1e-4, atol=1e-4)


def test_looped_layers_accumulate_every_pass():
    model, batches = _model(**LOOPED), _batches()
    model.set_looping(True)  # virtual order 0,1,2,1,2,1,2,3,4: layers 1..2 run three times
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(5)}
    handles = [model.blocks[i].attn.c_q.register_forward_pre_hook(
        lambda m, args, i=i: inputs[i].append(args[0].detach())) for i in range(5)]
    try:
        looped = collect_hessians(model, batches)
    finally:
        for h in handles:
            h.remove()
    assert [len(inputs[i]) for i in range(5)] == [3, 9, 9, 3, 3]  # hooks fire once per pass per batch
    for i in range(5):
        x = torch.cat([t.reshape(-1, t.size(-1)) for t in inputs[i]]).double()
        torch.testing.assert_close(looped.h[f"blocks.{i}.attn.c_q.weight"].double(), x.T @ x / 3,
                                   rtol=1e-5, atol=1e-5)
    model.set_looping(False)
    flat = collect_hessians(model, batches)
    torch.testing.assert_close(flat.h["blocks.0.attn.c_q.weight"], looped.h["blocks.0.attn.c_q.weight"])
    # a looped layer's H grows with the extra passes (trace = Σ‖x‖² over every pass)
    assert looped.h["blocks.1.attn.c_q.weight"].trace() > 2 * flat.h["blocks.1.attn.c_q.weight"].trace()


def test_min_numel_filter_hook_cleanup_and_errors():
    model = _model(bigram_vocab_size=32).train()
    hs = collect_hessians(model, _batches(), min_numel=32 * 64)  # keeps mlp.fc/proj (32×64) and tok_emb (64×32)
    assert set(hs.h) == {f"blocks.{i}.mlp.{n}.weight" for i in range(4) for n in ("fc", "proj")} | {"tok_emb.weight"}
    assert model.training  # restored
    assert all(not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(TypeError, match=r"\(B, T\) token tensors"):
        collect_hessians(model, [torch.zeros(16, dtype=torch.long)])
    assert all(not m._forward_pre_hooks for m in model.modules())  # removed on error too
    with pytest.raises(ValueError, match="no calibration batches"):
        collect_hessians(model, [])
    pairs = collect_hessians(model, [(b, b) for b in _batches()])  # (x, y) loader pairs: x is used
    torch.testing.assert_close(pairs.h["tok_emb.weight"], collect_hessians(model, _batches()).h["tok_emb.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_autocast_accumulates_in_fp32():
    model = _model(**ALL_ON).cuda()
    hs = collect_hessians(model, [b.cuda() for b in _batches()])
    ref = collect_hessians(model.cpu(), _batches())
    for name, H in hs.h.items():
        assert H.dtype == torch.float32 and H.is_cuda
        torch.testing.assert_close(H.cpu(), ref.h[name], rtol=0.05, atol=0.05 * ref.h[name].abs().max().item())
