"""The per-tensor plan: which method quantizes each tensor at which bits and parameters (pure; only names,
dtypes and sizes are read). Shared by the exporter (quant/apply.py), QAT (quant/qat.py) and the budget fit
(quant/fit.py), so all three treat every tensor the same way.

    plan = route_tensors(state_dict, recipe)                            # name → TensorPlan
    plan = cross_tensor_plan(state_dict, plan, recipe, hessians)        # quant/cross_tensor.py: adaptive σ / bits

Routing order (BASE `quantize_state_dict_int8`, R0427 gates): non-float → kept as is; `recipe.gate_pattern` match
with numel in GATE_NUMEL_RANGE → `gate_int8_row`; numel ≤ passthrough_max_numel → kept (fp16, or fp32 for the
BASE control-tensor names); else the first matching recipe rule (kept fp16 when its method is "passthrough").
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor

from pgolf.quant.clip import DEFAULT_CLIP_SIGMA
from pgolf.quant.methods import get_method
from pgolf.quant.recipes import PASSTHROUGH, QuantRecipe, TensorRule

GATE_NUMEL_RANGE = (32, 8192)  # R0427 `_quantize_gate_int8_row` size window
GATE_METHOD = "gate_int8_row"  # the method of the tensors matching recipe.gate_pattern
KEEP = ("asis", "fp16", "fp32")


@dataclass(frozen=True)
class TensorPlan:
    """What happens to one tensor. `storage` is "quant" or how a kept tensor is stored (asis | fp16 | fp32)."""

    name: str
    role: str
    storage: str
    method: str = PASSTHROUGH
    bits: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    rule: TensorRule | None = None
    """The recipe rule that chose the method (None for kept tensors and the int8 gates)."""

    @property
    def quantized(self) -> bool:
        return self.storage == "quant"

    @property
    def sdclip_sigma(self) -> float | None:
        """The SDClip k of SDClip methods (their default when the rule names none), else None."""
        if not self.quantized or not get_method(self.method).fit_sigma:
            return None
        return float(self.params.get("clip_sigma", DEFAULT_CLIP_SIGMA))

    def with_(self, *, bits: int | None = None, clip_sigma: float | None = None) -> TensorPlan:
        params = dict(self.params) if clip_sigma is None else {**self.params, "clip_sigma": clip_sigma}
        return dataclasses.replace(self, bits=self.bits if bits is None else bits, params=params)


Plan = dict[str, TensorPlan]


def route_tensors(tensors: Mapping[str, Tensor], recipe: QuantRecipe) -> Plan:
    """The recipe's plan for every tensor, in state-dict order (only names, dtypes and sizes are read)."""
    plan: Plan = {}
    for name, t in tensors.items():
        role = recipe.role_of(name)
        if not t.is_floating_point():
            plan[name] = TensorPlan(name, role, "asis")
        elif (recipe.gate_pattern and fnmatch.fnmatchcase(name, recipe.gate_pattern)
              and GATE_NUMEL_RANGE[0] <= t.numel() <= GATE_NUMEL_RANGE[1]):
            plan[name] = TensorPlan(name, role, "quant", GATE_METHOD, 8)
        elif t.numel() <= recipe.passthrough_max_numel:
            # BASE keeps its control tensors fp32: `any(pattern in name ...)` over CONTROL_TENSOR_NAME_PATTERNS
            keep32 = any(p in name for p in recipe.keep_fp32_patterns)
            plan[name] = TensorPlan(name, role, "fp32" if keep32 else "fp16")
        else:
            rule = recipe.rule_for(name)
            plan[name] = (TensorPlan(name, role, "fp16", rule=rule) if rule.method == PASSTHROUGH else
                          TensorPlan(name, role, "quant", rule.method, rule.bits, dict(rule.params), rule))
    return plan


def cross_tensor_group(plan: Plan) -> list[str]:
    """Tensors the recipe's adaptive σ / mixed precision act on (quant/cross_tensor.py): cross-tensor methods
    outside the embedding."""
    return [n for n, p in plan.items() if p.quantized and get_method(p.method).cross_tensor and p.role != "embed"]
