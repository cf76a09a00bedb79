"""Quantize a whole state dict with a recipe, and dequantize it back: the only orchestrator of the quant stage.

    qs, report = quantize_state_dict(model.state_dict(), get_recipe("int8-baseline"))
    weights = dequantize_state(qs)        # same names, shapes and dtypes as the input state dict

Routing per tensor (BASE `quantize_state_dict_int8`, parameter-golf.md §2): non-float tensors pass through
unchanged; float tensors with numel ≤ recipe.passthrough_max_numel pass through as fp16 (fp32 for names matching
recipe.keep_fp32_patterns); every other tensor goes to the first matching recipe rule's method. `hessians` (name →
(cols, cols) input second moment) are handed to methods that use them (GPTQ); the baseline ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pgolf.quant.primitives import QUANTIZERS, QuantizedTensor
from pgolf.quant.recipes import PASSTHROUGH, QuantRecipe, get_recipe, tensor_role


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

    Report rows: name, role, method ("passthrough" for kept tensors), bits (stored bits per value), numel, and
    mse = mean((W − Ŵ)²) in weight space, Ŵ being exactly what `dequantize_state` will return.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe.validate()
    hessians = hessians or {}
    qs = QuantizedState()
    rows: list[dict] = []
    items = list(state_dict.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"quantize {recipe.name}", unit="tensor")
    for name, tensor in items:
        t = tensor.detach().to("cpu").contiguous()
        qs.dtypes[name] = dtype_name(t.dtype)
        role = tensor_role(name)
        if not t.is_floating_point():
            qs.passthrough[name] = t
            rows.append(_row(name, role, PASSTHROUGH, t.element_size() * 8, t.numel(), 0.0))
            continue
        rule = None if t.numel() <= recipe.passthrough_max_numel else recipe.rule_for(name)
        if rule is None or rule.method == PASSTHROUGH:
            keep32 = rule is None and any(p in name for p in recipe.keep_fp32_patterns)
            kept = (t.float() if keep32 else t.to(torch.float16)).contiguous()
            qs.passthrough[name] = kept
            rows.append(_row(name, role, PASSTHROUGH, kept.element_size() * 8, t.numel(), _mse(t, kept.to(t.dtype))))
            continue
        qt = QUANTIZERS[rule.method](t, bits=rule.bits, hessian=hessians.get(name), **rule.params)
        if tuple(qt.q.shape) != tuple(t.shape):
            raise ValueError(f"method {rule.method!r} returned codes of shape {tuple(qt.q.shape)} for {name} "
                             f"{tuple(t.shape)}")
        qs.tensors[name] = qt
        rows.append(_row(name, role, qt.method, qt.bits, t.numel(), _mse(t, qt.dequantize(t.dtype))))
    return qs, rows


def _row(name: str, role: str, method: str, bits: int, numel: int, mse: float) -> dict:
    return {"name": name, "role": role, "method": method, "bits": bits, "numel": numel, "mse": mse}


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
