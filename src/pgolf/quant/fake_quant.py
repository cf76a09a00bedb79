"""Fake-quant rules: each quantization method's export grid as a pure tensor function.

QAT (quant/qat.py) applies these to the weights in the forward pass; each method's spec (quant/methods.py) names its
rule. A rule maps a 2-D weight to q·s with exactly the scale the exporter stores, so the rules of the data-free
methods equal the dequantized artifact bit for bit (tests/quant/test_qat.py checks every one, also under inductor).

    q = sdclip_fake(w, k=12.85, bits=6)      # sdclip_rtn's export grid
    rule = SDClipRule(12.85, 6, device)       # the same with σ and bits in 0-d tensors (safe under torch.compile)
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgolf.quant.primitives import INT8_CLIP_PERCENTILE, qmax_for_bits, row_quantile

_FP16_MIN = 2.0 ** -24  # smallest positive fp16 (primitives.quantize_rtn floors every scale here)


def fp16_round(x: Tensor) -> Tensor:
    """`x.half().float()` (round to nearest even fp16, subnormals included) for |x| < 65520, in integer bit ops.

    torch.compile's inductor computes a `.to(float16)` inside a fused kernel in fp32 (unless
    `emulate_precision_casts`), which silently drops the fp16 rounding of the scale that the exporter stores; bit
    operations on the fp32 pattern cannot be skipped. Normal range: round the 23-bit mantissa to 10 bits (add
    0xFFF + the kept LSB, clear the low 13 bits); below 2⁻¹⁴ fp16 is a fixed 2⁻²⁴ grid: round(x·2²⁴)·2⁻²⁴.
    """
    x = x.float()
    b = x.view(torch.int32)
    normal = ((b + 0x0FFF + ((b >> 13) & 1)) & -0x2000).view(torch.float32)
    sub = torch.round(x * 2.0 ** 24) * 2.0 ** -24
    return torch.where(x.abs() < 2.0 ** -14, sub, normal)


def _sdclip(w: Tensor, k: Tensor | float, cr: Tensor | int) -> Tensor:
    w32 = w.float()
    s = fp16_round((k * w32.std(dim=1) / cr).clamp_min(1e-10)).clamp_min(_FP16_MIN)[:, None]
    return (torch.clamp(torch.round(w32 / s), -cr, cr) * s).to(w.dtype)


def sdclip_fake(w: Tensor, k: float, bits: int) -> Tensor:
    """Export rule of `sdclip_rtn`: q·s with s = fp16(max(k·std_row/cr, 1e-10)) ≥ 2⁻²⁴, q = clamp(round(w/s), ±cr)."""
    return _sdclip(w, k, qmax_for_bits(bits))


def absmax_fake(w: Tensor, bits: int) -> Tensor:
    """Export rule of `rtn` and `gate_int8_row` (bits 8): per-row s = fp16(max|row|/cr), round to nearest."""
    cr = qmax_for_bits(bits)
    w32 = w.float()
    s = fp16_round(w32.abs().amax(dim=1) / cr).clamp_min(_FP16_MIN)[:, None]
    return (torch.clamp(torch.round(w32 / s), -cr, cr) * s).to(w.dtype)


def int8_percentile_fake(w: Tensor, percentile: float = INT8_CLIP_PERCENTILE) -> Tensor:
    """Export rule of `int8_percentile` (BASE): codes with the fp32 scale, dequantized with its fp16 rounding."""
    w32 = w.float()
    clip = row_quantile(w32.abs(), percentile / 100.0)[:, None]
    clipped = torch.maximum(torch.minimum(w32, clip), -clip)
    scale = (clip / 127.0).clamp_min(1.0 / 127.0)
    q = torch.clamp(torch.round(clipped / scale), -127, 127)
    return (q * fp16_round(scale)).to(w.dtype)


class SDClipRule:
    """The SDClip grid with σ and cr held in 0-d tensors (updated in place by `set`, never re-bound)."""

    def __init__(self, sigma: float, bits: int, device: torch.device) -> None:
        self.k = torch.tensor(float(sigma), dtype=torch.float32, device=device)
        self.cr = torch.tensor(float(qmax_for_bits(bits)), dtype=torch.float32, device=device)
        self.sigma, self.bits = float(sigma), int(bits)

    def set(self, sigma: float | None = None, bits: int | None = None) -> None:
        if sigma is not None:
            self.sigma = float(sigma)
            self.k.fill_(self.sigma)
        if bits is not None:
            self.bits = int(bits)
            self.cr.fill_(float(qmax_for_bits(self.bits)))

    def __call__(self, w: Tensor) -> Tensor:
        return _sdclip(w, self.k, self.cr)
