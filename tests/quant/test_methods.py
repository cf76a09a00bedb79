"""Method specs (quant/methods.py): every registered method has the uniform signature, its spec's claims hold
(Hessian need, QAT exactness, fit grid), and a new method registered in one place is usable by a recipe.

    python -m pytest tests/quant/test_methods.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.quant.apply import dequantize_state, quantize_state_dict
from pgolf.quant.methods import METHODS, MethodSpec, fake_quant_rule, get_method, register_method
from pgolf.quant.primitives import QuantizedTensor, qmax_for_bits, quantize_rtn
from pgolf.quant.recipe_file import recipe_from_dict
from pgolf.quant.recipes import QuantRecipe, TensorRule


def _w(rows: int = 16, cols: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(rows, cols, generator=g) * 0.05


def _h(cols: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, cols, generator=g)
    return x.T @ x / 256


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_the_uniform_signature(name):
    spec = METHODS[name]
    w = _w()
    bits = 8
    qt, info = spec(w, bits=bits, hessian=_h() if spec.needs_hessian else None)
    assert isinstance(qt, QuantizedTensor) and qt.q.shape == w.shape and qt.method == name
    assert isinstance(info, dict) and int(qt.q.abs().max()) <= qmax_for_bits(bits)
    assert float((w - qt.dequantize()).pow(2).mean()) < 1e-4


@pytest.mark.parametrize("name", sorted(n for n, s in METHODS.items() if s.qat_exact))
def test_exact_fake_quant_rules_equal_the_export(name):
    w = _w()
    bits = 8 if name in ("int8_percentile", "gate_int8_row") else 5
    params = {"clip_sigma": 9.0} if METHODS[name].fit_sigma else {}
    q, exact = fake_quant_rule(name, bits, params)
    qt, _ = METHODS[name](w, bits=bits, **params)
    assert exact and torch.equal(q(w), qt.dequantize())


def test_inexact_rules_are_the_same_grid_not_the_same_codes():
    w, H = _w(), _h()
    q, exact = fake_quant_rule("sdclip_gptq", 6, {"clip_sigma": 12.85})
    qt, _ = METHODS["sdclip_gptq"](w, bits=6, hessian=H, clip_sigma=12.85)
    assert not exact and not torch.equal(q(w), qt.dequantize())
    rtn, _ = METHODS["sdclip_rtn"](w, bits=6, clip_sigma=12.85)
    assert torch.equal(q(w), rtn.dequantize())  # same SDClip grid, rounded to nearest


def test_candidate_grids_follow_the_knobs():
    assert get_method("int8_percentile").fit_grid(8, None, (0.9, 1.1), 1) == [(8, None)]
    assert get_method("rtn").fit_grid(6, None, (0.9, 1.1), 1) == [(5, None), (6, None), (7, None)]
    assert get_method("sdclip_rtn").fit_grid(8, 10.0, (0.5, 1.0), 1) == [(7, 5.0), (7, 10.0), (8, 5.0),
                                                                            (8, 10.0)]
    assert get_method("sdclip_gptq").needs_hessian and not get_method("sdclip_rtn").needs_hessian
    with pytest.raises(ValueError, match="unknown quantization method 'nope'"):
        get_method("nope")


def test_a_registered_method_is_usable_by_a_recipe(monkeypatch, tmp_path):
    """The README's "Extending pgolf" example, as written there: one spec, then a recipe file amending its base."""
    import dataclasses

    from pgolf.quant.recipes import get_recipe

    def _fracmax_rtn(w, *, bits, hessian=None, frac=0.9):
        w32 = w.detach().float()
        qt = quantize_rtn(w32, bits, frac * w32.abs().amax(dim=1) / qmax_for_bits(bits))
        return dataclasses.replace(qt, method="fracmax_rtn"), {}

    monkeypatch.setitem(METHODS, "fracmax_rtn", None)
    register_method(MethodSpec("fracmax_rtn", _fracmax_rtn, "RTN at a fraction of the row max", fit_bits=True))
    path = tmp_path / "fracmax.toml"
    path.write_text('base = "gptq-lite"\n[[amend]]\nrole = "mlp"\nmethod = "fracmax_rtn"\n'
                    'params = { frac = 0.9 }\n')
    recipe = dataclasses.replace(get_recipe(path), passthrough_max_numel=0)
    assert not recipe.needs_hessians
    assert [r.params for r in recipe.rules if r.role == "mlp"] == [{"frac": 0.9}]
    w = _w()
    qs, rows = quantize_state_dict({"blocks.0.mlp.fc.weight": w, "blocks.0.attn.c_q.weight": w}, recipe)
    ref = quantize_rtn(w, 6, 0.9 * w.abs().amax(dim=1) / 31)
    assert torch.equal(qs.tensors["blocks.0.mlp.fc.weight"].q, ref.q) and rows[0]["method"] == "fracmax_rtn"
    assert rows[1]["method"] == "gptq_lite"
    assert dequantize_state(qs)["blocks.0.mlp.fc.weight"].shape == w.shape
    assert get_method("fracmax_rtn").fit_grid(6, None, (1.0,), 1) == [(5, None), (6, None), (7, None)]
    with pytest.raises(ValueError, match="no QAT fake-quant rule for method 'fracmax_rtn'"):
        fake_quant_rule("fracmax_rtn", 4, {})
    with pytest.raises(ValueError, match="takes no parameter 'fraq'"):
        recipe_from_dict({"name": "u", "rules": [{"role": "*", "method": "fracmax_rtn", "params": {"fraq": 1}}]})
    with pytest.raises(ValueError, match="unknown method 'fracmaxx'"):
        QuantRecipe(name="u", description="", rules=(TensorRule(role="*", method="fracmaxx"),)).validate()
