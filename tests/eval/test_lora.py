"""Per-document LoRA TTT and phased global SGD (R0414/R0427): zero adapters = doc mode, reset, hooks, phases.

    python -m pytest tests/eval/test_lora.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.eval.config import EvalConfig
from pgolf.eval.legal import ScoreRecorder
from pgolf.eval.lora import DocumentLoRA, document_queue, phase_boundaries
from pgolf.eval.modes import document_spans, evaluate
from tests.eval.test_bpb import tbytes
from tests.eval.test_modes import BOS, V, run, stream, tiny_model

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
    lora.reset(warm_start_a=False, init_rows=torch.tensor([2, 2, 0]))  # slot j starts from pool entry rows[j]
    assert torch.equal(lora.head.A, lora.head.A_init[[2, 2, 0]])
    state = lora.a_state()
    lora.load_a(None)
    assert torch.equal(lora.head.A, lora.head.A_init)
    lora.load_a(state)
    assert torch.equal(lora.head.A, lora.head.A_init[[2, 2, 0]])
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


def test_document_queue_orders():
    spans = document_spans(stream(), BOS)  # lengths 40, 50, 110, 30, 69
    assert document_queue(spans, "stream") == [0, 1, 2, 3, 4]
    assert document_queue(spans, "length") == [2, 4, 1, 0, 3]
    assert document_queue([(0, 5), (5, 10), (10, 12)], "length") == [0, 1, 2]  # ties keep stream order
    with pytest.raises(ValueError, match="lora_order"):
        document_queue(spans, "random")


def test_length_order_scores_every_document_as_stream_order_does():
    """Batches [2, 4], [1, 0], [3] instead of [0, 1], [2, 3], [4]: with adapters reset per batch and start states
    keyed to the stream index, every target gets the same distribution (no state crosses documents)."""
    model, toks = tiny_model(), stream()
    recs = {}
    for order in ("stream", "length"):
        recs[order] = ScoreRecorder()
        cfg = EvalConfig(mode="ttt-lora", lora_order=order, ttt_lora_warm_start_a=False, ttt_lora_lr=5e-2, **LORA)
        evaluate(model, toks, tbytes(toks), cfg, seq_len=128, device="cpu", bos_id=BOS, recorder=recs[order])
    assert sorted(recs["length"].log_probs) == sorted(recs["stream"].log_probs) == list(range(299))
    for p in range(299):
        torch.testing.assert_close(recs["length"].log_probs[p][0], recs["stream"].log_probs[p][0],
                                   rtol=0, atol=1e-5)
    ref = run(model, toks, "doc", seq_len=128)  # and the adaptation did something
    res = run(model, toks, "ttt-lora", seq_len=128, lora_order="length", ttt_lora_warm_start_a=False,
              ttt_lora_lr=5e-2, **LORA)
    assert abs(res.val_loss - ref.val_loss) > 1e-4


def test_unsafe_length_order_combinations_are_refused():
    with pytest.raises(ValueError, match="eval.ttt_lora_warm_start_a=true is refused.*later in the stream"):
        EvalConfig(mode="ttt-lora", lora_order="length")  # warm start A is the default (R0427)
    with pytest.raises(ValueError, match="eval.mode='ttt-phased' is refused"):
        EvalConfig(mode="ttt-phased", lora_order="length", ttt_lora_warm_start_a=False)
    with pytest.raises(ValueError, match="lora_order='sorted' is not one of"):
        EvalConfig(lora_order="sorted")
    with pytest.raises(ValueError, match="ttt_lora_lanes=-1"):
        EvalConfig(ttt_lora_lanes=-1)
    EvalConfig(mode="sliding", lora_order="length")  # irrelevant to non-LoRA modes: accepted
    EvalConfig(mode="ttt-lora", lora_order="length", ttt_lora_warm_start_a=False)


def test_warm_start_lanes_in_one_process():
    """lanes=1: one A chain over all batches; lanes=2: batches 0, 2 and 1 (3 batches) are separate chains; both
    differ from no warm start, and lanes=3 (each batch its own chain) equals it."""
    model, toks = tiny_model(), stream()
    kw = dict(ttt_lora_lr=5e-2, **LORA)
    cold = run(model, toks, "ttt-lora", seq_len=128, ttt_lora_warm_start_a=False, **kw).val_loss
    one = run(model, toks, "ttt-lora", seq_len=128, ttt_lora_lanes=1, **kw).val_loss
    two = run(model, toks, "ttt-lora", seq_len=128, ttt_lora_lanes=2, **kw).val_loss
    three = run(model, toks, "ttt-lora", seq_len=128, ttt_lora_lanes=3, **kw).val_loss
    assert len({round(v, 9) for v in (cold, one, two)}) == 3
    assert three == pytest.approx(cold, rel=1e-12)
