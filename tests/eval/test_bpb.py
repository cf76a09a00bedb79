"""val_bpb (eval/score.py through the "standard" mode): window partition, metric invariants, sliding = brute force,
target_bytes = the LUT's count, and distributed = single process.

    python -m pytest tests/eval/test_bpb.py -q
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pgolf.data.bytes import ByteLUT
from pgolf.eval.config import EvalConfig
from pgolf.eval.modes import evaluate
from pgolf.eval.score import lut_target_bytes, sliding_windows

V = 64


def make_lut(vocab: int = V, seed: int = 0) -> ByteLUT:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 5, (vocab,), generator=g).to(torch.int16)
    space = torch.rand(vocab, generator=g) < 0.4
    boundary = torch.zeros(vocab, dtype=torch.bool)
    boundary[:2] = True  # e.g. pad/bos: 0 bytes, and no space counted after them
    base[:2] = 0
    space[:2] = False
    return ByteLUT(base_bytes=base, has_leading_space=space, is_boundary=boundary)


def brute_bytes(lut: ByteLUT, tokens: torch.Tensor) -> int:
    total = 0
    for prev, tgt in zip(tokens[:-1].tolist(), tokens[1:].tolist()):
        total += int(lut.base_bytes[tgt]) + int(bool(lut.has_leading_space[tgt]) and not bool(lut.is_boundary[prev]))
    return total


def tbytes(tokens: torch.Tensor, lut: ByteLUT | None = None) -> torch.Tensor:
    """target_bytes of `tokens` under `lut` (default make_lut())."""
    return lut_target_bytes(make_lut() if lut is None else lut, tokens)


def score_standard(model, tokens, lut, *, seq_len, stride=0, batch_seqs=32):
    """The plain windowed val_bpb (mode "standard") on CPU."""
    return evaluate(model, tokens, tbytes(tokens, lut), EvalConfig(mode="standard", stride=stride,
                    batch_seqs=batch_seqs), seq_len=seq_len, device="cpu", bos_id=1)


def tokens_of(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed))


class UniformLM(nn.Module):
    """Predicts the uniform distribution: NLL = log V at every position."""

    def logits(self, idx):
        return torch.zeros(*idx.shape, V)


class TinyCausalLM(nn.Module):
    """One causal attention layer with learned absolute positions: a token's loss depends on its exact context."""

    def __init__(self, max_len: int = 32, d: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb, self.pos = nn.Embedding(V, d), nn.Embedding(max_len, d)
        self.qkv, self.head = nn.Linear(d, 3 * d), nn.Linear(d, V)

    def logits(self, idx):
        B, T = idx.shape
        x = self.emb(idx) + self.pos(torch.arange(T))[None]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(x).float()

    def per_token_loss(self, idx, targets):
        logits = self.logits(idx)
        return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none").reshape(idx.shape)


# ------------------------------------------------------------------------------------------------ windows

def _scored(T, L, stride):
    out = []
    for start, end, score_from in sliding_windows(T, L, stride):
        assert 0 <= start <= score_from < end <= T and end - start <= L
        out.extend(range(score_from, end))
    return out


@settings(max_examples=300, deadline=None, database=None)
@given(T=st.integers(1, 700), L=st.integers(1, 96), data=st.data())
def test_every_target_is_scored_exactly_once(T, L, data):
    stride = data.draw(st.integers(0, L))
    assert _scored(T, L, stride) == list(range(T))  # a partition of range(T), in order


def test_sliding_windows_have_full_context():
    T, L, stride = 1000, 64, 16
    for start, end, score_from in sliding_windows(T, L, stride):
        if start > 0:
            assert score_from - start == L - stride  # every scored token sees ≥ L − stride tokens of context
    assert sliding_windows(5, 8, 2) == [(0, 5, 0)]  # T < seq_len: one short window scores everything
    assert sliding_windows(10, 4, 0) == [(0, 4, 0), (4, 8, 4), (8, 10, 8)]
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 5)


# ------------------------------------------------------------------------------------------------ metric

@pytest.mark.parametrize("n, L, stride", [(257, 32, 0), (300, 32, 8), (20, 32, 4), (129, 16, 16)])
def test_uniform_model_gives_log2v_times_tokens_per_byte(n, L, stride):
    lut, toks = make_lut(), tokens_of(n)
    res = score_standard(UniformLM(), toks, lut, seq_len=L, stride=stride, batch_seqs=3)
    n_bytes = brute_bytes(lut, toks)
    assert res.num_tokens == n - 1 and res.num_bytes == n_bytes
    logv32 = float(torch.tensor(math.log(V), dtype=torch.float32))  # the stub's fp32 NLL; sums are float64
    assert res.val_loss == pytest.approx(logv32, rel=1e-12)
    assert res.val_bpb == pytest.approx(logv32 / math.log(2) * (n - 1) / n_bytes, rel=1e-12)
    assert res.val_bpb == pytest.approx(math.log2(V) * (n - 1) / n_bytes, rel=1e-7)


def test_stride_equal_to_seq_len_is_non_overlapping():
    model, lut, toks = TinyCausalLM(), make_lut(), tokens_of(203)
    a = score_standard(model, toks, lut, seq_len=32, stride=0, batch_seqs=4)
    b = score_standard(model, toks, lut, seq_len=32, stride=32, batch_seqs=5)
    assert (a.val_loss, a.val_bpb, a.num_tokens, a.num_bytes) == pytest.approx(
        (b.val_loss, b.val_bpb, b.num_tokens, b.num_bytes), rel=1e-12)
    assert a.mode == "non-overlapping(seq_len=32)" and b.mode == "sliding(seq_len=32,stride=32)"


@pytest.mark.parametrize("n, L, stride", [(150, 32, 8), (90, 32, 5), (20, 32, 8)])
def test_sliding_equals_brute_force_per_position(n, L, stride):
    model, lut, toks = TinyCausalLM(max_len=L), make_lut(), tokens_of(n, seed=3)
    model.train()
    res = score_standard(model, toks, lut, seq_len=L, stride=stride, batch_seqs=3)
    assert model.training  # the caller's mode is restored
    context = L - stride
    total = 0.0
    with torch.no_grad():
        for p in range(n - 1):  # target p is token p+1, predicted from tokens[ws : p+1]
            ws = 0 if p < L else ((p - context) // stride) * stride
            x = toks[ws : p + 1][None]
            y = toks[ws + 1 : p + 2][None]
            total += float(model.per_token_loss(x, y)[0, -1])
    assert res.num_tokens == n - 1
    assert res.val_loss == pytest.approx(total / (n - 1), rel=1e-5)
    assert res.val_bpb == pytest.approx(total / (math.log(2) * brute_bytes(lut, toks)), rel=1e-5)


def test_input_validation():
    with pytest.raises(ValueError, match="1-D"):
        score_standard(UniformLM(), torch.zeros(1, dtype=torch.long), make_lut(), seq_len=4)
    with pytest.raises(ValueError, match="stride"):
        score_standard(UniformLM(), tokens_of(10), make_lut(), seq_len=4, stride=8)
    toks, cfg = tokens_of(10), EvalConfig()
    for bad, msg in ((make_lut(), "must be a tensor"), (tbytes(toks)[:-1], r"expected \(10,\)"),
                     (tbytes(toks).float(), "integer"), (tbytes(toks) - 9, "negative")):
        with pytest.raises(ValueError, match=msg):
            evaluate(UniformLM(), toks, bad, cfg, seq_len=4, device="cpu", bos_id=1)


def test_target_bytes_from_the_lut_match_brute_force():
    lut, toks = make_lut(), tokens_of(200, seed=4)
    tb = tbytes(toks, lut)
    assert tb.shape == toks.shape and tb[0] == 0 and int(tb.sum()) == brute_bytes(lut, toks)
    sidecar = torch.randint(0, 9, toks.shape, generator=torch.Generator().manual_seed(2))  # any per-token bytes
    res = evaluate(UniformLM(), toks, sidecar, EvalConfig(stride=8), seq_len=32, device="cpu", bos_id=1)
    assert res.num_bytes == int(sidecar[1:].sum())  # entry 0 is never a target


# ------------------------------------------------------------------------------------------------ distributed

def _dist_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = score_standard(TinyCausalLM(), tokens_of(301, seed=5), make_lut(), seq_len=32, stride=8, batch_seqs=2)
        if rank == 0:
            torch.save([res.val_loss, res.val_bpb, res.num_tokens, res.num_bytes], out_file)
        dist.barrier()  # no rank tears gloo down early (that can SIGABRT the other)
    finally:
        dist.destroy_process_group()


def run_ranks(worker, nprocs: int, *args, timeout: float) -> None:
    """Run worker(rank, nprocs, *args) in `nprocs` forked processes; a hung child fails the test, not the suite.

    fork: the children need not re-import torch (seconds on 2 cores).
    """
    import torch.multiprocessing as mp

    ctx = mp.start_processes(worker, args=(nprocs, *args), nprocs=nprocs, join=False, start_method="fork")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"distributed evaluation did not finish within {timeout:.0f} s")


def test_two_gloo_ranks_match_one_process(tmp_path):
    out = tmp_path / "res.pt"
    run_ranks(_dist_worker, 2, str(tmp_path / "init"), str(out), timeout=60)
    loss, bpb, n_tok, n_bytes = torch.load(out)
    ref = score_standard(TinyCausalLM(), tokens_of(301, seed=5), make_lut(), seq_len=32, stride=8, batch_seqs=2)
    assert (n_tok, n_bytes) == (ref.num_tokens, ref.num_bytes) == (300, brute_bytes(make_lut(), tokens_of(301, 5)))
    assert loss == pytest.approx(ref.val_loss, rel=1e-9) and bpb == pytest.approx(ref.val_bpb, rel=1e-9)
