"""Per-document LoRA TTT and phased global SGD (R0414/R0427): zero adapters = doc mode, reset, hooks, phases.

    python -m pytest tests/eval/test_lora.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.eval.lora import DocumentLoRA, phase_boundaries
from tests.eval.test_modes import run, stream, tiny_model

LORA = dict(ttt_lora_rank=4, ttt_lora_alpha=8.0, ttt_lora_chunk=16, ttt_lora_batch_docs=2, phased_prefix_docs=3,
            phased_num_phases=2, ttt_chunk_tokens=64, ttt_batch_seqs=4)


@pytest.mark.parametrize("mode", ["ttt-lora", "ttt-phased"])
def test_zero_lr_equals_doc_mode(mode):
    """B starts at zero and never moves: every document is scored exactly as doc mode scores it (seq_len ≥ doc)."""
    model, toks = tiny_model(), stream()
    res = run(model, toks, mode, seq_len=128, ttt_lora_lr=0.0, phased_lr=0.0, **LORA)
    ref = run(model, toks, "doc", seq_len=128)
    assert (res.num_tokens, res.num_bytes) == (ref.num_tokens, ref.num_bytes) == (299, ref.num_bytes)
    assert res.val_loss == pytest.approx(ref.val_loss, rel=1e-6)


@pytest.mark.parametrize("mode", ["ttt-lora", "ttt-phased"])
def test_adaptation_changes_scores_not_the_model(mode):
    model, toks = tiny_model(), stream()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = run(model, toks, mode, seq_len=128, ttt_lora_lr=1e-2, phased_lr=0.05, **LORA)
    ref = run(model, toks, "doc", seq_len=128)
    assert res.num_tokens == 299 and res.val_loss != pytest.approx(ref.val_loss, rel=1e-7)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    if mode == "ttt-phased":
        assert "seconds_global_sgd" in res.timing


@pytest.mark.parametrize("looping", [False, True])
def test_reset_restores_base_scores(looping):
    model = tiny_model(num_layers=3, num_loops=1, loop_start=1, loop_end=1)
    model.set_looping(looping)
    x = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    base = model.logits(x)
    lora = DocumentLoRA(model, bsz=3, rank=4, alpha=8.0)
    assert len(lora.q) == (4 if looping else 3)  # one adapter per virtual layer slot
    rows = torch.tensor([2, 0])
    torch.testing.assert_close(lora.logits(model, x, rows), base, rtol=0, atol=1e-6)  # B = 0 at start
    with torch.no_grad():
        for name, p in lora.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    adapted = lora.logits(model, x, rows)
    assert (adapted - base).abs().max() > 1e-3
    A_trained = lora.q[0].A.detach().clone()
    lora.reset(warm_start_a=True)  # R0427: only B is zeroed; A keeps its values
    assert torch.equal(lora.q[0].A, A_trained) and not lora.q[0].B.any()
    torch.testing.assert_close(lora.logits(model, x, rows), base, rtol=0, atol=1e-6)
    lora.reset(warm_start_a=False)
    assert torch.equal(lora.q[0].A, lora.q[0].A_init)
    torch.testing.assert_close(model.logits(x), base, rtol=0, atol=0)  # hooks are inert outside lora.logits
    lora.detach_hooks()


def test_phase_boundaries():
    assert phase_boundaries(50_000, 2500, 3) == [833, 1666, 2500]  # R0427; R0414 666/1333/2000
    assert phase_boundaries(10, 6, 3) == [2, 4, 6]
    assert phase_boundaries(2, 6, 3) == [1, 2]
    assert phase_boundaries(0, 6, 3) == []


def test_chunk_longer_than_context_is_rejected():
    with pytest.raises(ValueError, match="ttt_lora_chunk"):
        run(tiny_model(), stream(), "ttt-lora", seq_len=8, **LORA)
