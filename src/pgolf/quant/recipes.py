"""Quantization recipes as data: one registry dict of frozen dataclasses (style.md rule 9).

A recipe says, per tensor role, which registered method (`primitives.QUANTIZERS`) quantizes it at how many bits
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
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from pgolf.quant.primitives import QUANTIZERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROLES = ("embed", "attn", "mlp", "other")
PASSTHROUGH = "passthrough"  # rule method that keeps a large float tensor unquantized (fp16)

# BASE CONTROL_TENSOR_NAME_PATTERNS: small control tensors BASE keeps in fp32 instead of fp16 (train_gpt.py).
BASE_FP32_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain",
                      "skip_weight", "skip_weights")


def tensor_role(name: str) -> str:
    """embed | mlp | attn | other, exactly as the records' `_classify_param` (R0322 … R0427) routes a tensor.

    tok_emb / lm_head → embed; ".mlp." → mlp; ".attn." or a non-MLP ".proj." (bigram.proj, ve_shared.proj) → attn.
    """
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name:
        return "mlp"
    if ".attn." in name or (".proj." in name and ".mlp." not in name):
        return "attn"
    return "other"


@dataclass(frozen=True)
class TensorRule:
    role: str
    """Tensor role this rule applies to (embed | attn | mlp | other) or "*" for any."""
    method: str
    """A `QUANTIZERS` method name, or "passthrough" to keep the tensor in fp16."""
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

    def rule_for(self, name: str) -> TensorRule:
        role = tensor_role(name)
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
        for rule in self.rules:
            if rule.role != "*" and rule.role not in ROLES:
                raise ValueError(f"recipe {self.name!r}: unknown role {rule.role!r}; valid: *, {', '.join(ROLES)}")
            if rule.method != PASSTHROUGH and rule.method not in QUANTIZERS:
                raise ValueError(f"recipe {self.name!r}: unknown method {rule.method!r}; valid: "
                                 f"{', '.join([*QUANTIZERS, PASSTHROUGH])}")
            if not 2 <= rule.bits <= 8:
                raise ValueError(f"recipe {self.name!r}: bits={rule.bits} must be in 2..8")
        return self


RECIPES: dict[str, QuantRecipe] = {
    "int8-baseline": QuantRecipe(
        name="int8-baseline",
        description="BASE: per-row int8 with the 99.99984th-percentile clip, fp16 scales; small tensors fp16 "
                    "(control tensors fp32); zlib-9 (parameter-golf.md §2.1)",
        rules=(TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984}),),
        passthrough_max_numel=65_536,
        codec_hint="zlib",
        keep_fp32_patterns=BASE_FP32_PATTERNS,
    ),
}


def get_recipe(name_or_path: str | Path) -> QuantRecipe:
    """A registered recipe by name, or one loaded from a .toml file with QuantRecipe's fields."""
    key = str(name_or_path)
    if key in RECIPES:
        return RECIPES[key]
    path = Path(key)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ValueError(f"recipe file {path} does not exist")
        return recipe_from_dict(tomllib.loads(path.read_text()), source=str(path))
    raise ValueError(f"unknown quantization recipe {key!r}; valid names: {', '.join(RECIPES)} (or a .toml file)")


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
