"""val_bpb exactly as the challenge scores it (parameter-golf.md §1.3–1.4).

    res = evaluate_bpb(model, val_tokens, lut, seq_len=2048, stride=64)   # R0405 sliding window
    res.val_bpb, res.val_loss                                            # bits/byte, nats/token

val_loss = Σ nll / N (nats per scored token); val_bpb = Σ nll / (ln 2 · Σ bytes), with bytes from the tokenizer
LUT (`pgolf.data.bytes.token_bytes`: base bytes of the target + its leading space unless the previous token is a
boundary). Sums are float64; under torch.distributed the windows are split contiguously over ranks and the three
sums all-reduced, so every world size gives the same number.

Windows over the T = len(val_tokens) − 1 targets (`window_table` / `sliding_windows`):
* stride == 0: non-overlapping seq_len windows (BASE `eval_val`); a shorter last window scores the remainder.
* stride > 0: the exact R0405 `eval_val_sliding`: context = seq_len − stride; windows start at 0, stride, 2·stride…
  while start + context < T; a window covers targets [start, min(start + seq_len, T)) and scores them from
  start + context on (from start for the first window, which is always kept, so T ≤ context still scores).
  Every target is scored exactly once, each with at least `context` tokens before it (or all of them near the
  start). The R0322–R0331 variant double-counts the tail.

Each window is fed as a fixed (seq_len) row, right-padded and masked like the records' batches: a causal model's
scored positions never see the padding. The model needs `per_token_loss(idx (B,T), targets (B,T)) -> (B,T)` fp32 NLL.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.data.bytes import ByteLUT, token_bytes


@dataclass
class EvalResult:
    val_loss: float  # nats per scored token
    val_bpb: float  # bits per UTF-8 byte
    num_tokens: int
    num_bytes: int
    seconds: float
    mode: str  # "non-overlapping(seq_len=L)" or "sliding(seq_len=L,stride=S)"


def window_table(num_targets: int, seq_len: int, stride: int) -> Tensor:
    """(W, 3) int64 rows (start, end, score_from), in target indices: a window feeds tokens[start:end], predicts
    tokens[start+1:end+1] and scores targets [score_from, end). stride 0 = non-overlapping windows."""
    if seq_len <= 0:
        raise ValueError(f"seq_len={seq_len} must be positive")
    if stride < 0 or stride > seq_len:
        raise ValueError(f"stride={stride} must be in [0, seq_len={seq_len}] (0 = non-overlapping)")
    T = num_targets
    if stride == 0:
        starts = torch.arange(0, T, seq_len)
        score_from = starts
    else:
        context = seq_len - stride
        starts = torch.arange(0, T, stride)
        # R0405 keeps windows with ws + context < T; the first window is kept unconditionally so that a split
        # shorter than the context (T ≤ seq_len − stride, never the case on the real val set) is still scored.
        starts = starts[(starts == 0) | (starts + context < T)]
        score_from = torch.where(starts == 0, starts, starts + context)
    return torch.stack([starts, (starts + seq_len).clamp(max=T), score_from], dim=1)


def sliding_windows(num_targets: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """`window_table` as a list of (start, end, score_from) tuples."""
    return [tuple(row) for row in window_table(num_targets, seq_len, stride).tolist()]


def _rank_slice(n: int) -> tuple[int, int, int]:
    """(rank, first window, end window) of this process's contiguous share (the records' my_s/my_e split)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    return rank, n * rank // world, n * (rank + 1) // world


@torch.no_grad()
def evaluate_bpb(
    model: nn.Module,
    val_tokens: Tensor,
    lut: ByteLUT,
    *,
    seq_len: int,
    stride: int = 0,
    batch_seqs: int = 32,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score `val_tokens` (1-D, N+1 tokens → N targets) with the windows of `window_table`; see the module doc."""
    t0 = time.perf_counter()
    if val_tokens.dim() != 1 or val_tokens.numel() < 2:
        raise ValueError(f"val_tokens must be 1-D with at least 2 tokens, got shape {tuple(val_tokens.shape)}")
    if batch_seqs <= 0:
        raise ValueError(f"batch_seqs={batch_seqs} must be positive")
    device = torch.device(device)
    windows = window_table(val_tokens.numel() - 1, seq_len, stride)
    rank, lo, hi = _rank_slice(len(windows))
    mine = windows[lo:hi].to(device)
    tokens = val_tokens.to(device=device, dtype=torch.int64)
    lut = lut.to(device)
    offsets = torch.arange(seq_len, device=device)
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    tok_sum = torch.zeros((), dtype=torch.float64, device=device)
    byte_sum = torch.zeros((), dtype=torch.float64, device=device)
    cast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
            else contextlib.nullcontext())
    was_training = model.training
    model.eval()
    batches = range(0, len(mine), batch_seqs)
    if progress and rank == 0:
        from tqdm import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", dynamic_ncols=True)
    try:
        for b in batches:
            w = mine[b : b + batch_seqs]  # (B, 3): start, end, score_from
            pos = w[:, :1] + offsets  # (B, L) target index of each row position
            valid = pos < w[:, 1:2]  # short windows are right-padded with token 0
            mask = valid & (pos >= w[:, 2:3])  # the positions this window scores
            pos = torch.where(valid, pos, 0)
            x = torch.where(valid, tokens[pos], 0)  # (B, L) inputs
            y = torch.where(valid, tokens[pos + 1], 0)  # (B, L) targets
            with cast:
                nll = model.per_token_loss(x, y)
            nll_sum += torch.where(mask, nll.double(), 0.0).sum()  # where, not [mask]: no host sync per batch
            tok_sum += mask.sum()
            byte_sum += torch.where(mask, token_bytes(lut, x, y), 0).sum()
    finally:
        model.train(was_training)
    if dist.is_available() and dist.is_initialized():
        for t in (nll_sum, tok_sum, byte_sum):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    n_tok, n_bytes, nll = int(tok_sum.item()), int(byte_sum.item()), float(nll_sum.item())
    mode = f"sliding(seq_len={seq_len},stride={stride})" if stride else f"non-overlapping(seq_len={seq_len})"
    return EvalResult(
        val_loss=nll / max(n_tok, 1), val_bpb=nll / (math.log(2.0) * n_bytes) if n_bytes else float("nan"),
        num_tokens=n_tok, num_bytes=n_bytes, seconds=time.perf_counter() - t0, mode=mode,
    )
