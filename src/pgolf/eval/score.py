"""The one scoring core: windows over the val stream, per-target byte counts, the float64 tally, the wallclock.

Every evaluation mode (eval/modes.py `MODES`) scores through this module, so val_bpb is defined once:

    val_loss = Σ nll / N   (nats per scored token)        val_bpb = Σ nll / (ln 2 · Σ bytes)

over the N scored targets, as every record's `eval_val` computes it. Target p (0 ≤ p < T = len(tokens) − 1) is
token p + 1 predicted from tokens ≤ p; NLL is taken from the fp32 full-vocabulary log-softmax of the model's
`logits`. Bytes come from ONE per-position tensor `target_bytes` (same length as the token tensor; entry i = the
UTF-8 bytes credited when token i is scored; entry 0 is unused): `lut_target_bytes` builds it from the tokenizer
LUT (base bytes + the leading space unless the previous token is a boundary, pgolf.data.bytes.token_bytes); a
case-folding tokenizer can pass the original text's bytes per token instead. Sums are float64; under
torch.distributed each rank scores a contiguous share of the windows and the three sums are all-reduced, so every
world size gives the same number.

Windows over the T targets (`window_table`):
* stride == 0: non-overlapping seq_len windows (BASE `eval_val`); a shorter last window scores the remainder.
* stride > 0: the exact R0405 `eval_val_sliding`: context = seq_len − stride; windows start at 0, stride,
  2·stride… while start + context < T; a window covers targets [start, min(start + seq_len, T)) and scores them
  from start + context on (from start for the first window, which is always kept, so T ≤ context still scores).
  Every target is scored exactly once, each with at least `context` tokens before it (or all of them near the
  start). The R0322–R0331 variant double-counts the tail.
Each window is fed as a fixed (seq_len) row, right-padded and masked like the records' batches: a causal model's
scored positions never see the padding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.data.bytes import ByteLUT, target_bytes_from_lut
from pgolf.train.distributed import world

if TYPE_CHECKING:
    from pgolf.eval.recorder import ScoreRecorder

DEFAULT_STRIDE = 64  # R0405 eval_val_sliding / R0323 TTT windows


class EvalTimeout(RuntimeError):
    """The projected evaluation time exceeds max_seconds."""


@dataclass
class EvalResult:
    val_loss: float  # nats per scored token
    val_bpb: float  # bits per UTF-8 byte
    num_tokens: int
    num_bytes: int
    seconds: float
    mode: str  # e.g. "sliding(seq_len=2048,stride=64)"
    timing: dict[str, float] = field(default_factory=dict)  # seconds_total, tokens_per_s, seconds_<stage>


# ------------------------------------------------------------------------------------------------ bytes

def lut_target_bytes(lut: ByteLUT, tokens: Tensor) -> Tensor:
    """`target_bytes` from the tokenizer LUT: entry i = token_bytes(lut, tokens[i−1], tokens[i]), entry 0 = 0
    (pgolf.data.bytes.target_bytes_from_lut; a dataset with a byte sidecar uses data.bytes.validation_bytes)."""
    return target_bytes_from_lut(lut, tokens.reshape(-1).long())


def check_target_bytes(target_bytes: Tensor, tokens: Tensor) -> None:
    """ValueError unless target_bytes is a non-negative integer tensor of len(tokens) entries."""
    if not isinstance(target_bytes, Tensor):
        raise ValueError(f"target_bytes must be a tensor of per-token byte counts (len(val_tokens) entries), got "
                         f"{type(target_bytes).__name__}; build it with pgolf.eval.score.lut_target_bytes(lut, tokens)")
    if target_bytes.dim() != 1 or target_bytes.numel() != tokens.numel():
        raise ValueError(f"target_bytes has shape {tuple(target_bytes.shape)}; expected ({tokens.numel()},), one "
                         f"entry per val token")
    if target_bytes.dtype.is_floating_point or target_bytes.dtype == torch.bool:
        raise ValueError(f"target_bytes must be an integer tensor, got {target_bytes.dtype}")
    if target_bytes.numel() and int(target_bytes.min()) < 0:
        raise ValueError(f"target_bytes has a negative entry ({int(target_bytes.min())}); byte counts are ≥ 0")


# ------------------------------------------------------------------------------------------------ windows

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


def document_spans(tokens: Tensor, bos_id: int) -> list[tuple[int, int]]:
    """[(start, end)] in target indices: document d owns targets start..end−1 (tokens start+1..end), i.e. from its
    first token to the next document's BOS inclusive. Spans partition range(T); a stream not starting with BOS
    gets a first document starting at 0."""
    T = tokens.numel() - 1
    starts = torch.nonzero(tokens[:T] == bos_id, as_tuple=True)[0].tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    ends = starts[1:] + [T]
    return [(s, e) for s, e in zip(starts, ends) if e > s]


def document_window_table(spans: list[tuple[int, int]], seq_len: int, stride: int) -> Tensor:
    """(W, 3) windows (start, end, score_from) that never cross a document start: `window_table` inside each span."""
    tables = [window_table(e - s, seq_len, stride) + s for s, e in spans]
    return torch.cat(tables) if tables else torch.zeros(0, 3, dtype=torch.int64)


def window_batch(tokens: Tensor, w: Tensor, seq_len: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows for windows w (B, 3): x, y (B, L) right-padded with 0, scored mask, target index pos (0 where
    padded)."""
    offsets = torch.arange(seq_len, device=tokens.device)
    pos = w[:, :1] + offsets  # (B, L) target index of each row position
    valid = pos < w[:, 1:2]
    mask = valid & (pos >= w[:, 2:3])
    pos = torch.where(valid, pos, 0)
    x = torch.where(valid, tokens[pos], 0)
    y = torch.where(valid, tokens[pos + 1], 0)
    return x, y, mask, pos


def rank_share(rows: Tensor) -> Tensor:
    """This rank's contiguous share of rows (the records' my_s/my_e split)."""
    rank, size = world()
    n = len(rows)
    return rows[n * rank // size : n * (rank + 1) // size]


# ------------------------------------------------------------------------------------------------ tally / clock

def autocast(device: torch.device, dtype: torch.dtype | None = None):
    """bf16 autocast on CUDA, as the records evaluate and test-time train; a no-op elsewhere unless `dtype` is
    given (tests run the mixed-precision code path on CPU with dtype=torch.bfloat16)."""
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else None
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


class Clock:
    """Wallclock per phase and the max_seconds projection (checked from the `warmup`-th unit of work on).

    Distributed, every rank calls `tick` the same number of times and the ranks agree on the slowest projection
    (one all-reduce MAX per tick while a cap is set), so all of them stop together instead of one rank raising
    while the others wait in a collective."""

    def __init__(self, mode: str, max_seconds: float = 0.0, warmup: int = 2,
                 device: torch.device | str = "cpu") -> None:
        self.mode, self.max_seconds, self.warmup = mode, max_seconds, warmup
        self.device = torch.device(device)
        self.t0 = time.perf_counter()
        self.phases: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def tick(self, done: int, total: int, unit: str) -> None:
        """Raise EvalTimeout when elapsed·total/done > max_seconds (done ≥ warmup units measured)."""
        if self.max_seconds <= 0 or done < min(self.warmup, total) or done <= 0:
            return
        elapsed = time.perf_counter() - self.t0
        if world()[1] > 1:
            t = torch.tensor([elapsed], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            elapsed = float(t.item())
        projected = elapsed * total / done
        if projected > self.max_seconds:
            raise EvalTimeout(
                f"eval mode {self.mode}: projected {projected:.1f}s exceeds max_seconds={self.max_seconds:g}s "
                f"(measured {elapsed:.1f}s for {done}/{total} {unit}); lower the cost or raise the cap")


class Tally:
    """float64 sums of NLL, scored tokens and bytes (`RecordingTally` also forwards what it scores to a recorder).

    `add` is the only way a score counts: a mode that scores anything else (or rescales the sums) returns a
    val_bpb that `check_legal` finds different from the one it recomputes from the recorded distributions."""

    recorder: ScoreRecorder | None = None
    """The recorder a `RecordingTally` forwards to; None here."""

    def __init__(self, target_bytes: Tensor, device: torch.device) -> None:
        self.target_bytes = target_bytes.to(device=device, dtype=torch.int64)
        self.nll, self.tokens, self.bytes = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(3))

    def add(self, logits: Tensor, y: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        """Score targets y where mask; logits (B, T, V), y/mask/pos (B, T), pos = target index (y = token pos+1).
        Returns the (B, T) fp32 NLL (zero outside mask) so callers can reuse it as a training loss."""
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V) full-vocabulary distribution
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T)
        nll = torch.where(mask, nll, 0.0)
        self.nll += nll.detach().double().sum()  # where, not [mask]: no host sync per batch
        self.tokens += mask.sum()
        self.bytes += torch.where(mask, self.target_bytes[pos + 1], 0).sum()
        self._scored(pos, mask, logp)
        return nll

    def _scored(self, pos: Tensor, mask: Tensor, logp: Tensor) -> None:
        """What `add` scored: the (B, T, V) distributions at target indices pos where mask (a plain Tally keeps
        nothing)."""

    def record_update(self, positions: Tensor) -> None:
        """Tell the recorder (`RecordingTally`) that a parameter update reads the tokens of these target positions;
        a plain Tally has none."""

    def result(self, mode: str, clock: Clock) -> EvalResult:
        if world()[1] > 1:
            for t in (self.nll, self.tokens, self.bytes):
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        n_tok, n_bytes, nll = int(self.tokens.item()), int(self.bytes.item()), float(self.nll.item())
        seconds = time.perf_counter() - clock.t0
        timing = {"seconds_total": seconds, "tokens_per_s": n_tok / max(seconds, 1e-9)}
        timing.update({f"seconds_{k}": v for k, v in clock.phases.items()})
        return EvalResult(val_loss=nll / max(n_tok, 1),
                          val_bpb=nll / (math.log(2.0) * n_bytes) if n_bytes else float("nan"),
                          num_tokens=n_tok, num_bytes=n_bytes, seconds=seconds, mode=mode, timing=timing)


class RecordingTally(Tally):
    """A Tally that gives its recorder (eval/recorder.py) every distribution it scores and every update it is told
    of: what `pgolf check-legal` checks."""

    def __init__(self, target_bytes: Tensor, device: torch.device, recorder: ScoreRecorder) -> None:
        super().__init__(target_bytes, device)
        self.recorder = recorder

    def _scored(self, pos: Tensor, mask: Tensor, logp: Tensor) -> None:
        self.recorder.record_scores(pos[mask].detach().cpu(), logp[mask].detach().cpu())

    def record_update(self, positions: Tensor) -> None:
        self.recorder.record_update(positions)


@torch.no_grad()
def score_windows(model: nn.Module, tokens: Tensor, windows: Tensor, tally: Tally, *, seq_len: int,
                  batch_seqs: int, clock: Clock | None = None, progress: bool = False,
                  amp: torch.dtype | None = None) -> None:
    """Score `windows` (W, 3) of the device tensor `tokens` in batches of batch_seqs rows (autocast(amp)); the
    model needs `logits(idx (B, L)) -> (B, L, V)`. The caller's train/eval mode is restored."""
    if batch_seqs <= 0:
        raise ValueError(f"batch_seqs={batch_seqs} must be positive")
    was_training = model.training
    model.eval()
    n = -(-len(windows) // batch_seqs)  # batches
    if clock is not None and clock.max_seconds > 0 and world()[1] > 1:  # equal tick counts on every rank
        t = torch.tensor([n], device=clock.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        n = int(t.item())
    batches = range(n)
    if progress and world()[0] == 0:
        from pgolf.progress import track

        batches = track(batches, "eval", enabled=progress, unit="batch")
    try:
        for i in batches:
            w = windows[i * batch_seqs : (i + 1) * batch_seqs]
            if len(w):
                x, y, mask, pos = window_batch(tokens, w, seq_len)
                with autocast(tokens.device, amp):
                    logits = model.logits(x)
                tally.add(logits, y, mask, pos)
            if clock is not None:
                clock.tick(i + 1, n, "batches")
    finally:
        model.train(was_training)
