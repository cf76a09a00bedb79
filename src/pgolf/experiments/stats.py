"""Statistics the challenge uses to accept a record: Welch's t-test on per-seed scores and the 0.005-nat margin test.

Record criteria (parameter-golf README): beat the current best by ≥ 0.005 nats (per token) with p < 0.01,
usually from 3 seeds. Submissions test this with Welch's t-test on per-seed val_loss values (R0325 README):

    new = (1.88276292, 1.88156874, 1.88220393), old (PR #549) = (1.88976776, 1.89110239, 1.88919190) nats
    welch(new, old)        → t = −11.83, df = 3.31, two-sided p = 0.0008
    margin_test(new, old)  → H0: old − new ≤ 0.005; shift new by +0.005, one-sided → t = −4.29, p = 0.0095

Nats are per token and BPB is per byte, so 0.005 nats = 0.005 / ln 2 × tokens/byte BPB (sp1024 ≈ 0.00296 BPB).
Pure functions; scipy is imported lazily.

    python -m pytest tests/experiments/test_stats.py -q
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

RECORD_MARGIN_NATS = 0.005
"""Minimum improvement over the current record, in nats per token (parameter-golf README)."""
RECORD_ALPHA = 0.01
"""Significance level a record must reach (parameter-golf README)."""


@dataclass(frozen=True)
class WelchResult:
    t: float
    """Welch t statistic of mean(a) − mean(b); negative when a scores lower (better) than b."""
    df: float
    """Welch–Satterthwaite degrees of freedom."""
    p_two_sided: float
    mean_a: float
    mean_b: float
    std_a: float
    """Sample standard deviation (ddof=1), as records report val_loss_std."""
    std_b: float
    n_a: int
    n_b: int


@dataclass(frozen=True)
class MarginResult:
    t: float
    """Welch t of (new + margin) vs old; negative when the improvement exceeds the margin."""
    df: float
    p_one_sided: float
    """P-value of H0: mean(old) − mean(new) ≤ margin (alternative: the improvement is larger than the margin)."""
    improvement_mean: float
    """mean(old) − mean(new), in the unit of the inputs (nats for record claims)."""
    margin: float

    def meets(self, alpha: float = RECORD_ALPHA) -> bool:
        """True when the improvement exceeds the margin at significance `alpha` (the record criterion)."""
        return self.improvement_mean >= self.margin and self.p_one_sided < alpha


def _floats(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if len(out) < 2:
        raise ValueError(f"{name}: need at least 2 values for a t-test (got {len(out)}); run more seeds")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}: values must be finite (got {out})")
    return out


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std with ddof=1); std is nan for a single value."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("summarize: no values")
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def welch_df(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch–Satterthwaite: (va/na + vb/nb)² / ((va/na)²/(na−1) + (vb/nb)²/(nb−1)), v = sample variance."""
    (_, sa), (_, sb) = summarize(a), summarize(b)
    ea, eb = sa * sa / len(a), sb * sb / len(b)
    den = ea * ea / (len(a) - 1) + eb * eb / (len(b) - 1)
    return (ea + eb) ** 2 / den if den > 0 else math.nan


def _ttest(a: list[float], b: list[float], alternative: str) -> tuple[float, float, float]:
    from scipy import stats

    (_, sa), (_, sb) = summarize(a), summarize(b)
    if sa == 0 and sb == 0:
        raise ValueError("both samples have zero variance; the t-test is undefined (identical per-seed values?)")
    res = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    df = float(getattr(res, "df", welch_df(a, b)))  # scipy ≥ 1.11 reports df; older versions do not
    return float(res.statistic), df, float(res.pvalue)


def welch(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's unequal-variance t-test of a vs b (scipy.stats.ttest_ind(equal_var=False)), two-sided."""
    xa, xb = _floats(a, "a"), _floats(b, "b")
    t, df, p = _ttest(xa, xb, "two-sided")
    (ma, sa), (mb, sb) = summarize(xa), summarize(xb)
    return WelchResult(t=t, df=df, p_two_sided=p, mean_a=ma, mean_b=mb, std_a=sa, std_b=sb,
                       n_a=len(xa), n_b=len(xb))


def margin_test(new: Sequence[float], old: Sequence[float], margin_nats: float = RECORD_MARGIN_NATS) -> MarginResult:
    """One-sided Welch test of H0: mean(old) − mean(new) ≤ margin (lower scores are better).

    Shifts `new` up by the margin and asks whether it is still below `old` (alternative='less'), as in R0325.
    """
    xn, xo = _floats(new, "new"), _floats(old, "old")
    if margin_nats < 0:
        raise ValueError(f"margin_nats={margin_nats} must be ≥ 0")
    t, df, p = _ttest([x + margin_nats for x in xn], xo, "less")
    improvement = summarize(xo)[0] - summarize(xn)[0]
    return MarginResult(t=t, df=df, p_one_sided=p, improvement_mean=improvement, margin=margin_nats)


# ------------------------------------------------------------------------------------------------ units

def nats_to_bpb(nats: float, tokens_per_byte: float) -> float:
    """Nats per token → bits per byte: nats / ln 2 × tokens/byte."""
    return nats / math.log(2) * tokens_per_byte


def bpb_to_nats(bpb: float, tokens_per_byte: float) -> float:
    """Bits per byte → nats per token: bpb × ln 2 / (tokens/byte)."""
    if tokens_per_byte <= 0:
        raise ValueError(f"tokens_per_byte={tokens_per_byte} must be positive")
    return bpb * math.log(2) / tokens_per_byte


def tokens_per_byte(run_json: Mapping[str, Any]) -> float:
    """Scored tokens / scored UTF-8 bytes of the run's round-trip evaluation (pre-quant if there is none)."""
    for key in ("roundtrip", "prequant"):
        ev = run_json.get(key) or {}
        if ev.get("num_tokens") and ev.get("num_bytes"):
            return ev["num_tokens"] / ev["num_bytes"]
    raise ValueError("run record has no evaluation with num_tokens/num_bytes (was it a train-only run?)")
