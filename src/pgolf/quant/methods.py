"""Quantization methods: one `MethodSpec` per method, in one registry that every consumer queries.

A spec says everything the pipeline needs to know about a method (torchao's config + registered handler, in one
object): the function that quantizes a tensor, whether it needs a Hessian, which knobs the budget fit may move and
over which grid, the fake-quant rule QAT trains with, and whether that rule is exactly the exported grid.

    spec = get_method("sdclip_gptq")
    qt, info = spec(w, bits=6, hessian=H, clip_sigma=12.85)     # quant/apply.py
    spec.needs_hessian                                          # recipes: does the recipe need calibration?
    spec.fit_grid(bits=6, sigma=12.85, sigma_multipliers=(0.9, 1.0, 1.1), bits_delta=1)   # quant/fit.py
    rule, exact = fake_quant_rule("sdclip_gptq", 6, {"clip_sigma": 12.85})                  # quant/qat.py

Function signature: fn(w, *, bits, hessian=None, **params) -> (QuantizedTensor, info); `info` may carry "sigma",
"damp", "escalations", "fallback" for the report. Register a new method with `register_method(MethodSpec(...))`
(README "Extending pgolf" has a worked example).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from pgolf.quant.clip import DEFAULT_CLIP_SIGMA, hessian_sdclip_scale, sdclip_scale
from pgolf.quant.gptq import GPTQ_BLOCK_SIZE, GPTQ_DAMP, gptq_quantize, gptq_with_clip_search
from pgolf.quant.gptq_lite import gptq_lite
from pgolf.quant.primitives import (INT8_CLIP_PERCENTILE, QuantizedTensor, qmax_for_bits,
                                    quantize_int8_percentile, quantize_rtn)

Method = Callable[..., tuple[QuantizedTensor, dict[str, Any]]]
FakeQuant = Callable[[int, Mapping[str, Any], torch.device], Callable[[Tensor], Tensor]]
"""(bits, params, device) -> Q: the export grid of the method as a function of the weight."""
Batch = Callable[[Tensor, Tensor, int, Sequence[float], Mapping[str, Any]], list[tuple[QuantizedTensor, dict]]]
"""(w, H, bits, sigmas, params) -> one (qt, info) per σ, computed together (the fit's fast path)."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Method
    summary: str
    needs_hessian: bool = False
    """True: every tensor it quantizes needs a calibration Hessian (quantize_state_dict errors otherwise)."""
    fit_bits: bool = False
    """The budget fit may move its bit width by ± bits_delta."""
    fit_sigma: bool = False
    """The budget fit may scale its `clip_sigma` by the σ multipliers."""
    cross_tensor: bool = False
    """Adaptive σ / mixed precision (recipe switches) re-pick its σ / bits per tensor from Hessian sensitivity."""
    fake_quant: FakeQuant | None = None
    """QAT's rule; None = QAT cannot cover the method."""
    qat_exact: bool = False
    """The fake-quant rule equals the dequantized export bit for bit (data-free rules on the stored fp16 scale)."""
    batch: Batch | None = None
    """Optional: several σ at once (used by the budget fit)."""
    lqer: bool = True
    """The recipe's LQER step may correct its tensors (R0427 leaves the int8 gates out)."""

    def __call__(self, w: Tensor, **kwargs: Any) -> tuple[QuantizedTensor, dict[str, Any]]:
        return self.fn(w, **kwargs)

    @property
    def param_names(self) -> tuple[str, ...] | None:
        """Keyword parameters a recipe rule may give the method (beyond bits / hessian); None: any (**kwargs)."""
        ps = inspect.signature(self.fn).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in ps):
            return None
        return tuple(p.name for p in ps if p.kind is p.KEYWORD_ONLY and p.name not in ("bits", "hessian"))

    def unknown_params(self, params: Mapping[str, Any]) -> list[str]:
        names = self.param_names
        return [] if names is None else [k for k in params if k not in names]

    def fit_grid(self, bits: int, sigma: float | None, sigma_multipliers: Sequence[float],
                 bits_delta: int) -> list[tuple[int, float | None]]:
        """(bits, σ) pairs the budget fit tries around the recipe's choice (bits b−d … b+d within 2..8, σ × m)."""
        if not self.fit_bits:
            return [(bits, sigma)]
        bit_range = range(max(2, bits - bits_delta), min(8, bits + bits_delta) + 1)
        if self.fit_sigma and sigma is not None:
            return [(b, sigma * m) for b in bit_range for m in sigma_multipliers]
        return [(b, sigma) for b in bit_range]


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry (recipes can then name it); returns the spec."""
    if not spec.name or spec.name == "passthrough":
        raise ValueError(f"invalid method name {spec.name!r}")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    spec = METHODS.get(name)
    if spec is None:
        raise ValueError(f"unknown quantization method {name!r}; registered: {', '.join(METHODS)}")
    return spec


def fake_quant_rule(method: str, bits: int, params: Mapping[str, Any],
                    device: torch.device | None = None) -> tuple[Callable[[Tensor], Tensor], bool]:
    """(Q, exact) for a recipe rule: Q maps a 2-D weight to its fake-quantized value (the export grid)."""
    spec = get_method(method)
    if spec.fake_quant is None:
        raise ValueError(f"no QAT fake-quant rule for method {method!r}; QAT covers "
                         f"{', '.join(n for n, s in METHODS.items() if s.fake_quant is not None)}")
    return spec.fake_quant(bits, params, device or torch.device("cpu")), spec.qat_exact


# ------------------------------------------------------------------------------------------------ the methods

def _named(qt: QuantizedTensor, method: str) -> QuantizedTensor:
    return dataclasses.replace(qt, method=method)


def _int8_percentile(w: Tensor, *, bits: int, hessian: Tensor | None = None,
                     percentile: float = INT8_CLIP_PERCENTILE):
    """BASE `quantize_float_tensor`: per-row int8 at the 99.99984th-percentile clip (the challenge baseline)."""
    if bits != 8:
        raise ValueError(f"method int8_percentile is int8 only (got bits={bits})")
    return quantize_int8_percentile(w, percentile=percentile), {}


def _rtn(w: Tensor, *, bits: int, hessian: Tensor | None = None):
    """Per-row RTN with scale = max|row| / qmax (no clipping): the data-free floor every method must beat."""
    w32 = w.detach().float()
    if w32.dim() >= 2:
        absmax = w32.abs().reshape(w32.shape[0], -1).amax(dim=1) if w32.numel() else torch.zeros(w32.shape[0])
    else:
        absmax = w32.abs().max() if w32.numel() else torch.zeros(())
    return quantize_rtn(w32, bits, absmax / qmax_for_bits(bits)), {}


def _gptq_lite(w: Tensor, *, bits: int, hessian: Tensor | None = None, per_row: bool = False):
    qt, info = gptq_lite(w, bits, per_row=per_row)
    info.pop("percentiles", None)
    return qt, info


def _sdclip_rtn(w: Tensor, *, bits: int, hessian: Tensor | None = None, clip_sigma: float = DEFAULT_CLIP_SIGMA):
    """SDClip scale k·std(row)/cr (fp16), round to nearest: the data-free rule QAT reproduces exactly."""
    return _named(quantize_rtn(w, bits, sdclip_scale(w, clip_sigma, bits)), "sdclip_rtn"), {"sigma": clip_sigma}


def _sdclip_gptq(w: Tensor, *, bits: int, hessian: Tensor | None = None, clip_sigma: float = DEFAULT_CLIP_SIGMA,
                 hessian_lambda: float = 0.0, damp: float = GPTQ_DAMP, block_size: int = GPTQ_BLOCK_SIZE,
                 act_order: bool = True):
    """R0405+: GPTQ once on the SDClip grid (λ > 0: R0406 Hessian-aware SDClip)."""
    assert hessian is not None
    s = (hessian_sdclip_scale(w, hessian, clip_sigma, bits, lam=hessian_lambda) if hessian_lambda
         else sdclip_scale(w, clip_sigma, bits))
    qt, info = gptq_quantize(w, hessian, bits, s, damp=damp, block_size=block_size, act_order=act_order)
    return _named(qt, "sdclip_gptq"), {**info, "sigma": clip_sigma}


def _sdclip_gptq_batch(w: Tensor, H: Tensor, bits: int, sigmas: Sequence[float],
                       params: Mapping[str, Any]) -> list[tuple[QuantizedTensor, dict[str, Any]]]:
    """`sdclip_gptq` at several σ in one GPTQ sweep: the candidates' rows are stacked.

    GPTQ treats rows independently (each row's error feedback uses only its own residual and the shared H⁻¹), so
    quantizing [W; W; …] with the stacked per-row scales is K separate GPTQ runs at the cost of one Python column
    loop — the loop, not the arithmetic, dominates GPTQ on CPU. Codes can differ from separate calls only where a
    BLAS reduction order flips a rounding tie (tests/quant/test_fit.py checks they agree).
    """
    lam = float(params.get("hessian_lambda", 0.0))
    scales = [hessian_sdclip_scale(w, H, s, bits, lam=lam) if lam else sdclip_scale(w, s, bits) for s in sigmas]
    rows = w.shape[0]
    stacked = w.detach().float().repeat(len(sigmas), 1)
    kw = {k: params[k] for k in ("damp", "block_size", "act_order") if k in params}
    qt, info = gptq_quantize(stacked, H, bits, torch.cat([sc.reshape(rows) for sc in scales]), **kw)
    out = []
    for i, s in enumerate(sigmas):
        part = QuantizedTensor(q=qt.q[i * rows:(i + 1) * rows].contiguous(),
                               scale=qt.scale[i * rows:(i + 1) * rows].contiguous(), bits=bits, method="sdclip_gptq")
        out.append((part, {**info, "sigma": s}))
    return out


def _gptq_clip_search(w: Tensor, *, bits: int, hessian: Tensor | None = None, damp: float = GPTQ_DAMP):
    """R0325/R0331: the 5 GPTQ-lite percentiles, one GPTQ pass each, min unweighted weight MSE."""
    assert hessian is not None
    qt, info = gptq_with_clip_search(w, hessian, bits, damp=damp)
    return _named(qt, "gptq_clip_search"), info


def _gate_int8_row(w: Tensor, *, bits: int = 8, hessian: Tensor | None = None):
    """R0427 `_quantize_gate_int8_row`: int8 per row, s = rowmax/127 (fp16)."""
    w2 = w.detach().float().reshape(w.shape[0], -1)
    qt = quantize_rtn(w2, bits, w2.abs().amax(dim=1) / qmax_for_bits(bits))
    return _named(dataclasses.replace(qt, q=qt.q.reshape(w.shape)), "gate_int8_row"), {}


# ------------------------------------------------------------------------------------------------ fake-quant rules
# Only QAT calls these, so each imports quant/fake_quant.py itself: a run without QAT never loads it.

def _fq_sdclip(bits: int, params: Mapping[str, Any], device: torch.device) -> Callable[[Tensor], Tensor]:
    from pgolf.quant.fake_quant import SDClipRule

    return SDClipRule(float(params.get("clip_sigma", DEFAULT_CLIP_SIGMA)), bits, device)


def _fq_absmax(bits: int, params: Mapping[str, Any], device: torch.device) -> Callable[[Tensor], Tensor]:
    from pgolf.quant.fake_quant import absmax_fake

    return lambda w: absmax_fake(w, bits)


def _fq_int8_percentile(bits: int, params: Mapping[str, Any], device: torch.device) -> Callable[[Tensor], Tensor]:
    from pgolf.quant.fake_quant import int8_percentile_fake

    pct = float(params.get("percentile", INT8_CLIP_PERCENTILE))
    return lambda w: int8_percentile_fake(w, pct)


for _spec in (
    MethodSpec("int8_percentile", _int8_percentile, "BASE per-row int8, 99.99984th-percentile clip",
               fake_quant=_fq_int8_percentile, qat_exact=True),
    MethodSpec("rtn", _rtn, "per-row round-to-nearest on the row max", fit_bits=True,
               fake_quant=_fq_absmax, qat_exact=True),
    MethodSpec("gptq_lite", _gptq_lite, "R0322 GPTQ-lite: RTN at the best of 5 clip percentiles", fit_bits=True,
               fake_quant=_fq_absmax),  # QAT trains on the row-max candidate (pct 1.0) of the five
    MethodSpec("sdclip_rtn", _sdclip_rtn, "SDClip k·std(row)/cr, round to nearest (data-free)", fit_bits=True,
               fit_sigma=True, fake_quant=_fq_sdclip, qat_exact=True),
    MethodSpec("sdclip_gptq", _sdclip_gptq, "R0405+ GPTQ on the SDClip grid", needs_hessian=True, fit_bits=True,
               fit_sigma=True, cross_tensor=True, fake_quant=_fq_sdclip, batch=_sdclip_gptq_batch),
    MethodSpec("gptq_clip_search", _gptq_clip_search, "R0325 full GPTQ at the best of 5 clip percentiles",
               needs_hessian=True, fit_bits=True, fake_quant=_fq_absmax),
    MethodSpec("gate_int8_row", _gate_int8_row, "R0427 int8 per-row attention gates (rowmax/127)",
               fake_quant=_fq_absmax, qat_exact=True, lqer=False),
):
    register_method(_spec)
