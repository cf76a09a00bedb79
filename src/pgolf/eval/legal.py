"""Black-box legality checker for evaluation modes: the four conditions of parameter-golf issue #1017, plus the
score the mode returns and the model's sensitivity to context.

    check = mode_eval_fn(EvalConfig(mode="ttt-sgd", ...), seq_len=64, bos_id=1)   # or mode=my_mode_fn
    report = check_legal(check, model, val_tokens, target_bytes)
    assert report.passed, "\n".join(report.details)          # assert_legal(...) does this, for tests
    report.coverage                                          # {"chunk": (12, 12), "document": (9, 9), ...}

An eval_fn `(model, tokens, target_bytes, recorder) -> result` runs a mode on `tokens` and reports to the
`ScoreRecorder`: `record_scores(positions, log_probs)` for every full-vocabulary log-distribution (n, V) it scores
(position p = target index: the distribution that scores token p+1), and `record_update(positions)` before each
parameter update, naming the targets whose tokens the update reads (a training row tokens[a:b+1] reads targets
a−1..b−1). `result` carries val_loss, val_bpb, num_tokens, num_bytes. Built-in and registered modes (eval/modes.py)
report through their Tally; `mode_eval_fn` wraps any of them, or a third-party ModeFn.

Checks (keys of LegalReport.checks):
* causal: for each perturbed token t, every distribution at a position p < t (those scoring x_1..x_t) is unchanged
  within atol, compared with the unperturbed run. Needs nothing but the distributions. Perturbed tokens: at least
  one in every unit of the mode's structure (`coverage_units`: its windows or chunks, every document, every LoRA
  chunk, every phase), the last non-BOS token of each, so every earlier position of the unit is tested against it;
  or every token (positions="all").
* normalized: every scored distribution has V entries and logsumexp ≈ 0.
* score_before_update: each update's positions ⊆ positions already scored (relies on the mode's reports).
* single_pass: every target 0..T−1 is scored exactly once.
* returned_score: the val_loss / val_bpb / token and byte counts the mode returns equal those recomputed from the
  recorded distributions and target_bytes (a mode that records a legal pass but returns another fails here).
* informative: the model's predictions depend on tokens at distance ≥ 2, either side (through attention, beyond
  a smear/bigram shortcut); a model without that (a fresh GPT with zero-initialised output projections) would hide
  any leak through attention, so the check is then inconclusive and fails.
Every run (base and perturbed) is checked for single_pass, score_before_update and returned_score.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from pgolf.eval.config import EvalConfig
from pgolf.eval.coverage import Unit, choose_positions, context_sensitivity, coverage_units, informative_init
from pgolf.eval.recorder import ScoreRecorder

__all__ = ["ScoreRecorder", "LegalReport", "ModeCheck", "Unit", "assert_legal", "check_legal", "choose_positions",
           "coverage_units", "informative_init", "mode_eval_fn"]


@dataclass
class LegalReport:
    passed: bool
    checks: dict[str, bool]
    details: list[str] = field(default_factory=list)
    coverage: dict[str, tuple[int, int]] = field(default_factory=dict)  # unit kind → (covered, total)
    positions: list[int] = field(default_factory=list)  # perturbed token indices
    updates: int = 0  # parameter updates the mode reported on the unperturbed run

    def summary(self) -> str:
        cov = ", ".join(f"{k} {c}/{n}" for k, (c, n) in self.coverage.items())
        return f"coverage: {len(self.positions)} perturbed tokens ({cov}); updates {self.updates}"


EvalFn = Callable[[nn.Module, Tensor, Tensor, ScoreRecorder], object]


class ModeCheck:
    """An eval_fn running eval/modes.py `evaluate` with cfg (or `mode`); `units(tokens)` is its structure."""

    def __init__(self, cfg: EvalConfig, *, seq_len: int, bos_id: int, device: torch.device | str = "cpu",
                 mode=None, chunk_tokens: int | None = None) -> None:
        self.cfg, self.seq_len, self.bos_id, self.device, self.mode = cfg, seq_len, bos_id, device, mode
        self.chunk_tokens = chunk_tokens

    def __call__(self, model: nn.Module, tokens: Tensor, target_bytes: Tensor, recorder: ScoreRecorder) -> object:
        from pgolf.eval.modes import evaluate

        return evaluate(model, tokens, target_bytes, self.cfg, seq_len=self.seq_len, device=self.device,
                        bos_id=self.bos_id, recorder=recorder, mode=self.mode, max_seconds=0)

    def units(self, tokens: Tensor) -> list[Unit]:
        name = self.mode if isinstance(self.mode, str) else (self.cfg.mode if self.mode is None else None)
        return coverage_units(tokens, self.cfg, name, seq_len=self.seq_len, bos_id=self.bos_id,
                              chunk_tokens=self.chunk_tokens)


def mode_eval_fn(cfg: EvalConfig, *, seq_len: int, bos_id: int, device: torch.device | str = "cpu",
                 mode=None, chunk_tokens: int | None = None) -> ModeCheck:
    """An eval_fn for `check_legal`: cfg.mode, or `mode` (a ModeFn, registered name or "module:function")."""
    return ModeCheck(cfg, seq_len=seq_len, bos_id=bos_id, device=device, mode=mode, chunk_tokens=chunk_tokens)


# ------------------------------------------------------------------------------------------------ the checker

def check_legal(
    eval_fn: EvalFn,
    model: nn.Module | Callable[[], nn.Module],
    tokens: Tensor,
    target_bytes: Tensor | Callable[[Tensor], Tensor],
    *,
    positions: Sequence[int] | str | None = None,
    units: Sequence[Unit] | None = None,
    bos_id: int | None = None,
    seed: int = 0,
    vocab_size: int | None = None,
    atol: float = 1e-4,
    min_sensitivity: float = 1e-3,
    seq_len: int | None = None,
) -> LegalReport:
    """Run eval_fn on `tokens` and on copies perturbed at `positions` (token indices in 1..T), each time on a fresh
    copy of `model` (or a fresh model_factory() when `model` is a factory). Positions: explicit; "all"; or, by
    default, `choose_positions` over `units` (default eval_fn.units(tokens) for a ModeCheck, else every token).
    `target_bytes`: the per-token bytes, or a function tokens → bytes (recomputed for each perturbed copy)."""
    tokens = tokens.reshape(-1).long().cpu()
    T = tokens.numel() - 1
    fresh = (lambda: copy.deepcopy(model)) if isinstance(model, nn.Module) else model
    probe = fresh()
    V = vocab_size or getattr(getattr(probe, "cfg", None), "vocab_size", None) or int(tokens.max()) + 1
    bos_id = getattr(eval_fn, "bos_id", None) if bos_id is None else bos_id
    bytes_of = target_bytes if callable(target_bytes) else (lambda _t: target_bytes)
    details: list[str] = []
    coverage: dict[str, tuple[int, int]] = {}
    if positions is None:
        units = units if units is not None else (eval_fn.units(tokens) if hasattr(eval_fn, "units") else None)
        if units is None:
            positions = "all"
        else:
            positions, coverage = choose_positions(units, tokens, bos_id)
    if isinstance(positions, str):
        if positions != "all":
            raise ValueError(f"positions={positions!r}: expected a list of token indices or 'all'")
        positions = list(range(1, T + 1))
        coverage = {"token": (T, T)}
    for t in positions:
        if not 1 <= t <= T:
            raise ValueError(f"perturbation position {t} must be a token index in [1, {T}]")

    checks = {"causal": True, "normalized": True, "score_before_update": True, "single_pass": True,
              "returned_score": True, "informative": True}
    if hasattr(probe, "logits"):
        sens = context_sensitivity(probe, tokens, seq_len or getattr(eval_fn, "seq_len", 64), V, bos_id)
        if not sens > min_sensitivity:
            checks["informative"] = False
            details.append(f"informative: changing a token moves the predictions two or more positions away "
                           f"by only {sens:.3g} (≤ {min_sensitivity:g}): the model ignores context, so a leak "
                           f"through attention would be invisible; check a trained artifact or informative_init()")
    else:
        checks["informative"] = False
        details.append("informative: the model has no logits(idx) method, so its context sensitivity is unchecked")

    def run(toks: Tensor, label: str) -> ScoreRecorder:
        rec = ScoreRecorder()
        tb = bytes_of(toks)
        result = eval_fn(fresh(), toks.clone(), tb, rec)
        for name, ok in (("single_pass", _check_single_pass(rec, T, label, details)),
                         ("score_before_update", _check_score_first(rec, label, details)),
                         ("returned_score", _check_returned(result, rec, toks, tb, label, details))):
            checks[name] = checks[name] and ok
        return rec

    base = run(tokens, "unperturbed run")
    checks["normalized"] = _check_normalized(base, V, atol, details)
    base_mat = base.matrix(T, V)
    g = torch.Generator().manual_seed(seed)
    for t in positions:
        perturbed = tokens.clone()
        perturbed[t] = (tokens[t] + int(torch.randint(1, V, (1,), generator=g))) % V
        rec = run(perturbed, f"run perturbed at token {t}")
        diff = (base_mat[:t] - rec.matrix(T, V)[:t]).abs().amax(1)  # distributions scoring x_1..x_t
        diff = torch.nan_to_num(diff, nan=0.0)  # missing positions are reported by single_pass
        worst, where = float(diff.max()), int(diff.argmax())
        if worst > atol:
            checks["causal"] = False
            details.append(f"causal: perturbing token {t} changed the distribution scoring target position {where} "
                           f"(token {where + 1} ≤ {t}) by max |Δlog p| = {worst:.3g} > atol {atol:g}")
    return LegalReport(passed=all(checks.values()), checks=checks, details=details, coverage=coverage,
                       positions=list(positions), updates=base.num_updates())


def assert_legal(eval_fn: EvalFn, model, tokens: Tensor, target_bytes, **kw) -> LegalReport:
    """check_legal, raising AssertionError with the details when any check fails (a pytest helper)."""
    report = check_legal(eval_fn, model, tokens, target_bytes, **kw)
    if not report.passed:
        failed = [k for k, v in report.checks.items() if not v]
        raise AssertionError(f"illegal evaluation ({', '.join(failed)}): " + "; ".join(report.details[:5]))
    return report


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


def _check_score_first(rec: ScoreRecorder, label: str, details: list[str]) -> bool:
    scored: set[int] = set()
    for i, (kind, pos) in enumerate(rec.events):
        if kind == "score":
            scored.update(pos.tolist())
            continue
        unseen = sorted(set(pos.tolist()) - scored)
        if unseen:
            details.append(f"score_before_update ({label}): update #{i} uses {len(unseen)} not-yet-scored "
                           f"positions (first {unseen[:5]})")
            return False
    return True


def _check_single_pass(rec: ScoreRecorder, T: int, label: str, details: list[str]) -> bool:
    counts = {p: len(v) for p, v in rec.log_probs.items()}
    missing = [p for p in range(T) if p not in counts]
    repeated = [p for p, c in counts.items() if c > 1]
    outside = [p for p in counts if not 0 <= p < T]
    if missing or repeated or outside:
        details.append(f"single_pass ({label}): {T} targets; {len(missing)} never scored (first {missing[:5]}), "
                       f"{len(repeated)} scored more than once (first {sorted(repeated)[:5]}), "
                       f"{len(outside)} outside [0, T)")
        return False
    return True


def _check_returned(result, rec: ScoreRecorder, tokens: Tensor, target_bytes: Tensor, label: str,
                    details: list[str]) -> bool:
    """The mode's returned score equals the one recomputed from its recorded distributions."""
    names = ("val_loss", "val_bpb", "num_tokens", "num_bytes")
    if result is None or not all(hasattr(result, k) for k in names):
        details.append(f"returned_score ({label}): the mode returned {type(result).__name__}, not a result with "
                       f"{', '.join(names)}")
        return False
    T = tokens.numel() - 1
    nll, n, nbytes = 0.0, 0, 0
    tb = target_bytes.reshape(-1).long().cpu()
    for p, lps in rec.log_probs.items():
        if not 0 <= p < T:
            continue
        for lp in lps:
            nll -= float(lp[int(tokens[p + 1])].double()) if lp.numel() > int(tokens[p + 1]) else math.nan
            n += 1
            nbytes += int(tb[p + 1])
    loss = nll / max(n, 1)
    bpb = nll / (math.log(2.0) * nbytes) if nbytes else math.nan
    got = (int(result.num_tokens), int(result.num_bytes), float(result.val_loss), float(result.val_bpb))

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-6 * max(abs(b), 1e-12)

    if got[:2] != (n, nbytes) or not close(got[2], loss) or not close(got[3], bpb):
        details.append(f"returned_score ({label}): the mode returned val_loss {got[2]:.6f}, val_bpb {got[3]:.6f}, "
                       f"{got[0]} tokens, {got[1]} bytes; its recorded distributions give val_loss {loss:.6f}, "
                       f"val_bpb {bpb:.6f}, {n} tokens, {nbytes} bytes")
        return False
    return True
