"""GPTQ: Hessian-aware rounding of a Linear weight on a fixed per-row grid (pure functions, no modules, no prints).

GPTQ (Frantar et al. 2023, IST-DASLab/gptq `fasterquant`) quantizes the columns of W one at a time and pushes
each column's rounding error onto the columns not yet quantized, through the inverse Hessian, so that the
*layer output* moves as little as possible:

    Ŵ = argmin ‖XWᵀ − XŴᵀ‖²  over Ŵ on the grid q·s,    i.e.  trace((W − Ŵ) H (W − Ŵ)ᵀ),  H = XᵀX / n

W is (rows=out, cols=in), X the (n, cols) inputs of the Linear, H (cols, cols). The grid is symmetric per row:
q ∈ [−cr, cr], cr = 2^(bits−1) − 1, with the per-row fp16 scale s fixed *before* the sweep (SDClip, R0405, or a
percentile clip, R0322); no zero points, no groups, as in every parameter-golf record (docs/techniques.md#full-gptq).

Worked 2×2 example (one output row, two anti-correlated inputs, damp=0):

    W = [[0.30, 0.40]], s = 0.25, H = [[1, −0.9], [−0.9, 1]]
    RTN : q = [1, 2] → Ŵ = [0.25, 0.50], W − Ŵ = [0.05, −0.10], output error 0.0215
    GPTQ: column 0 rounds to 1 (error +0.05); the error is fed forward, column 1 becomes
          0.40 − 0.9·0.05 = 0.355 → q = 1 → Ŵ = [0.25, 0.25], W − Ŵ = [0.05, 0.15], output error 0.0115

    qt, info = gptq_quantize(W, H, bits=6, scale=sdclip_scale(W, 12.85, 6))
    info["damp"], info["escalations"], info["fallback"]     # what was actually done

Knobs (standard GPTQ vocabulary):
    damp        relative diagonal damping: H += damp·mean(diag H)·I ("percdamp", 0.01 in IST gptq and all records)
    block_size  columns per lazy-batch block: the error of a block reaches later columns in one matmul (128)
    act_order   quantize columns in descending diag(H) order (the "act-order" of IST gptq / R0325+); the codes are
                un-permuted at the end, and per-row scales are permutation-invariant, so nothing else is stored
    max_damp    damping cap of the escalation below (ours; not in the records, which crash or fall back to
                GPTQ-lite, R0331)

Robustness (ours): when the Cholesky factorisation fails (LinAlgError, non-finite factor) or the sweep produces
non-finite values, the damping is escalated ×10 (0.01 → 0.1 → 1 → 10 of mean(diag)) and retried; `info` records
the damping used and the number of escalations. If even `max_damp` fails (e.g. H holds NaN/inf) the weight is
rounded to nearest on the same scale and `info["fallback"] = "rtn"`. Nothing is silent.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from pgolf.quant.gptq_lite import GPTQ_LITE_PERCENTILES, percentile_scales
from pgolf.quant.primitives import QuantizedTensor, qmax_for_bits, quantize_rtn

GPTQ_DAMP = 0.01  # percdamp: IST gptq default; R0325 … R0427 `0.01 * H.diag().mean()`
GPTQ_BLOCK_SIZE = 128  # IST gptq blocksize; R0325 … R0427 block_size=128
MAX_DAMP = 10.0  # escalation cap (ours): H + 10·mean(diag)·I is diagonally dominant for any PSD H
_DAMP_FLOOR = 1e-3  # first escalation step when damp=0
_FP16_MIN_SUBNORMAL = 2.0 ** -24  # primitives.quantize_rtn floors the stored scale here; GPTQ must use the same grid


def damping_mean(H: Tensor) -> Tensor:
    """mean(diag H) exactly as the records take it, `H.diag().mean()` (fp32, 0-d). `torch.diagonal(H).mean()`
    reduces a strided view in another order and differs in the last bit for about half of all Hessians, which
    flips GPTQ codes (issue 13)."""
    return H.diag().mean()


def _damp_schedule(damp: float, max_damp: float) -> Iterator[float]:
    """damp, then ×10 steps up to max_damp (0.01, 0.1, 1, 10 by default)."""
    yield damp
    d = max(damp * 10.0, _DAMP_FLOOR)
    while d <= max_damp * (1 + 1e-9):
        yield d
        d *= 10.0


def _upper_cholesky_of_inverse(H: Tensor) -> Tensor | None:
    """Hinv = upper Cholesky factor of H⁻¹ (cholesky → cholesky_inverse → cholesky upper), or None if it fails."""
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except torch.linalg.LinAlgError:
        return None
    if not bool(torch.isfinite(Hinv).all()) or not bool((torch.diagonal(Hinv) > 0).all()):
        return None
    return Hinv


def _gptq_sweep(W: Tensor, Hinv: Tensor, s: Tensor, cr: int, block_size: int) -> Tensor | None:
    """The GPTQ column sweep with lazy block updates (IST `fasterquant`). W is consumed. Returns float codes Q.

    s is the (rows,) fp32 scale. Returns None if the error ever becomes non-finite (the caller escalates damping).
    """
    rows, cols = W.shape
    Q = torch.zeros(rows, cols)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()  # (rows, B)
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]  # (B, B)
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            q = torch.clamp(torch.round(w / s), -cr, cr)
            Q1[:, i] = q
            err1 = (w - q * s) / d
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err1
        if not bool(torch.isfinite(Err1).all()):
            return None
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # lazy batch update of all later columns
    return Q


def gptq_quantize(W: Tensor, H: Tensor, bits: int, scale: Tensor, *, damp: float = GPTQ_DAMP,
                  block_size: int = GPTQ_BLOCK_SIZE, act_order: bool = True,
                  max_damp: float = MAX_DAMP) -> tuple[QuantizedTensor, dict[str, Any]]:
    """Full-Hessian GPTQ on a fixed symmetric grid (docs/techniques.md#full-gptq; R0405 `gptq_quantize_weight`).

    W (rows, cols), H (cols, cols), `scale` the (rows,) per-row scale (or 0-d), rounded to fp16 first so the codes
    are computed with the stored value. Steps: dead columns (diag H = 0) get H[d,d] = 1 and W[:,d] = 0;
    H += damp·mean(diag H)·I; act-order permutation; Hinv = upper Cholesky of H⁻¹; block sweep; un-permute.

    Returns (QuantizedTensor(method="gptq"), info) with info = {"damp": relative damping used, "damp_abs",
    "escalations": retries with more damping, "fallback": None | "rtn", "fallback_reason", "dead_cols",
    "act_order", "block_size"}.
    """
    if W.dim() != 2 or H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"need W (rows, cols) and H (cols, cols); got W {tuple(W.shape)}, H {tuple(H.shape)}")
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be ≥ 1")
    if damp < 0 or max_damp < damp:
        raise ValueError(f"need 0 ≤ damp ≤ max_damp, got damp={damp}, max_damp={max_damp}")
    W = W.detach().float().clone()
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W has non-finite entries")
    H = H.detach().float().clone()
    cr = qmax_for_bits(bits)
    s16 = scale.detach().to(torch.float16).clamp_min(_FP16_MIN_SUBNORMAL)
    rows, cols = W.shape
    if s16.dim() > 1 or (s16.dim() == 1 and s16.shape[0] != rows):
        raise ValueError(f"scale must be () or ({rows},), got {tuple(s16.shape)}")
    s = s16.float().expand(rows) if s16.dim() == 0 else s16.float()

    # Dead inputs (never active in calibration): H[d,d] = 1 and W[:,d] = 0, so they quantize to 0. For a PSD H
    # their off-diagonal entries are already 0; zeroing them keeps the guarantee for a non-PSD H too.
    dead = torch.diagonal(H) == 0
    H[dead, :] = 0.0
    H[:, dead] = 0.0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    info: dict[str, Any] = {"damp": None, "damp_abs": None, "escalations": 0, "fallback": None,
                            "fallback_reason": None, "dead_cols": int(dead.sum()), "act_order": act_order,
                            "block_size": block_size}

    mean_diag = float(torch.diagonal(H).double().mean())
    if not bool(torch.isfinite(H).all()) or not 0 < mean_diag < float("inf"):
        return _rtn_fallback(W, bits, s16, info, "H has non-finite entries or mean(diag H) ≤ 0")
    # GPTQ is invariant to H → cH (c > 0). Dividing by a power of 4 near mean(diag) is exact in floating point and
    # so are the square roots of the Cholesky factorisation, so the codes are bit-identical to the unscaled fp32
    # computation (the records'), while fp32 Cholesky can no longer overflow for a huge H.
    H = H / 4.0 ** math.floor(math.log(mean_diag, 4))
    mean_diag_unit = damping_mean(H)
    # act-order on the damped diagonal, as the records (`H.diagonal().add_(damp)` before the argsort): adding the
    # damping can merge near-equal entries, so the order must be taken after it
    first = H + (damp * mean_diag_unit) * torch.eye(cols)
    perm = torch.argsort(first.diag(), descending=True, stable=True) if act_order else torch.arange(cols)
    invperm = torch.argsort(perm)
    W = W[:, perm]
    H = H[perm][:, perm]
    eye = torch.eye(cols)
    for k, d in enumerate(_damp_schedule(damp, max_damp)):
        Hinv = _upper_cholesky_of_inverse(H + (d * mean_diag_unit) * eye)  # H += damp·mean(diag H)·I
        Q = None if Hinv is None else _gptq_sweep(W.clone(), Hinv, s, cr, block_size)
        if Q is not None:
            info.update(damp=d, damp_abs=d * mean_diag, escalations=k)
            q = Q[:, invperm].to(torch.int8).contiguous()
            return QuantizedTensor(q=q, scale=s16.contiguous(), bits=bits, method="gptq"), info
        info["escalations"] = k
    return _rtn_fallback(W[:, invperm], bits, s16, info,
                         f"Cholesky/sweep failed up to damp={max_damp}·mean(diag H)")


def _rtn_fallback(W: Tensor, bits: int, s16: Tensor, info: dict[str, Any],
                  reason: str) -> tuple[QuantizedTensor, dict[str, Any]]:
    rtn = quantize_rtn(W, bits, s16)
    info.update(fallback="rtn", fallback_reason=reason)
    return QuantizedTensor(q=rtn.q, scale=rtn.scale, bits=bits, method="gptq"), info


def gptq_with_clip_search(W: Tensor, H: Tensor, bits: int, percentiles: Sequence[float] = GPTQ_LITE_PERCENTILES,
                          **gptq_kwargs: Any) -> tuple[QuantizedTensor, dict[str, Any]]:
    """GPTQ-lite's percentile search wrapped around full GPTQ (R0325 `quantize_int6_gptq`, R0331).

    One GPTQ pass per candidate percentile clip (`percentile_scales`), keep the pass with the lowest *unweighted*
    weight-space MSE mean((W − Ŵ)²), as the records do. info = the chosen pass's GPTQ info plus
    {"percentile", "mse", "mse_by_percentile"}.
    """
    if not percentiles:
        raise ValueError("percentiles must not be empty")
    W32 = W.detach().float()
    best: tuple[float, float, QuantizedTensor, dict[str, Any]] | None = None
    mse_by_pct: dict[float, float] = {}
    for pct in percentiles:
        qt, info = gptq_quantize(W32, H, bits, percentile_scales(W32, pct, bits), **gptq_kwargs)
        mse = float((W32 - qt.dequantize()).pow(2).mean())
        mse_by_pct[float(pct)] = mse
        if best is None or mse < best[0]:
            best = (mse, float(pct), qt, info)
    assert best is not None
    mse, pct, qt, info = best
    return qt, {**info, "percentile": pct, "mse": mse, "mse_by_percentile": mse_by_pct}
