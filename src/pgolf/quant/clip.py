"""Clip rules: how the per-row scale of a symmetric b-bit grid is chosen (pure functions, no modules, no prints).

Every rule returns the *stored* fp16 per-row scale `s` (rows,) of `q = clamp(round(W/s), ±cr)`, cr = 2^(b−1) − 1.
W is (rows=out, cols=in) fp32, H is the (cols, cols) input second moment XᵀX/n of the calibration pass.

    s = sdclip_scale(W, k=12.85, bits=6)                 # R0405 SDClip: k·std(row)/cr
    s = hessian_sdclip_scale(W, H, k=12.85, bits=6)      # R0406 Hessian-aware SDClip (λ = 0.175)
    sigmas, offset = adaptive_sigmas(sens, numels, base) # PR #1689/#1962 per-tensor k, log-mean preserved

GPTQ-lite (R0322's percentile clip search) lives in quant/gptq_lite.py. References: docs/techniques.md#sdclip,
#hessian-sdclip and #adaptive-sigma.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from pgolf.quant.primitives import qmax_for_bits

# R0405 MATRIX_CLIP_SIGMAS: the SDClip k of a matrix when a rule names none.
DEFAULT_CLIP_SIGMA = 12.85
# R0406 HESSIAN_CLIP_LAMBDA (PR #1412): 0.175 beat 0.30 ("higher λ increases entropy → worse Brotli").
HESSIAN_CLIP_LAMBDA = 0.175
# PR #1689 / PR #1962 ADAPTIVE_HESSIAN_CLIP: σ = clamp(exp(−0.15·log sens + offset), 6, 24).
ADAPTIVE_ALPHA, ADAPTIVE_SIGMA_LO, ADAPTIVE_SIGMA_HI = 0.15, 6.0, 24.0


def _as_matrix(W: Tensor) -> Tensor:
    if W.dim() != 2:
        raise ValueError(f"expected a 2-D weight (rows=out, cols=in), got shape {tuple(W.shape)}")
    return W.detach().float()


def sdclip_scale(W: Tensor, k: float, bits: int) -> Tensor:
    """SDClip (R0405 `gptq_quantize_weight`, PR #1394): s_row = k·std(W_row)/cr, unbiased std, clamp_min 1e-10, fp16.

    Clip c = k·σ_row. The records' k: 12.85 int6 matrices, 20 int8 embeddings (R0405); MLP 11.5 / attn 13 /
    embed 14 int7 (R0427).
    """
    W = _as_matrix(W)
    return (k * W.std(dim=1) / qmax_for_bits(bits)).clamp_min(1e-10).to(torch.float16)


def hessian_sdclip_scale(W: Tensor, H: Tensor, k: float, bits: int, lam: float = HESSIAN_CLIP_LAMBDA,
                         damp: float = 0.01) -> Tensor:
    """Hessian-aware SDClip (R0406 `gptq_quantize_weight(..., hessian_clip_lambda)`, docs/techniques.md#hessian-sdclip).

    diagH is taken the way R0406 takes it, after GPTQ's dead-column fix and damping (dead → 1, + damp·mean(diag)),
    clamp_min 1e-8. col_imp = diagH/mean(diagH); row_imp = mean_j |W_ij|·col_imp_j, normalised to mean 1;
    s_row = k·std(W_row)·[1 + λ(row_imp − 1)]/cr. λ = 0 is exactly `sdclip_scale`.
    """
    W = _as_matrix(W)
    if lam == 0.0:
        return sdclip_scale(W, k, bits)
    diagH = torch.diagonal(H.detach().float()).clone()
    diagH[diagH == 0] = 1.0
    diagH = (diagH + damp * diagH.mean()).clamp_min(1e-8)
    col_importance = diagH / diagH.mean()  # (cols,)
    row_importance = (W.abs() * col_importance[None, :]).mean(dim=1)  # (rows,)
    row_importance = row_importance / row_importance.mean()
    adj = 1.0 + lam * (row_importance - 1.0)
    return (k * W.std(dim=1) * adj / qmax_for_bits(bits)).clamp_min(1e-10).to(torch.float16)


# ------------------------------------------------------------------------------------------------ adaptive σ

def hessian_sensitivity(W: Tensor, H: Tensor, eps: float = 1e-12) -> float:
    """PR #1689 sensitivity: max(mean(diag H) · mean_row var(W_row), eps) (unbiased per-row variance)."""
    W = _as_matrix(W)
    sens = float(H.detach().float().diag().mean()) * float(W.var(dim=1).mean())  # H.diag(), as the records
    return sens if math.isfinite(sens) and sens > eps else eps


def adaptive_sigmas(sens: Mapping[str, float], numels: Mapping[str, int], base_sigma: Mapping[str, float], *,
                    alpha: float = ADAPTIVE_ALPHA, lo: float = ADAPTIVE_SIGMA_LO, hi: float = ADAPTIVE_SIGMA_HI,
                    tol: float = 1e-9) -> tuple[dict[str, float], float]:
    """Per-tensor SDClip k from Hessian sensitivity, with the numel-weighted log-mean of k preserved (PR #1962).

    σ_n = clamp(exp(−α·log sens_n + offset), lo, hi); `offset` is found by bisection so that
    Σ numel_n·log σ_n / Σ numel_n = Σ numel_n·log base_n / Σ numel_n (base = the hand-tuned group σ, e.g. MLP
    11.5 / attn 13.0 / matrix 12.85), i.e. the compressed size stays about where the hand-tuned σ put it.
    The log-mean is continuous and non-decreasing in offset, ranging over [log lo, log hi]; a target outside that
    range is unreachable and raises ValueError. Returns (sigmas, offset); the target is met to `tol`.
    """
    names = list(sens)
    if not names:
        raise ValueError("adaptive_sigmas needs at least one tensor")
    if set(names) != set(numels) or set(names) != set(base_sigma):
        raise ValueError("sens, numels and base_sigma must have the same keys")
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < lo ≤ hi, got lo={lo}, hi={hi}")
    for n in names:
        if not (math.isfinite(sens[n]) and sens[n] > 0):
            raise ValueError(f"sensitivity of {n!r} must be finite and > 0 (use hessian_sensitivity), got {sens[n]}")
        if numels[n] <= 0 or not base_sigma[n] > 0:
            raise ValueError(f"{n!r}: numel and base_sigma must be > 0")
    total = float(sum(numels[n] for n in names))
    target = sum(numels[n] * math.log(base_sigma[n]) for n in names) / total
    log_lo, log_hi = math.log(lo), math.log(hi)
    if not log_lo - tol <= target <= log_hi + tol:
        raise ValueError(f"unreachable: the numel-weighted log-mean of base_sigma is exp({target:.6g}) = "
                         f"{math.exp(target):.6g}, outside the clamp range [{lo}, {hi}]; widen lo/hi")
    raw = {n: -alpha * math.log(sens[n]) for n in names}

    def sigmas_at(offset: float) -> dict[str, float]:
        return {n: min(max(math.exp(raw[n] + offset), lo), hi) for n in names}

    def log_mean(sig: Mapping[str, float]) -> float:
        return sum(numels[n] * math.log(sig[n]) for n in names) / total

    # Below a all σ sit at lo, above b all at hi: the bracket holds the target.
    a, b = log_lo - max(raw.values()) - 1.0, log_hi - min(raw.values()) + 1.0
    offset = 0.5 * (a + b)
    for _ in range(200):
        offset = 0.5 * (a + b)
        gap = log_mean(sigmas_at(offset)) - target
        if abs(gap) <= tol or b - a <= 1e-15 * max(1.0, abs(offset)):
            break
        a, b = (offset, b) if gap < 0 else (a, offset)
    sigmas = sigmas_at(offset)
    if abs(log_mean(sigmas) - target) > max(tol, 1e-6):  # cannot happen for a continuous monotone log-mean
        raise RuntimeError(f"adaptive_sigmas bisection missed its target by {log_mean(sigmas) - target:.3g}")
    return sigmas, offset
