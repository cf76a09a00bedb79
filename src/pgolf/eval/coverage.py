"""What the legality checker (eval/legal.py) perturbs, and whether the model it checks with can show a leak.

    units = coverage_units(tokens, cfg, "ttt-phased", seq_len=2048, bos_id=1)
    positions, coverage = choose_positions(units, tokens, bos_id=1)   # ≥ 1 perturbed token in every unit

A unit is a stretch of the stream that a mode handles as one piece: each scoring window, TTT chunk, document, LoRA
chunk and phase. A leak confined to one unit (say, the last chunk trains before it scores) changes some
distribution of that unit when a token inside it changes, so perturbing one token per unit, its last non-BOS token
(every earlier position of the unit is then tested against it), finds it without luck. A leak at positions after
the last perturbed token of their unit, or one that only shows for particular token values, can still be missed.

`informative_init` / `context_sensitivity`: a fresh GPT's zero-initialised output projections make each prediction
depend only on the current token (and the previous one through smear / bigram), which hides any leak through
attention; the checker refuses to call such a model's result legal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from pgolf.eval.config import EvalConfig
from pgolf.eval.score import DEFAULT_STRIDE, document_spans, document_window_table, window_table


@dataclass(frozen=True)
class Unit:
    """A stretch of the stream a mode treats as one piece: tokens lo..hi (inclusive, 1 ≤ lo ≤ hi ≤ T)."""

    kind: str  # "window" | "chunk" | "document" | "lora-chunk" | "phase"
    lo: int
    hi: int



# ------------------------------------------------------------------------------------------------ coverage

def _ranges(kind: str, rows: Sequence[tuple[int, int]]) -> list[Unit]:
    """Units from target ranges [a, b) (tokens a+1..b)."""
    return [Unit(kind, a + 1, b) for a, b in rows if b > a]


def coverage_units(tokens: Tensor, cfg: EvalConfig, mode: str | None, *, seq_len: int, bos_id: int,
                   chunk_tokens: int | None = None) -> list[Unit]:
    """The pieces of `mode`'s structure on `tokens` (every document always; windows, chunks, LoRA chunks and phases
    as the mode uses them). An unknown (third-party) mode gets documents and chunks of chunk_tokens (default
    seq_len)."""
    from pgolf.eval.lora import phase_boundaries

    T = tokens.numel() - 1
    spans = document_spans(tokens.cpu(), bos_id)
    units = _ranges("document", spans)

    def chunks(C: int) -> list[Unit]:
        return _ranges("chunk", [(a, min(a + C, T)) for a in range(0, T, C)])

    def windows(table: Tensor) -> list[Unit]:
        return _ranges("window", [(f, e) for _, e, f in table.tolist()])

    if mode == "standard":
        units += windows(window_table(T, seq_len, cfg.stride))
    elif mode == "sliding":
        units += windows(window_table(T, seq_len, min(cfg.stride or DEFAULT_STRIDE, seq_len)))
    elif mode == "doc":
        units += windows(document_window_table(spans, seq_len, cfg.stride))
    elif mode == "ttt-sgd":
        units += chunks(cfg.ttt_chunk_tokens)
    elif mode in ("ttt-lora", "ttt-phased"):
        K = cfg.ttt_lora_chunk
        units += _ranges("lora-chunk", [(a, min(a + K, e)) for s, e in spans for a in range(s, e, K)])
        if mode == "ttt-phased":
            cuts = phase_boundaries(len(spans), cfg.phased_prefix_docs, cfg.phased_num_phases)
            edges = [0] + cuts + [len(spans)]
            units += _ranges("phase", [(spans[a][0], spans[b - 1][1]) for a, b in zip(edges, edges[1:]) if b > a])
            units += chunks(cfg.ttt_chunk_tokens)
    else:
        units += chunks(chunk_tokens or seq_len)
    return units


def choose_positions(units: Sequence[Unit], tokens: Tensor, bos_id: int | None) -> tuple[list[int], dict]:
    """Greedy cover: for each unit no chosen token lies in yet, its last non-BOS token. Returns (sorted token
    indices, {kind: (covered, total)})."""
    chosen: set[int] = set()
    for u in sorted(units, key=lambda u: (u.hi, u.lo)):
        if any(u.lo <= t <= u.hi for t in chosen):
            continue
        t = u.hi
        while bos_id is not None and t > u.lo and int(tokens[t]) == bos_id:
            t -= 1
        chosen.add(t)
    coverage: dict[str, list[int]] = {}
    for u in units:
        c = coverage.setdefault(u.kind, [0, 0])
        c[0] += any(u.lo <= t <= u.hi for t in chosen)
        c[1] += 1
    return sorted(chosen), {k: (c, n) for k, (c, n) in coverage.items()}


# ------------------------------------------------------------------------------------------------ the model

@torch.no_grad()
def informative_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every all-zero matrix (the zero-initialised output projections of a fresh GPT) with N(0, 1/fan_in), so
    attention carries information to the output; returns the model."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.dim() >= 2 and not p.any():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    return model


@torch.no_grad()
def context_sensitivity(model: nn.Module, tokens: Tensor, seq_len: int, vocab_size: int,
                        bos_id: int | None = None) -> float:
    """max |Δ log p| at positions two or more tokens away (either side) from a changed token in the middle of one
    window: 0 for a model whose predictions see only the current and the neighbouring token."""
    L = min(seq_len, tokens.numel())
    x = tokens[:L].reshape(1, L).long().clone()
    if bos_id is not None:  # one document: a document-isolated model must still see the changed token
        x[x == bos_id] = (bos_id + 1) % vocab_size
    m = L // 2
    y = x.clone()
    y[0, m] = (x[0, m] + 1 + vocab_size // 2) % vocab_size
    if y[0, m] == bos_id:
        y[0, m] = (y[0, m] + 1) % vocab_size
    far = (torch.arange(L) - m).abs() >= 2
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    was = model.training
    model.eval()
    try:
        a = torch.log_softmax(model.logits(x.to(dev)).float(), -1)[0, far.to(dev)]
        b = torch.log_softmax(model.logits(y.to(dev)).float(), -1)[0, far.to(dev)]
    finally:
        model.train(was)
    return float((a - b).abs().max()) if a.numel() else 0.0
