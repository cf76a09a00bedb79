"""Recipe files: a .toml (or plain dict) with QuantRecipe's fields, optionally a registered `base` recipe and
`[[amend]]` tables (quant/amend.py). `get_recipe("my_recipe.toml")` (quant/recipes.py) reads one through
`load_recipe_file`; a run of a registered recipe never imports this module, so its single-file script leaves it out.

    recipe = load_recipe_file(Path("my_recipe.toml"), RECIPES)
    recipe = recipe_from_dict({"name": "int6-rtn", "rules": [{"role": "*", "method": "rtn", "bits": 6}]})

A file may start from a registered recipe with `base = "sdclip"` and override any field: `rules` replace the base's
rules, while each `[[amend]]` table (role, optional pattern, and any of bits / method / params) changes only that
role's rule, e.g.

    base = "sota-lqer"
    [[amend]]
    role = "mlp"
    bits = 5
    params = { clip_sigma = 10.0 }
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

from pgolf.quant.amend import amend_rules
from pgolf.quant.recipe_types import ROLES, QuantRecipe, TensorRule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_recipe_file(path: Path, registry: Mapping[str, QuantRecipe]) -> QuantRecipe:
    """The recipe of a .toml file; its `base`, when given, is a recipe of `registry` (quant/recipes.RECIPES)."""
    if not path.is_file():
        raise ValueError(f"recipe file {path} does not exist")
    d = tomllib.loads(path.read_text())
    base = d.pop("base", None)
    amends = d.pop("amend", [])
    if base is not None:
        if base not in registry:
            raise ValueError(f"{path}: base recipe {base!r} unknown; valid: {', '.join(registry)}")
        merged = {f.name: getattr(registry[base], f.name) for f in fields(QuantRecipe)}
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
