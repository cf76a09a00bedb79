"""Every registered recipe quantizes and dequantizes with the optional modules it does not run unimportable
(`QuantConfig.modules_not_run`: lqer, lqer_storage, hessian_math, cross_tensor, recipe_file, amend, fake_quant),
with the same codes as a normal run.

The single-file script leaves those modules out of a configuration without the step (pgolf.experiments.closure),
so a module-level import of one of them, or a call on the path of a recipe without the step, would break the
script; here it fails the recipe's run in a fresh interpreter with the modules blocked in `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pgolf.quant.config import QuantConfig
from pgolf.quant.recipes import RECIPES
from tests.quant.identity import inputs, small, state_digest

ROOT = Path(__file__).resolve().parents[2]

# One fresh interpreter: per recipe, pgolf.quant is imported anew with that recipe's modules blocked.
CHILD = r"""
import json, sys
import torch
torch.set_num_threads(1)
blocked = json.loads(sys.argv[1])
out = {}
for name, mods in blocked.items():
    for m in [m for m in sys.modules if m.startswith("pgolf.quant")]:
        del sys.modules[m]
    sys.modules.update({m: None for m in mods})  # `import m` now raises ImportError
    from pgolf.quant.apply import dequantize_state, quantize_state_dict
    from pgolf.quant.config import QuantConfig
    from pgolf.quant.recipes import recipe_for
    from tests.quant.identity import inputs, small, state_digest
    sd, hs = inputs()
    recipe = small(recipe_for(QuantConfig(recipe=name)))
    qs, rows = quantize_state_dict(sd, recipe, hessians=hs if recipe.needs_hessians else None)
    w = dequantize_state(qs)
    out[name] = [state_digest(qs), sum(float(t.double().sum()) for t in w.values() if t.is_floating_point()),
                 [r["lqer"] for r in rows]]
    for m in mods:
        del sys.modules[m]
print(json.dumps(out))
"""


def _reference(name: str) -> list:
    from pgolf.quant.apply import dequantize_state, quantize_state_dict

    sd, hs = inputs()
    recipe = small(RECIPES[name])
    qs, rows = quantize_state_dict(sd, recipe, hessians=hs if recipe.needs_hessians else None)
    w = dequantize_state(qs)
    return [state_digest(qs), sum(float(t.double().sum()) for t in w.values() if t.is_floating_point()),
            [r["lqer"] for r in rows]]


def test_modules_not_run_follow_the_recipe_features():
    assert QuantConfig(recipe="int8-baseline").modules_not_run() == (
        "pgolf.quant.lqer", "pgolf.quant.lqer_storage", "pgolf.quant.hessian_math", "pgolf.quant.cross_tensor",
        "pgolf.quant.recipe_file", "pgolf.quant.amend", "pgolf.quant.fake_quant")
    assert QuantConfig(recipe="sota-lqer").modules_not_run(qat=True) == (
        "pgolf.quant.cross_tensor", "pgolf.quant.recipe_file", "pgolf.quant.amend")
    assert "pgolf.quant.cross_tensor" not in QuantConfig(recipe="hessian-mixed-precision").modules_not_run()
    assert "pgolf.quant.amend" not in QuantConfig(recipe="sota-lqer", rule_overrides="mlp.bits=5").modules_not_run()


def test_every_recipe_runs_without_the_modules_it_does_not_run():
    blocked = {name: list(QuantConfig(recipe=name).modules_not_run()) for name in RECIPES}
    assert any("pgolf.quant.lqer" not in m for m in blocked.values())  # some recipes run LQER, some do not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(blocked)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.set_num_threads(1)
    for name in RECIPES:
        ref = _reference(name)
        assert got[name][0] == ref[0], f"{name}: codes differ with {blocked[name]} blocked"
        assert got[name][1:] == ref[1:], name
    assert any(label for name in RECIPES for label in got[name][2])  # LQER really ran where the recipe has it


def test_a_blocked_step_module_fails_loudly():
    """The blocking is real: a recipe whose step module is blocked fails to import it."""
    code = ("import sys; sys.modules['pgolf.quant.lqer'] = None\n"
            "from tests.quant.identity import inputs, small\n"
            "from pgolf.quant.apply import quantize_state_dict\nfrom pgolf.quant.recipes import RECIPES\n"
            "sd, hs = inputs(); quantize_state_dict(sd, small(RECIPES['sota-lqer']), hessians=hs)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "pgolf.quant.lqer" in proc.stderr
