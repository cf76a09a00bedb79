"""The recipe types: `TensorRule` (one role's method, bits and parameters) and `QuantRecipe` (ordered rules plus
the recipe-level switches), with the role pattern tables (frozen dataclasses, style.md rule 9). The registered
recipes are in quant/recipes.py; recipe files are read by quant/recipe_file.py.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Mapping

from pgolf.quant.methods import METHODS, get_method

ROLES = ("embed", "attn", "mlp", "other")
# One calibration default for every registered recipe, so that comparing recipes at their defaults compares the
# quantizers and not different Hessian samples (issue 18). 64 sequences of the run's train_seq_len: the count of
# R0325 (64 × 2048 self-generated, reproduced exactly by ar-calib-gptq with calib_seq_len=2048) and of R0405 (64
# batches). The records' *token* counts are not reproduced by any count of sequences: R0405 read 64 batches of
# 48 × 2048 tokens per rank, R0414/R0427 16 of them (1.57 M tokens); set quant.calib_seqs to match a record's.
DEFAULT_CALIB_SEQS = 64
PASSTHROUGH = "passthrough"  # rule method that keeps a large float tensor unquantized (fp16)

# BASE CONTROL_TENSOR_NAME_PATTERNS: small control tensors BASE keeps in fp32 instead of fp16 (train_gpt.py).
BASE_FP32_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain",
                      "skip_weight", "skip_weights")


RoleTable = tuple[tuple[str, str], ...]
"""Ordered (fnmatch glob on the parameter name, role) pairs; the first match gives the role."""

# R0322 … R0331 `_classify_param`: tok_emb / lm_head → embed; ".mlp." → mlp; ".attn." or any other ".proj." → attn.
CLASSIFY_ROLES: RoleTable = (("*tok_emb*", "embed"), ("*lm_head*", "embed"), ("*.mlp.*", "mlp"),
                             ("*.attn.*", "attn"), ("*.proj.*", "attn"), ("*", "other"))
# R0405 … R0427 `gptq_mixed_quantize`, PR #1586, PR #1962: "tok_emb" → embed σ; ".mlp." → MLP σ; ".attn." → ATTN σ;
# anything else → MATRIX_CLIP_SIGMAS (12.85), so bigram.proj / ve_shared.proj are "other" here, not attention.
GROUP_ROLES: RoleTable = (("*tok_emb*", "embed"), ("*lm_head*", "embed"), ("*.mlp.*", "mlp"), ("*.attn.*", "attn"),
                          ("*", "other"))
ROLE_TABLES: dict[str, RoleTable] = {"classify": CLASSIFY_ROLES, "groups": GROUP_ROLES}


def tensor_role(name: str, table: RoleTable = CLASSIFY_ROLES) -> str:
    """embed | mlp | attn | other: the role of the first glob of `table` that matches `name`."""
    for pattern, role in table:
        if fnmatch.fnmatchcase(name, pattern):
            return role
    return "other"


@dataclass(frozen=True)
class TensorRule:
    role: str
    """Tensor role this rule applies to (embed | attn | mlp | other) or "*" for any."""
    method: str
    """A registered method name (`methods.METHODS`), or "passthrough" to keep the tensor in fp16."""
    bits: int = 8
    params: Mapping[str, Any] = field(default_factory=dict)
    """Keyword parameters of the method (e.g. {"percentile": 99.99984})."""
    pattern: str = ""
    """Optional fnmatch glob on the parameter name (e.g. "blocks.1*.mlp.*"); empty = every name of the role."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))  # a private copy; plain dict so asdict() works

    def matches(self, name: str, role: str) -> bool:
        return (self.role in ("*", role)) and (not self.pattern or fnmatch.fnmatchcase(name, self.pattern))


@dataclass(frozen=True)
class QuantRecipe:
    name: str
    description: str
    rules: tuple[TensorRule, ...]
    passthrough_max_numel: int = 65_536
    """Float tensors with at most this many elements are stored unquantized (BASE INT8_KEEP_FLOAT_MAX_NUMEL)."""
    codec_hint: str | None = None
    """The compressor the recipe was tuned with (informational; pack.codec decides)."""
    keep_fp32_patterns: tuple[str, ...] = ()
    """Name substrings whose passthrough tensors stay fp32 instead of fp16 (BASE control tensors)."""
    gate_pattern: str = ""
    """fnmatch glob of small gate matrices stored int8 per row (R0427 `_quantize_gate_int8_row`, numel 32..8192),
    checked before the passthrough rule; empty = off."""
    adaptive_clip: bool = False
    """PR #1689/#1962: per-tensor SDClip σ from Hessian sensitivity for the mlp/attn `sdclip_gptq` tensors, the
    numel-weighted log-mean of the rules' `clip_sigma` preserved (clip.adaptive_sigmas)."""
    mixed_precision: bool = False
    """PR #1962 ablation: mlp/attn `sdclip_gptq` tensors get int5/6/7 by Hessian sensitivity (25/50/25 % of
    parameters), numel-weighted mean bits preserved (allocate.mixed_precision_bits)."""
    mixed_precision_split: str = "params"
    """How mixed precision splits 25/50/25: "params" (ours, default: by parameter count, mean exactly 6 b/w,
    allocate.mixed_precision_bits) or "count" (PR #1962's code: by tensor count, 5.86 b/w on R0427's shapes,
    allocate.mixed_precision_bits_by_count)."""
    lqer_top_k: int = 0
    """R0427 LQER: rank-`lqer_rank` correction on the top-k tensors by ‖W − Ŵ‖_F (0 = off)."""
    lqer_rank: int = 4
    lqer_mode: str = "asym"
    """asym (A INT2 / B INT4 g64, R0427) or sym (int4 per row)."""
    calib_source: str = ""
    """Record calibration source for Hessian recipes: train | val | selfgen | random ("" = needs none)."""
    calib_seqs: int = DEFAULT_CALIB_SEQS
    """Calibration sequences: DEFAULT_CALIB_SEQS for every registered recipe (see its comment)."""
    calib_seq_len: int = 0
    """Calibration sequence length (0 = the run's train_seq_len)."""
    calib_temperature: float = 0.8
    """Sampling temperature of selfgen calibration (R0325 0.8)."""
    calib_damp: float = 0.0
    """R0325's collector damping: each Hessian gets H += calib_damp·mean(diag H)·I before GPTQ (whose own 1 %
    damping then doubles it); 0 = off (R0405+). ar-calib-gptq sets R0325's 0.01 (gptq.collector_damping)."""
    roles: str = "classify"
    """Role table (ROLE_TABLES): "classify" = R0322 … R0331 `_classify_param` (any non-MLP ".proj." is attention);
    "groups" = R0405+ / PR #1586 / PR #1962 σ groups (attention by ".attn." only)."""

    @property
    def needs_hessians(self) -> bool:
        return any(r.method != PASSTHROUGH and get_method(r.method).needs_hessian for r in self.rules)

    def role_of(self, name: str) -> str:
        return tensor_role(name, ROLE_TABLES[self.roles])

    def rule_for(self, name: str) -> TensorRule:
        role = self.role_of(name)
        for rule in self.rules:
            if rule.matches(name, role):
                return rule
        raise ValueError(f"recipe {self.name!r} has no rule for tensor {name!r} (role {role}); add a role='*' rule")

    def validate(self) -> QuantRecipe:
        """Check every rule names a known role and method; returns self."""
        if not self.rules:
            raise ValueError(f"recipe {self.name!r} has no rules")
        if self.passthrough_max_numel < 0:
            raise ValueError(f"recipe {self.name!r}: passthrough_max_numel must be ≥ 0")
        if self.lqer_top_k < 0 or self.lqer_rank < 1 or self.lqer_mode not in ("asym", "sym"):
            raise ValueError(f"recipe {self.name!r}: need lqer_top_k ≥ 0, lqer_rank ≥ 1, lqer_mode asym|sym")
        if self.calib_source not in ("", "train", "val", "selfgen", "random"):
            raise ValueError(f"recipe {self.name!r}: calib_source {self.calib_source!r} must be one of "
                             "train, val, selfgen, random (or empty)")
        if self.mixed_precision_split not in ("params", "count"):
            raise ValueError(f"recipe {self.name!r}: mixed_precision_split {self.mixed_precision_split!r} must be "
                             "params or count")
        if not 0.0 <= self.calib_damp < float("inf"):
            raise ValueError(f"recipe {self.name!r}: calib_damp={self.calib_damp} must be ≥ 0")
        if self.roles not in ROLE_TABLES:
            raise ValueError(f"recipe {self.name!r}: roles {self.roles!r} must be one of {', '.join(ROLE_TABLES)}")
        for rule in self.rules:
            if rule.method != PASSTHROUGH and rule.method not in METHODS:
                raise ValueError(f"recipe {self.name!r}: unknown method {rule.method!r}; valid: "
                                 f"{', '.join([*METHODS, PASSTHROUGH])}")
            if rule.role != "*" and rule.role not in ROLES:
                raise ValueError(f"recipe {self.name!r}: unknown role {rule.role!r}; valid: *, {', '.join(ROLES)}")
            if not 2 <= rule.bits <= 8:
                raise ValueError(f"recipe {self.name!r}: bits={rule.bits} must be in 2..8")
            spec = METHODS.get(rule.method)  # (checks written side-effect free: the script's stripper drops them)
            if spec is not None and spec.param_names is not None and not set(rule.params) <= set(spec.param_names):
                raise ValueError(f"recipe {self.name!r}: method {rule.method!r} takes no parameter "
                                 f"{spec.unknown_params(rule.params)[0]!r} (rule for role {rule.role!r}); it takes "
                                 f"{', '.join(spec.param_names) or 'none'}")
        if self.needs_hessians and not self.calib_source:
            raise ValueError(f"recipe {self.name!r} uses Hessian methods but names no calib_source")
        return self
