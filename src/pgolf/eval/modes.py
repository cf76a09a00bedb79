"""Evaluation modes: one entry point and one registry, every mode scoring through eval/score.py.

    target_bytes = lut_target_bytes(lut, val_tokens)          # or a case-folding tokenizer's byte sidecar
    res = evaluate(model, val_tokens, target_bytes, EvalConfig(mode="ttt-sgd", stride=64), seq_len=2048,
                   device="cuda", bos_id=1, max_seconds=600)
    res.val_bpb, res.timing          # EvalResult; timing = {"seconds_total", "tokens_per_s", "seconds_<phase>"}

Built-in modes (`MODES`); every one scores each of the T = len(val_tokens) − 1 targets exactly once, target p being
token p+1 predicted from tokens ≤ p (and, in doc modes, only from its own document):
* standard   — seq_len windows over the stream with stride cfg.stride: non-overlapping when 0 (BASE `eval_val`),
               else the R0405 sliding window (eval/score.py `window_table`).
* sliding    — the R0405 sliding window, stride cfg.stride (64 when 0).
* doc        — document-isolated: the stream is split at BOS; each document is scored from its own BOS with no
               context from earlier documents, long documents with the `window_table` windows (stride cfg.stride)
               inside the document. A document owns the targets from its first token up to and including the next
               document's BOS (that BOS is predicted from the end of the document, as in packed scoring).
* ttt-sgd    — full-model SGD score-first TTT (eval/ttt.py, R0323).
* ttt-lora   — per-document LoRA TTT (eval/lora.py, R0414/R0427).
* ttt-phased — LoRA TTT with global SGD phases over already-scored documents (eval/lora.py, R0414/R0427).

Writing a mode (the API `pgolf check-legal --mode-module pkg.mod:fn` checks):

    def my_mode(model: nn.Module, ctx: ModeContext) -> str:    # returns the result's label
        windows = window_table(ctx.num_targets, ctx.seq_len, 64)
        score_windows(model, ctx.tokens, windows, ctx.tally, seq_len=ctx.seq_len, batch_seqs=8)
        # or, for custom batches: ctx.tally.add(logits, y, mask, pos)  (pos = target index; y = tokens[pos + 1])
        # before any parameter update: ctx.tally.record_update(target positions whose tokens it reads)
        return "my-mode"

    register_mode("my-mode", my_mode)     # then EvalConfig(mode="my-mode") and `--eval.mode my-mode` work

A mode scores only through `ctx.tally` (the result is computed from it), must not modify the caller's model
(deep-copy it to adapt), and, distributed, must run the same collectives on every rank. The model needs
`logits(idx (B, T)) -> (B, T, V)` fp32 (post-softcap); scores are fp32 full-vocabulary log-softmax, so a
`ScoreRecorder` (eval/recorder.py) receives every distribution that is scored.
With `max_seconds > 0` (default cfg.max_seconds) the run stops with `EvalTimeout` once its projected total exceeds
the cap. Distributed (torchrun), every built-in mode gives the single-process result: windows are split
contiguously over ranks, TTT SGD steps take global batches split over ranks (gradients summed with a global
normaliser), LoRA document batches go round-robin to ranks. Exception: warm-start A with ttt_lora_lanes=0 (see
eval/lora.py).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from pgolf.eval.config import EvalConfig, register_mode_name
from pgolf.eval.score import (
    DEFAULT_STRIDE, Clock, EvalResult, EvalTimeout, RecordingTally, Tally, check_target_bytes, document_spans,
    document_window_table, rank_share, score_windows, window_table,
)

if TYPE_CHECKING:
    from pgolf.eval.recorder import ScoreRecorder

__all__ = ["MODES", "ModeContext", "ModeFn", "EvalTimeout", "evaluate", "register_mode", "resolve_mode",
           "document_spans"]


@dataclass
class ModeContext:
    """What a mode gets besides the model: the val stream on the device, the tally it scores into, its settings."""

    tokens: Tensor  # (T + 1,) int64 on the evaluation device
    tally: Tally  # the only place scores count; carries target_bytes and the optional recorder
    cfg: EvalConfig
    seq_len: int
    bos_id: int
    clock: Clock  # clock.add(phase, seconds); clock.tick(done, total, unit) enforces max_seconds
    progress: bool = False
    amp: torch.dtype | None = None  # autocast dtype override (None = bf16 on CUDA, full precision elsewhere)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @property
    def num_targets(self) -> int:
        return self.tokens.numel() - 1

    @property
    def recorder(self) -> ScoreRecorder | None:
        return self.tally.recorder


ModeFn = Callable[[nn.Module, ModeContext], str]


def _windowed(model: nn.Module, ctx: ModeContext, windows: Tensor) -> None:
    t0 = time.perf_counter()
    score_windows(model, ctx.tokens, rank_share(windows).to(ctx.device), ctx.tally, seq_len=ctx.seq_len,
                  batch_seqs=ctx.cfg.batch_seqs, clock=ctx.clock, progress=ctx.progress, amp=ctx.amp)
    ctx.clock.add("score", time.perf_counter() - t0)


def _strided(model: nn.Module, ctx: ModeContext, stride: int) -> str:
    _windowed(model, ctx, window_table(ctx.num_targets, ctx.seq_len, stride))
    if stride:  # the label says which windows were scored
        return f"sliding(seq_len={ctx.seq_len},stride={stride})"
    return f"non-overlapping(seq_len={ctx.seq_len})"


def standard_mode(model: nn.Module, ctx: ModeContext) -> str:
    return _strided(model, ctx, ctx.cfg.stride)  # > seq_len is an error (window_table), as in eval_val_sliding


def sliding_mode(model: nn.Module, ctx: ModeContext) -> str:
    return _strided(model, ctx, min(ctx.cfg.stride or DEFAULT_STRIDE, ctx.seq_len))


def doc_mode(model: nn.Module, ctx: ModeContext) -> str:
    stride = ctx.cfg.stride
    spans = document_spans(ctx.tokens.cpu(), ctx.bos_id)
    _windowed(model, ctx, document_window_table(spans, ctx.seq_len, stride))
    return f"doc(seq_len={ctx.seq_len},stride={stride})"


# name → function, or "module:function" imported on first use (so importing this module pulls in no TTT code)
MODES: dict[str, ModeFn | str] = {
    "standard": standard_mode,
    "sliding": sliding_mode,
    "doc": doc_mode,
    "ttt-sgd": "pgolf.eval.ttt:run_ttt_sgd",
    "ttt-lora": "pgolf.eval.lora:run_ttt_lora",
    "ttt-phased": "pgolf.eval.lora:run_ttt_phased",
}


def register_mode(name: str, fn: ModeFn | str) -> None:
    """Add a mode (a ModeFn or a "module:function" path) under `name`; EvalConfig then accepts it."""
    if not name or not isinstance(name, str):
        raise ValueError(f"eval mode name must be a non-empty string, got {name!r}")
    if name in MODES and MODES[name] is not fn:
        raise ValueError(f"eval mode {name!r} is already registered")
    MODES[name] = fn
    register_mode_name(name)


def resolve_mode(spec: ModeFn | str) -> ModeFn:
    """A registered name, a "package.module:function" path, or a callable → the mode function."""
    if callable(spec):
        return spec
    entry = MODES.get(spec, spec)
    if callable(entry):
        return entry
    if ":" in entry:
        return _import_mode(entry)
    raise ValueError(f"unknown eval mode {spec!r}; expected one of {tuple(MODES)} or a 'package.module:function'")


def _import_mode(path: str) -> ModeFn:
    module, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"eval mode {path!r}: cannot import {attr!r} from module {module!r} ({e})") from e
    if not callable(fn):
        raise ValueError(f"eval mode {path!r} is not callable")
    return fn


def evaluate(
    model: nn.Module,
    val_tokens: Tensor,
    target_bytes: Tensor,
    cfg: EvalConfig,
    *,
    seq_len: int,
    device: torch.device | str,
    bos_id: int,
    progress: bool = False,
    max_seconds: float | None = None,
    recorder: ScoreRecorder | None = None,
    amp: torch.dtype | None = None,
    mode: ModeFn | str | None = None,
) -> EvalResult:
    """Score `val_tokens` (1-D, N+1 tokens → N targets; `target_bytes` one byte count per token) with cfg.mode,
    or with `mode` (a ModeFn, a registered name or a "module:function" path) when given; see the module doc.
    The caller's model is never modified. `recorder` receives scored distributions and updates (eval/recorder.py,
    single process only). Forwards run under bf16 autocast on CUDA (`amp` forces an autocast dtype on any device);
    scores are always fp32 log-softmax."""
    spec = cfg.mode if mode is None else mode
    fn = resolve_mode(spec)
    if val_tokens.dim() != 1 or val_tokens.numel() < 2:
        raise ValueError(f"val_tokens must be 1-D with at least 2 tokens, got shape {tuple(val_tokens.shape)}")
    check_target_bytes(target_bytes, val_tokens)
    if seq_len <= 0:
        raise ValueError(f"seq_len={seq_len} must be positive")
    device = torch.device(device)
    name = spec if isinstance(spec, str) else getattr(spec, "__name__", "custom")
    clock = Clock(name, cfg.max_seconds if max_seconds is None else max_seconds, device=device)
    tally = Tally(target_bytes, device) if recorder is None else RecordingTally(target_bytes, device, recorder)
    ctx = ModeContext(tokens=val_tokens.to(device=device, dtype=torch.int64), tally=tally, cfg=cfg, seq_len=seq_len,
                      bos_id=bos_id, clock=clock, progress=progress, amp=amp)
    label = fn(model, ctx)
    return ctx.tally.result(str(label or name), clock)
