"""Bit allocation across tensors and byte-budget pruning (pure functions over dicts of tensors, no prints).

    bits = mixed_precision_bits(sens, numels)                 # low 25 % of parameters int5, middle int6, top int7
    bits = mixed_precision_bits_by_count(sens)                # PR #1962's code: the same by tensor count
    mean_bits(bits, numels)                                   # numel-weighted mean, 6.0 when preserved
    qts, n = prune_ones_to_budget(qts, size_fn, 16_000_000)   # R0325: zero the cheapest ±1 codes until it fits

docs/techniques.md#mixed-precision and #pruning.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Callable, Mapping, Sequence

import torch

from pgolf.quant.primitives import QuantizedTensor

# PR #1962 MIXED_PRECISION_HESSIAN: bottom 25 % sensitivity → int5, middle 50 % int6, top 25 % int7 (mean 6.0).
MIXED_FRACTIONS = (0.25, 0.5, 0.25)
MIXED_BITS = (5, 6, 7)


def mean_bits(bits: Mapping[str, int], numels: Mapping[str, int]) -> float:
    """Numel-weighted mean bit width Σ numel·bits / Σ numel."""
    total = sum(numels[n] for n in bits)
    return sum(numels[n] * b for n, b in bits.items()) / total


def mixed_precision_bits(sens: Mapping[str, float], numels: Mapping[str, int],
                         fractions: Sequence[float] = MIXED_FRACTIONS,
                         bits: Sequence[int] = MIXED_BITS, fraction_tolerance: float = 0.1) -> dict[str, int]:
    """Rank tensors by sensitivity and give the least sensitive bits[0], the middle bits[1], the most bits[2].

    Fractions are fractions of *parameters* (numel), not of tensor count, because the budget is in parameters.
    The low group is a prefix and the high group a suffix of the ascending-sensitivity order; each group's numel
    fraction may deviate from its target by up to `fraction_tolerance` (absolute; the cuts nearest the target are
    always allowed). Among those splits the one whose numel-weighted mean bits is closest to
    Σ fractions_i·bits_i (6.0 for the defaults) wins, so the mean is preserved exactly whenever the tensor sizes
    allow it; ties go to the split whose fractions are closest to `fractions`.
    With equal numels and a tensor count divisible by 4 this is the plain 25/50/25 split by count, mean exactly 6.
    PR #1962 reported this allocation as *negative* (quant gap +0.0131 vs +0.0098 all-int6), so it is opt-in.
    """
    names = list(sens)
    if set(names) != set(numels):
        raise ValueError("sens and numels must have the same keys")
    if len(fractions) != 3 or len(bits) != 3:
        raise ValueError("need exactly three fractions and three bit widths (low, middle, high)")
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions {tuple(fractions)} must be ≥ 0 and sum to 1")
    b0, b1, b2 = bits
    if not b0 < b1 < b2:
        raise ValueError(f"bits {tuple(bits)} must be strictly increasing")
    if any(int(numels[n]) <= 0 for n in names):
        raise ValueError("every numel must be > 0")
    if not names:
        return {}
    order = sorted(names, key=lambda n: sens[n])  # ascending sensitivity (stable: ties keep input order)
    sizes = [int(numels[n]) for n in order]
    N = float(sum(sizes))
    n = len(order)
    prefix = [0]
    for x in sizes:
        prefix.append(prefix[-1] + x)
    suffix = [0]
    for x in reversed(sizes):
        suffix.append(suffix[-1] + x)
    target = sum(f * b for f, b in zip(fractions, bits))

    def mean_of(k0: int, k2: int) -> float:
        low, high = prefix[k0], suffix[k2]
        return (b0 * low + b2 * high + b1 * (N - low - high)) / N

    def near(sums: list[int], frac: float, limit: int) -> set[int]:
        """Cuts within fraction_tolerance of frac·N, plus the two cuts around frac·N (never empty)."""
        k = min(bisect.bisect_right(sums, frac * N) - 1, limit)
        within = {j for j in range(limit + 1) if abs(sums[j] / N - frac) <= fraction_tolerance}
        return {k, min(k + 1, limit)} | within

    best: tuple[float, float, int, int] | None = None
    for k0 in sorted(near(prefix, fractions[0], n)):
        want = (target * N - b1 * N - (b0 - b1) * prefix[k0]) / (b2 - b1)  # high numel that hits the target
        j = bisect.bisect_left(suffix, want, 0, n - k0 + 1)
        for k2 in near(suffix, fractions[2], n - k0) | {max(j - 1, 0), min(j, n - k0)}:
            key = (round(abs(mean_of(k0, k2) - target), 12),  # primary: the mean (rounded: fp ties are ties)
                   abs(prefix[k0] / N - fractions[0]) + abs(suffix[k2] / N - fractions[2]), k0, k2)
            best = key if best is None or key < best else best
    assert best is not None
    _, _, k0, k2 = best
    out = {name: b1 for name in order}
    out.update({name: b0 for name in order[:k0]})
    out.update({name: b2 for name in order[n - k2:]})
    return {name: out[name] for name in names}


def mixed_precision_bits_by_count(sens: Mapping[str, float], fractions: Sequence[float] = MIXED_FRACTIONS,
                                  bits: Sequence[int] = MIXED_BITS) -> dict[str, int]:
    """PR #1962's split: rank by sensitivity, the lowest ⌊f₀·n⌋ *tensors* get bits[0], the highest ⌊f₂·n⌋ bits[2],
    the rest bits[1] (R0427's 66 matrices: 16 int5, 34 int6, 16 int7, mean 5.86 bits per weight on its shapes, as
    the small attention matrices are over-represented among the ends). `mixed_precision_bits` is the by-parameter
    split (mean 6.0 b/w), pgolf's default."""
    order = sorted(sens, key=lambda n: sens[n])  # ascending sensitivity (stable)
    n = len(order)
    k0, k2 = int(fractions[0] * n), int(fractions[2] * n)
    out = {name: bits[1] for name in order}
    out.update({name: bits[0] for name in order[:k0]})
    out.update({name: bits[2] for name in order[n - k2:]} if k2 else {})
    return {name: out[name] for name in sens}


def prune_ones_to_budget(qts: Mapping[str, QuantizedTensor], size_fn: Callable[[dict[str, QuantizedTensor]], int],
                         target_bytes: int) -> tuple[dict[str, QuantizedTensor], int]:
    """Selective ±1 pruning (R0325, from PR #609): zero the cheapest |q| = 1 codes until size_fn(...) ≤ target_bytes.

    Candidates are all codes with |q| = 1; the cost of zeroing one is its row scale² (the squared weight change),
    ascending. The count is binary-searched; the result is re-checked with `size_fn`, so it always fits even if the
    compressed size is not exactly monotone in the count. `target_bytes` is in bytes (the challenge cap is
    16,000,000 decimal bytes; R0325's TARGET_MB = 15.9 was in MiB). If it already fits nothing is pruned.
    Raises ValueError when even zeroing every candidate does not fit.
    """
    base = dict(qts)
    size0 = size_fn(base)
    if size0 <= target_bytes:
        return base, 0
    names = list(base)
    if not names:
        raise ValueError(f"the artifact needs {size0:,} bytes, over the {target_bytes:,}-byte target, and has no "
                         "quantized tensor whose ±1 codes could be pruned; raise the budget or use fewer bits")
    flat_idx, costs, owner = [], [], []
    for t, name in enumerate(names):
        qt = base[name]
        idx = torch.nonzero(qt.q.reshape(-1).abs() == 1).reshape(-1)
        if qt.per_row:
            row_len = max(1, qt.q.numel() // max(1, qt.q.shape[0]))
            cost = qt.scale.float()[idx // row_len].pow(2)
        else:
            cost = qt.scale.float().pow(2).expand(idx.numel())
        flat_idx.append(idx)
        costs.append(cost)
        owner.append(torch.full((idx.numel(),), t, dtype=torch.long))
    flat_idx_t, cost_t, owner_t = torch.cat(flat_idx), torch.cat(costs), torch.cat(owner)
    order = torch.argsort(cost_t, stable=True)  # cheapest first
    flat_idx_t, owner_t = flat_idx_t[order], owner_t[order]

    def pruned(count: int) -> dict[str, QuantizedTensor]:
        out = dict(base)
        sel_idx, sel_owner = flat_idx_t[:count], owner_t[:count]
        for t in torch.unique(sel_owner).tolist():
            qt = base[names[t]]
            q = qt.q.clone().reshape(-1)
            q[sel_idx[sel_owner == t]] = 0
            out[names[t]] = dataclasses.replace(qt, q=q.reshape(qt.q.shape))
        return out

    n_cand = int(flat_idx_t.numel())
    full = pruned(n_cand)
    size_full = size_fn(full)
    if size_full > target_bytes:
        raise ValueError(f"cannot reach {target_bytes} bytes: {size0} unpruned, {size_full} with all {n_cand} "
                         f"±1 codes zeroed")
    lo, hi, best = 0, n_cand, full  # invariant: count lo does not fit, count hi fits (best = pruned(hi))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cand = pruned(mid)
        if size_fn(cand) <= target_bytes:
            hi, best = mid, cand
        else:
            lo = mid
    return best, hi
