"""The two Hessian operations outside the GPTQ sweep: the output-space error a report row or the budget fit
measures, and R0325's collector damping (pure tensor functions; H = XᵀX/n of quant/hessian.py).

    err = output_error(W, qt.dequantize(), H)     # trace((W − Ŵ) H (W − Ŵ)ᵀ)
    H = collector_damping(H, 0.01)                # ar-calib-gptq's calib_damp

quant/apply.py and quant/fit.py import it only when Hessians are given, so the single-file script of a data-free
recipe leaves it out (`QuantConfig.modules_not_run`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def output_error(W: Tensor, W_hat: Tensor, H: Tensor) -> float:
    """Hessian-weighted (output-space) error trace((W − Ŵ) H (W − Ŵ)ᵀ) = ‖X(W − Ŵ)ᵀ‖²/n for H = XᵀX/n."""
    D = (W.detach().float() - W_hat.detach().float())  # (rows, cols)
    return float(((D @ H.detach().float()) * D).sum())


def collector_damping(H: Tensor, rel: float) -> Tensor:
    """R0325's Hessian collector step, `H += rel·max(H.diag().mean(), 1e-6)·I` (fp32), applied before the quantizer's
    own damping (which then adds its 1 % again, as R0325/R0331 do). rel = 0 returns H unchanged."""
    if not rel:
        return H
    H = H.detach().float()
    return H + (rel * H.diag().mean().clamp_min(1e-6)) * torch.eye(H.shape[0], device=H.device)
