"""Quantizer primitives: the BASE int8 quantizer's exact rules, the generic RTN grid, and the method registry.

    python -m pytest tests/quant/test_primitives.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.quant.primitives import (
    INT8_CLIP_PERCENTILE, QuantizedTensor, _quantile_1d, qmax_for_bits, quantize_int8_percentile,
    quantize_rtn, row_quantile,
)


def _heavy_tailed(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    w[0, 3] = 1.5  # an outlier the percentile clip must cut
    w[2, :] *= 10.0
    return w


def test_int8_matches_the_baseline_rules():
    w = _heavy_tailed(16, 4096)
    qt = quantize_int8_percentile(w)
    assert qt.q.dtype == torch.int8 and qt.q.shape == w.shape and qt.bits == 8 and qt.method == "int8_percentile"
    assert qt.scale.dtype == torch.float16 and qt.scale.shape == (16,)
    # clip_abs is numpy's linear-interpolation quantile of |W| per row; scale = clip/127 floored at 1/127
    clip = np.quantile(w.abs().numpy().astype(np.float64), INT8_CLIP_PERCENTILE / 100, axis=1)
    scale32 = np.maximum(clip / 127.0, 1.0 / 127.0)
    np.testing.assert_allclose(qt.scale.float().numpy(), scale32, rtol=1e-3)  # fp16 storage: 11-bit mantissa
    assert float(qt.scale[1]) == pytest.approx(1 / 127, rel=1e-3)  # BASE floors the step at 1/127 (rows < 1)
    assert qt.q.abs().max() <= 127
    assert int(qt.q[0, 3]) == 127  # the outlier is clipped to the top code


def test_int8_error_is_at_most_half_a_step_for_unclipped_entries():
    w = _heavy_tailed(32, 2048, seed=1)
    qt = quantize_int8_percentile(w)
    clip = torch.quantile(w.abs(), INT8_CLIP_PERCENTILE / 100, dim=1)
    s32 = (clip / 127.0).clamp_min(1.0 / 127.0)
    unclipped = w.abs() <= clip[:, None]
    # codes are rounded on the fp32 scale: |W − q·s32| ≤ s32/2
    err32 = (w - qt.q.float() * s32[:, None]).abs()
    assert bool((err32[unclipped] <= (s32[:, None] / 2 + 1e-7).expand_as(w)[unclipped]).all())
    # dequantize() uses the stored fp16 scale: add the scale's own rounding error, |q|·|s32 − s16|
    s16 = qt.scale.float()
    err = (w - qt.dequantize()).abs()
    bound = s32[:, None] / 2 + qt.q.float().abs() * (s32 - s16).abs()[:, None] + 1e-7
    assert bool((err[unclipped] <= bound[unclipped]).all())
    assert qt.dequantize(torch.bfloat16).dtype == torch.bfloat16


def test_int8_constant_zero_and_empty_rows():
    w = torch.zeros(4, 8)
    w[1] = 2.0
    w[2] = -3.0
    w[3] = 0.5  # below 1: the 1/127 floor on the step applies, 0.5 → code 64
    qt = quantize_int8_percentile(w)
    assert torch.equal(qt.q[0], torch.zeros(8, dtype=torch.int8))  # zero row → floor scale 1/127, codes 0
    assert float(qt.scale[0]) == pytest.approx(1 / 127, rel=1e-3)
    assert torch.equal(qt.q[1], torch.full((8,), 127, dtype=torch.int8))
    assert torch.equal(qt.q[2], torch.full((8,), -127, dtype=torch.int8))
    torch.testing.assert_close(qt.dequantize()[1:3], w[1:3], rtol=1e-3, atol=0)
    assert torch.equal(qt.q[3], torch.full((8,), 64, dtype=torch.int8))
    empty = quantize_int8_percentile(torch.zeros(3, 0))
    assert empty.q.shape == (3, 0) and empty.scale.shape == (3,)


def test_int8_non_matrix_uses_one_fp32_per_tensor_scale():
    v = torch.linspace(-2, 2, 1001)
    qt = quantize_int8_percentile(v)
    assert qt.scale.dim() == 0 and qt.scale.dtype == torch.float32
    assert float(qt.scale) == pytest.approx(float(torch.quantile(v.abs(), INT8_CLIP_PERCENTILE / 100)) / 127)
    assert (v - qt.dequantize()).abs().max() <= float(qt.scale) / 2 + 1e-6
    zero = quantize_int8_percentile(torch.zeros(5))
    assert float(zero.scale) == 1.0 and not zero.q.any()
    cube = quantize_int8_percentile(torch.randn(3, 4, 5))  # 3-D tensors (banks) are per-tensor too, like BASE
    assert cube.scale.dim() == 0 and cube.q.shape == (3, 4, 5)


def test_quantiles_beyond_torch_size_cap_match_torch():
    x = torch.rand(37, 50)
    torch.testing.assert_close(row_quantile(x, 0.97, max_numel=100), torch.quantile(x, 0.97, dim=1))
    flat = x.flatten()
    assert _quantile_1d(flat, 0.999, max_numel=10) == pytest.approx(float(torch.quantile(flat, 0.999)), rel=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_rtn_grid_codes_and_half_step_error(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(8, 64, generator=g)
    qmax = qmax_for_bits(bits)
    scale = w.abs().amax(dim=1) * 0.8 / qmax  # clips the top 20% of the range
    qt = quantize_rtn(w, bits, scale)
    s16 = qt.scale.float()
    assert qt.scale.dtype == torch.float16 and qt.bits == bits
    assert int(qt.q.abs().max()) <= qmax
    unclipped = w.abs() <= qmax * s16[:, None]
    err = (w - qt.dequantize()).abs()
    assert bool((err[unclipped] <= (s16[:, None] / 2 * (1 + 1e-6)).expand_as(w)[unclipped]).all())
    assert bool((qt.q[~unclipped].abs() == qmax).all())


def test_rtn_per_tensor_scale_and_shape_checks():
    w = torch.randn(4, 6)
    qt = quantize_rtn(w, 6, torch.tensor(0.05))
    assert qt.scale.dim() == 0
    torch.testing.assert_close(qt.dequantize(), qt.q.float() * qt.scale.float())
    with pytest.raises(ValueError, match="does not match"):
        quantize_rtn(w, 6, torch.ones(5))
    with pytest.raises(ValueError, match="2..8"):
        quantize_rtn(w, 9, torch.ones(4))
    zero = quantize_rtn(torch.zeros(2, 3), 4, torch.zeros(2))  # zero scale is floored, not a NaN
    assert not zero.q.any() and torch.isfinite(zero.dequantize()).all()


def test_quantized_tensor_validates_its_fields():
    q = torch.zeros(3, 4, dtype=torch.int8)
    with pytest.raises(ValueError, match="int8"):
        QuantizedTensor(q=q.int(), scale=torch.ones(3, dtype=torch.float16), bits=8, method="x")
    with pytest.raises(ValueError, match="scale shape"):
        QuantizedTensor(q=q, scale=torch.ones(4, dtype=torch.float16), bits=8, method="x")
    with pytest.raises(ValueError, match="bits"):
        QuantizedTensor(q=q, scale=torch.ones(3, dtype=torch.float16), bits=9, method="x")
