"""Legal score-first test-time training with full-model SGD (R0323 `eval_val_sliding_ttt`, PR #461).

    res = evaluate(model, val_tokens, target_bytes, EvalConfig(mode="ttt-sgd", stride=64), seq_len=2048, ...)

The T targets are split into N = ⌈T / ttt_chunk_tokens⌉ chunks; each sliding window (stride cfg.stride, 64 when 0)
belongs to the chunk holding its first scored target. For chunk ci = 0..N−1:
  1. score its windows under no_grad — the scores are committed;
  2. unless ci = N−1, train on the chunk's tokens (inputs tokens[c0:c1], targets tokens[c0+1:c1+1], all already
     scored): ttt_epochs passes of SGD (momentum ttt_momentum) over seq_len rows in batches of ttt_batch_seqs,
     lr = ttt_lr·½(1+cos(π·ci/(N−1))), grad-norm clip ttt_grad_clip, the first ttt_freeze_blocks blocks frozen.
Distributed: each chunk's windows are split contiguously over ranks; each SGD batch of ttt_batch_seqs rows is split
over ranks and its gradient summed (`sgd_on_rows`), so the result equals the single-process one. Forwards run under
bf16 autocast on CUDA (fp32 master weights, as the record).
The model is deep-copied; the caller's weights are never touched.

One deliberate difference: R0323 trains on ⌊chunk/seq_len⌋ full rows and drops a shorter tail row; we keep the tail
row (identical on the real val set, where 32,768 = 16·2048, and it lets tiny test chunks train at all).
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.eval.score import DEFAULT_STRIDE, autocast, rank_share, score_windows, window_batch, window_table
from pgolf.train.distributed import world

if TYPE_CHECKING:
    from pgolf.eval.modes import ModeContext


def cosine_lr(peak: float, ci: int, num_chunks: int) -> float:
    """peak·½(1+cos(π·ci/(N−1))) (R0323; a single chunk gets the peak)."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * ci / max(num_chunks - 1, 1)))


def training_rows(start: int, end: int, seq_len: int) -> Tensor:
    """(R, 2) rows (a, b): inputs tokens[a:b], targets tokens[a+1:b+1], tiling target indices [start, end)."""
    a = torch.arange(start, end, seq_len)
    return torch.stack([a, (a + seq_len).clamp(max=end)], dim=1)


def sgd_on_rows(model: nn.Module, tokens: Tensor, rows: Tensor, opt: torch.optim.Optimizer, params: list[Tensor],
                *, seq_len: int, batch_seqs: int, lr: float, grad_clip: float, recorder=None,
                amp: torch.dtype | None = None) -> None:
    """One pass of SGD over `rows` in global batches of batch_seqs rows: mean NLL over the batch's real (unpadded)
    targets. Distributed, each batch is split contiguously over ranks; every rank divides its NLL sum by the whole
    batch's target count and the gradients are summed, so a step equals the single-process step (up to float
    summation order) for any world size. (R0323 batches 32 rows per rank; on the real val set a 32,768-token chunk
    is only 16 rows of 2048, one step either way.)"""
    for group in opt.param_groups:
        group["lr"] = lr
    model.train()
    distributed = world()[1] > 1
    for s in range(0, len(rows), batch_seqs):
        batch = rows[s : s + batch_seqs]
        count = int((batch[:, 1] - batch[:, 0]).sum())  # real targets in the global batch
        r = rank_share(batch).to(tokens.device)  # (B_rank, 2)
        opt.zero_grad(set_to_none=False)
        if len(r):  # every target of a row is trained on: windows (a, b, score from a)
            x, y, valid, _ = window_batch(tokens, torch.cat([r, r[:, :1]], 1), seq_len)
            if recorder is not None:
                used = torch.cat([torch.arange(max(int(a) - 1, 0), int(b)) for a, b in r.tolist()])
                recorder.record_update(used)
            with autocast(tokens.device, amp):
                nll = model.per_token_loss(x, y)  # (B, L)
            loss = torch.where(valid, nll.float(), 0.0).sum() / count
            loss.backward()
        if distributed:  # SUM (gloo has no AVG); the global normaliser makes it the mean
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
    model.eval()


def trainable_parameters(model: nn.Module, freeze_blocks: int) -> list[nn.Parameter]:
    """All parameters except those of the first `freeze_blocks` blocks (TTT_FREEZE_BLOCKS)."""
    blocks = list(model.blocks)[:freeze_blocks] if freeze_blocks else []  # a model without blocks freezes none
    frozen = {id(p) for block in blocks for p in block.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    return [p for p in model.parameters() if id(p) not in frozen]


def run_ttt_sgd(model: nn.Module, ctx: ModeContext) -> str:
    """Score-first TTT over ctx.tokens into ctx.tally (the "ttt-sgd" mode); see the module doc."""
    cfg, seq_len, tokens, clock = ctx.cfg, ctx.seq_len, ctx.tokens, ctx.clock
    model = copy.deepcopy(model)
    params = trainable_parameters(model, cfg.ttt_freeze_blocks)
    opt = torch.optim.SGD(params, lr=cfg.ttt_lr, momentum=cfg.ttt_momentum)
    T = ctx.num_targets
    stride = min(cfg.stride or DEFAULT_STRIDE, seq_len)
    windows = window_table(T, seq_len, stride)
    C = cfg.ttt_chunk_tokens
    N = math.ceil(T / C)
    chunk_of = windows[:, 2] // C  # chunk of each window's first scored target
    chunks = range(N)
    if ctx.progress and world()[0] == 0:
        from pgolf.progress import track

        chunks = track(chunks, "ttt-sgd", enabled=ctx.progress, unit="chunk")
    for ci in chunks:
        t0 = time.perf_counter()
        mine = rank_share(windows[chunk_of == ci]).to(tokens.device)
        score_windows(model, tokens, mine, ctx.tally, seq_len=seq_len, batch_seqs=cfg.batch_seqs, amp=ctx.amp)
        t1 = time.perf_counter()
        clock.add("score", t1 - t0)
        if ci < N - 1 and cfg.ttt_epochs > 0:
            rows = training_rows(ci * C, min((ci + 1) * C, T), seq_len)
            lr = cosine_lr(cfg.ttt_lr, ci, N)
            for _ in range(cfg.ttt_epochs):
                sgd_on_rows(model, tokens, rows, opt, params, seq_len=seq_len, batch_seqs=cfg.ttt_batch_seqs,
                            lr=lr, grad_clip=cfg.ttt_grad_clip, recorder=ctx.recorder, amp=ctx.amp)
            clock.add("train", time.perf_counter() - t1)
        clock.tick(ci + 1, N, "chunks")
    return f"ttt-sgd(seq_len={seq_len},stride={stride})"
