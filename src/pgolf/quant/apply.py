"""Quantize a whole state dict with a recipe, and dequantize it back: the only orchestrator of the quant stage.

    qs, report = quantize_state_dict(model.state_dict(), get_recipe("int8-baseline"))
    weights = dequantize_state(qs)        # same names, shapes and dtypes as the input state dict

Per tensor, the plan (quant/plan.py: `route_tensors`, BASE `quantize_state_dict_int8` order, docs/techniques.md#storage)
says whether it is kept (non-float as is; small floats fp16, BASE control tensors fp32) or which registered method
(quant/methods.py) quantizes it at which bits. `hessians` (name → (cols, cols) input second moment) are handed to
the methods; those whose spec `needs_hessian` get a clear error naming the recipe and the tensor without one.
Cross-tensor steps of the recipe, in order: gates (in the routing), adaptive σ / mixed precision
(quant/cross_tensor.py), per-tensor methods, LQER (`lqer_step`, quant/lqer.py). The optional steps' modules are
imported only when the recipe has the step, so the single-file script of a recipe without them leaves them out.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

from pgolf.quant.methods import METHODS, get_method
from pgolf.quant.plan import TensorPlan, route_tensors
from pgolf.quant.primitives import QuantizedTensor
from pgolf.quant.recipes import PASSTHROUGH, QuantRecipe, get_recipe

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
    if hessians:
        from pgolf.quant.hessian_math import collector_damping

        hessians = {n: collector_damping(H, recipe.calib_damp) for n, H in hessians.items()}
    qs = QuantizedState()
    rows: dict[str, dict] = {}
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}

    plan = route_tensors(tensors, recipe)
    for name, p in plan.items():
        if p.quantized and METHODS[p.method].needs_hessian and name not in hessians:  # (side-effect free)
            raise ValueError(f"recipe {recipe.name!r}: method {p.method!r} needs a Hessian for tensor {name!r} "
                             f"but none was collected (have {len(hessians)}); run the calibration pass "
                             "(quant.calib_source) or pick a data-free recipe")
    if recipe.adaptive_clip or recipe.mixed_precision:
        from pgolf.quant.cross_tensor import cross_tensor_plan

        plan = cross_tensor_plan(tensors, plan, recipe, hessians)

    items = list(tensors.items())
    if progress:
        from pgolf.progress import track

        items = track(items, f"quantize {recipe.name}", enabled=progress, unit="tensor")
    qts, infos = {}, {}
    for name, t in items:
        qs.dtypes[name] = dtype_name(t.dtype)
        p = plan[name]
        if p.storage == "asis":
            qs.passthrough[name] = t
            rows[name] = _row(name, p.role, PASSTHROUGH, t.element_size() * 8, t.numel(), 0.0)
        elif not p.quantized:
            kept = (t.float() if p.storage == "fp32" else t.to(torch.float16)).contiguous()
            qs.passthrough[name] = kept
            rows[name] = _row(name, p.role, PASSTHROUGH, kept.element_size() * 8, t.numel(),
                              _mse(t, kept.to(t.dtype)))
        else:
            qts[name], infos[name] = quantize_tensor(t, p, hessians.get(name))

    qs.tensors, lqer = lqer_step(qts, tensors, recipe)  # R0427: top-k tensors by ‖W − Ŵ‖_F get a rank-r correction
    for n, qt in qs.tensors.items():  # the report of the final tensors (LQER included)
        t = tensors[n]
        rows[n] = _row(n, plan[n].role, qt.method, qt.bits, t.numel(), _mse(t, qt.dequantize(t.dtype)),
                       info=infos[n], hessian_err=_herr(t, qt, hessians.get(n)), lqer=lqer.get(n),
                       zlib_bytes=len(zlib.compress(qt.q.numpy().tobytes(), 9)))
    return qs, [rows[n] for n in tensors]


def quantize_tensor(t: Tensor, p: TensorPlan, H: Tensor | None) -> tuple[QuantizedTensor, dict]:
    """One tensor by its plan's method → (QuantizedTensor, info); the codes must keep the tensor's shape."""
    qt, info = get_method(p.method)(t, bits=p.bits, hessian=H, **p.params)
    if tuple(qt.q.shape) != tuple(t.shape):
        raise ValueError(f"method {p.method!r} returned codes of shape {tuple(qt.q.shape)} for {p.name} "
                         f"{tuple(t.shape)}")
    return qt, info


def lqer_step(qts: Mapping[str, QuantizedTensor], weights: Mapping[str, Tensor],
              recipe: QuantRecipe) -> tuple[dict[str, QuantizedTensor], dict[str, str]]:
    """The recipe's LQER step (R0427, quant/lqer.py `correct_top_k`; none when `recipe.lqer_top_k` is 0).

    Returns (the tensors with the corrections applied, name → "asym r4"-style label of each corrected tensor).
    Shared by `quantize_state_dict` and the budget fit (quant/fit.py), which re-applies it to every allocation.
    """
    if not recipe.lqer_top_k:
        return dict(qts), {}
    from pgolf.quant.lqer import correct_top_k

    return correct_top_k(qts, weights, recipe)


def _herr(t: Tensor, qt: QuantizedTensor, H: Tensor | None) -> float | None:
    if H is None or t.dim() != 2 or H.shape != (t.shape[1], t.shape[1]):
        return None
    from pgolf.quant.hessian_math import output_error

    return output_error(t.float(), qt.dequantize(), H)


def _row(name: str, role: str, method: str, bits: int, numel: int, mse: float, *, info: dict | None = None,
         hessian_err: float | None = None, zlib_bytes: int | None = None, lqer: str | None = None) -> dict:
    info = info or {}
    return {"name": name, "role": role, "method": method, "bits": bits, "numel": numel, "mse": mse,
            "sigma": info.get("sigma"), "damp": info.get("damp"), "escalations": info.get("escalations"),
            "fallback": info.get("fallback"), "hessian_err": hessian_err, "zlib_bytes": zlib_bytes, "lqer": lqer}


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
