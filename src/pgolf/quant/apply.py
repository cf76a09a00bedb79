"""Quantize a whole state dict with a recipe, and dequantize it back: the only orchestrator of the quant stage.

    qs, report = quantize_state_dict(model.state_dict(), get_recipe("int8-baseline"))
    weights = dequantize_state(qs)        # same names, shapes and dtypes as the input state dict

Routing per tensor (BASE `quantize_state_dict_int8`, parameter-golf.md §2): non-float tensors pass through
unchanged; float tensors with numel ≤ recipe.passthrough_max_numel pass through as fp16 (fp32 for names matching
recipe.keep_fp32_patterns); every other tensor goes to the first matching recipe rule's method. `hessians` (name →
(cols, cols) input second moment) are handed to methods that use them (GPTQ); the baseline ignores them.

Methods live in `METHODS` (name → fn(w, *, bits, hessian=None, **params) -> (QuantizedTensor, info)): every
`primitives.QUANTIZERS` entry (info = {}), plus GPTQ-lite, SDClip RTN / GPTQ, the percentile-searched GPTQ and
the int8 per-row gate rule. `HESSIAN_METHODS` need a Hessian for every tensor they quantize (a clear error names
the recipe and the tensor otherwise). Cross-tensor steps of the recipe, in order: gates (before passthrough),
adaptive σ / mixed precision (pre-pass over the mlp/attn `sdclip_gptq` tensors), per-tensor methods, LQER.
The routing (`route_tensors`) and the adaptive-σ / mixed-bits choices (`cross_tensor_overrides`) are pure
functions shared with quant/qat.py, so QAT fake-quantizes each tensor with the rule the exporter will use.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from pgolf.quant.allocate import mixed_precision_bits
from pgolf.quant.clip import (adaptive_sigmas, gptq_lite, hessian_sdclip_scale, hessian_sensitivity,
                              sdclip_scale)
from pgolf.quant.gptq import GPTQ_DAMP, gptq_quantize, gptq_with_clip_search, output_error
from pgolf.quant.lqer import apply_lqer, select_lqer_tensors
from pgolf.quant.primitives import QUANTIZERS, QuantizedTensor, quantize_rtn
from pgolf.quant.recipes import PASSTHROUGH, QuantRecipe, get_recipe, tensor_role

# ------------------------------------------------------------------------------------------------ method table

Method = Callable[..., tuple[QuantizedTensor, dict[str, Any]]]
GATE_NUMEL_RANGE = (32, 8192)  # R0427 `_quantize_gate_int8_row` size window


def _named(qt: QuantizedTensor, method: str) -> QuantizedTensor:
    return dataclasses.replace(qt, method=method)


def _from_quantizer(fn: Callable[..., QuantizedTensor]) -> Method:
    def method(w: Tensor, *, bits: int, hessian: Tensor | None = None, **params: Any):
        return fn(w, bits=bits, hessian=hessian, **params), {}
    return method


def _m_gptq_lite(w: Tensor, *, bits: int, hessian: Tensor | None = None, per_row: bool = False):
    qt, info = gptq_lite(w, bits, per_row=per_row)
    info.pop("percentiles", None)
    return qt, info


def _m_sdclip_rtn(w: Tensor, *, bits: int, hessian: Tensor | None = None, clip_sigma: float = 12.85):
    """SDClip scale k·std(row)/cr (fp16), round to nearest: the data-free rule QAT reproduces exactly."""
    return _named(quantize_rtn(w, bits, sdclip_scale(w, clip_sigma, bits)), "sdclip_rtn"), {"sigma": clip_sigma}


def _m_sdclip_gptq(w: Tensor, *, bits: int, hessian: Tensor | None = None, clip_sigma: float = 12.85,
                   hessian_lambda: float = 0.0, damp: float = GPTQ_DAMP, block_size: int = 128,
                   act_order: bool = True):
    """R0405+: GPTQ once on the SDClip grid (λ > 0: R0406 Hessian-aware SDClip)."""
    assert hessian is not None
    s = (hessian_sdclip_scale(w, hessian, clip_sigma, bits, lam=hessian_lambda) if hessian_lambda
         else sdclip_scale(w, clip_sigma, bits))
    qt, info = gptq_quantize(w, hessian, bits, s, damp=damp, block_size=block_size, act_order=act_order)
    return _named(qt, "sdclip_gptq"), {**info, "sigma": clip_sigma}


def _m_gptq_clip_search(w: Tensor, *, bits: int, hessian: Tensor | None = None, damp: float = GPTQ_DAMP):
    """R0325/R0331: the 5 GPTQ-lite percentiles, one GPTQ pass each, min unweighted weight MSE."""
    assert hessian is not None
    qt, info = gptq_with_clip_search(w, hessian, bits, damp=damp)
    return _named(qt, "gptq_clip_search"), info


def _m_gate_int8_row(w: Tensor, *, bits: int = 8, hessian: Tensor | None = None):
    """R0427 `_quantize_gate_int8_row`: int8 per row, s = rowmax/127 (fp16)."""
    w2 = w.detach().float().reshape(w.shape[0], -1)
    qt = quantize_rtn(w2, bits, w2.abs().amax(dim=1) / (2 ** (bits - 1) - 1))
    return _named(dataclasses.replace(qt, q=qt.q.reshape(w.shape)), "gate_int8_row"), {}


METHODS: dict[str, Method] = {
    **{name: _from_quantizer(fn) for name, fn in QUANTIZERS.items()},
    "gptq_lite": _m_gptq_lite,
    "sdclip_rtn": _m_sdclip_rtn,
    "sdclip_gptq": _m_sdclip_gptq,
    "gptq_clip_search": _m_gptq_clip_search,
    "gate_int8_row": _m_gate_int8_row,
}
HESSIAN_METHODS = frozenset({"sdclip_gptq", "gptq_clip_search"})


@dataclass
class QuantizedState:
    """What goes into the artifact: quantized tensors, passthrough tensors, and each tensor's original dtype."""

    tensors: dict[str, QuantizedTensor] = field(default_factory=dict)
    passthrough: dict[str, Tensor] = field(default_factory=dict)  # fp16 (or fp32 control) floats; non-floats as is
    dtypes: dict[str, str] = field(default_factory=dict)  # name → original dtype ("float32"), in state-dict order


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype name {name!r}")
    return dtype


def _mse(w: Tensor, w_hat: Tensor) -> float:
    if w.numel() == 0:
        return 0.0
    return float((w.double() - w_hat.double()).pow(2).mean())


Plan = dict[str, Any]
"""Tensor name → None (kept: non-float or passthrough), "gate" (int8 per-row gate rule) or the TensorRule used."""


def route_tensors(tensors: Mapping[str, Tensor], recipe: QuantRecipe) -> Plan:
    """Which rule quantizes each tensor (pure; only names, dtypes and sizes are read). Shared with quant/qat.py.

    Order (BASE `quantize_state_dict_int8`, R0427 gates): non-float → kept; gate_pattern match with numel in
    GATE_NUMEL_RANGE → "gate"; numel ≤ passthrough_max_numel → kept; else the first matching rule (kept when its
    method is "passthrough").
    """
    plan: Plan = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            plan[name] = None
        elif (recipe.gate_pattern and fnmatch.fnmatchcase(name, recipe.gate_pattern)
              and GATE_NUMEL_RANGE[0] <= t.numel() <= GATE_NUMEL_RANGE[1]):
            plan[name] = "gate"
        elif t.numel() <= recipe.passthrough_max_numel:
            plan[name] = None
        else:
            rule = recipe.rule_for(name)
            plan[name] = None if rule.method == PASSTHROUGH else rule
    return plan


def cross_tensor_overrides(tensors: Mapping[str, Tensor], plan: Plan, recipe: QuantRecipe,
                           hessians: Mapping[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Per-tensor {"clip_sigma": σ, "bits": b} overrides of the recipe's cross-tensor steps (pure).

    Adaptive σ (PR #1962, clip.adaptive_sigmas) and mixed precision (allocate.mixed_precision_bits) over the
    mlp/attn `sdclip_gptq` tensors of `plan`, both from hessian_sensitivity(W, H). Empty when the recipe uses
    neither or no tensor qualifies. quant/qat.py calls this at QAT switch-on so the fake-quant grid follows the
    same choices the exporter makes from its Hessians.
    """
    overrides: dict[str, dict[str, Any]] = {}
    group = [n for n, r in plan.items() if not isinstance(r, str) and r is not None and r.method == "sdclip_gptq"
             and tensor_role(n) in ("mlp", "attn")]
    if group and (recipe.adaptive_clip or recipe.mixed_precision):
        sens = {n: hessian_sensitivity(tensors[n].float(), hessians[n]) for n in group}
        numels = {n: tensors[n].numel() for n in group}
        if recipe.adaptive_clip:
            base = {n: float(plan[n].params.get("clip_sigma", 12.85)) for n in group}
            sigmas, _ = adaptive_sigmas(sens, numels, base)
            for n in group:
                overrides.setdefault(n, {})["clip_sigma"] = sigmas[n]
        if recipe.mixed_precision:
            for n, b in mixed_precision_bits(sens, numels).items():
                overrides.setdefault(n, {})["bits"] = b
    return overrides


def quantize_state_dict(
    state_dict: dict[str, Tensor],
    recipe: QuantRecipe | str,
    hessians: dict[str, Tensor] | None = None,
    progress: bool = False,
) -> tuple[QuantizedState, list[dict]]:
    """Quantize every tensor per the recipe → (QuantizedState, one report row per tensor).

    Report rows: name, role, method ("passthrough" for kept tensors), bits (stored bits per value), numel,
    mse = mean((W − Ŵ)²) in weight space (Ŵ exactly what `dequantize_state` returns), sigma (SDClip k), damp and
    escalations (GPTQ damping actually used), hessian_err = trace((W − Ŵ) H (W − Ŵ)ᵀ) when a Hessian is given,
    zlib_bytes (zlib-9 of that tensor's int8 codes alone, an indicative per-tensor size; the artifact's codec and
    layout decide the real bytes), lqer (rank-r correction applied).
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe.validate()
    hessians = hessians or {}
    qs = QuantizedState()
    rows: dict[str, dict] = {}
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}

    plan = route_tensors(tensors, recipe)
    for name, rule in plan.items():
        if not isinstance(rule, str) and rule is not None and rule.method in HESSIAN_METHODS:
            if name not in hessians:
                raise ValueError(f"recipe {recipe.name!r}: method {rule.method!r} needs a Hessian for tensor {name!r} "
                                 f"but none was collected (have {len(hessians)}); run the calibration pass "
                                 "(quant.calib_source) or pick a data-free recipe")
    overrides = cross_tensor_overrides(tensors, plan, recipe, hessians)

    items = list(tensors.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"quantize {recipe.name}", unit="tensor")
    for name, t in items:
        qs.dtypes[name] = dtype_name(t.dtype)
        role = tensor_role(name)
        rule = plan[name]
        if not t.is_floating_point():
            qs.passthrough[name] = t
            rows[name] = _row(name, role, PASSTHROUGH, t.element_size() * 8, t.numel(), 0.0)
            continue
        if rule is None:
            keep32 = (t.numel() <= recipe.passthrough_max_numel
                      and any(p in name for p in recipe.keep_fp32_patterns))
            kept = (t.float() if keep32 else t.to(torch.float16)).contiguous()
            qs.passthrough[name] = kept
            rows[name] = _row(name, role, PASSTHROUGH, kept.element_size() * 8, t.numel(), _mse(t, kept.to(t.dtype)))
            continue
        if rule == "gate":
            method, bits, params = "gate_int8_row", 8, {}
        else:
            method, params = rule.method, dict(rule.params)
            bits = overrides.get(name, {}).get("bits", rule.bits)
            if "clip_sigma" in overrides.get(name, {}):
                params["clip_sigma"] = overrides[name]["clip_sigma"]
        H = hessians.get(name)
        fn = METHODS.get(method) or _from_quantizer(QUANTIZERS[method])  # QUANTIZERS entries added at run time
        qt, info = fn(t, bits=bits, hessian=H, **params)
        if tuple(qt.q.shape) != tuple(t.shape):
            raise ValueError(f"method {method!r} returned codes of shape {tuple(qt.q.shape)} for {name} "
                             f"{tuple(t.shape)}")
        qs.tensors[name] = qt
        rows[name] = _row(name, role, qt.method, qt.bits, t.numel(), _mse(t, qt.dequantize(t.dtype)),
                          info=info, hessian_err=_herr(t, qt, H))

    # LQER (R0427): top-k tensors by ‖W − Ŵ‖_F get a packed rank-r correction
    qs.tensors, lqer = lqer_step(qs.tensors, tensors, recipe)
    for n, label in lqer.items():
        t, qt2 = tensors[n], qs.tensors[n]
        rows[n].update(lqer=label, mse=_mse(t, qt2.dequantize(t.dtype)), hessian_err=_herr(t, qt2, hessians.get(n)))
    for n, qt in qs.tensors.items():
        rows[n]["zlib_bytes"] = len(zlib.compress(qt.q.numpy().tobytes(), 9))
    return qs, [rows[n] for n in tensors]


def lqer_step(qts: Mapping[str, QuantizedTensor], weights: Mapping[str, Tensor],
              recipe: QuantRecipe) -> tuple[dict[str, QuantizedTensor], dict[str, str]]:
    """The recipe's LQER step (R0427): the top-k tensors by ‖W − Ŵ‖_F get a packed rank-r correction.

    Returns (the tensors with the corrections applied, name → "asym r4"-style label of each corrected tensor).
    Shared by `quantize_state_dict` and the budget fit (pack/fit.py), which re-applies it to every allocation.
    """
    out, applied = dict(qts), {}
    if not recipe.lqer_top_k:
        return out, applied
    cands = {n: weights[n].float() - qt.dequantize() for n, qt in qts.items()
             if qt.method != "gate_int8_row" and qt.q.dim() == 2}
    for n in select_lqer_tensors(cands, k=recipe.lqer_top_k):
        qt2, info = apply_lqer(qts[n], weights[n], rank=recipe.lqer_rank, mode=recipe.lqer_mode)
        if info["applied"]:
            out[n] = qt2
            applied[n] = f"{info['mode']} r{info['rank']}"
    return out, applied


def _herr(t: Tensor, qt: QuantizedTensor, H: Tensor | None) -> float | None:
    if H is None or t.dim() != 2 or H.shape != (t.shape[1], t.shape[1]):
        return None
    return output_error(t.float(), qt.dequantize(), H)


def _row(name: str, role: str, method: str, bits: int, numel: int, mse: float, *, info: dict | None = None,
         hessian_err: float | None = None) -> dict:
    info = info or {}
    return {"name": name, "role": role, "method": method, "bits": bits, "numel": numel, "mse": mse,
            "sigma": info.get("sigma"), "damp": info.get("damp"), "escalations": info.get("escalations"),
            "fallback": info.get("fallback"), "hessian_err": hessian_err, "zlib_bytes": None, "lqer": None}


def dequantize_state(qs: QuantizedState) -> dict[str, Tensor]:
    """Weights in the original dtypes (passthrough fp16 → original dtype), in the original state-dict order."""
    out: dict[str, Tensor] = {}
    names = list(qs.dtypes) + [n for n in (*qs.tensors, *qs.passthrough) if n not in qs.dtypes]
    for name in names:
        if name in qs.tensors:
            dtype = dtype_from_name(qs.dtypes.get(name, "float32"))
            out[name] = qs.tensors[name].dequantize(dtype)
        elif name in qs.passthrough:
            t = qs.passthrough[name]
            orig = qs.dtypes.get(name)
            out[name] = (t.to(dtype_from_name(orig)) if orig else t).contiguous()
    return out
