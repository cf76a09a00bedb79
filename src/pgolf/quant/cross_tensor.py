"""The recipe's cross-tensor steps: per-tensor SDClip σ (adaptive σ, PR #1689/#1962) and bit widths (mixed
precision, PR #1962 ablation) chosen from each tensor's Hessian sensitivity (pure; no tensor math beyond it).

    plan = cross_tensor_plan(state_dict, plan, recipe, hessians)          # the plan with the chosen σ / bits
    overrides = cross_tensor_overrides(state_dict, plan, recipe, hessians)  # name → {"clip_sigma": σ, "bits": b}

Only recipes with `adaptive_clip` or `mixed_precision` reach this module (quant/apply.py, quant/qat.py), so the
single-file script of any other recipe leaves it out (`QuantConfig.modules_not_run`), and with it the allocation of
quant/allocate.py and the σ search of quant/clip.py. docs/techniques.md#adaptive-sigma and #mixed-precision.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from pgolf.quant.allocate import mixed_precision_bits, mixed_precision_bits_by_count
from pgolf.quant.clip import DEFAULT_CLIP_SIGMA, adaptive_sigmas, hessian_sensitivity
from pgolf.quant.plan import Plan, cross_tensor_group
from pgolf.quant.recipes import QuantRecipe


def cross_tensor_overrides(tensors: Mapping[str, Tensor], plan: Plan, recipe: QuantRecipe,
                           hessians: Mapping[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Per-tensor {"clip_sigma": σ, "bits": b} of the recipe's cross-tensor steps (pure).

    Adaptive σ (clip.adaptive_sigmas) and mixed precision (allocate.mixed_precision_bits) over
    `plan.cross_tensor_group(plan)`, both from hessian_sensitivity(W, H). Empty when the recipe uses neither or no
    tensor qualifies. QAT calls this at switch-on so its grid follows the choices the exporter makes.
    """
    overrides: dict[str, dict[str, Any]] = {}
    group = cross_tensor_group(plan)
    if group and (recipe.adaptive_clip or recipe.mixed_precision):
        sens = {n: hessian_sensitivity(tensors[n].float(), hessians[n]) for n in group}
        numels = {n: tensors[n].numel() for n in group}
        if recipe.adaptive_clip:
            base = {n: float(plan[n].params.get("clip_sigma", DEFAULT_CLIP_SIGMA)) for n in group}
            sigmas, _ = adaptive_sigmas(sens, numels, base)
            for n in group:
                overrides.setdefault(n, {})["clip_sigma"] = sigmas[n]
        if recipe.mixed_precision:
            split = (mixed_precision_bits(sens, numels) if recipe.mixed_precision_split == "params"
                     else mixed_precision_bits_by_count(sens))
            for n, b in split.items():
                overrides.setdefault(n, {})["bits"] = b
    return overrides


def cross_tensor_plan(tensors: Mapping[str, Tensor], plan: Plan, recipe: QuantRecipe,
                      hessians: Mapping[str, Tensor]) -> Plan:
    """The plan with the cross-tensor σ / bits of `cross_tensor_overrides` applied."""
    overrides = cross_tensor_overrides(tensors, plan, recipe, hessians)
    return {n: (p.with_(bits=overrides[n].get("bits"), clip_sigma=overrides[n].get("clip_sigma"))
                if n in overrides else p) for n, p in plan.items()}
