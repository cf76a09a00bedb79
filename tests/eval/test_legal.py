"""check_legal: every evaluation mode passes the four §5.1 conditions; illegal modes are caught.

    python -m pytest tests/eval/test_legal.py -q
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pgolf.eval.config import EvalConfig
from pgolf.eval.legal import ScoreRecorder, check_legal, mode_eval_fn
from pgolf.eval.modes import MODES
from pgolf.eval.score import Tally, score_windows, window_table
from pgolf.eval.ttt import sgd_on_rows, trainable_parameters, training_rows
from tests.eval.test_bpb import tbytes
from tests.eval.test_modes import BOS, V, stream, tiny_model

TOY = dict(stride=8, batch_seqs=8, ttt_chunk_tokens=64, ttt_epochs=1, ttt_batch_seqs=4, ttt_lr=0.05,
           ttt_lora_rank=4, ttt_lora_alpha=8.0, ttt_lora_chunk=8, ttt_lora_lr=1e-2, ttt_lora_batch_docs=2,
           phased_prefix_docs=3, phased_num_phases=2, phased_lr=0.05)


VARIANTS = [(mode, {}) for mode in MODES] + [
    ("ttt-lora", dict(lora_order="length", ttt_lora_warm_start_a=False)),  # the records' length-sorted queue
    ("ttt-lora", dict(ttt_lora_lanes=2)),  # warm-start A in two chains
    ("ttt-phased", dict(ttt_lora_warm_start_a=False)),
    ("ttt-sgd", dict(ttt_freeze_blocks=1)),
]


@pytest.mark.parametrize("mode, extra", VARIANTS, ids=[f"{m}-{'-'.join(map(str, e.values()))}" for m, e in VARIANTS])
def test_every_mode_is_legal(mode, extra):
    toks = stream(200, starts=(0, 40, 90, 150))
    # positions include a BOS (60 → none, 90 → removed) and the end of a TTT chunk / LoRA chunk
    report = check_legal(mode_eval_fn(EvalConfig(mode=mode, **{**TOY, **extra}), seq_len=32, bos_id=BOS),
                         tiny_model, toks, tbytes(toks), positions=[20, 90, 127])
    assert report.passed, report.details
    assert set(report.checks) == {"causal", "normalized", "score_before_update", "single_pass"}


# documents 40, 20, 90, 49 tokens long: the length queue is [2, 3], [0, 1], so slot 0 goes from document 2 to 0
LENGTH_STARTS = (0, 40, 60, 150)


def test_length_order_is_legal_when_nothing_crosses_documents():
    """Perturbing a later document (100, 170) or removing a BOS (60, which re-sorts the queue) changes nothing
    earlier: adapters are fully reset per batch and a start state depends only on the stream index."""
    cfg = EvalConfig(mode="ttt-lora", **{**TOY, "ttt_lora_lr": 5e-2}, lora_order="length",
                     ttt_lora_warm_start_a=False)
    report = check_legal(mode_eval_fn(cfg, seq_len=32, bos_id=BOS), tiny_model, stream(200, starts=LENGTH_STARTS),
                         tbytes(stream(200, starts=LENGTH_STARTS)), positions=[60, 100, 170])
    assert report.passed, report.details


def test_length_order_with_warm_start_a_is_caught():
    """Why EvalConfig refuses it: A trained on document 2 carries into document 0, earlier in the stream."""
    cfg = EvalConfig(mode="ttt-lora", **{**TOY, "ttt_lora_lr": 5e-2}, lora_order="length",
                     ttt_lora_warm_start_a=False)
    object.__setattr__(cfg, "ttt_lora_warm_start_a", True)  # bypass the refusal
    report = check_legal(mode_eval_fn(cfg, seq_len=32, bos_id=BOS), tiny_model, stream(200, starts=LENGTH_STARTS),
                         tbytes(stream(200, starts=LENGTH_STARTS)), positions=[100])
    assert report.checks == {"causal": False, "normalized": True, "score_before_update": True, "single_pass": True}
    assert "perturbing token 100 changed the distribution scoring target position" in report.details[0]
    with pytest.raises(ValueError, match="ttt_lora_warm_start_a=true is refused"):
        EvalConfig(mode="ttt-lora", lora_order="length")


def train_then_score(model, tokens, target_bytes, recorder, chunk=64, seq_len=32, lr=0.5):
    """ILLEGAL (issue #677 style): train on a chunk, then score that same chunk with the adapted model."""
    model = copy.deepcopy(model)
    params = trainable_parameters(model, 0)
    opt = torch.optim.SGD(params, lr=lr)
    T = tokens.numel() - 1
    tally = Tally(target_bytes, torch.device("cpu"), recorder)
    windows = window_table(T, seq_len, 8)
    for ci in range(math.ceil(T / chunk)):
        sgd_on_rows(model, tokens, training_rows(ci * chunk, min((ci + 1) * chunk, T), seq_len), opt, params,
                    seq_len=seq_len, batch_seqs=4, lr=lr, grad_clip=1.0, recorder=recorder)
        score_windows(model, tokens, windows[windows[:, 2] // chunk == ci], tally, seq_len=seq_len, batch_seqs=8)


def test_train_then_score_is_caught():
    report = check_legal(train_then_score, tiny_model, stream(200, starts=(0, 90)), tbytes(stream(200, starts=(0, 90))), positions=[30, 100])
    assert not report.passed
    assert not report.checks["score_before_update"] and not report.checks["causal"]
    assert report.checks["normalized"] and report.checks["single_pass"]
    assert any("perturbing token" in d for d in report.details)


def test_lookahead_is_caught_without_self_reporting():
    """A mode that peeks at the target (a 'cache keyed on x_t') fails causality from the distributions alone."""

    def peek(model, tokens, target_bytes, recorder):
        T = tokens.numel() - 1
        logp = torch.full((T, V), -math.log(V))
        logp[torch.arange(T), tokens[1:]] += 0.5  # boosts the realized token
        recorder.record_scores(torch.arange(T), torch.log_softmax(logp, -1))

    report = check_legal(peek, tiny_model, stream(100), tbytes(stream(100)), positions=[10, 50])
    assert report.checks == {"causal": False, "normalized": True, "score_before_update": True, "single_pass": True}


def test_unnormalized_and_double_scoring_are_caught():
    def bad(model, tokens, target_bytes, recorder):
        T = tokens.numel() - 1
        recorder.record_scores(torch.arange(T), torch.full((T, V), -1.0))  # not a distribution
        recorder.record_scores(torch.tensor([3]), torch.log_softmax(torch.zeros(1, V), -1))  # rescored

    report = check_legal(bad, tiny_model, stream(60), tbytes(stream(60)), positions=[5])
    assert not report.checks["normalized"] and not report.checks["single_pass"] and report.checks["causal"]
    assert not report.passed


def test_recorder_orders_scores_and_updates():
    rec = ScoreRecorder()
    rec.record_scores(torch.tensor([0, 1]), torch.zeros(2, V))
    rec.record_update([0, 1])
    assert [k for k, _ in rec.events] == ["score", "update"] and sorted(rec.log_probs) == [0, 1]
