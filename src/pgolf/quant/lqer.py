"""LQER: a low-rank correction of the quantization error, stored in a few bits (pure functions, no prints).

After a weight is quantized, its error E = W − q·s is approximated by a rank-r product A·B (truncated SVD) and
the factors are themselves quantized and stored next to the codes; the weight is then read back as
q·s + A·B (LQER, Zhang et al. 2024; parameter-golf PR #1797 → R0427 `gptq_mixed_quantize`, `_lqer_pack_asym`;
docs/techniques.md#lqer).

    names = select_lqer_tensors({n: W[n] - qt[n].dequantize() for n in qt}, k=3)          # R0427: top-3 by ‖E‖_F
    qt2, info = apply_lqer(qt[name], W[name], rank=4)                                     # A INT2, B INT4 g64
    w_hat = qt2.dequantize()                             # q·s + A·B (QuantizedTensor.dequantize adds the factors)
    qt, labels = correct_top_k(qt, W, recipe)            # a recipe's LQER step (quant/apply.py `lqer_step`)

Storage (in `QuantizedTensor.extras`, the records' key names; quant/lqer_storage.py reads it back):
    asym: lqA_a int8 (rows, r) in [−2, 1], lqAs_a fp16 () ; lqB_a int8 (r, cols) in [−8, 7], lqBs_a fp16 (numel/g,)
    sym : lqA   int8 (rows, r) in ±cr,     lqAs   fp16 (rows,); lqB int8 (r, cols) in ±cr,  lqBs fp16 (r,)
The group size of the asym B is numel(lqB_a)/numel(lqBs_a), so nothing else needs storing.

Ours, not the records': with a Hessian H the factors minimise the output-space error trace(D H Dᵀ) (SVD of E·L,
H = LLᵀ) instead of ‖E‖_F, and `apply_lqer` leaves the tensor unchanged (info["applied"] = False) if the packed
correction would not lower the error it targets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import Tensor

from pgolf.quant.methods import METHODS
from pgolf.quant.lqer_storage import ASYM_KEYS, SYM_KEYS, has_lqer, unpack_lqer  # noqa: F401  (re-exported)
from pgolf.quant.primitives import QuantizedTensor, qmax_for_bits

LQER_RANK = 4  # R0427 LQER_RANK (PR #1935 sweep: top-4 rank-6 was −0.0009 bpb better, +45 KB)
LQER_TOP_K = 3  # R0427 LQER_TOP_K
LQER_ASYM_GROUP = 64  # R0427 LQER_ASYM_GROUP
LQER_FACTOR_BITS = 4  # R0427 LQER_FACTOR_BITS (sym fallback `_lqer_pack`)
_FP16_MIN_SUBNORMAL = 2.0 ** -24  # a scale that rounds to 0 in fp16 is floored here (the records divide by 0)


def _fp16_scale(x: Tensor) -> Tensor:
    """The records' `(x.clamp_min(1e-10)).to(fp16)`, floored at the smallest fp16 so that dividing by it is safe."""
    return x.clamp_min(1e-10).to(torch.float16).clamp_min(_FP16_MIN_SUBNORMAL)


def _hessian_cholesky(H: Tensor, damp: float = 0.01) -> Tensor:
    """Lower L with LLᵀ = H + damp·mean(diag)·I (dead diag → 1), fp64; damping ×10 until it factorises."""
    H = H.detach().double().clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    mean_diag = float(torch.diagonal(H).mean())
    if not bool(torch.isfinite(H).all()) or not mean_diag > 0:
        raise ValueError("H has non-finite entries or mean(diag H) ≤ 0")
    eye = torch.eye(H.shape[0], dtype=torch.float64)
    d = damp
    while d <= 10.0 * (1 + 1e-9):
        L, status = torch.linalg.cholesky_ex(H + d * mean_diag * eye)
        if int(status) == 0 and bool(torch.isfinite(L).all()):
            return L
        d = max(d * 10.0, 1e-3)
    raise ValueError("H is not positive definite even with damping 10·mean(diag H)")


def lqer_factors(E: Tensor, rank: int, H: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Rank-r factors A (rows, r) = U_r·S_r and B (r, cols) = V_rᵀ of the truncated SVD of E (R0427).

    With H (cols, cols): the best rank-r D = A·B under trace((E − D) H (E − D)ᵀ): SVD of E·L (H = LLᵀ, damped)
    gives A = U_r·S_r, B = V_rᵀ·L⁻¹.
    """
    if E.dim() != 2:
        raise ValueError(f"E must be 2-D, got {tuple(E.shape)}")
    r = max(0, min(rank, *E.shape))
    if H is None:
        U, S, Vh = torch.linalg.svd(E.detach().float(), full_matrices=False)
        return (U[:, :r] * S[:r]).contiguous(), Vh[:r].contiguous()
    L = _hessian_cholesky(H)
    U, S, Vh = torch.linalg.svd(E.detach().double() @ L, full_matrices=False)
    Bt = torch.linalg.solve_triangular(L.T, Vh[:r].T, upper=True)  # B L = V_rᵀ  ⇔  Lᵀ Bᵀ = V_r
    return (U[:, :r] * S[:r]).float().contiguous(), Bt.T.float().contiguous()


def pack_lqer_sym(A: Tensor, B: Tensor, bits: int = LQER_FACTOR_BITS) -> dict[str, Tensor]:
    """R0427 `_lqer_pack`: A and B each int-b per row, scale = rowmax/cr (fp16), codes clamped ±cr (cr = 7 for 4)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits={bits} must be in 2..8")
    cr = qmax_for_bits(bits)
    sA = _fp16_scale(A.abs().amax(dim=1) / cr)
    sB = _fp16_scale(B.abs().amax(dim=1) / cr)
    qA = torch.clamp(torch.round(A / sA.float()[:, None]), -cr, cr).to(torch.int8)
    qB = torch.clamp(torch.round(B / sB.float()[:, None]), -cr, cr).to(torch.int8)
    return {"lqA": qA.contiguous(), "lqAs": sA, "lqB": qB.contiguous(), "lqBs": sB}


def pack_lqer_asym(A: Tensor, B: Tensor, group: int = LQER_ASYM_GROUP) -> dict[str, Tensor]:
    """R0427 `_lqer_pack_asym`: A INT2 with one scale max|A|/1.5, codes in [−2, 1]; B INT4 per group of `group`
    consecutive elements of the flattened B, scale max|B_g|/7.5, codes in [−8, 7].

    Falls back to `pack_lqer_sym` (4 bits) when B.numel() is not a multiple of `group`, as the record does.
    """
    if group < 1 or B.numel() % group:
        return pack_lqer_sym(A, B, bits=LQER_FACTOR_BITS)
    sA = _fp16_scale(A.abs().amax() / 1.5)
    qA = torch.clamp(torch.round(A / sA.float()), -2, 1).to(torch.int8)
    Bg = B.reshape(-1, group)  # (numel/g, g)
    sB = _fp16_scale(Bg.abs().amax(dim=1) / 7.5)
    qB = torch.clamp(torch.round(Bg / sB.float()[:, None]), -8, 7).to(torch.int8).reshape(B.shape)
    return {"lqA_a": qA.contiguous(), "lqAs_a": sA, "lqB_a": qB.contiguous(), "lqBs_a": sB}


def _targeted_error(E: Tensor, H: Tensor | None) -> float:
    """‖E‖_F² without H, trace(E H Eᵀ) with it."""
    E = E.detach().float()
    return float(E.pow(2).sum()) if H is None else float(((E @ H.detach().float()) * E).sum())


def select_lqer_tensors(errors: Mapping[str, Tensor], k: int = LQER_TOP_K,
                        hessians: Mapping[str, Tensor] | None = None) -> list[str]:
    """Names of the k tensors with the largest error, largest first (ties keep the input order).

    Without hessians the score is ‖E‖_F (R0427); with them, trace(E H Eᵀ) (every name needs a Hessian).
    """
    if hessians is not None:
        missing = [n for n in errors if n not in hessians]
        if missing:
            raise KeyError(f"no Hessian for {missing[:3]}{'…' if len(missing) > 3 else ''}")
    scores = {n: _targeted_error(E, None if hessians is None else hessians[n]) for n, E in errors.items()}
    return sorted(scores, key=lambda n: -scores[n])[:max(0, k)]


def apply_lqer(qt: QuantizedTensor, W: Tensor, rank: int = LQER_RANK, mode: str = "asym", H: Tensor | None = None,
               *, group: int = LQER_ASYM_GROUP,
               factor_bits: int = LQER_FACTOR_BITS) -> tuple[QuantizedTensor, dict[str, Any]]:
    """Add a packed rank-r correction of E = W − qt.dequantize() to `qt.extras` (codes and scale unchanged).

    mode "asym" (INT2 A / INT4-g64 B, R0427 default) or "sym" (int-`factor_bits` per row). With H the factors
    target the output-space error (see `lqer_factors`). info = {"applied", "mode" (asym may fall back to sym),
    "rank", "weighted", "err_before", "err_after"} where err is ‖E‖_F² or trace(E H Eᵀ).
    """
    if mode not in ("asym", "sym"):
        raise ValueError(f"mode={mode!r} must be 'asym' or 'sym'")
    if has_lqer(qt.extras):
        raise ValueError("qt already holds LQER factors")
    E = W.detach().float() - qt.dequantize()
    A, B = lqer_factors(E, rank, H=H)
    packed = pack_lqer_asym(A, B, group) if mode == "asym" else pack_lqer_sym(A, B, factor_bits)
    err_before = _targeted_error(E, H)
    err_after = _targeted_error(E - unpack_lqer(packed), H)
    info: dict[str, Any] = {"applied": err_after < err_before, "mode": "asym" if "lqA_a" in packed else "sym",
                            "rank": A.shape[1], "weighted": H is not None, "err_before": err_before,
                            "err_after": err_after}
    if not info["applied"]:
        return qt, info
    return dataclasses.replace(qt, extras={**qt.extras, **packed}), info


def correct_top_k(qts: Mapping[str, QuantizedTensor], weights: Mapping[str, Tensor],
                  recipe: Any) -> tuple[dict[str, QuantizedTensor], dict[str, str]]:
    """A recipe's LQER step (R0427): its `lqer_top_k` 2-D tensors with the largest ‖W − Ŵ‖_F get a packed rank
    `lqer_rank` correction (`lqer_mode`); methods whose spec says `lqer=False` (the int8 gates) are left out.

    Returns (the tensors with the corrections applied, name → "asym r4"-style label of each corrected tensor).
    """
    out, applied = dict(qts), {}
    cands = {n: weights[n].float() - qt.dequantize() for n, qt in qts.items()
             if getattr(METHODS.get(qt.method), "lqer", True) and qt.q.dim() == 2}
    for n in select_lqer_tensors(cands, k=recipe.lqer_top_k):
        qt2, info = apply_lqer(qts[n], weights[n], rank=recipe.lqer_rank, mode=recipe.lqer_mode)
        if info["applied"]:
            out[n] = qt2
            applied[n] = f"{info['mode']} r{info['rank']}"
    return out, applied
