"""Configuration fields folded into the single-file script (pgolf.experiments.cfgfold) and the override parser that
keeps the folding sound (pgolf.config.baked_config with `live`).

    python -m pytest tests/experiments/test_cfgfold.py -q
"""

from __future__ import annotations

import ast

import pytest

from pgolf.config import RunConfig, baked_config
from pgolf.experiments.cfgfold import fold_config_fields, foldable_fields

SRC = '''
from dataclasses import dataclass, replace

def train(cfg, model):
    if cfg.qat_threshold > 0:
        model = install_qat(model)
    steps = 0 if cfg.ema_decay <= 0 else 1
    return model, steps, cfg.iterations

def evaluate(cfg):
    e = replace(cfg.eval, stride=64)
    return e.stride, cfg.eval.stride

def layers(self_cfg_holder):
    return self_cfg_holder.cfg.num_layers

@dataclass
class Other:
    warmdown_frac: float = 0.5

def tokens(sp):
    return sp.vocab_size()

def run(cfg):
    o = Other()
    o.grad_clip_norm = 3
    return cfg.train.warmdown_frac, cfg.train.grad_clip_norm, cfg.model.vocab_size
'''


def _trees():
    return {"m.py": ast.parse(SRC)}


def test_only_fields_nothing_else_can_change_or_shadow_are_folded():
    cfg = RunConfig()
    values = foldable_fields(_trees(), cfg, live=[("train", "iterations")])
    assert values["qat_threshold"] == cfg.train.qat_threshold and values["ema_decay"] == cfg.train.ema_decay
    assert values["num_layers"] == cfg.model.num_layers
    assert "iterations" not in values  # live: the command line may change it
    assert "stride" not in values  # a replace() names it: another EvalConfig exists
    assert "warmdown_frac" not in values  # another class of the script has a field of that name
    assert "grad_clip_norm" not in values  # the script assigns an attribute of that name
    assert "vocab_size" not in values  # two sections hold it (data, model), and SentencePiece has a method of it


def test_folding_replaces_the_reads_and_folds_the_branches_they_decide():
    cfg = RunConfig()
    trees = _trees()
    n = fold_config_fields(trees, cfg, live=[("train", "iterations")])
    out = ast.unparse(trees["m.py"])
    assert n >= 3 and "install_qat" not in out and "qat_threshold" not in out and "num_layers" not in out
    assert "cfg.iterations" in out and "e.stride, cfg.eval.stride" in out and "sp.vocab_size()" in out
    assert "cfg.train.warmdown_frac, cfg.train.grad_clip_norm" in out
    assert fold_config_fields(trees, cfg, live=[("train", "iterations")]) == 0  # idempotent


def test_the_script_parser_refuses_a_changed_field_outside_live_but_accepts_its_baked_value():
    from pgolf.config import SECTIONS

    baked = {**{s: {} for s in SECTIONS}, "train": {"matrix_lr": 0.045}}  # as bundle.baked_dict writes it
    live = [("train", "seed"), ("run", "name")]
    cfg = baked_config(baked, ["--train.seed", "3", "--train.matrix_lr", "0.045"], live)
    assert cfg.train.seed == 3 and cfg.train.matrix_lr == 0.045
    assert baked_config(baked, ["--model.num_layers", str(RunConfig().model.num_layers)], live).model == \
        RunConfig().model  # restating a default is not a change
    with pytest.raises(NotImplementedError, match=r"--train.matrix_lr 0.05: this script has train.matrix_lr baked"):
        baked_config(baked, ["--train.matrix_lr", "0.05"], live)
    with pytest.raises(NotImplementedError, match="model.num_layers"):
        baked_config(baked, ["--model.num_layers=5"], live)
    assert baked_config(baked, ["--model.num_layers=5"]).model.num_layers == 5  # no `live`: every field


def test_constant_tests_fold_chains_and_boolean_operands_by_truth():
    from pgolf.experiments.fold import fold_constant_branches

    src = ("def f(x, i, g):\n    out = []\n    if x is not None and 'v2' == 'v2':\n        out.append(1)\n"
           "    if x is not None and 'v2' == 'v1':\n        out.append(2)\n    if g() and False:\n        out.append(3)\n"
           "    if 0 <= -1 <= i:\n        out.append(4)\n    out.append(5 if (x or True) else 6)\n"
           "    out.append(7 if 1 < 2 < 3 else 8)\n    if None is None and i > 3:\n        out.append(9)\n    return out\n")
    tree = ast.parse(src)
    fold_constant_branches(tree)
    out = ast.unparse(tree)
    assert "'v2'" not in out and "out.append(2)" not in out and "out.append(4)" not in out and "else 6" not in out
    assert "g() and False" in out  # g() runs before the constant: kept
    assert "if i > 3:" in out
    calls = []
    ns: dict = {}
    exec(compile(out, "<folded>", "exec"), ns)
    exec(compile(src, "<orig>", "exec"), orig := {})
    for x, i in ((None, 0), (0, 5), ("a", -3)):
        g = lambda: calls.append(1) or True  # noqa: E731
        assert ns["f"](x, i, g) == orig["f"](x, i, g)
    assert len(calls) == 6  # g called the same number of times by both


def test_a_local_bound_once_to_a_constant_folds_where_it_is_read():
    from pgolf.experiments.fold import fold_constant_locals

    src = ("def f(i):\n    parallel = 0 <= -1 <= i\n    lanes = None\n    for v in range(3):\n"
           "        if parallel and lanes is None:\n            lanes = v\n    k = 3\n    k += 1\n"
           "    def g():\n        return parallel\n    return lanes, k, g()\n")
    tree = ast.parse(src)
    # parallel's load in the `if`; then lanes (its other binding went with that branch) in the return; k is bound
    # twice, unguarded; g's `parallel` is another scope's
    assert fold_constant_locals(tree) == 2
    out = ast.unparse(tree)
    assert "if parallel" not in out and "k += 1" in out and "return (None, k, g())" in out
    ns: dict = {}
    exec(compile(out, "<folded>", "exec"), ns)
    assert ns["f"](5) == (None, 4, False)


def test_a_local_whose_other_bindings_its_constant_never_reaches_folds():
    from pgolf.experiments.fold import fold_constant_locals

    src = ("def h(xs):\n    lanes = None\n    for x in xs:\n        if lanes is not None:\n"
           "            lanes = lanes + x\n        elif x < 0:\n            pass\n    return lanes\n\n"
           "def open_(xs):\n    last = None\n    for x in xs:\n        if x:\n            last = x\n    return last\n\n"
           "def other(xs):\n    n = 0\n    for x in xs:\n        if n is None:\n            n = 1\n        else:\n"
           "            n = n + x\n    return n\n")
    tree = ast.parse(src)
    assert fold_constant_locals(tree) == 3  # h: the test, the sum, the return; `last` and `n`: a binding it reaches
    out = ast.unparse(tree)
    assert "lanes + x" not in out and "return None" in out and "last = x" in out and "n = n + x" in out
    ns: dict = {}
    exec(compile(out, "<folded>", "exec"), ns)
    assert ns["h"]([1, -2]) is None and ns["open_"]([0, 3, 0]) == 3 and ns["other"]([1, 2]) == 3


def test_string_literal_field_annotations_become_str_in_the_script():
    from pgolf.experiments.bundle import _literal_fields_as_str

    tree = ast.parse("from typing import Literal\nclass C:\n    codec: Literal['zlib', 'rans'] = 'rans'\n"
                     "    n: Literal[1, 2] = 1\n    one: Literal['x'] = 'x'\n")
    _literal_fields_as_str(tree.body)
    out = ast.unparse(tree)
    assert "codec: str = 'rans'" in out and "one: str = 'x'" in out and "n: Literal[1, 2]" in out


def test_the_configured_recipes_fields_fold_where_a_recipe_is_read():
    from pgolf.config import RunConfig
    from pgolf.experiments.cfgfold import fold_config_fields, foldable_recipe_fields
    from pgolf.quant.config import QuantConfig

    src = ("def q(recipe, other):\n    if recipe.lqer_top_k:\n        return 'lqer'\n"
           "    return (recipe.needs_hessians, other.lqer_top_k, recipe.name)\n")
    cfg = RunConfig(quant=QuantConfig(recipe="int8-baseline"))
    trees = {"m.py": ast.parse(src)}
    fields = ["recipe", "name"]  # configuration field names (run.name): never folded as a recipe's
    values = foldable_recipe_fields(trees, cfg, fields)
    assert values["lqer_top_k"] == 0 and values["needs_hessians"] is False and "name" not in values
    fold_config_fields(trees, cfg, ())
    out = ast.unparse(trees["m.py"])
    assert "'lqer'" not in out and "return (False, other.lqer_top_k, recipe.name)" in out
    # another recipe built from it (`replace(..., lqer_top_k=0)`) keeps that field live; a recipe with rule overrides
    # or from a file is not the table's one
    replaced = {"m.py": ast.parse(src + "\ndef fit(recipe):\n    return replace(recipe, lqer_top_k=0)\n")}
    assert "lqer_top_k" not in foldable_recipe_fields(replaced, cfg, fields)
    amended = RunConfig(quant=QuantConfig(recipe="int8-baseline", rule_overrides="mlp.bits=6"))
    assert foldable_recipe_fields(trees, amended, fields) == {}
