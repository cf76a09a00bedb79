"""Late QAT aligned with the export quantizer: STE fake-quant of every CastedLinear weight via `weight_fn`.

    qat = install_qat(model, get_recipe("sdclip-rtn"))   # before torch.compile; off until enabled
    qat.enable()                                          # train/loop.py: once the LR multiplier < qat_threshold

Forward weight: `w + flag·(Q(w) − w).detach()` (straight-through estimator: the gradient is the identity), with
Q the *export* rule of the recipe's method for that tensor. `flag` is a 0-d tensor read at run time, so
torch.compile cannot constant-fold it: the records' `CastedLinear._qat_enabled` class attribute was folded at the
first trace and their late QAT never ran (parameter-golf.md §2.13). With flag = 0 the forward is bit-identical to
no QAT (w + 0 = w).

Alignment (which export rules are reproduced exactly, i.e. the fake-quantized forward equals the forward of the
dequantized artifact model for that tensor):
* exact — `sdclip_rtn` (s = k·std(row)/cr rounded to fp16, clamp ±cr), `rtn` (row absmax), `int8_percentile`
  (BASE): recipes `sdclip-rtn`, `int8-baseline`;
* same grid, not the same rounding — `sdclip_gptq` (the SDClip grid with the rule's k; GPTQ's error feedback and the
  adaptive-σ / mixed-bits overrides need Hessians) and `gptq_lite` / `gptq_clip_search` (fake-quant on the row-max
  grid, pct = 1.0, one of the five candidates);
* not covered — the embedding (an nn.Embedding lookup, not a CastedLinear), gates and small passthrough tensors
  (fp16 on export; no fake-quant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.quant.primitives import INT8_CLIP_PERCENTILE
from pgolf.quant.recipes import PASSTHROUGH, QuantRecipe

_FP16_MIN = 2.0 ** -24
EXACT_METHODS = frozenset({"sdclip_rtn", "rtn", "int8_percentile"})


def _cr(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def sdclip_fake(w: Tensor, k: float, bits: int) -> Tensor:
    """Export rule of `sdclip_rtn`: q·s with s = fp16(max(k·std_row/cr, 1e-10)) ≥ 2⁻²⁴, q = clamp(round(w/s), ±cr)."""
    cr = _cr(bits)
    w32 = w.float()
    s = (k * w32.std(dim=1) / cr).clamp_min(1e-10).to(torch.float16).clamp_min(_FP16_MIN).float()[:, None]
    return (torch.clamp(torch.round(w32 / s), -cr, cr) * s).to(w.dtype)


def absmax_fake(w: Tensor, bits: int) -> Tensor:
    """Export rule of `rtn`: per-row s = fp16(max|row|/cr), round to nearest."""
    cr = _cr(bits)
    w32 = w.float()
    s = (w32.abs().amax(dim=1) / cr).to(torch.float16).clamp_min(_FP16_MIN).float()[:, None]
    return (torch.clamp(torch.round(w32 / s), -cr, cr) * s).to(w.dtype)


def int8_percentile_fake(w: Tensor, percentile: float = INT8_CLIP_PERCENTILE) -> Tensor:
    """Export rule of `int8_percentile` (BASE): codes with the fp32 scale, dequantized with its fp16 rounding."""
    w32 = w.float()
    clip = torch.quantile(w32.abs(), percentile / 100.0, dim=1)[:, None]
    clipped = torch.maximum(torch.minimum(w32, clip), -clip)
    scale = (clip / 127.0).clamp_min(1.0 / 127.0)
    q = torch.clamp(torch.round(clipped / scale), -127, 127)
    return (q * scale.to(torch.float16).float()).to(w.dtype)


def fake_quant_rule(method: str, bits: int, params: dict) -> tuple[Callable[[Tensor], Tensor], bool]:
    """(Q, exact) for a recipe rule: Q maps a weight to its fake-quantized value."""
    if method in ("sdclip_rtn", "sdclip_gptq"):
        k = float(params.get("clip_sigma", 12.85))
        return (lambda w: sdclip_fake(w, k, bits)), method == "sdclip_rtn"
    if method == "int8_percentile":
        pct = float(params.get("percentile", INT8_CLIP_PERCENTILE))
        return (lambda w: int8_percentile_fake(w, pct)), True
    if method in ("rtn", "gptq_lite", "gptq_clip_search"):
        return (lambda w: absmax_fake(w, bits)), method == "rtn"
    raise ValueError(f"no QAT fake-quant rule for method {method!r}")


class FakeQuantWeight:
    """A plain callable for `CastedLinear.weight_fn` (adds nothing to the state dict)."""

    def __init__(self, rule: Callable[[Tensor], Tensor], flag: Tensor) -> None:
        self.rule, self.flag = rule, flag

    def __call__(self, w: Tensor) -> Tensor:
        return w + self.flag.to(w.dtype) * (self.rule(w) - w).detach()


@dataclass
class QAT:
    flag: Tensor
    """0-d float tensor on the model's device: 1 = fake-quant on. Mutated in place, never rebound."""
    tensors: dict[str, bool] = field(default_factory=dict)
    """Parameter name → exactly aligned with the export rule."""

    on: bool = False
    """Host-side mirror of `flag` (no device sync to read it)."""

    @property
    def enabled(self) -> bool:
        return self.on

    def enable(self, on: bool = True) -> None:
        self.flag.fill_(1.0 if on else 0.0)
        self.on = on

    def remove(self, model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, CastedLinear) and isinstance(m.weight_fn, FakeQuantWeight):
                m.weight_fn = None


def install_qat(model: nn.Module, recipe: QuantRecipe, enabled: bool = False) -> QAT:
    """Install STE fake-quant on every CastedLinear the recipe quantizes (rule = its export method); off by default.

    Tensors at or under recipe.passthrough_max_numel or routed to passthrough are left alone.
    """
    device = next(model.parameters()).device
    qat = QAT(flag=torch.tensor(1.0 if enabled else 0.0, device=device), on=enabled)
    for mod_name, m in model.named_modules():
        if not isinstance(m, CastedLinear) or m.weight.numel() <= recipe.passthrough_max_numel:
            continue
        name = f"{mod_name}.weight"
        rule = recipe.rule_for(name)
        if rule.method == PASSTHROUGH:
            continue
        fn, exact = fake_quant_rule(rule.method, rule.bits, dict(rule.params))
        m.weight_fn = FakeQuantWeight(fn, qat.flag)
        qat.tensors[name] = exact and not (recipe.adaptive_clip or recipe.mixed_precision)
    return qat
