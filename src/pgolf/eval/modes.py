"""Evaluation modes: one entry point that scores the val stream the way a record does (parameter-golf.md §1.4, §5).

    res = evaluate(model, val_tokens, lut, EvalConfig(mode="ttt-sgd", stride=64), seq_len=2048, device="cuda",
                   bos_id=1, max_seconds=600)
    res.val_bpb, res.timing          # ModeResult = EvalResult + {"seconds_total", "tokens_per_s", "seconds_<phase>"}

Modes (MODES); every one scores each of the T = len(val_tokens) − 1 targets exactly once, target p being token
p+1 predicted from tokens ≤ p (and, in doc modes, only from its own document):
* standard   — non-overlapping seq_len windows over the stream (BASE `eval_val`).
* sliding    — exact R0405 sliding window, stride cfg.stride (64 when 0).
* doc        — document-isolated: the stream is split at BOS; each document is scored from its own BOS with no
               context from earlier documents, long documents with the `window_table` windows (stride cfg.stride)
               inside the document. A document owns the targets from its first token up to and including the next
               document's BOS (that BOS is predicted from the end of the document, as in packed scoring).
* ttt-sgd    — full-model SGD score-first TTT (eval/ttt.py, R0323).
* ttt-lora   — per-document LoRA TTT (eval/lora.py, R0414/R0427).
* ttt-phased — LoRA TTT with global SGD phases over already-scored documents (eval/lora.py, R0414/R0427).

The model needs `logits(idx (B, T)) -> (B, T, V)` fp32 (post-softcap). Scores are full-vocabulary log-softmax, so a
`ScoreRecorder` (eval/legal.py) can receive every distribution that is scored; `check_legal` uses that.
With `max_seconds > 0` (default cfg.max_seconds) the run stops with `EvalTimeout` once its projected total exceeds
the cap; ModeResult.timing reports seconds_total, tokens_per_s and seconds_<stage> (score, train, lora,
global_sgd; ttt-phased adds phase1..N: each phase's LoRA and global SGD seconds).

Distributed (torchrun), every mode gives the single-process result: windows are split contiguously over ranks,
TTT SGD steps take global batches of ttt_batch_seqs rows split over ranks (gradients summed with a global
normaliser), LoRA document batches go round-robin to ranks. Exception: warm-start A with ttt_lora_lanes=0 (see
eval/lora.py).
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

from pgolf.data.bytes import ByteLUT, token_bytes
from pgolf.eval.bpb import EvalResult, window_table
from pgolf.eval.config import EVAL_MODES, EvalConfig

if TYPE_CHECKING:
    from pgolf.eval.legal import ScoreRecorder

MODES = EVAL_MODES
DEFAULT_STRIDE = 64  # R0405 eval_val_sliding / R0323 TTT windows


class EvalTimeout(RuntimeError):
    """The projected evaluation time exceeds max_seconds."""


@dataclass
class ModeResult(EvalResult):
    timing: dict[str, float] = field(default_factory=dict)


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


def autocast(device: torch.device, dtype: torch.dtype | None = None):
    """bf16 autocast on CUDA, as the records evaluate and test-time train; a no-op elsewhere unless `dtype` is
    given (tests run the mixed-precision code path on CPU with dtype=torch.bfloat16)."""
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else None
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


class Tally:
    """float64 sums of NLL, scored tokens and bytes; forwards every scored distribution to an optional recorder."""

    def __init__(self, lut: ByteLUT, device: torch.device, recorder: ScoreRecorder | None = None) -> None:
        self.lut, self.recorder = lut.to(device), recorder
        self.nll = torch.zeros((), dtype=torch.float64, device=device)
        self.tokens = torch.zeros((), dtype=torch.float64, device=device)
        self.bytes = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, logits: Tensor, x: Tensor, y: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        """Score targets y where mask; logits (B, T, V), x/y/mask/pos (B, T), pos = target index. Returns the
        (B, T) fp32 NLL (zero outside mask) so callers can reuse it as a training loss."""
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V) full-vocabulary distribution
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T)
        nll = torch.where(mask, nll, 0.0)
        self.nll += nll.detach().double().sum()
        self.tokens += mask.sum()
        self.bytes += torch.where(mask, token_bytes(self.lut, x, y), 0).sum()
        if self.recorder is not None:
            self.recorder.record_scores(pos[mask].detach().cpu(), logp[mask].detach().cpu())
        return nll

    def result(self, mode: str, clock: Clock) -> ModeResult:
        if dist.is_available() and dist.is_initialized():
            for t in (self.nll, self.tokens, self.bytes):
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        n_tok, n_bytes, nll = int(self.tokens.item()), int(self.bytes.item()), float(self.nll.item())
        seconds = time.perf_counter() - clock.t0
        timing = {"seconds_total": seconds, "tokens_per_s": n_tok / max(seconds, 1e-9)}
        timing.update({f"seconds_{k}": v for k, v in clock.phases.items()})
        return ModeResult(val_loss=nll / max(n_tok, 1),
                          val_bpb=nll / (math.log(2.0) * n_bytes) if n_bytes else float("nan"),
                          num_tokens=n_tok, num_bytes=n_bytes, seconds=seconds, mode=mode, timing=timing)


# ------------------------------------------------------------------------------------------------ documents / windows

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
    """Rows for windows w (B, 3): x, y (B, L) right-padded with 0, scored mask, target index pos."""
    offsets = torch.arange(seq_len, device=tokens.device)
    pos = w[:, :1] + offsets  # (B, L) target index of each row position
    valid = pos < w[:, 1:2]
    mask = valid & (pos >= w[:, 2:3])
    pos = torch.where(valid, pos, 0)
    x = torch.where(valid, tokens[pos], 0)
    y = torch.where(valid, tokens[pos + 1], 0)
    return x, y, mask, pos


@torch.no_grad()
def score_windows(model: nn.Module, tokens: Tensor, windows: Tensor, tally: Tally, *, seq_len: int,
                  batch_seqs: int, clock: Clock | None = None, progress: bool = False,
                  amp: torch.dtype | None = None) -> None:
    """Score `windows` (W, 3) of the device tensor `tokens` in batches of batch_seqs rows (autocast(amp))."""
    was_training = model.training
    model.eval()
    n = len(range(0, len(windows), batch_seqs))
    if clock is not None and clock.max_seconds > 0 and world()[1] > 1:  # equal tick counts on every rank
        t = torch.tensor([n], device=clock.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        n = int(t.item())
    batches = range(n)
    if progress and world()[0] == 0:
        from tqdm import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", dynamic_ncols=True)
    try:
        for i in batches:
            w = windows[i * batch_seqs : (i + 1) * batch_seqs]
            if len(w):
                x, y, mask, pos = window_batch(tokens, w, seq_len)
                with autocast(tokens.device, amp):
                    logits = model.logits(x)
                tally.add(logits, x, y, mask, pos)
            if clock is not None:
                clock.tick(i + 1, n, "batches")
    finally:
        model.train(was_training)


def rank_share(rows: Tensor) -> Tensor:
    """This rank's contiguous share of rows (the records' my_s/my_e split)."""
    rank, size = world()
    n = len(rows)
    return rows[n * rank // size : n * (rank + 1) // size]


# ------------------------------------------------------------------------------------------------ dispatch

def evaluate(
    model: nn.Module,
    val_tokens: Tensor,
    lut: ByteLUT,
    cfg: EvalConfig,
    *,
    seq_len: int,
    device: torch.device | str,
    bos_id: int,
    progress: bool = False,
    max_seconds: float | None = None,
    recorder: ScoreRecorder | None = None,
    amp: torch.dtype | None = None,
) -> ModeResult:
    """Score `val_tokens` (1-D, N+1 tokens → N targets) with cfg.mode; see the module doc. The caller's model is
    never modified (TTT modes adapt a deep copy). `recorder` receives scored distributions and updates
    (eval/legal.py, single process only). Forwards run under bf16 autocast on CUDA (`amp` forces an autocast
    dtype on any device; None = bf16 on CUDA, full precision elsewhere); scores are always fp32 log-softmax."""
    if cfg.mode not in MODES:
        raise ValueError(f"unknown eval mode {cfg.mode!r}; expected one of {MODES}")
    if val_tokens.dim() != 1 or val_tokens.numel() < 2:
        raise ValueError(f"val_tokens must be 1-D with at least 2 tokens, got shape {tuple(val_tokens.shape)}")
    if seq_len <= 0:
        raise ValueError(f"seq_len={seq_len} must be positive")
    device = torch.device(device)
    tokens = val_tokens.to(device=device, dtype=torch.int64)
    clock = Clock(cfg.mode, cfg.max_seconds if max_seconds is None else max_seconds, device=device)
    tally = Tally(lut, device, recorder)
    T = tokens.numel() - 1
    t0 = time.perf_counter()
    if cfg.mode in ("standard", "sliding", "doc"):
        if cfg.mode == "standard":
            stride, windows = 0, window_table(T, seq_len, 0)
        elif cfg.mode == "sliding":
            stride = min(cfg.stride or DEFAULT_STRIDE, seq_len)
            windows = window_table(T, seq_len, stride)
        else:
            stride = cfg.stride
            windows = document_window_table(document_spans(tokens.cpu(), bos_id), seq_len, stride)
        score_windows(model, tokens, rank_share(windows).to(device), tally, seq_len=seq_len,
                      batch_seqs=cfg.batch_seqs, clock=clock, progress=progress, amp=amp)
        clock.add("score", time.perf_counter() - t0)
        label = f"{cfg.mode}(seq_len={seq_len},stride={stride})"
    elif cfg.mode == "ttt-sgd":
        from pgolf.eval.ttt import run_ttt_sgd

        run_ttt_sgd(model, tokens, tally, cfg, seq_len=seq_len, clock=clock, progress=progress, amp=amp)
        label = f"ttt-sgd(seq_len={seq_len},stride={min(cfg.stride or DEFAULT_STRIDE, seq_len)})"
    else:
        from pgolf.eval.lora import run_ttt_lora

        run_ttt_lora(model, tokens, tally, cfg, seq_len=seq_len, bos_id=bos_id, clock=clock,
                     phased=cfg.mode == "ttt-phased", progress=progress, amp=amp)
        label = f"{cfg.mode}(seq_len={seq_len},chunk={cfg.ttt_lora_chunk},rank={cfg.ttt_lora_rank})"
    return tally.result(label, clock)
