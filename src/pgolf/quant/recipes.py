"""Quantization recipes as data: one registry dict of frozen dataclasses (style.md rule 9).

A recipe says, per tensor role, which registered method (`methods.METHODS`) quantizes it at how many bits
with which parameters. Rules are tried in order; the first whose role (and optional name glob) matches wins.
Float tensors with at most `passthrough_max_numel` elements, and every non-float tensor, are kept as is (floats
stored fp16; names matching `keep_fp32_patterns` stay fp32, as BASE keeps its control tensors).

    recipe = get_recipe("int8-baseline")       # a registered name
    recipe = get_recipe("my_recipe.toml")      # or a file with the same fields:

    name = "int6-rtn"
    description = "per-row RTN int6, int8 embeddings"
    [[rules]]
    role = "embed"
    method = "int8_percentile"
    bits = 8
    [[rules]]
    role = "*"
    method = "rtn"
    bits = 6

Methods (`methods.METHODS`, one spec each): the data-free `int8_percentile`, `rtn`, `gptq_lite` (R0322),
`sdclip_rtn`, `gate_int8_row` and the Hessian methods `gptq_clip_search` (R0325: 5-percentile search around GPTQ)
and `sdclip_gptq` (R0405+: GPTQ on the SDClip grid k·std(row)/cr, param `clip_sigma`, optional `hessian_lambda` for
R0406). Roles come from the recipe's pattern table (`roles`: ROLE_TABLES). Recipe-level switches add the cross-tensor
steps: `adaptive_clip` (PR #1962 σ), `mixed_precision` (int5/6/7 by sensitivity, `mixed_precision_split`),
`lqer_top_k` (R0427 LQER) and `gate_pattern` (R0427 int8 per-row gates, checked before the passthrough rule).
`calib_*` give the calibration defaults (one for all: DEFAULT_CALIB_SEQS); `QuantConfig.calib_*` override them. A
file's `[[amend]]` tables and `--quant.ROLE.KNOB` change one role's rule (quant/amend.py, `recipe_for`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from pgolf.quant.methods import METHODS, get_method

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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
        if self.needs_hessians and not self.calib_source:
            raise ValueError(f"recipe {self.name!r} uses Hessian methods but names no calib_source")
        for rule in self.rules:
            if rule.role != "*" and rule.role not in ROLES:
                raise ValueError(f"recipe {self.name!r}: unknown role {rule.role!r}; valid: *, {', '.join(ROLES)}")
            if not 2 <= rule.bits <= 8:
                raise ValueError(f"recipe {self.name!r}: bits={rule.bits} must be in 2..8")
            if rule.method != PASSTHROUGH:
                bad = get_method(rule.method).unknown_params(rule.params)
                if bad:
                    raise ValueError(f"recipe {self.name!r}: method {rule.method!r} takes no parameter {bad[0]!r} "
                                     f"(rule for role {rule.role!r}); it takes "
                                     f"{', '.join(get_method(rule.method).param_names()) or 'none'}")
        return self


RECIPES: dict[str, QuantRecipe] = {
    "int8-baseline": QuantRecipe(
        name="int8-baseline",
        description="BASE: per-row int8 with the 99.99984th-percentile clip, fp16 scales; small tensors fp16 "
                    "(control tensors fp32); zlib-9",
        rules=(TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984}),),
        passthrough_max_numel=65_536,
        codec_hint="zlib",
        keep_fp32_patterns=BASE_FP32_PATTERNS,
    ),
    "gptq-lite": QuantRecipe(
        name="gptq-lite",
        description="R0322 / PR #414: int6 GPTQ-lite (best of 5 clip percentiles per matrix, RTN) on mlp+attn; "
                    "embed and other large tensors int8 99.99984 pct; zstd-22",
        rules=(TensorRule(role="mlp", method="gptq_lite", bits=6),
               TensorRule(role="attn", method="gptq_lite", bits=6),
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="zstd",
    ),
    "full-gptq": QuantRecipe(
        name="full-gptq",
        description="PR #535: full Hessian GPTQ int6 with the 5-percentile search wrapped around GPTQ on mlp+attn "
                    "(train-data calibration), embed int8 pct; lzma",
        rules=(TensorRule(role="mlp", method="gptq_clip_search", bits=6),
               TensorRule(role="attn", method="gptq_clip_search", bits=6),
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="lzma", calib_source="train",
    ),
    "ar-calib-gptq": QuantRecipe(
        name="ar-calib-gptq",
        description="R0325 / PR #728→#1019: full GPTQ int6 (percentile search) with self-generated calibration "
                    "64×2048 at T=0.8, embed int8 pct; lzma-9",
        rules=(TensorRule(role="mlp", method="gptq_clip_search", bits=6),
               TensorRule(role="attn", method="gptq_clip_search", bits=6),
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="lzma", calib_source="selfgen", calib_seqs=64, calib_seq_len=2048, calib_temperature=0.8,
        calib_damp=0.01,
    ),
    "sdclip": QuantRecipe(
        name="sdclip",
        description="R0405: GPTQ on the SDClip grid, int6 k=12.85 on matrices, tied embed int8 k=20 with GPTQ from "
                    "the final-norm Hessian; other large tensors int8 pct; brotli",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=8, params={"clip_sigma": 20.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups",
    ),
    "sdclip-rtn": QuantRecipe(
        name="sdclip-rtn",
        description="sdclip without GPTQ (ours): RTN on the SDClip grid, int6 k=12.85 matrices, embed int8 k=20; "
                    "data-free, so QAT (quant/qat.py) reproduces its export rule exactly",
        rules=(TensorRule(role="embed", method="sdclip_rtn", bits=8, params={"clip_sigma": 20.0}),
               TensorRule(role="mlp", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="attn", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="other", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", roles="groups",
    ),
    "per-layer-clip": QuantRecipe(
        name="per-layer-clip",
        description="PR #1586 / R0414: SDClip GPTQ with per-group σ: MLP 12 / attn 13 int6, embed int7 15; "
                    "brotli",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 15.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.0}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups",
    ),
    "hessian-adaptive-clip": QuantRecipe(
        name="hessian-adaptive-clip",
        description="PR #1962: R0427 stack with adaptive σ = clamp(exp(−0.15·log sens + offset), 6, 24), offset "
                    "bisected to keep the numel-weighted log-mean of MLP 11.5 / attn 13; embed int7 14 fixed; "
                    "LQER asym r4 top-3; int8 gates",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 14.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 11.5}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups", gate_pattern="blocks.*.attn.gate.weight",
        adaptive_clip=True, lqer_top_k=3, lqer_rank=4,
    ),
    "hessian-mixed-precision": QuantRecipe(
        name="hessian-mixed-precision",
        description="PR #1962 ablation: adaptive σ + int5/6/7 by Hessian sensitivity (25/50/25 % of parameters, "
                    "mean 6 bits) on mlp/attn; embed int7 14; LQER; int8 gates (reported negative)",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 14.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 11.5}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups", gate_pattern="blocks.*.attn.gate.weight",
        adaptive_clip=True, mixed_precision=True, lqer_top_k=3, lqer_rank=4,
    ),
    "sota-lqer": QuantRecipe(
        name="sota-lqer",
        description="R0427: SDClip GPTQ MLP 11.5 / attn 13 int6, embed int7 14, + LQER asym rank 4 on the top-3 "
                    "tensors by ‖E‖_F, int8 per-row attention gates; brotli (R0427 used per-group lrzip)",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 14.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 11.5}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups", gate_pattern="blocks.*.attn.gate.weight",
        lqer_top_k=3, lqer_rank=4,
    ),
}


def get_recipe(name_or_path: str | Path) -> QuantRecipe:
    """A registered recipe by name, or one loaded from a .toml file with QuantRecipe's fields.

    A file may start from a registered recipe with `base = "sdclip"` and override any field: `rules` replace the
    base's rules, while each `[[amend]]` table (role, optional pattern, and any of bits / method / params) changes
    only that role's rule (quant/amend.py), e.g.

        base = "sota-lqer"
        [[amend]]
        role = "mlp"
        bits = 5
        params = { clip_sigma = 10.0 }
    """
    key = str(name_or_path)
    if key in RECIPES:
        return RECIPES[key]
    path = Path(key)
    if path.suffix == ".toml":
        from pgolf.quant.amend import amend_rules  # a file's [[amend]] tables

        if not path.is_file():
            raise ValueError(f"recipe file {path} does not exist")
        d = tomllib.loads(path.read_text())
        base = d.pop("base", None)
        amends = d.pop("amend", [])
        if base is not None:
            if base not in RECIPES:
                raise ValueError(f"{path}: base recipe {base!r} unknown; valid: {', '.join(RECIPES)}")
            merged = {f.name: getattr(RECIPES[base], f.name) for f in fields(QuantRecipe)}
            merged["rules"] = [dict(role=r.role, method=r.method, bits=r.bits, params=dict(r.params),
                                    pattern=r.pattern) for r in merged["rules"]]
            merged["name"] = path.stem
            merged["description"] = f"{base} overridden by {path}"
            merged.update(d)
            d = merged
        for i, a in enumerate(amends):
            bad = set(a) - {"role", "pattern", "bits", "method", "params"}
            if bad or "role" not in a or a["role"] not in ROLES:
                raise ValueError(f"{path}: amend {i} needs role ({', '.join(ROLES)}) and only pattern, bits, method, "
                                 f"params; got {sorted(a)}")
            rules = tuple(TensorRule(**r) for r in d.get("rules", []))
            rules = amend_rules(rules, **{k: v for k, v in a.items()})
            d["rules"] = [dict(role=r.role, method=r.method, bits=r.bits, params=dict(r.params), pattern=r.pattern)
                          for r in rules]
        return recipe_from_dict(d, source=str(path))
    raise ValueError(f"unknown quantization recipe {key!r}; valid names: {', '.join(RECIPES)} (or a .toml file)")


def recipe_for(quant: Any) -> QuantRecipe:
    """The recipe a QuantConfig selects: `quant.recipe` with its per-role overrides (`quant.rule_overrides`,
    from `--quant.ROLE.KNOB VALUE`) applied; the name records the overrides, e.g. "sota-lqer[mlp.bits=5]"."""
    recipe = get_recipe(quant.recipe)
    spec = getattr(quant, "rule_overrides", "")
    if not spec:
        return recipe
    from pgolf.quant.amend import apply_role_overrides, parse_role_overrides

    rules = apply_role_overrides(recipe.rules, parse_role_overrides(spec, ROLES))
    return dataclasses.replace(recipe, name=f"{recipe.name}[{spec}]", rules=rules,
                               description=f"{recipe.description}; overridden: {spec}").validate()


def recipe_from_dict(d: Mapping[str, Any], source: str = "recipe") -> QuantRecipe:
    """Build and validate a QuantRecipe from plain data (TOML/JSON), rejecting unknown keys."""
    d = dict(d)
    rule_keys = {f.name for f in fields(TensorRule)}
    recipe_keys = {f.name for f in fields(QuantRecipe)}
    unknown = set(d) - recipe_keys
    if unknown:
        raise ValueError(f"{source}: unknown recipe keys {sorted(unknown)}; valid: {sorted(recipe_keys)}")
    rules = []
    for i, r in enumerate(d.pop("rules", [])):
        bad = set(r) - rule_keys
        if bad:
            raise ValueError(f"{source}: rule {i} has unknown keys {sorted(bad)}; valid: {sorted(rule_keys)}")
        if "role" not in r or "method" not in r:
            raise ValueError(f"{source}: rule {i} needs 'role' and 'method'")
        rules.append(TensorRule(**r))
    d.setdefault("name", Path(source).stem)
    d.setdefault("description", f"loaded from {source}")
    if "keep_fp32_patterns" in d:
        d["keep_fp32_patterns"] = tuple(d["keep_fp32_patterns"])
    return QuantRecipe(rules=tuple(rules), **d).validate()
