"""Allocation: int5/6/7 mixed precision preserves the numel-weighted mean bits and follows sensitivity; ±1 pruning
reaches a byte target with a real compressor, prunes the cheapest codes first, and prunes nothing when it fits.

    python -m pytest tests/quant/test_allocate.py -q
"""

from __future__ import annotations

import zlib

import pytest
import torch

from pgolf.quant.allocate import mean_bits, mixed_precision_bits, prune_ones_to_budget
from pgolf.quant.primitives import QuantizedTensor, quantize_rtn


def _model_like_numels() -> dict[str, int]:
    """An 11-layer, d=512, MLP 4× model's matrices: c_q/c_k/c_v/proj and mlp.fc/mlp.proj."""
    shapes = {"attn.c_q": 512 * 512, "attn.c_k": 256 * 512, "attn.c_v": 256 * 512, "attn.proj": 512 * 512,
              "mlp.fc": 2048 * 512, "mlp.proj": 512 * 2048}
    return {f"blocks.{i}.{k}": v for i in range(11) for k, v in shapes.items()}


def test_equal_numels_give_25_50_25_and_mean_six():
    names = [f"t{i}" for i in range(16)]
    sens = {n: float(i) for i, n in enumerate(reversed(names))}  # t15 least sensitive
    numels = {n: 1000 for n in names}
    bits = mixed_precision_bits(sens, numels)
    assert mean_bits(bits, numels) == 6.0
    assert sorted(bits.values()) == [5] * 4 + [6] * 8 + [7] * 4
    assert {n for n, b in bits.items() if b == 5} == {"t15", "t14", "t13", "t12"}
    assert {n for n, b in bits.items() if b == 7} == {"t0", "t1", "t2", "t3"}


@pytest.mark.parametrize("seed", range(4))
def test_mixed_precision_preserves_mean_bits_on_model_shapes(seed):
    numels = _model_like_numels()
    g = torch.Generator().manual_seed(seed)
    sens = {n: float(torch.rand(1, generator=g)) for n in numels}
    bits = mixed_precision_bits(sens, numels)
    assert set(bits) == set(numels) and set(bits.values()) <= {5, 6, 7}
    # every size is a multiple of 256·512, so the mean can be (and is) preserved exactly
    assert mean_bits(bits, numels) == pytest.approx(6.0, abs=1e-12)
    N = sum(numels.values())
    low = sum(numels[n] for n, b in bits.items() if b == 5) / N
    high = sum(numels[n] for n, b in bits.items() if b == 7) / N
    assert abs(low - 0.25) <= 0.1 + 1e-12 and abs(high - 0.25) <= 0.1 + 1e-12  # fraction_tolerance
    # monotone in sensitivity: every int5 tensor is less sensitive than every int6, every int6 than every int7
    by_bits = {b: [sens[n] for n, x in bits.items() if x == b] for b in (5, 6, 7)}
    assert max(by_bits[5]) < min(by_bits[6]) and max(by_bits[6]) < min(by_bits[7])


def test_mixed_precision_mean_is_as_close_as_sizes_allow():
    g = torch.Generator().manual_seed(7)
    numels = {f"t{i}": int(x) for i, x in enumerate(torch.randint(1000, 100_000, (30,), generator=g))}
    sens = {n: float(torch.rand(1, generator=g)) for n in numels}
    bits = mixed_precision_bits(sens, numels)
    N = sum(numels.values())
    assert abs(mean_bits(bits, numels) - 6.0) <= max(numels.values()) / N
    # count-based 25/50/25 (the naive reading) is no closer to 6 than ours
    order = sorted(numels, key=sens.get)
    naive = {n: 5 if i < 7 else 7 if i >= 23 else 6 for i, n in enumerate(order)}
    assert abs(mean_bits(bits, numels) - 6.0) <= abs(mean_bits(naive, numels) - 6.0)


def test_mixed_precision_other_widths_and_errors():
    numels = {f"t{i}": 10 for i in range(8)}
    sens = {n: float(i) for i, n in enumerate(numels)}
    bits = mixed_precision_bits(sens, numels, bits=(4, 6, 8))
    assert mean_bits(bits, numels) == 6.0 and sorted(bits.values()) == [4, 4, 6, 6, 6, 6, 8, 8]
    assert mixed_precision_bits(sens, numels, fractions=(0.0, 1.0, 0.0)) == {n: 6 for n in numels}
    with pytest.raises(ValueError):
        mixed_precision_bits(sens, numels, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        mixed_precision_bits(sens, numels, bits=(6, 5, 7))
    assert mixed_precision_bits({}, {}) == {}


# ------------------------------------------------------------------------------------------------ pruning

def _zlib_size(qts: dict[str, QuantizedTensor]) -> int:
    raw = b"".join(qt.q.numpy().tobytes() + qt.scale.numpy().tobytes() for qt in qts.values())
    return len(zlib.compress(raw, 6))


def _qts() -> dict[str, QuantizedTensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for i, (rows, cols) in enumerate([(32, 128), (64, 64)]):
        W = torch.randn(rows, cols, generator=g) * torch.linspace(0.5, 2.0, rows)[:, None]
        out[f"w{i}"] = quantize_rtn(W, 6, W.std(dim=1) * 6.0 / 31)  # int6, k=6: many ±1 codes
    return out


def test_prune_nothing_when_it_fits():
    qts = _qts()
    size = _zlib_size(qts)
    out, n = prune_ones_to_budget(qts, _zlib_size, size)
    assert n == 0 and all(out[k] is qts[k] for k in qts)


def test_prune_reaches_target_cheapest_first():
    qts = _qts()
    size0 = _zlib_size(qts)
    target = size0 - 100  # zeroing every ±1 code saves ~230 bytes here
    out, n = prune_ones_to_budget(qts, _zlib_size, target)
    assert _zlib_size(out) <= target and n > 0
    n_changed = 0
    for k in qts:
        before, after = qts[k].q, out[k].q
        changed = before != after
        n_changed += int(changed.sum())
        assert (before[changed].abs() == 1).all() and (after[changed] == 0).all()  # only ±1 → 0
        assert torch.equal(out[k].scale, qts[k].scale) and out[k].bits == qts[k].bits
    assert n_changed == n
    # cheapest first: every pruned code's row scale² ≤ every surviving ±1 code's row scale²
    pruned_cost, kept_cost = [], []
    for k in qts:
        cost = qts[k].scale.float().pow(2)[:, None].expand_as(qts[k].q)
        ones = qts[k].q.abs() == 1
        pruned_cost.append(cost[ones & (out[k].q == 0)])
        kept_cost.append(cost[ones & (out[k].q != 0)])
    assert float(torch.cat(pruned_cost).max()) <= float(torch.cat(kept_cost).min())
    # minimal in the binary-search sense: the n − 1 cheapest do not fit
    cands = sorted((float(qts[k].scale[i]) ** 2, t, i * qts[k].q.shape[1] + j)
                   for t, k in enumerate(qts) for i, j in (qts[k].q.abs() == 1).nonzero().tolist())
    fewer = {k: qts[k].q.clone().reshape(-1) for k in qts}
    names = list(qts)
    for _, t, flat in cands[: n - 1]:
        fewer[names[t]][flat] = 0
    fewer_qts = {k: QuantizedTensor(q=fewer[k].reshape(qts[k].q.shape), scale=qts[k].scale, bits=6, method="rtn")
                 for k in qts}
    assert _zlib_size(fewer_qts) > target


def test_prune_unreachable_target_raises():
    with pytest.raises(ValueError, match="cannot reach"):
        prune_ones_to_budget(_qts(), _zlib_size, 10)


def test_mixed_precision_by_tensor_count_is_pr1962s_split():
    """PR #1962: bottom 25 % of the 66 matrices by sensitivity int5, top 25 % int7, by count (16 / 34 / 16)."""
    from pgolf.quant.allocate import mixed_precision_bits_by_count

    shapes = {"c_q": 512 * 512, "c_k": 256 * 512, "c_v": 256 * 512, "proj": 512 * 512, "fc": 2048 * 512,
              "mlp_proj": 512 * 2048}  # R0427's 11 layers × 6 matrices
    numels = {f"blocks.{i}.{k}": v for i in range(11) for k, v in shapes.items()}
    g = torch.Generator().manual_seed(0)
    sens = {n: float(x) for n, x in zip(numels, torch.rand(len(numels), generator=g))}
    bits = mixed_precision_bits_by_count(sens)
    assert list(bits) == list(sens)
    assert [sum(b == k for b in bits.values()) for k in (5, 6, 7)] == [16, 34, 16]
    order = sorted(sens, key=sens.get)
    assert {bits[n] for n in order[:16]} == {5} and {bits[n] for n in order[-16:]} == {7}
    by_params = mixed_precision_bits(sens, numels)
    assert mean_bits(by_params, numels) == pytest.approx(6.0, abs=0.02)
    assert mean_bits(bits, numels) != mean_bits(by_params, numels)  # the two splits are different allocations


def test_recipe_switch_selects_the_split():
    import dataclasses

    from pgolf.quant.cross_tensor import cross_tensor_overrides
    from pgolf.quant.plan import route_tensors
    from pgolf.quant.recipes import RECIPES

    g = torch.Generator().manual_seed(0)
    sd = {f"blocks.{i}.mlp.fc.weight": torch.randn(64 * (1 + i % 3), 32, generator=g) for i in range(8)}
    hs = {n: torch.eye(32) * (1 + i) for i, n in enumerate(sd)}
    base = dataclasses.replace(RECIPES["hessian-mixed-precision"], passthrough_max_numel=0)
    for split in ("params", "count"):
        recipe = dataclasses.replace(base, mixed_precision_split=split).validate()
        o = cross_tensor_overrides(sd, route_tensors(sd, recipe), recipe, hs)
        got = [o[n]["bits"] for n in sd]
        if split == "count":
            assert got.count(5) == 2 and got.count(7) == 2
    with pytest.raises(ValueError, match="mixed_precision_split 'tensors'"):
        dataclasses.replace(base, mixed_precision_split="tensors").validate()
