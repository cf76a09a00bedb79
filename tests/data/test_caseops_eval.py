"""val_bpb on CaseOps data divides by the byte sidecar in every eval mode (R0427's formula).

For each mode the scored distributions are recorded (eval/legal.py ScoreRecorder) and the record's formula is
recomputed from them: val_bpb = Σ target NLL / ln 2 / Σ sidecar bytes of the scored targets. It must match to 1e-9
relative, every target must be scored exactly once, and the bytes must be the sidecar's, not the LUT's. Needs
../shared/data/caseops-sample; skips without it.

    python -m pytest tests/data/test_caseops_eval.py -q
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pgolf.data.bytes import BYTES_SIDECAR, build_byte_lut, target_bytes_from_lut, validation_bytes
from pgolf.data.config import DataConfig
from pgolf.data.corpus import resolve_dataset
from pgolf.data.loader import load_validation_tokens
from pgolf.data.tokenizer import load_tokenizer
from tests.data.test_caseops import CASEOPS_SAMPLE, need_fixture

SEQ_LEN = 64
VAL_TOKENS = 1280  # ~2 documents of the sample: doc mode and the TTT modes see more than one document


@pytest.fixture(scope="module")
def caseops_val():
    need_fixture()
    info = resolve_dataset(DataConfig(data_dir=str(CASEOPS_SAMPLE)))
    sp = load_tokenizer(info.tokenizer_path)
    tokens = load_validation_tokens(info.val_files, SEQ_LEN, VAL_TOKENS)
    lut = build_byte_lut(sp, sp.vocab_size())
    tb, accounting = validation_bytes(info, sp, tokens, lut)
    assert accounting == BYTES_SIDECAR
    assert int(tb[1:].sum()) < int(target_bytes_from_lut(lut, tokens)[1:].sum())  # the LUT over-counts
    return tokens, tb, sp


def tiny_model(vocab: int):
    from pgolf.model.config import GPTConfig
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, bos_id=1))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and not p.abs().sum():
                p.normal_(0, 0.05)
    return model.eval()


def mode_config(mode: str):
    from pgolf.eval.config import EvalConfig

    return dataclasses.replace(EvalConfig(), mode=mode, stride=16, batch_seqs=4, ttt_chunk_tokens=4 * SEQ_LEN,
                               ttt_lora_chunk=SEQ_LEN, ttt_lora_rank=2, phased_prefix_docs=1, phased_num_phases=1, max_seconds=0)


MODES = ("standard", "sliding", "doc", "ttt-sgd", "ttt-lora", "ttt-phased")


@pytest.mark.parametrize("mode", MODES)
def test_val_bpb_is_nll_over_sidecar_bytes_in_every_mode(caseops_val, mode):
    from pgolf.eval.legal import ScoreRecorder
    from pgolf.eval.modes import evaluate

    tokens, tb, sp = caseops_val
    recorder = ScoreRecorder()
    res = evaluate(tiny_model(sp.vocab_size()), tokens, tb, mode_config(mode), seq_len=SEQ_LEN, device="cpu",
                   bos_id=sp.bos_id(), recorder=recorder)
    positions = sorted(recorder.log_probs)
    assert positions == list(range(tokens.numel() - 1))  # every target once ...
    assert all(len(v) == 1 for v in recorder.log_probs.values())  # ... and only once
    nll = sum(-float(recorder.log_probs[p][0][int(tokens[p + 1])]) for p in positions)
    side = sum(int(tb[p + 1]) for p in positions)
    assert res.num_bytes == side == int(tb[1:].sum())
    assert res.num_tokens == len(positions)
    assert res.val_bpb == pytest.approx(nll / math.log(2.0) / side, rel=1e-9)
