"""val_bpb on CaseOps data divides by the byte sidecar in every eval mode (R0427's formula).

For each mode the scored distributions are recorded (eval/legal.py ScoreRecorder) and the record's formula is
recomputed from them: val_bpb = Σ target NLL / ln 2 / Σ sidecar bytes of the scored targets. It must match to 1e-9
relative, every target must be scored exactly once, and the bytes must be the sidecar's, not the LUT's; two gloo
processes give the one-process figures (marked slow). Needs ../shared/data/caseops-sample; skips without it.

    python -m pytest tests/data/test_caseops_eval.py -q
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pgolf.data.bytes import BYTES_SIDECAR, build_byte_lut, target_bytes_from_lut, validation_bytes
from pgolf.data.config import DataConfig
from pgolf.data.dataset import resolve_dataset
from pgolf.data.loader import load_validation_tokens
from pgolf.data.tokenizer import load_tokenizer
from tests.data.test_caseops import CASEOPS_SAMPLE, need_fixture

SEQ_LEN = 64
VAL_TOKENS = 1280  # ~2 documents of the sample: doc mode and the TTT modes see more than one document


@pytest.fixture(scope="module")
def caseops_val():
    need_fixture()
    tokens, tb, sp = _load_caseops_val()
    info = resolve_dataset(DataConfig(data_dir=str(CASEOPS_SAMPLE)))
    lut = build_byte_lut(sp, sp.vocab_size())
    assert validation_bytes(info, sp, tokens, lut)[1] == BYTES_SIDECAR
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
                               ttt_lora_chunk=SEQ_LEN, ttt_lora_rank=2, phased_prefix_docs=1, phased_num_phases=1,
                               max_seconds=0)


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


def _two_rank_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    from pgolf.eval.modes import evaluate

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tokens, tb, sp = _load_caseops_val()
        out = {}
        for mode in MODES:
            r = evaluate(tiny_model(sp.vocab_size()), tokens, tb, mode_config(mode), seq_len=SEQ_LEN, device="cpu",
                         bos_id=sp.bos_id())
            out[mode] = (r.val_loss, r.val_bpb, r.num_tokens, r.num_bytes)
        torch.save(out, f"{out_file}.{rank}")
        dist.barrier()  # no rank tears gloo down early (that can SIGABRT the other)
    finally:
        dist.destroy_process_group()


def _load_caseops_val():
    info = resolve_dataset(DataConfig(data_dir=str(CASEOPS_SAMPLE)))
    sp = load_tokenizer(info.tokenizer_path)
    tokens = load_validation_tokens(info.val_files, SEQ_LEN, VAL_TOKENS)
    tb, _ = validation_bytes(info, sp, tokens, build_byte_lut(sp, sp.vocab_size()))
    return tokens, tb, sp


@pytest.mark.slow
def test_two_gloo_ranks_score_the_sidecar_bytes_like_one_process(caseops_val, tmp_path):
    from pgolf.eval.modes import evaluate
    from tests.eval.test_bpb import run_ranks

    tokens, tb, sp = caseops_val
    run_ranks(_two_rank_worker, 2, str(tmp_path / "init"), str(tmp_path / "res"), timeout=300)
    ranks = [torch.load(f"{tmp_path / 'res'}.{r}") for r in range(2)]
    for mode in MODES:
        ref = evaluate(tiny_model(sp.vocab_size()), tokens, tb, mode_config(mode), seq_len=SEQ_LEN, device="cpu",
                       bos_id=sp.bos_id())
        for loss, bpb, n_tok, n_bytes in (res[mode] for res in ranks):
            assert (n_tok, n_bytes) == (ref.num_tokens, ref.num_bytes) == (tokens.numel() - 1, int(tb[1:].sum()))
            # SGD modes sum two partial gradients per step: fp32 rounding differs (tests/eval/test_distributed.py)
            assert bpb == pytest.approx(ref.val_bpb, rel=1e-7) and loss == pytest.approx(ref.val_loss, rel=1e-7)
