"""check_legal: every shipped evaluation mode passes with full structural coverage; every illegal variant is caught
on every seed tried, including sparse leaks (the last chunk only), a returned score that differs from the recorded
one, an anti-causal model, and train-then-score; a model that ignores context is never passed.

    python -m pytest tests/eval/test_legal.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from pgolf.eval.config import EvalConfig
from pgolf.eval.legal import (
    ScoreRecorder, Unit, assert_legal, check_legal, choose_positions, coverage_units, informative_init, mode_eval_fn,
)
from pgolf.eval.modes import MODES, register_mode
from pgolf.model.config import GPTConfig
from pgolf.model.gpt import GPT
from tests.eval import legal_modes
from tests.eval.test_bpb import tbytes
from tests.eval.test_modes import BOS, V, stream, tiny_model

TOY = dict(stride=8, batch_seqs=8, ttt_chunk_tokens=64, ttt_epochs=1, ttt_batch_seqs=4, ttt_lr=0.05,
           ttt_lora_rank=4, ttt_lora_alpha=8.0, ttt_lora_chunk=16, ttt_lora_lr=1e-2, ttt_lora_batch_docs=2,
           phased_prefix_docs=3, phased_num_phases=2, phased_lr=0.05)
SEEDS = (0, 1, 2)

VARIANTS = [(mode, {}) for mode in tuple(MODES)[:6]] + [
    ("ttt-lora", dict(lora_order="length", ttt_lora_warm_start_a=False)),  # the records' length-sorted queue
    ("ttt-lora", dict(ttt_lora_lanes=2)),  # warm-start A in two chains
    ("ttt-phased", dict(ttt_lora_warm_start_a=False)),
    ("ttt-sgd", dict(ttt_freeze_blocks=1)),
]


def check(mode, model, toks, *, seq_len=32, chunk_tokens=None, **cfg):
    """check_legal on a built-in mode (by name, through EvalConfig.mode) or a ModeFn."""
    named = isinstance(mode, str)
    fn = mode_eval_fn(EvalConfig(**{**TOY, **cfg, **({"mode": mode} if named else {})}), seq_len=seq_len,
                      bos_id=BOS, mode=None if named else mode, chunk_tokens=chunk_tokens)
    return check_legal(fn, model, toks, tbytes)


@pytest.mark.parametrize("mode, extra", VARIANTS, ids=[f"{m}-{'-'.join(map(str, e.values()))}" for m, e in VARIANTS])
def test_every_shipped_mode_is_legal_with_full_coverage(mode, extra):
    toks = stream(200, starts=(0, 40, 90, 150))
    report = check(mode, tiny_model(), toks, **extra)
    assert report.passed, report.details
    assert set(report.checks) == {"causal", "normalized", "score_before_update", "single_pass", "returned_score",
                                  "informative"}
    assert "document" in report.coverage and all(c == n > 0 for c, n in report.coverage.values()), report.coverage
    kinds = {"standard": "window", "sliding": "window", "doc": "window", "ttt-sgd": "chunk", "ttt-lora": "lora-chunk",
             "ttt-phased": "phase"}
    assert kinds[mode] in report.coverage
    assert (report.updates > 0) == mode.startswith("ttt")  # the TTT path really ran


def test_coverage_puts_a_perturbation_in_every_unit():
    toks = stream(200, starts=(0, 40, 90, 150))
    cfg = EvalConfig(**TOY)
    units = coverage_units(toks, cfg, "ttt-phased", seq_len=32, bos_id=BOS)
    positions, cov = choose_positions(units, toks, BOS)
    assert all(any(u.lo <= t <= u.hi for t in positions) for u in units)
    assert cov["document"] == (4, 4) and cov["phase"] == (3, 3)  # boundaries after 1 and 3 of the 3 prefix docs
    assert cov["lora-chunk"][1] == sum(math.ceil(n / 16) for n in (40, 50, 60, 49))
    assert all(toks[t] != BOS for t in positions)
    assert choose_positions([Unit("chunk", 5, 9), Unit("chunk", 8, 12)], toks, None)[0] == [9]  # 9 covers both
    assert choose_positions([Unit("chunk", 5, 9), Unit("window", 10, 12)], toks, None)[1] == {
        "chunk": (1, 1), "window": (1, 1)}


# ------------------------------------------------------------------------------------------------ illegal variants

@pytest.mark.parametrize("n_chunks", [4, 16])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_leak_in_the_last_chunk_only_is_caught(n_chunks, seed):
    T = 64
    toks = stream(T + 1, starts=(0, 25, 45), seed=seed + 1)
    C = T // n_chunks
    common = dict(seq_len=16, stride=min(8, C), chunk_tokens=C, ttt_chunk_tokens=C, ttt_lr=0.1)
    for mode in (legal_modes.train_last_chunk_first, legal_modes.peek_last_chunk):
        report = check(mode, tiny_model(seed), toks, **common)
        assert not report.checks["causal"], (mode.__name__, report.details)
        assert report.checks["score_before_update"] and report.checks["single_pass"]
        assert report.coverage["chunk"] == (n_chunks, n_chunks)
        last = (n_chunks - 1) * T // n_chunks
        assert any(f"perturbing token {t} changed" in d for d in report.details for t in range(last + 1, T + 1))
    if seed == SEEDS[0]:  # the same mode without the leak passes
        assert check(legal_modes.legal_chunked_sgd, tiny_model(seed), toks, **common).passed


@pytest.mark.parametrize("seed", SEEDS)
def test_reported_legal_but_returned_cheat_is_caught(seed):
    toks = stream(129, starts=(0, 50, 90), seed=seed + 1)
    cfg = EvalConfig(**{**TOY, "ttt_chunk_tokens": 32, "ttt_lr": 0.1})
    fn = legal_modes.returned_cheat(cfg, seq_len=16, bos_id=BOS)
    report = check_legal(fn, tiny_model(seed), toks, tbytes, positions=[100])
    assert report.checks["causal"] and report.checks["score_before_update"] and report.checks["single_pass"]
    assert not report.checks["returned_score"] and not report.passed
    assert "its recorded distributions give val_loss" in report.details[0]
    report = check(legal_modes.tampered_tally, tiny_model(seed), toks, seq_len=16, chunk_tokens=32,
                   ttt_chunk_tokens=32, ttt_lr=0.1)
    assert not report.checks["returned_score"] and report.checks["causal"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["standard", "sliding", "ttt-sgd"])
def test_an_anti_causal_model_is_caught(mode, seed):
    report = check(mode, legal_modes.Flipped(tiny_model(seed)), stream(130, seed=seed + 1))
    assert not report.checks["causal"] and not report.passed


def test_a_model_that_ignores_context_is_never_passed():
    """A fresh GPT (zero-initialised output projections) predicts from the current token only (plus smear): an
    anti-causal version of it looks causal, so the checker must call the check inconclusive, not legal."""
    fresh = GPT(GPTConfig(vocab_size=V, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, smear_gate="v1",
                          bos_id=BOS))
    for model in (fresh, legal_modes.Flipped(fresh)):
        report = check("sliding", model, stream(130))
        assert not report.passed and not report.checks["informative"]
        assert "ignores context" in " ".join(report.details)
    assert check("sliding", legal_modes.Flipped(informative_init(fresh)), stream(130)).checks == {
        "causal": False, "normalized": True, "score_before_update": True, "single_pass": True,
        "returned_score": True, "informative": True}


@pytest.mark.parametrize("seed", SEEDS)
def test_train_then_score_is_caught(seed):
    toks = stream(200, starts=(0, 90), seed=seed + 1)
    honest = check(legal_modes.train_then_score, tiny_model(seed), toks, chunk_tokens=64)
    assert not honest.checks["score_before_update"] and not honest.checks["causal"]
    assert honest.checks["normalized"] and honest.checks["single_pass"] and honest.checks["returned_score"]
    silent = check(legal_modes.train_then_score_unreported, tiny_model(seed), toks, chunk_tokens=64)
    assert not silent.checks["causal"] and silent.checks["score_before_update"]


def test_length_order_with_warm_start_a_is_caught():
    """Why EvalConfig refuses it: A trained on document 2 carries into document 0, earlier in the stream."""
    cfg = EvalConfig(mode="ttt-lora", **{**TOY, "ttt_lora_lr": 5e-2}, lora_order="length",
                     ttt_lora_warm_start_a=False)
    object.__setattr__(cfg, "ttt_lora_warm_start_a", True)  # bypass the refusal
    toks = stream(200, starts=(0, 40, 60, 150))  # lengths 40, 20, 90, 49: the queue is [2, 3], [0, 1]
    report = check_legal(mode_eval_fn(cfg, seq_len=32, bos_id=BOS), tiny_model(), toks, tbytes)
    assert not report.checks["causal"] and report.checks["score_before_update"] and report.checks["single_pass"]
    with pytest.raises(ValueError, match="ttt_lora_warm_start_a=true is refused"):
        EvalConfig(mode="ttt-lora", lora_order="length")


def test_lookahead_and_bad_distributions_without_a_model_api():
    """Plain eval_fns (no ModeContext): a peek at the target fails causality from the distributions alone;
    unnormalised and double scoring fail their checks; a fn returning nothing fails returned_score."""

    def peek(model, tokens, target_bytes, recorder):
        T = tokens.numel() - 1
        logp = torch.full((T, V), -math.log(V))
        logp[torch.arange(T), tokens[1:]] += 0.5  # boosts the realized token
        recorder.record_scores(torch.arange(T), torch.log_softmax(logp, -1))

    def bad(model, tokens, target_bytes, recorder):
        T = tokens.numel() - 1
        recorder.record_scores(torch.arange(T), torch.full((T, V), -1.0))  # not a distribution
        recorder.record_scores(torch.tensor([3]), torch.log_softmax(torch.zeros(1, V), -1))  # rescored

    report = check_legal(peek, tiny_model(), stream(40), tbytes)  # no structure known: every token perturbed
    assert report.coverage == {"token": (39, 39)} and len(report.positions) == 39
    assert not report.checks["causal"] and report.checks["normalized"] and not report.checks["returned_score"]
    report = check_legal(bad, tiny_model(), stream(60), tbytes, positions=[5])
    assert not report.checks["normalized"] and not report.checks["single_pass"] and report.checks["causal"]


def test_a_registered_third_party_mode_is_checked_by_name():
    register_mode("test-legal-sgd", legal_modes.legal_chunked_sgd)
    report = assert_legal(mode_eval_fn(EvalConfig(**{**TOY, "mode": "test-legal-sgd"}), seq_len=32, bos_id=BOS,
                                       chunk_tokens=64), tiny_model(), stream(200), tbytes)
    assert report.coverage["chunk"] == (4, 4) and report.updates > 0
    register_mode("test-peek", legal_modes.peek_last_chunk)
    with pytest.raises(AssertionError, match="illegal evaluation \\(causal\\)"):
        assert_legal(mode_eval_fn(EvalConfig(**{**TOY, "mode": "test-peek"}), seq_len=32, bos_id=BOS,
                                  chunk_tokens=64), tiny_model(), stream(200), tbytes)


def test_recorder_orders_scores_and_updates():
    rec = ScoreRecorder()
    rec.record_scores(torch.tensor([0, 1]), torch.zeros(2, V))
    rec.record_update([0, 1])
    assert [k for k, _ in rec.events] == ["score", "update"] and sorted(rec.log_probs) == [0, 1]
    assert rec.num_updates() == 1 and torch.isnan(rec.matrix(3, V)[2]).all()
