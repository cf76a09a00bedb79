"""Deliberately illegal evaluation modes (eval/modes.py ModeFn API) for the checker's tests and the CLI test.

    pgolf check-legal ARTIFACT --mode-module tests.eval.legal_modes:peek_last_chunk --chunk-tokens 64

Each is written the way a third-party mode would be: `fn(model, ctx) -> label`, scoring through ctx.tally.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from pgolf.eval.modes import ModeContext, evaluate
from pgolf.eval.score import Tally, autocast, score_windows, window_batch, window_table
from pgolf.eval.ttt import sgd_on_rows, trainable_parameters, training_rows


def _chunked_sgd(model: nn.Module, ctx: ModeContext, *, leak: str, report_updates: bool = True) -> None:
    """Score-first TTT over chunks of cfg.ttt_chunk_tokens (sliding windows, stride cfg.stride), except:
    leak="last": the last chunk is trained on (unreported) before it is scored; leak="all": every chunk is
    trained on before it is scored (train-then-score); leak="none": legal."""
    cfg, T, L = ctx.cfg, ctx.num_targets, ctx.seq_len
    model = copy.deepcopy(model)
    params = trainable_parameters(model, 0)
    opt = torch.optim.SGD(params, lr=cfg.ttt_lr)
    windows = window_table(T, L, min(cfg.stride, L))
    C = cfg.ttt_chunk_tokens
    N = math.ceil(T / C)
    for ci in range(N):
        rows = training_rows(ci * C, min((ci + 1) * C, T), L)

        def train(recorder) -> None:
            sgd_on_rows(model, ctx.tokens, rows, opt, params, seq_len=L, batch_seqs=cfg.ttt_batch_seqs,
                        lr=cfg.ttt_lr, grad_clip=cfg.ttt_grad_clip, recorder=recorder)

        if leak == "all" or (leak == "last" and ci == N - 1):
            train(ctx.recorder if report_updates and leak == "all" else None)
        score_windows(model, ctx.tokens, windows[windows[:, 2] // C == ci], ctx.tally, seq_len=L, batch_seqs=8)
        if leak != "all" and ci < N - 1:
            train(ctx.recorder)


def legal_chunked_sgd(model: nn.Module, ctx: ModeContext) -> str:
    _chunked_sgd(model, ctx, leak="none")
    return "legal-chunked-sgd"


def train_last_chunk_first(model: nn.Module, ctx: ModeContext) -> str:
    """Legal except that the last chunk is trained on, unreported, before it is scored."""
    _chunked_sgd(model, ctx, leak="last")
    return "train-last-chunk-first"


def train_then_score(model: nn.Module, ctx: ModeContext) -> str:
    """Every chunk trained on before it is scored (issue #677 style); the updates are reported honestly."""
    _chunked_sgd(model, ctx, leak="all")
    return "train-then-score"


def train_then_score_unreported(model: nn.Module, ctx: ModeContext) -> str:
    """train_then_score, telling the recorder nothing: only the causality check can see it."""
    _chunked_sgd(model, ctx, leak="all", report_updates=False)
    return "train-then-score-unreported"


@torch.no_grad()
def peek_last_chunk(model: nn.Module, ctx: ModeContext) -> str:
    """Windows like "standard", but the targets of the last cfg.ttt_chunk_tokens chunk get +1 on the realized
    token's logit (a cache keyed on x_t), so their distributions depend on the token they score."""
    T, L, C = ctx.num_targets, ctx.seq_len, ctx.cfg.ttt_chunk_tokens
    last = (math.ceil(T / C) - 1) * C
    windows = window_table(T, L, min(ctx.cfg.stride, L))
    for w in windows.split(8):
        x, y, mask, pos = window_batch(ctx.tokens, w, L)
        with autocast(ctx.device, ctx.amp):
            logits = model.logits(x).float()
        boost = torch.nn.functional.one_hot(y, logits.size(-1)) * ((pos >= last) & mask)[..., None]
        ctx.tally.add(logits + boost, y, mask, pos)
    return "peek-last-chunk"


def tampered_tally(model: nn.Module, ctx: ModeContext) -> str:
    """Records a legal pass, but puts a train-then-score pass's NLL into the tally it returns from."""
    legal_chunked_sgd(model, ctx)
    cheat = ModeContext(tokens=ctx.tokens, tally=Tally(ctx.tally.target_bytes, ctx.device), cfg=ctx.cfg,
                        seq_len=ctx.seq_len, bos_id=ctx.bos_id, clock=ctx.clock)
    train_then_score_unreported(model, cheat)
    ctx.tally.nll.copy_(cheat.tally.nll)
    return "tampered-tally"


def returned_cheat(cfg, *, seq_len: int, bos_id: int):
    """An eval_fn (check_legal's unit) that records a legal pass and returns a train-then-score result."""

    def run(model, tokens, target_bytes, recorder):
        evaluate(model, tokens, target_bytes, cfg, seq_len=seq_len, device="cpu", bos_id=bos_id, recorder=recorder,
                 mode=legal_chunked_sgd)
        return evaluate(model, tokens, target_bytes, cfg, seq_len=seq_len, device="cpu", bos_id=bos_id,
                        mode=train_then_score_unreported)

    run.bos_id, run.seq_len = bos_id, seq_len
    return run


class Flipped(nn.Module):
    """An anti-causal model: the wrapped GPT reads each row right to left, so position i sees tokens i..L−1."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.cfg = inner, inner.cfg

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(idx.flip(1)).flip(1)

    def per_token_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.logits(idx)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(
            targets.shape)
