"""quantize_state_dict / dequantize_state: routing, passthrough rule, dtype restoration, report, method dispatch.

    python -m pytest tests/quant/test_apply.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.quant import primitives
from pgolf.quant.apply import dequantize_state, quantize_state_dict
from pgolf.quant.methods import METHODS, MethodSpec
from pgolf.quant.recipes import QuantRecipe, TensorRule, get_recipe


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "tok_emb.weight": torch.randn(256, 257, generator=g) * 0.02,  # 65,792 > 65,536 → quantized
        "blocks.0.attn.c_q.weight": torch.randn(256, 256, generator=g),  # exactly 65,536 → passthrough fp16
        "blocks.0.mlp.fc.weight": torch.randn(512, 256, generator=g).to(torch.bfloat16),
        "blocks.0.attn_scale": torch.rand(256, generator=g),  # BASE control tensor → fp32
        "blocks.0.attn.q_gain": torch.rand(4, generator=g).to(torch.bfloat16),
        "steps": torch.tensor([7, 8], dtype=torch.int64),
        "mask": torch.tensor([True, False]),
    }


def test_passthrough_rule_and_dtypes():
    sd = _state()
    qs, rows = quantize_state_dict(sd, get_recipe("int8-baseline"))
    assert set(qs.tensors) == {"tok_emb.weight", "blocks.0.mlp.fc.weight"}
    assert qs.passthrough["blocks.0.attn.c_q.weight"].dtype == torch.float16  # ≤ 65,536 elements: fp16
    assert qs.passthrough["blocks.0.attn_scale"].dtype == torch.float32  # BASE keeps control tensors fp32
    assert qs.passthrough["blocks.0.attn.q_gain"].dtype == torch.float32
    assert torch.equal(qs.passthrough["steps"], sd["steps"]) and torch.equal(qs.passthrough["mask"], sd["mask"])
    assert qs.dtypes["blocks.0.mlp.fc.weight"] == "bfloat16" and list(qs.dtypes) == list(sd)
    out = dequantize_state(qs)
    assert list(out) == list(sd)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
    torch.testing.assert_close(out["blocks.0.attn.c_q.weight"], sd["blocks.0.attn.c_q.weight"].half().float())
    assert torch.equal(out["blocks.0.attn_scale"], sd["blocks.0.attn_scale"])
    assert (out["tok_emb.weight"] - sd["tok_emb.weight"]).abs().max() <= 0.5 / 127 + 1e-6  # half the 1/127 floor step


def test_report_rows_measure_the_real_roundtrip_error():
    sd = _state()
    qs, rows = quantize_state_dict(sd, "int8-baseline")
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == list(sd)
    row = by_name["tok_emb.weight"]
    assert row["role"] == "embed" and row["method"] == "int8_percentile" and row["bits"] == 8
    assert row["numel"] == 256 * 257
    expected = float((sd["tok_emb.weight"].double() - dequantize_state(qs)["tok_emb.weight"].double()).pow(2).mean())
    assert row["mse"] == pytest.approx(expected)
    assert by_name["blocks.0.attn.c_q.weight"]["method"] == "passthrough"
    assert by_name["blocks.0.attn.c_q.weight"]["bits"] == 16 and by_name["steps"]["mse"] == 0.0


def test_methods_are_dispatched_by_name_with_hessians(monkeypatch):
    seen = {}

    def fake(w, *, bits, hessian=None, strength=0.0):
        seen["hessian"], seen["strength"] = hessian, strength
        return primitives.quantize_rtn(w, bits, w.abs().amax(dim=1) / primitives.qmax_for_bits(bits))

    monkeypatch.setitem(METHODS, "fake", MethodSpec("fake", lambda w, **kw: (fake(w, **kw), {}), "test method"))
    recipe = QuantRecipe(name="t", description="", passthrough_max_numel=0, rules=(
        TensorRule(role="embed", method="passthrough"),
        TensorRule(role="*", method="fake", bits=5, params={"strength": 2.0}),
    ))
    w = torch.randn(8, 16)
    h = torch.eye(16)
    qs, rows = quantize_state_dict({"tok_emb.weight": w, "blocks.0.mlp.fc.weight": w}, recipe,
                                   hessians={"blocks.0.mlp.fc.weight": h})
    assert seen["hessian"] is h and seen["strength"] == 2.0
    fc = qs.tensors["blocks.0.mlp.fc.weight"]
    assert fc.bits == 5 and int(fc.q.abs().max()) <= 15
    assert qs.passthrough["tok_emb.weight"].dtype == torch.float16
