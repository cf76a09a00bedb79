"""Budget fitting (quant/fit.py, bound to the container by pack/fit.py): the allocator's optimality properties, the fit landing within tolerance under the
target with the real encoder, beating the recipe's own choice at equal bytes, pruning as the last resort, and the
`pgolf quantize --budget` verb.

    python -m pytest tests/quant/test_fit.py -q
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import pytest
import torch

from pgolf.model.gpt import GPT
from pgolf.pack.container import decode_artifact, encode_artifact
from pgolf.pack.fit import fit_to_budget
from pgolf.quant import fit as qfit
from pgolf.quant.apply import dequantize_state, quantize_state_dict
from pgolf.quant.fit import FitError, Option, allocate, pareto, total_bytes, total_err
from pgolf.quant.methods import METHODS
from pgolf.quant.calibration import calibration_batches
from pgolf.quant.hessian import collect_hessians
from pgolf.quant.primitives import QuantizedTensor
from pgolf.quant.recipes import get_recipe
from tests.model.conftest import randomize, tiny_config

CFG = dict(model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0, vocab_size=128)
_DUMMY = QuantizedTensor(q=torch.zeros(1, dtype=torch.int8), scale=torch.ones((), dtype=torch.float16), bits=8,
                         method="rtn")


def _front(points):
    return pareto([Option(bits=6, sigma=None, nbytes=b, err=e, qt=_DUMMY) for b, e in points])


def _random_fronts(rng: random.Random, n_tensors: int, n_opts: int):
    fronts = {}
    for t in range(n_tensors):
        sizes = sorted(rng.sample(range(50, 400), n_opts))
        errs = sorted((rng.uniform(0.1, 10.0) for _ in range(n_opts)), reverse=True)
        fronts[f"t{t}"] = _front(zip(sizes, errs))
    return fronts


def test_pareto_keeps_only_undominated_options():
    f = _front([(10, 5.0), (12, 6.0), (20, 1.0), (15, 3.0), (15, 2.5), (30, 1.0)])
    assert [(o.nbytes, o.err) for o in f] == [(10, 5.0), (15, 2.5), (20, 1.0)]


@pytest.mark.parametrize("seed", range(6))
def test_allocate_fits_is_greedy_complete_and_near_the_exhaustive_optimum(seed):
    rng = random.Random(seed)
    fronts = _random_fronts(rng, n_tensors=4, n_opts=4)
    lo = total_bytes(fronts, {n: 0 for n in fronts})
    hi = total_bytes(fronts, {n: len(f) - 1 for n, f in fronts.items()})
    target = rng.randint(lo, hi - 1)
    pick, lam = allocate(fronts, target)
    used = total_bytes(fronts, pick)
    assert used <= target and lam is not None
    for n, f in fronts.items():  # no single upgrade of any tensor still fits (the slack was spent)
        for j in range(pick[n] + 1, len(f)):
            assert f[j].nbytes - f[pick[n]].nbytes > target - used
    names = list(fronts)
    best = min(total_err(fronts, dict(zip(names, c)))
               for c in itertools.product(*(range(len(fronts[n])) for n in names))
               if total_bytes(fronts, dict(zip(names, c))) <= target)
    assert total_err(fronts, pick) <= best * 1.25  # Lagrangian + greedy: close to the exhaustive optimum
    # and never worse than any same-index ("one global knob") allocation that fits
    for k in range(4):
        uniform = {n: min(k, len(f) - 1) for n, f in fronts.items()}
        if total_bytes(fronts, uniform) <= target:
            assert total_err(fronts, pick) <= total_err(fronts, uniform) + 1e-12


def test_allocate_edges():
    fronts = {"a": _front([(10, 3.0), (20, 1.0)]), "b": _front([(5, 2.0), (8, 1.0)])}
    assert allocate(fronts, 100) == ({"a": 1, "b": 1}, 0.0)  # everything at its best already fits
    assert allocate(fronts, 14)[1] is None  # not even the smallest options fit


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(**CFG)).eval(), std=0.05)
    calib = calibration_batches("random", vocab_size=128, num_seqs=8, seq_len=32, batch_size=4, seed=0)
    return model, collect_hessians(model, calib.batches).h


def _recipe(name: str):
    return dataclasses.replace(get_recipe(name), passthrough_max_numel=1024)


@pytest.mark.parametrize("name,codec", [("sdclip-rtn", "rans"), ("sdclip", "brotli"), ("sota-lqer", "rans")])
def test_fit_lands_under_the_target_within_tolerance_and_beats_the_recipe_at_equal_bytes(tiny, name, codec):
    model, hessians = tiny
    recipe = _recipe(name)
    sd = model.state_dict()
    hs = hessians if recipe.needs_hessians else None
    qs0, _ = quantize_state_dict(sd, recipe, hessians=hs)
    manifest = {"recipe": recipe.name}
    base_bytes = len(encode_artifact(qs0, manifest, codec))
    tol = 200  # this model's artifact is ~60 KB; the default (0.1 %) is meant for MB-sized ones
    fit = fit_to_budget(sd, recipe, target_model_bytes=base_bytes, codec=codec, manifest=manifest, hessians=hs,
                        tolerance_bytes=tol)
    assert len(fit.blob) == fit.info["model_bytes"] <= base_bytes
    assert base_bytes - len(fit.blob) <= tol
    # at the recipe's own byte count, the fitted allocation has less of the distortion it minimises
    assert fit.info["fitted_err"] < fit.info["baseline_err"]
    # and the artifact is a real one: decodes to exactly the fitted codes, loads into the model
    qs2, m2 = decode_artifact(fit.blob)
    assert m2 == manifest
    for n, qt in fit.state.tensors.items():
        assert torch.equal(qs2.tensors[n].q, qt.q)
    GPT(tiny_config(**CFG)).load_state_dict(dequantize_state(qs2), strict=True)
    rows = {r["name"]: r for r in fit.rows}
    for n, c in fit.info["choices"].items():
        assert rows[n]["bits"] == c["bits"] == fit.state.tensors[n].bits


def test_fit_spends_a_larger_budget_on_more_bits(tiny):
    model, _ = tiny
    recipe = _recipe("sdclip-rtn")
    sd = model.state_dict()
    base = len(encode_artifact(quantize_state_dict(sd, recipe)[0], {}, "rans"))
    small = fit_to_budget(sd, recipe, target_model_bytes=int(base * 0.9), codec="rans", manifest={},
                          tolerance_bytes=300)
    large = fit_to_budget(sd, recipe, target_model_bytes=int(base * 1.1), codec="rans", manifest={},
                          tolerance_bytes=300)
    assert len(small.blob) <= base * 0.9 < base * 1.1 - 300 <= len(large.blob) <= base * 1.1
    assert large.info["fitted_err"] < small.info["fitted_err"]


def test_fit_prunes_when_the_smallest_allocation_is_over_and_errors_when_impossible(tiny):
    model, _ = tiny
    recipe = _recipe("sdclip-rtn")
    sd = model.state_dict()
    kw = dict(codec="rans", manifest={}, sigma_multipliers=(1.0,), bits_delta=0)
    smallest = fit_to_budget(sd, recipe, target_model_bytes=10**9, **kw)
    target = len(smallest.blob) - 300
    pruned = fit_to_budget(sd, recipe, target_model_bytes=target, **kw)
    assert pruned.info["pruned_ones"] > 0 and len(pruned.blob) <= target
    with pytest.raises(FitError, match="cannot fit 1,000 model bytes"):
        fit_to_budget(sd, recipe, target_model_bytes=1000, **kw)


def test_quantize_verb_fits_a_budget_and_scores_the_round_trip(tiny_dataset, tmp_path, capsys):
    from pgolf.cli import main
    from tests.conftest import smoke_args

    assert main(["run", *smoke_args(tiny_dataset.data_dir, tmp_path, "fit")]) == 0
    recipe = tmp_path / "small.toml"
    recipe.write_text('base = "sdclip-rtn"\npassthrough_max_numel = 1024\n')
    plain = tmp_path / "plain.pgolf"
    assert main(["quantize", str(tmp_path / "fit"), "--recipe", str(recipe), "--codec", "rans",
                 "--out", str(plain)]) == 0
    code = json.loads(plain.with_suffix(".quant.json").read_text())["bytes"]["code_bytes"]
    # a per-role override on the command line changes exactly that role's tensors (issue 18)
    mlp5 = tmp_path / "mlp5.pgolf"
    assert main(["quantize", str(tmp_path / "fit"), "--recipe", str(recipe), "--codec", "rans",
                 "--out", str(mlp5), "--quant.mlp.bits", "5"]) == 0
    rows0 = {r["name"]: r for r in json.loads(plain.with_suffix(".quant.json").read_text())["tensors"]}
    rows5 = {r["name"]: r for r in json.loads(mlp5.with_suffix(".quant.json").read_text())["tensors"]}
    mlp = {n for n, r in rows0.items() if r["role"] == "mlp" and r["method"] != "passthrough"}
    assert mlp and all(rows5[n]["bits"] == 5 and rows0[n]["bits"] == 6 for n in mlp)
    assert all(rows5[n] == rows0[n] for n in rows0 if n not in mlp)
    budget = code + plain.stat().st_size - 2000
    out = tmp_path / "fit.pgolf"
    capsys.readouterr()
    assert main(["quantize", str(tmp_path / "fit"), "--recipe", str(recipe), "--codec", "rans",
                 "--budget", f"{budget:_}", "--out", str(out), "--eval"]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.with_suffix(".quant.json").read_text())
    assert report["bytes"]["total"] <= budget and report["bytes"]["model_bytes"] == out.stat().st_size
    assert report["fit"]["slack"] == budget - report["bytes"]["total"]
    assert f"fit: budget {budget:,}" in text and "final_roundtrip" in text


def test_batched_sdclip_gptq_equals_separate_runs():

    gen = torch.Generator().manual_seed(1)
    W = torch.randn(48, 64, generator=gen) * 0.02
    X = torch.randn(256, 64, generator=gen) * torch.rand(64, generator=gen) * 3
    H = X.T @ X / 256
    sigmas = [6.0, 12.85, 20.0]
    for params in ({}, {"hessian_lambda": 0.175}):
        batched = METHODS["sdclip_gptq"].batch(W, H, 5, sigmas, params)
        for s, (qt, info) in zip(sigmas, batched):
            ref, _ = METHODS["sdclip_gptq"](W, bits=5, hessian=H, clip_sigma=s, **params)
            assert torch.equal(qt.q, ref.q) and torch.equal(qt.scale, ref.scale)
            assert qt.method == "sdclip_gptq" and info["sigma"] == s


def test_the_fit_takes_any_rate_and_encoder():
    """quant/fit.py never imports the pack stage: with zlib as rate and encoder it fits a zlib budget."""
    import zlib

    torch.manual_seed(0)
    sd = {f"blocks.{i}.mlp.fc.weight": torch.randn(64, 64) * 0.05 for i in range(3)}
    recipe = dataclasses.replace(get_recipe("sdclip-rtn"), passthrough_max_numel=0)

    def encode(qs):
        return zlib.compress(b"".join(qt.q.numpy().tobytes() + qt.scale.numpy().tobytes()
                                      for qt in qs.tensors.values()), 9)

    def rate(qt):
        return len(zlib.compress(qt.q.numpy().tobytes(), 9)) + 2 * qt.scale.numel()

    base = len(encode(quantize_state_dict(sd, recipe)[0]))
    fit = qfit.fit_to_budget(sd, recipe, target_model_bytes=int(base * 0.85), rate=rate, encode=encode,
                             codec="zlib")
    assert len(fit.blob) <= int(base * 0.85) and fit.blob == encode(fit.state)
    assert fit.info["codec"] == "zlib" and fit.info["fitted_err"] >= fit.info["baseline_err"]
