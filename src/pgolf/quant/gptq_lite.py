"""GPTQ-lite (R0322 `quantize_int6_per_row`, PR #414): per-row round-to-nearest at the best of five clip percentiles.

Despite the name there is no Hessian and no error feedback: each candidate percentile gives a per-row clip, the
weights are rounded on that grid, and the percentile with the lowest weight MSE wins (one per matrix, as the
record; `per_row=True` picks one per row). `gptq.gptq_with_clip_search` (R0325) wraps the same five percentiles
around full GPTQ.

    qt, info = gptq_lite(W, bits=6)          # info["percentile"]: the chosen clip
    s = percentile_scales(W, 0.9999, 6)       # one candidate's stored fp16 scale
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from pgolf.quant.primitives import QuantizedTensor, qmax_for_bits, quantize_rtn, row_quantile

# R0322 `quantize_int6_per_row` (PR #414): the five clip percentiles GPTQ-lite tries.
GPTQ_LITE_PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)


def _as_matrix(W: Tensor) -> Tensor:
    if W.dim() != 2:
        raise ValueError(f"expected a 2-D weight (rows=out, cols=in), got shape {tuple(W.shape)}")
    return W.detach().float()


def percentile_scales(W: Tensor, pct: float, bits: int) -> Tensor:
    """GPTQ-lite scale (R0322 `quantize_int6_per_row`): row_clip = quantile(|W_row|, pct), pct = 1 → row max.

    s = (row_clip/cr).clamp_min(1/cr) in fp16. Note the floor 1/cr is *absolute* (as in the record): rows whose
    clip is below 1 all get the scale 1/cr.
    """
    W = _as_matrix(W)
    if not 0.0 < pct <= 1.0:
        raise ValueError(f"percentile {pct} must be in (0, 1]")
    cr = qmax_for_bits(bits)
    row_clip = W.abs().amax(dim=1) if pct >= 1.0 else row_quantile(W.abs(), pct)
    return (row_clip / cr).clamp_min(1.0 / cr).to(torch.float16)


def gptq_lite(W: Tensor, bits: int, percentiles: Sequence[float] = GPTQ_LITE_PERCENTILES,
              per_row: bool = False) -> tuple[QuantizedTensor, dict[str, Any]]:
    """GPTQ-lite clip search: RTN at each candidate percentile clip, keep the one with the lowest weight MSE.

    per_row=False is R0322 exactly: ONE percentile per matrix, chosen by the unweighted mean of (W − q·s)² over
    the whole matrix (the clip value itself is per row). per_row=True picks the percentile independently for
    each row (what the record's name promised); its MSE is never above the per-matrix choice.

    info: {"percentile": chosen pct (per-matrix) or None, "percentiles": (rows,) fp32 chosen pct per row,
    "mse": weight MSE of the result, "mse_by_percentile": {pct: per-matrix MSE}}.
    """
    W = _as_matrix(W)
    if not percentiles:
        raise ValueError("percentiles must not be empty")
    cands = [quantize_rtn(W, bits, percentile_scales(W, p, bits)) for p in percentiles]
    row_mse = torch.stack([(W - qt.dequantize()).pow(2).mean(dim=1) for qt in cands])  # (n_pct, rows)
    mse_by_pct = {float(p): float(m) for p, m in zip(percentiles, row_mse.mean(dim=1))}
    if per_row:
        best = row_mse.argmin(dim=0)  # (rows,)
        rows = torch.arange(W.shape[0])
        q = torch.stack([qt.q for qt in cands])[best, rows]
        scale = torch.stack([qt.scale for qt in cands])[best, rows]
        chosen = torch.tensor([float(p) for p in percentiles])[best]
        qt = QuantizedTensor(q=q.contiguous(), scale=scale.contiguous(), bits=bits, method="gptq_lite")
        mse = float(row_mse[best, rows].mean())
        return qt, {"percentile": None, "percentiles": chosen, "mse": mse, "mse_by_percentile": mse_by_pct}
    i = int(row_mse.mean(dim=1).argmin())  # first minimum, as the record's strict `<`
    qt = QuantizedTensor(q=cands[i].q, scale=cands[i].scale, bits=bits, method="gptq_lite")
    chosen = torch.full((W.shape[0],), float(percentiles[i]))
    return qt, {"percentile": float(percentiles[i]), "percentiles": chosen, "mse": mse_by_pct[float(percentiles[i])],
                "mse_by_percentile": mse_by_pct}
