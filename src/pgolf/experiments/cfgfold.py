"""The single-file script's baked configuration, and its fields folded into the code: a field the script does not
let its command line change is a constant, so the branches it decides go.

    src = baked_submission(files["pgolf/submission.py"], cfg)    # BAKED = {...}, LIVE_FIELDS = (...), main
    n = fold_config_fields(trees, cfg, live=LIVE_FIELDS)         # {"pgolf/x.py": ast.Module} → folded in place

The script's override parser (`pgolf.config.baked_config`) refuses a changed value of a field outside `LIVE_FIELDS`
(NotImplementedError naming the field), so in every run of the script a folded field has its baked value. A read
`<config>.<field>` becomes the value where all of these hold:

- `<config>` is a configuration by its spelling: a name `cfg`/`config`/`*_cfg`, an attribute `.cfg`, or a section
  attribute (`cfg.train`, `self.cfg.model`...): the names the library gives its configuration objects;
- the field name belongs to one section only, and no other class of the script defines it (a dataclass field, a
  method, a class attribute), and nothing in the script assigns an attribute of that name, names it in a
  `setattr`/`getattr`-family string or as a keyword of `replace(...)` or a section's constructor, or is a
  module-level def of that name;
- no object of the libraries the script uses has an attribute of that name (`_external_attributes`: a tensor, module,
  optimizer, path, SentencePiece processor, ...), and the value is a plain literal (bool, int, float, str, None, or
  a tuple of them).

A configuration object other than the baked one (`dataclasses.replace(cfg.eval, mode=...)`) only changes the fields
its call names, which are therefore never folded. The model configuration an artifact's manifest carries is the
baked one (the script decodes only the artifact it wrote). The configured quantization recipe is a constant too
(`foldable_recipe_fields`): where the script's recipe table holds it alone, a read `recipe.<field>` (the library's
name for its QuantRecipe objects) of a field no `replace(...)` changes becomes its value. Then `if`s and conditional expressions whose test is a
constant fold (`fold.fold_constant_branches`), and so do locals bound once to a constant (`fold.fold_constant_locals`).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Iterable, Mapping

SUBMISSION = "pgolf/submission.py"
LIVE_FIELDS = (("train", "seed"), ("run", "name"), ("run", "out_dir"), ("run", "progress"), ("data", "data_dir"),
               ("data", "train_pattern"), ("data", "val_pattern"), ("data", "tokenizer_path"),
               ("data", "val_max_tokens"), ("train", "iterations"), ("train", "max_wallclock_seconds"),
               ("train", "log_every"), ("train", "device"), ("eval", "max_seconds"))
"""The fields the counted script's command line may change; every other field is baked, refused as an override
(`pgolf.config.baked_config`) and folded into the code (`pgolf.experiments.cfgfold`)."""
VARYING_FIELDS = (("train", "seed"), ("run", "name"))
"""Baked at their dataclass defaults, so every seed of a submission counts the same script; the commands `pgolf
submit` writes always pass them (pgolf.experiments.submit)."""


def baked_dict(cfg: Any) -> dict[str, dict[str, Any]]:
    """The configuration the script carries: the fields of `cfg.to_dict()` that differ from the dataclass
    defaults, VARYING_FIELDS left at theirs; checked to rebuild `cfg` through `pgolf.config.baked_config` (given
    those fields as overrides)."""
    import dataclasses

    from pgolf.config import SECTIONS, baked_config

    full, defaults = cfg.to_dict(), {s: dataclasses.asdict(c()) for s, c in SECTIONS.items()}
    for section, name in VARYING_FIELDS:
        full[section][name] = defaults[section][name]
    d = {s: {k: v for k, v in full[s].items() if v != defaults[s][k]} for s in full}  # what differs from defaults
    if ast.literal_eval(repr(d)) != d:
        raise ValueError(f"configuration {d!r} is not a Python literal: it cannot be baked into the script")
    again = baked_config(d, [a for s, n in VARYING_FIELDS
                             for a in (f"--{s}.{n}", str(getattr(getattr(cfg, s), n)))]).to_dict()
    if again != cfg.to_dict():
        raise ValueError("internal error: the baked configuration does not rebuild the run's configuration")
    return d


def baked_submission(source: str, cfg: Any) -> str:
    """pgolf/submission.py of the script: `BAKED = <cfg as a literal>` and `baked_main` as `main` (the package's
    `main`, with presets, override parsing and validation, is dropped, and the shaking drops what only it used)."""
    tree = ast.parse(source)
    if not any(isinstance(n, ast.FunctionDef) and n.name == "baked_main" for n in tree.body):
        return source  # an entry without a baked main (a package other than pgolf's) runs its own main
    body = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            continue
        if isinstance(node, ast.FunctionDef) and node.name == "baked_main":
            node.name = "main"
        target = getattr(node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None), "id",
                         None) if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if target == "BAKED":
            node = ast.Assign(targets=[ast.Name("BAKED", ast.Store())], value=ast.parse(
                repr(baked_dict(cfg)), mode="eval").body)
        elif target == "LIVE_FIELDS":
            node = ast.Assign(targets=[ast.Name("LIVE_FIELDS", ast.Store())], value=ast.parse(
                repr(LIVE_FIELDS), mode="eval").body)
        body.append(node)
    return ast.unparse(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))) + "\n"


_CONFIG_NAMES = frozenset({"cfg", "config"})


def _external_attributes() -> frozenset[str]:
    """Attribute names of the library objects the script's code handles: never folded."""
    import argparse
    import pathlib

    import numpy as np
    import torch

    names: set[str] = set()
    for t in (torch.Tensor, torch.nn.Module, torch.nn.Linear, torch.nn.Embedding, torch.optim.Optimizer,
              torch.optim.AdamW, torch.device, torch.dtype, torch.Generator, np.ndarray, np.dtype, pathlib.Path,
              argparse.Namespace, str, bytes, dict, list, tuple, set, int, float, object, type):
        names |= set(dir(t))
    try:
        import sentencepiece

        names |= set(dir(sentencepiece.SentencePieceProcessor))
    except ImportError:  # pragma: no cover (a pgolf dependency)
        pass
    return frozenset(names)


def _literal(v: Any) -> bool:
    if isinstance(v, tuple):
        return all(_literal(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def _blocked_names(trees: Mapping[str, ast.Module], owner_classes: set[str],
                   constructors: frozenset[str] = frozenset()) -> set[str]:
    """Attribute names a read may not be folded for: a class other than `owner_classes` defines them, the script
    assigns them, a `replace(...)` or a call of `constructors` names them as keywords (an object other than the baked
    one), a getattr-family string names them, a module-level def has the name, or a library object has such an
    attribute."""
    blocked: set[str] = set(_external_attributes())
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name not in owner_classes:
                for st in node.body:
                    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        blocked.add(st.name)
                    elif isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                        blocked.add(st.target.id)
                    elif isinstance(st, ast.Assign):
                        blocked |= {t.id for t in st.targets if isinstance(t, ast.Name)}
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in tree.body:
                blocked.add(node.name)
            elif isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load):
                blocked.add(node.attr)
            elif isinstance(node, ast.Call):
                fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if fn == "replace" or fn in constructors:  # an object other than the baked one
                    blocked |= {k.arg for k in node.keywords if k.arg}
                if fn in ("setattr", "getattr", "__setattr__", "hasattr", "delattr") and len(node.args) > 1 and \
                        isinstance(node.args[1], ast.Constant):
                    blocked.add(str(node.args[1].value))
    return blocked


def foldable_fields(trees: Mapping[str, ast.Module], cfg: Any, live: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """{field name: baked value} of the fields `fold_config_fields` may replace (see the module docstring)."""
    from pgolf.config import SECTIONS

    live = set(live)
    owners: dict[str, list[tuple[str, Any]]] = {}
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            owners.setdefault(f.name, []).append((section, getattr(obj, f.name)))
    classes = {c.__name__ for c in SECTIONS.values()} | {"RunConfig"}
    blocked = set(SECTIONS) | _blocked_names(trees, classes, frozenset(classes))
    out = {}
    for name, held in owners.items():
        if len(held) != 1 or name in blocked or (held[0][0], name) in live or not _literal(held[0][1]):
            continue
        out[name] = held[0][1]
    return out


RECIPE_PROPERTIES = ("needs_hessians",)
"""QuantRecipe properties folded with its fields (computed from them)."""


def foldable_recipe_fields(trees: Mapping[str, ast.Module], cfg: Any, config_fields: Iterable[str]) -> dict[str, Any]:
    """{field name: value} of the configured recipe's fields (and `RECIPE_PROPERTIES`) that a read `recipe.<field>`
    may be replaced by: the script's recipe table holds that recipe alone (a registered one, no rule overrides: no
    other QuantRecipe is ever built), and the name is neither blocked (`_blocked_names`; the table's own
    `QuantRecipe(...)` entry aside) nor a configuration field."""
    from pgolf.quant.recipes import RECIPES, recipe_for
    from pgolf.quant.recipe_types import QuantRecipe

    if cfg.quant.recipe not in RECIPES or cfg.quant.rule_overrides:
        return {}
    recipe = recipe_for(cfg.quant)
    values = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}
    values |= {p: getattr(recipe, p) for p in RECIPE_PROPERTIES}
    blocked = _blocked_names(trees, {QuantRecipe.__name__}) | set(config_fields)  # the table's entry is the one
    return {k: v for k, v in values.items() if k not in blocked and _literal(v)}


def _is_config(node: ast.expr) -> bool:
    from pgolf.config import SECTIONS

    if isinstance(node, ast.Name):
        return node.id in _CONFIG_NAMES or node.id.endswith("_cfg")
    if isinstance(node, ast.Attribute):
        return node.attr == "cfg" or (node.attr in SECTIONS and _is_config(node.value))
    return False


class _Fold(ast.NodeTransformer):
    def __init__(self, values: Mapping[str, Any], owner: Any = None):
        self.values, self.count, self.owner = values, 0, owner or _is_config

    def visit_Attribute(self, node):  # noqa: N802
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load) and node.attr in self.values and self.owner(node.value):
            self.count += 1
            return ast.copy_location(ast.Constant(self.values[node.attr]), node)
        return node


def fold_config_fields(trees: Mapping[str, ast.Module], cfg: Any, live: Iterable[tuple[str, str]]) -> int:
    """Every foldable read of a configuration field replaced by its baked value and the branches it decides folded,
    in place; returns how many reads were replaced."""
    from pgolf.experiments.fold import fold_constant_branches, fold_constant_locals

    values = foldable_fields(trees, cfg, live)
    from pgolf.config import SECTIONS

    recipe = foldable_recipe_fields(trees, cfg, (f.name for c in SECTIONS.values() for f in dataclasses.fields(c)))
    n = 0
    for tree in trees.values():
        f, r = _Fold(values), _Fold(recipe, _is_recipe)
        f.visit(tree)
        r.visit(tree)
        n += f.count + r.count
        if f.count + r.count:
            fold_constant_branches(tree)
            fold_constant_locals(tree)
    return n


def _is_recipe(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "recipe"  # the library's name for its QuantRecipe objects

