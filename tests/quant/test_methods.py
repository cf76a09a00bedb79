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
from pgolf.quant.recipes import QuantRecipe, TensorRule, recipe_from_dict


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
    assert get_method("int8_percentile").candidates(8, None, (0.9, 1.1), 1) == [(8, None)]
    assert get_method("rtn").candidates(6, None, (0.9, 1.1), 1) == [(5, None), (6, None), (7, None)]
    assert get_method("sdclip_rtn").candidates(8, 10.0, (0.5, 1.0), 1) == [(7, 5.0), (7, 10.0), (8, 5.0),
                                                                            (8, 10.0)]
    assert get_method("sdclip_gptq").needs_hessian and not get_method("sdclip_rtn").needs_hessian
    with pytest.raises(ValueError, match="unknown quantization method 'nope'"):
        get_method("nope")


def test_a_registered_method_is_usable_by_a_recipe(monkeypatch):
    """The README's "Extending pgolf" example: one spec, then a recipe naming it."""
    def halfmax(w, *, bits, hessian=None, frac=0.5):
        w32 = w.detach().float()
        return quantize_rtn(w32, bits, frac * w32.abs().amax(dim=1) / qmax_for_bits(bits)), {}

    monkeypatch.setitem(METHODS, "halfmax", None)
    register_method(MethodSpec("halfmax", halfmax, "RTN at half the row max", fit_bits=True))
    recipe = recipe_from_dict({"name": "t", "passthrough_max_numel": 0,
                               "rules": [{"role": "*", "method": "halfmax", "bits": 4, "params": {"frac": 0.5}}]})
    assert not recipe.needs_hessians
    w = _w()
    qs, rows = quantize_state_dict({"blocks.0.mlp.fc.weight": w}, recipe)
    ref = quantize_rtn(w, 4, 0.5 * w.abs().amax(dim=1) / 7)
    assert torch.equal(qs.tensors["blocks.0.mlp.fc.weight"].q, ref.q) and rows[0]["method"] == "rtn"
    assert dequantize_state(qs)["blocks.0.mlp.fc.weight"].shape == w.shape
    with pytest.raises(ValueError, match="no QAT fake-quant rule for method 'halfmax'"):
        fake_quant_rule("halfmax", 4, {})
    with pytest.raises(ValueError, match="unknown method 'halfmaxx'"):
        QuantRecipe(name="u", description="", rules=(TensorRule(role="*", method="halfmaxx"),)).validate()
