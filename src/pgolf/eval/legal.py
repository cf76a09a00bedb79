"""Black-box legality checker for evaluation modes: the four conditions of issue #1017 (parameter-golf.md §5.1).

    report = check_legal(mode_eval_fn(EvalConfig(mode="ttt-sgd", ...), seq_len=64, bos_id=1),
                         lambda: load_model(...), val_tokens, target_bytes)
    assert report.passed, "\n".join(report.details)

`eval_fn(model, tokens, target_bytes, recorder)` runs a mode and reports to the `ScoreRecorder`:
* `record_scores(positions, log_probs)`: the full-vocabulary log-distributions (n, V) it scored, position p being
  the target index (the distribution that scores token p+1);
* `record_update(positions)`: before/at each parameter update, the target indices whose tokens the update reads
  (a training row tokens[a:b+1] reads targets a−1..b−1; token 0 is never a target and is free).

Checks (names are the keys of LegalReport.checks):
1. "causal": perturbing token t (several t) leaves every distribution that scores a target x_s with s ≤ t unchanged,
   i.e. the distributions at positions p < t (|Δ log p| ≤ atol). The perturbation may create or remove a BOS.
2. "normalized": every scored distribution has V entries and logsumexp ≈ 0.
3. "score_before_update": each update's positions ⊆ the positions scored before it.
4. "single_pass": every target 0..T−1 is scored exactly once (no more, no fewer).
Checks 2–4 rely on the mode reporting honestly; check 1 needs nothing but the distributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from pgolf.eval.config import EvalConfig


class ScoreRecorder:
    """Collects scored distributions and updates in call order (single process, CPU tensors)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Tensor]] = []  # ("score" | "update", positions)
        self.log_probs: dict[int, list[Tensor]] = {}

    def record_scores(self, positions: Tensor, log_probs: Tensor) -> None:
        positions = positions.reshape(-1).long().cpu()
        log_probs = log_probs.reshape(positions.numel(), -1).float().cpu()
        self.events.append(("score", positions))
        for p, lp in zip(positions.tolist(), log_probs):
            self.log_probs.setdefault(p, []).append(lp)

    def record_update(self, positions: Tensor | Sequence[int]) -> None:
        self.events.append(("update", torch.as_tensor(positions, dtype=torch.long).reshape(-1).cpu()))


@dataclass
class LegalReport:
    passed: bool
    checks: dict[str, bool]
    details: list[str] = field(default_factory=list)


EvalFn = Callable[[nn.Module, Tensor, Tensor, ScoreRecorder], object]


def mode_eval_fn(cfg: EvalConfig, *, seq_len: int, bos_id: int, device: torch.device | str = "cpu") -> EvalFn:
    """An eval_fn running eval/modes.py `evaluate` with cfg."""
    from pgolf.eval.modes import evaluate

    def run(model: nn.Module, tokens: Tensor, target_bytes: Tensor, recorder: ScoreRecorder) -> object:
        return evaluate(model, tokens, target_bytes, cfg, seq_len=seq_len, device=device, bos_id=bos_id, recorder=recorder)

    return run


def check_legal(
    eval_fn: EvalFn,
    model_factory: Callable[[], nn.Module],
    tokens: Tensor,
    target_bytes: Tensor,
    *,
    positions: Sequence[int] | None = None,
    num_positions: int = 4,
    seed: int = 0,
    vocab_size: int | None = None,
    atol: float = 1e-4,
) -> LegalReport:
    """Run eval_fn on `tokens` and on copies perturbed at `positions` (token indices in 1..T; default
    `num_positions` random ones) with a fresh model_factory() each time; see the module doc for the checks."""
    tokens = tokens.reshape(-1).long().cpu()
    T = tokens.numel() - 1
    details: list[str] = []
    model = model_factory()
    V = vocab_size or getattr(getattr(model, "cfg", None), "vocab_size", None) or int(tokens.max()) + 1
    base = ScoreRecorder()
    eval_fn(model, tokens.clone(), target_bytes, base)
    checks = {
        "normalized": _check_normalized(base, V, atol, details),
        "score_before_update": _check_score_first(base, details),
        "single_pass": _check_single_pass(base, T, details),
    }

    g = torch.Generator().manual_seed(seed)
    if positions is None:
        positions = torch.randperm(T, generator=g)[: min(num_positions, T)].add(1).tolist()
    causal = True
    for t in positions:
        if not 1 <= t <= T:
            raise ValueError(f"perturbation position {t} must be a token index in [1, {T}]")
        perturbed = tokens.clone()
        perturbed[t] = (tokens[t] + int(torch.randint(1, V, (1,), generator=g))) % V
        rec = ScoreRecorder()
        eval_fn(model_factory(), perturbed, target_bytes, rec)
        worst, where = 0.0, -1
        for p in range(t):  # distributions scoring targets x_1..x_t
            if p not in base.log_probs or p not in rec.log_probs:
                continue  # reported by single_pass
            diff = float((base.log_probs[p][0] - rec.log_probs[p][0]).abs().max())
            if diff > worst:
                worst, where = diff, p
        if worst > atol:
            causal = False
            details.append(f"causal: perturbing token {t} changed the distribution scoring target position {where} "
                           f"(token {where + 1} ≤ {t}) by max |Δlog p| = {worst:.3g} > atol {atol:g}")
    checks = {"causal": causal, **checks}
    return LegalReport(passed=all(checks.values()), checks=checks, details=details)


def _check_normalized(rec: ScoreRecorder, V: int, atol: float, details: list[str]) -> bool:
    for p, lps in sorted(rec.log_probs.items()):
        for lp in lps:
            if lp.numel() != V:
                details.append(f"normalized: position {p} scored a distribution of size {lp.numel()}, not V={V}")
                return False
            lse = float(torch.logsumexp(lp.double(), 0))
            if not abs(lse) <= atol:  # also catches NaN
                details.append(f"normalized: position {p} distribution has logsumexp {lse:.3g} (expected 0)")
                return False
    return True


def _check_score_first(rec: ScoreRecorder, details: list[str]) -> bool:
    scored: set[int] = set()
    for i, (kind, pos) in enumerate(rec.events):
        if kind == "score":
            scored.update(pos.tolist())
            continue
        unseen = sorted(set(pos.tolist()) - scored)
        if unseen:
            details.append(f"score_before_update: update #{i} uses {len(unseen)} not-yet-scored positions "
                           f"(first {unseen[:5]})")
            return False
    return True


def _check_single_pass(rec: ScoreRecorder, T: int, details: list[str]) -> bool:
    counts = {p: len(v) for p, v in rec.log_probs.items()}
    missing = [p for p in range(T) if p not in counts]
    repeated = [p for p, c in counts.items() if c > 1]
    outside = [p for p in counts if not 0 <= p < T]
    if missing or repeated or outside:
        details.append(f"single_pass: {T} targets; {len(missing)} never scored (first {missing[:5]}), "
                       f"{len(repeated)} scored more than once (first {sorted(repeated)[:5]}), "
                       f"{len(outside)} outside [0, T)")
        return False
    return True
