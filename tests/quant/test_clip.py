"""Clip rules: SDClip's formula, Hessian-aware SDClip (λ = 0 is SDClip), GPTQ-lite's percentile search (per row is
never worse than per matrix), and the adaptive-σ bisection hitting its log-mean target.

    python -m pytest tests/quant/test_clip.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from pgolf.quant.clip import adaptive_sigmas, hessian_sdclip_scale, hessian_sensitivity, sdclip_scale
from pgolf.quant.gptq_lite import gptq_lite, percentile_scales
from pgolf.quant.primitives import qmax_for_bits, quantize_rtn


def _w(rows: int = 32, cols: int = 256, seed: int = 0, std: float = 0.02) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * std * torch.linspace(0.5, 2.0, rows)[:, None]
    return w


def _h(cols: int = 256, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(512, cols, generator=g) * torch.logspace(-1, 1, cols)[None, :]
    return X.T @ X / 512


def test_qmax_for_bits():
    assert [qmax_for_bits(b) for b in (2, 4, 5, 6, 7, 8)] == [1, 7, 15, 31, 63, 127]
    with pytest.raises(ValueError):
        qmax_for_bits(9)


def test_sdclip_scale_formula():
    W = _w()
    s = sdclip_scale(W, 12.85, 6)
    assert s.dtype == torch.float16 and s.shape == (32,)
    row = W[5]
    std = math.sqrt(sum((x - row.mean().item()) ** 2 for x in row.tolist()) / (row.numel() - 1))  # unbiased
    assert float(s[5]) == pytest.approx(12.85 * std / 31, rel=1e-3)  # fp16 rounding
    assert torch.equal(s, (12.85 * W.std(dim=1) / 31).clamp_min(1e-10).to(torch.float16))
    assert torch.equal(sdclip_scale(torch.zeros(3, 8), 12.85, 6), torch.zeros(3, dtype=torch.float16))


def test_hessian_sdclip_lambda_zero_is_sdclip_and_lambda_moves_important_rows():
    W, H = _w(), _h()
    assert torch.equal(hessian_sdclip_scale(W, H, 12.85, 6, lam=0.0), sdclip_scale(W, 12.85, 6))
    # Row 0 puts its weight on the inputs with the largest H diagonal: it is "important" and gets a wider clip.
    W2 = W.clone()
    W2[0] = 0.0
    W2[0, -16:] = 0.05
    W2[1] = 0.0
    W2[1, :16] = 0.05
    s0, s1 = sdclip_scale(W2, 12.85, 6), hessian_sdclip_scale(W2, H, 12.85, 6, lam=0.175)
    assert float(s1[0]) > float(s0[0]) and float(s1[1]) < float(s0[1])
    # the formula, row by row
    diagH = torch.diagonal(H) + 0.01 * torch.diagonal(H).mean()
    ci = diagH / diagH.mean()
    ri = (W2.abs() * ci).mean(dim=1)
    ri = ri / ri.mean()
    expect = (12.85 * W2.std(dim=1) * (1 + 0.175 * (ri - 1)) / 31).to(torch.float16)
    assert torch.allclose(s1.float(), expect.float(), rtol=2e-3)


def test_percentile_scales():
    W = _w(std=1.0)
    assert torch.equal(percentile_scales(W, 1.0, 6), (W.abs().amax(dim=1) / 31).clamp_min(1 / 31).to(torch.float16))
    s = percentile_scales(W, 0.999, 6)
    assert (s <= percentile_scales(W, 1.0, 6)).all()
    assert torch.equal(percentile_scales(W * 1e-3, 0.999, 6), torch.full((32,), 1 / 31).to(torch.float16))  # floor


def test_gptq_lite_per_row_not_worse_than_per_matrix():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(24, 512, generator=g) * 0.5
    W[::3, :4] *= 12.0  # outliers in some rows only: those rows want a tighter percentile than the rest
    qt_m, info_m = gptq_lite(W, 6)
    qt_r, info_r = gptq_lite(W, 6, per_row=True)
    assert info_m["percentile"] in (0.999, 0.9995, 0.9999, 0.99999, 1.0) and info_r["percentile"] is None
    assert info_m["mse"] == min(info_m["mse_by_percentile"].values())
    mse_m = float((W - qt_m.dequantize()).pow(2).mean())
    mse_r = float((W - qt_r.dequantize()).pow(2).mean())
    assert mse_m == pytest.approx(info_m["mse"]) and mse_r == pytest.approx(info_r["mse"])
    assert mse_r <= mse_m
    assert info_r["percentiles"].shape == (24,) and len(set(info_r["percentiles"].tolist())) > 1
    # the per-matrix result is RTN at the chosen percentile's scale (R0322)
    ref = quantize_rtn(W, 6, percentile_scales(W, info_m["percentile"], 6))
    assert torch.equal(qt_m.q, ref.q) and torch.equal(qt_m.scale, ref.scale) and qt_m.method == "gptq_lite"


def _log_mean(sig, numels):
    return sum(numels[n] * math.log(sig[n]) for n in sig) / sum(numels.values())


@pytest.mark.parametrize("seed", range(5))
def test_adaptive_sigmas_hit_log_mean_target(seed):
    g = torch.Generator().manual_seed(seed)
    names = [f"blocks.{i}.{k}" for i in range(11) for k in ("attn.c_q", "attn.proj", "mlp.fc", "mlp.proj")]
    sens = {n: float(10 ** (torch.rand(1, generator=g) * 8 - 4)) for n in names}  # 8 decades: many hit a clamp
    numels = {n: (2048 * 512 if "mlp" in n else 512 * 512) for n in names}
    base = {n: (11.5 if "mlp" in n else 13.0) for n in names}
    sig, offset = adaptive_sigmas(sens, numels, base)
    assert math.isfinite(offset)
    assert abs(_log_mean(sig, numels) - _log_mean(base, numels)) <= 1e-6
    assert all(6.0 <= v <= 24.0 for v in sig.values())
    assert any(v in (6.0, 24.0) for v in sig.values())  # the clamps were active and the target was still hit
    lo, hi = min(sens, key=sens.get), max(sens, key=sens.get)
    assert sig[lo] >= sig[hi]  # less sensitive tensors get the wider clip


def test_adaptive_sigmas_unreachable_and_bad_input():
    names = ["a", "b"]
    numels = {"a": 10, "b": 30}
    with pytest.raises(ValueError, match="unreachable"):
        adaptive_sigmas({"a": 1.0, "b": 2.0}, numels, {"a": 30.0, "b": 40.0})  # target above hi = 24
    with pytest.raises(ValueError):
        adaptive_sigmas({"a": 0.0, "b": 2.0}, numels, {n: 12.0 for n in names})
    # a target exactly on the boundary is reachable
    sig, _ = adaptive_sigmas({"a": 1.0, "b": 2.0}, numels, {"a": 6.0, "b": 6.0})
    assert abs(_log_mean(sig, numels) - math.log(6.0)) <= 1e-6


def test_hessian_sensitivity():
    W, H = _w(), _h()
    expect = float(torch.diagonal(H).mean()) * float(W.var(dim=1).mean())
    assert hessian_sensitivity(W, H) == pytest.approx(expect, rel=1e-6)
    assert hessian_sensitivity(torch.zeros(4, 256), H) == 1e-12


def test_hessian_sensitivity_takes_the_records_diag_mean():
    """mean(diag H) as `H.diag().mean()` (issue 13): equal bit for bit, on Hessians where torch.diagonal differs."""
    g = torch.Generator().manual_seed(0)
    seen_diff = 0
    for _ in range(20):
        X = torch.randn(64, 257, generator=g) * torch.rand(257, generator=g) * 10
        H, W = X.T @ X, torch.randn(16, 257, generator=g)
        seen_diff += torch.diagonal(H).mean().item() != H.diag().mean().item()
        assert hessian_sensitivity(W, H) == float(H.diag().mean()) * float(W.var(dim=1).mean())
    assert seen_diff > 0  # the inputs do exercise the difference
