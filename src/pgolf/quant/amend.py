"""Amending one role's rule of a recipe: the per-role knobs of `--quant.ROLE.KNOB VALUE` and of a recipe file's
`[[amend]]` tables (issue 18). Pure functions on rule tuples.

    rules = amend_rules(recipe.rules, role="mlp", bits=5)                        # int5 MLP, nothing else moves
    rules = amend_rules(recipe.rules, role="attn", params={"clip_sigma": 13.0})  # σ of attention only
    parse_role_overrides("mlp.bits=5,attn.clip_sigma=13")  # → [("mlp", "bits", 5), ("attn", "clip_sigma", 13)]

An amendment changes every rule of exactly that role (its bits, method, or one of its params, the others kept).
When the recipe has no rule of that role (its tensors fall through to the role="*" rule), a copy of the first
rule that matches the role is inserted before it with the amendment, so only that role's tensors change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

ROLE_KNOBS = ("bits", "method")
"""Rule fields a role override sets directly; any other knob (clip_sigma, percentile, hessian_lambda, damp, …) is
one of the method's keyword parameters."""


def amend_rules(rules: tuple, *, role: str, pattern: str = "", bits: int | None = None, method: str | None = None,
                params: Mapping[str, Any] | None = None) -> tuple:
    """The rules with every rule of `role` (and `pattern`, when given) amended; see the module docstring."""
    def amended(r):
        new_method = method or r.method
        kept = r.params if new_method == r.method else {}  # another method: only the params given for it
        return dataclasses.replace(r, bits=r.bits if bits is None else int(bits), method=new_method,
                                   params={**kept, **(params or {})})

    hit = [i for i, r in enumerate(rules) if r.role == role and (not pattern or r.pattern == pattern)]
    if hit:
        return tuple(amended(r) if i in hit else r for i, r in enumerate(rules))
    for i, r in enumerate(rules):
        if r.role in ("*", role):  # the rule the role's tensors use today: copy it for this role only
            return rules[:i] + (dataclasses.replace(amended(r), role=role, pattern=pattern or r.pattern),) + rules[i:]
    raise ValueError(f"no rule of the recipe covers role {role!r}")


def parse_value(text: str) -> Any:
    """'5' → 5, '13.0' → 13.0, 'true' → True, anything else stays text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_role_overrides(spec: str, roles: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    """'ROLE.KNOB=VALUE,…' (QuantConfig.rule_overrides) → [(role, knob, value)], each checked."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        role, dot, knob = key.partition(".")
        if not sep or not dot or not knob:
            raise ValueError(f"quant override {item!r} must look like ROLE.KNOB=VALUE (e.g. mlp.bits=5)")
        if role not in roles:
            raise ValueError(f"quant override {item!r}: unknown role {role!r}; valid: {', '.join(roles)}")
        v = parse_value(value)
        if knob == "bits" and (not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 8):
            raise ValueError(f"quant override {item!r}: bits must be an integer in 2..8")
        out.append((role, knob, v))
    return out


def apply_role_overrides(rules: tuple, overrides: list[tuple[str, str, Any]]) -> tuple:
    for role, knob, value in overrides:
        if knob == "bits":
            rules = amend_rules(rules, role=role, bits=value)
        elif knob == "method":
            rules = amend_rules(rules, role=role, method=str(value))
        else:
            rules = amend_rules(rules, role=role, params={knob: value})
    return rules
