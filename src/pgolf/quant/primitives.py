"""Quantizer primitives: pure tensor functions that return a `QuantizedTensor` (no modules, no globals, no prints).

Storage convention of every record (docs/techniques.md#storage): codes are `int8`, one per byte, whatever the bit width
(the entropy coder does the packing); scales are fp16 per output row (dim 0), or a 0-d per-tensor scale; the
dequantized weight is `q · scale` broadcast over the trailing dims, cast back to the original dtype.

    qt = quantize_int8_percentile(w)           # the challenge baseline (BASE `quantize_float_tensor`)
    qt = quantize_rtn(w, bits=6, scale=s)      # generic symmetric per-row round-to-nearest on a given scale
    w_hat = qt.dequantize()                    # fp32

The methods a recipe can name (these primitives, GPTQ, SDClip, …) are registered as specs in quant/methods.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

INT8_CLIP_PERCENTILE = 99.99984  # BASE INT8_CLIP_PERCENTILE: clip each row at its 0.9999984 quantile of |W|
_QUANTILE_MAX_NUMEL = 1 << 24  # torch.quantile refuses larger inputs; rows are processed in chunks below it
_FP16_MIN_SUBNORMAL = 2.0 ** -24  # smallest positive fp16: a scale below it would round to 0


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Integer codes plus the scale that maps them back to weights: `W ≈ q · scale` (per row or per tensor)."""

    q: Tensor  # int8 codes, the weight's shape; |q| ≤ 2^(bits−1) − 1
    scale: Tensor  # (rows,) fp16 per output row, or 0-d per-tensor (fp16, or fp32 for the BASE per-tensor path)
    bits: int  # bit width of the codes (2..8), stored in int8 regardless
    method: str  # methods.METHODS key that produced it, e.g. "int8_percentile"
    extras: dict[str, Tensor] = field(default_factory=dict)  # method payload (e.g. LQER factors), stored verbatim

    def __post_init__(self) -> None:
        if self.q.dtype != torch.int8:
            raise ValueError(f"QuantizedTensor.q must be int8, got {self.q.dtype}")
        if self.scale.dtype not in (torch.float16, torch.float32):
            raise ValueError(f"QuantizedTensor.scale must be float16 or float32, got {self.scale.dtype}")
        if self.scale.dim() != 0 and (self.q.dim() == 0 or tuple(self.scale.shape) != (self.q.shape[0],)):
            raise ValueError(f"scale shape {tuple(self.scale.shape)} must be () or (rows,) for q {tuple(self.q.shape)}")
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits={self.bits}: codes are stored as int8, so 1 ≤ bits ≤ 8")

    @property
    def per_row(self) -> bool:
        return self.scale.dim() == 1

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """`q · scale` in fp32, broadcast over trailing dims, cast to `dtype` (BASE `dequantize_state_dict_int8`)."""
        s = self.scale.float()
        if self.per_row:
            s = s.view(self.q.shape[0], *([1] * (self.q.dim() - 1)))
        w = self.q.float() * s
        if self.extras:  # LQER: W = q·s + A·B (R0427 dequantize_mixed); a run without LQER never imports it
            from pgolf.quant.lqer_storage import has_lqer, unpack_lqer

            if has_lqer(self.extras):
                w = w + unpack_lqer(self.extras)
        return w.to(dtype).contiguous()


# ------------------------------------------------------------------------------------------------ primitives

def qmax_for_bits(bits: int) -> int:
    """Largest code of a symmetric signed b-bit grid: 2^(b−1) − 1 (127 for int8, 31 for int6)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits={bits} must be in 2..8 (codes are stored as int8)")
    return (1 << (bits - 1)) - 1


def row_quantile(x: Tensor, q: float, max_numel: int = _QUANTILE_MAX_NUMEL) -> Tensor:
    """`torch.quantile(x, q, dim=1)` for a 2-D fp32 tensor of any size (chunked under torch's 2^24-element cap)."""
    if x.numel() <= max_numel:
        return torch.quantile(x, q, dim=1)
    rows = max(1, max_numel // max(1, x.shape[1]))
    return torch.cat([torch.quantile(x[i : i + rows], q, dim=1) for i in range(0, x.shape[0], rows)])


def _quantile_1d(x: Tensor, q: float, max_numel: int = _QUANTILE_MAX_NUMEL) -> float:
    """torch.quantile(x, q) (linear interpolation) without torch's input-size cap."""
    if x.numel() <= max_numel:
        return float(torch.quantile(x, q))
    v = torch.sort(x).values
    pos = q * (x.numel() - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))


def quantize_rtn(w: Tensor, bits: int, scale: Tensor) -> QuantizedTensor:
    """Symmetric round-to-nearest on a given scale: `q = clamp(round(W / s), ±(2^(b−1)−1))`.

    `scale` is (rows,) for per-row (dim 0) or 0-d for per-tensor. It is rounded to fp16 *first* and the codes are
    computed with that stored value (as R0405 `gptq_quantize_weight` does), so `dequantize()` reproduces exactly
    the grid that was rounded to: |W − q·s| ≤ s/2 wherever |W| ≤ qmax·s. Scales are floored at the smallest
    positive fp16.
    """
    qmax = qmax_for_bits(bits)
    w32 = w.detach().float()
    s16 = scale.detach().to(torch.float16).clamp_min(_FP16_MIN_SUBNORMAL)
    if s16.dim() == 1:
        if w32.dim() == 0 or s16.shape[0] != w32.shape[0]:
            raise ValueError(f"per-row scale {tuple(s16.shape)} does not match weight rows {tuple(w32.shape)}")
        sf = s16.float().view(w32.shape[0], *([1] * (w32.dim() - 1)))
    elif s16.dim() == 0:
        sf = s16.float()
    else:
        raise ValueError(f"scale must be 0-d or (rows,), got shape {tuple(s16.shape)}")
    q = torch.clamp(torch.round(w32 / sf), -qmax, qmax).to(torch.int8).contiguous()
    return QuantizedTensor(q=q, scale=s16.contiguous(), bits=bits, method="rtn")


def quantize_int8_percentile(w: Tensor, percentile: float = INT8_CLIP_PERCENTILE) -> QuantizedTensor:
    """The challenge baseline, exactly (BASE `quantize_float_tensor`, docs/techniques.md#int8-baseline).

    2-D: clip_abs = quantile(|W|, p/100, dim=1); W clamped to ±clip_abs; scale = clip_abs/127 (clamp_min 1/127);
    q = round(W/scale) clamped to ±127, computed with the fp32 scale; the scale is *stored* as fp16 per row.
    Any other float tensor: one per-tensor scale (clip_abs/127, or 1.0 when clip_abs = 0) kept in fp32.
    """
    t32 = w.detach().float()
    qf = percentile / 100.0
    if t32.dim() == 2:
        if t32.numel():
            clip_abs = row_quantile(t32.abs(), qf)
        else:
            clip_abs = torch.zeros(t32.shape[0], dtype=torch.float32)
        clipped = torch.maximum(torch.minimum(t32, clip_abs[:, None]), -clip_abs[:, None])
        scale = (clip_abs / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8).contiguous()
        return QuantizedTensor(q=q, scale=scale.to(torch.float16).contiguous(), bits=8, method="int8_percentile")
    flat = t32.abs().flatten()
    clip_abs = _quantile_1d(flat, qf) if flat.numel() else 0.0
    scale = torch.tensor(clip_abs / 127.0 if clip_abs > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip_abs, clip_abs) / scale), -127, 127).to(torch.int8)
    return QuantizedTensor(q=q.contiguous(), scale=scale, bits=8, method="int8_percentile")
