"""Full-model SGD score-first TTT (R0323): lr 0 = sliding, one score per target, caller's model untouched.

    python -m pytest tests/eval/test_ttt.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from pgolf.eval.config import EvalConfig
from pgolf.eval.legal import ScoreRecorder
from pgolf.eval.modes import evaluate
from pgolf.eval.ttt import cosine_lr, trainable_parameters, training_rows
from tests.eval.test_bpb import tbytes
from tests.eval.test_modes import BOS, run, stream, tiny_model

TTT = dict(stride=8, batch_seqs=8, ttt_chunk_tokens=64, ttt_epochs=2, ttt_batch_seqs=4)


def test_lr_zero_equals_sliding():
    model, toks = tiny_model(), stream()
    ttt = run(model, toks, "ttt-sgd", ttt_lr=0.0, **TTT)
    ref = run(model, toks, "sliding", stride=8)
    assert (ttt.num_tokens, ttt.num_bytes) == (ref.num_tokens, ref.num_bytes)
    assert ttt.val_loss == pytest.approx(ref.val_loss, rel=1e-9)


def test_training_changes_scores_but_not_the_callers_model():
    model, toks = tiny_model(), stream()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rec = ScoreRecorder()
    res = evaluate(model, toks, tbytes(toks), EvalConfig(mode="ttt-sgd", ttt_lr=0.1, **TTT), seq_len=32,
                   device="cpu", bos_id=BOS, recorder=rec)
    ref = run(model, toks, "sliding", stride=8)
    assert res.num_tokens == 299 and sorted(rec.log_probs) == list(range(299))
    assert all(len(v) == 1 for v in rec.log_probs.values())  # each target scored exactly once
    assert res.val_loss != pytest.approx(ref.val_loss, rel=1e-6)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    updates = [pos for kind, pos in rec.events if kind == "update"]
    chunks = math.ceil(299 / 64)
    assert len(updates) == (chunks - 1) * 2 * 1  # no training after the last chunk; 2 epochs × 1 batch per chunk
    assert "seconds_train" in res.timing


def test_cosine_schedule_and_rows():
    assert cosine_lr(0.002, 0, 5) == pytest.approx(0.002)
    assert cosine_lr(0.002, 2, 5) == pytest.approx(0.001)
    assert cosine_lr(0.002, 4, 5) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(0.002, 0, 1) == pytest.approx(0.002)
    assert training_rows(64, 150, 32).tolist() == [[64, 96], [96, 128], [128, 150]]


def test_freeze_blocks():
    model = tiny_model()
    params = trainable_parameters(model, 1)
    frozen = {id(p) for p in model.blocks[0].parameters()}
    assert frozen and not frozen & {id(p) for p in params}
    assert all(not p.requires_grad for p in model.blocks[0].parameters())
    assert len(params) == len(list(model.parameters())) - len(frozen)
