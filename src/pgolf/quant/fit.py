"""Budget fitting: choose a recipe's free knobs so that code + model bytes land just under a byte budget.

    fit = fit_to_budget(state_dict, get_recipe("sdclip"), target_model_bytes=16_000_000 - code_bytes,
                        rate=code_rate, encode=lambda qs: encode_artifact(qs, manifest, "rans"), hessians=hessians)
    fit.blob            # the encoded artifact, len(fit.blob) ≤ target_model_bytes
    fit.info["slack"]   # target − actual bytes, measured on the real encoding

The records tuned their byte fit by hand: a global clip σ, one bit width per role, LQER top-k, and finally selective
±1 pruning until the lzma/brotli artifact fitted (R0325, PR #609). Here the fit is a rate–distortion
allocation over the quantized tensors, every rate measured with the real encoder:

1. Candidates. Each quantized tensor is re-quantized by its own recipe method at every (bits, σ) of a small grid
   around the recipe's choice: bits b−d … b+d (d = `bits_delta`) and, for the SDClip methods, σ × each of
   `sigma_multipliers` (SDClip's clip point is k·std(row) whatever the bit width; bits set the step, so the grid
   spans both the clip and the step). Methods without σ (rtn, GPTQ-lite, the percentile-searched GPTQ) vary bits only;
   the int8-percentile baseline and the int8 gates are fixed. Rate of a candidate = bytes of its codes under the
   injected `rate` function (pack/fit.py's `code_rate`: the bytes the `rans` container's entropy coder writes
   for that tensor, plus its fp16 scales); distortion = the Hessian-weighted output error trace(ΔW H ΔWᵀ) (the
   GPTQ/OBS proxy of the loss increase, Frantar et al. 2022) when the recipe collected Hessians, else the squared
   weight error ‖ΔW‖². Only the Pareto front of each tensor is kept. Which methods have which knobs is their spec's
   (quant/methods.py: `fit_bits`, `fit_sigma`, `MethodSpec.candidates`).
2. Allocation. For a Lagrange multiplier λ every tensor takes argmin err + λ·bytes; λ is bisected so that the code
   bytes fit the target, then a greedy pass spends the remaining slack on the upgrades with the best error drop per
   byte. This generalises the records' per-role σ (PR #1586), adaptive σ (PR #1962) and mixed precision (PR #1962):
   those are points of the same search space, picked here by measured bytes instead of by hand.
3. Closing the loop. The artifact is encoded for real by the injected `encode` (any container codec: for `rans`
   the per-tensor rates are exact, for brotli/lzma they are a close proxy), and the code-byte target is moved by the measured miss until the
   artifact lands under the target with less than `tolerance` of the budget left (a few rounds). The LQER step of the
   recipe (R0427) is applied to each allocation before encoding, so its bytes are counted.
4. Last resort. If even the smallest candidates do not fit, the cheapest ±1 codes are zeroed (R0325 selective
   pruning, `allocate.prune_ones_to_budget`) with the real encoder as the size function.

The rate and the encoder are injected (as `allocate.prune_ones_to_budget` takes its size function), so this module
does not depend on the pack stage; pack/fit.py binds them to the container. Not fitted: LQER's top-k and rank
(kept as the recipe sets them), passthrough tensors and int8 gates.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from pgolf.quant.allocate import prune_ones_to_budget
from pgolf.quant.apply import QuantizedState, lqer_step, quantize_state_dict
from pgolf.quant.methods import METHODS, get_method
from pgolf.quant.primitives import QuantizedTensor
from pgolf.quant.recipes import QuantRecipe, get_recipe

Rate = Callable[[QuantizedTensor], int]
"""Bytes one quantized tensor costs in the artifact (e.g. pack.fit.code_rate: its entropy-coded codes + scales)."""
Encode = Callable[[QuantizedState], bytes]
"""The whole artifact for a quantized state (e.g. pack.container.encode_artifact with the manifest and codec)."""
# σ × [0.7, 1.4] moves the step by ±0.5 bit around the recipe's; bits ± 1 cover the rest of the rate range
DEFAULT_SIGMA_MULTIPLIERS = (0.7, 0.8, 0.9, 1.0, 1.12, 1.25, 1.4)
DEFAULT_TOLERANCE = 0.001  # issue 4: land within 0.1 % under the budget


class FitError(ValueError):
    """The budget cannot be met by any allocation (nor by pruning)."""


@dataclass(frozen=True)
class Option:
    """One candidate quantization of one tensor: its codes, measured rate and distortion."""

    bits: int
    sigma: float | None
    nbytes: int
    err: float
    qt: QuantizedTensor = field(repr=False)
    info: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class FitResult:
    state: QuantizedState
    rows: list[dict]
    blob: bytes
    info: dict[str, Any]


# ------------------------------------------------------------------------------------------------ candidates

def tensor_error(w: Tensor, w_hat: Tensor, H: Tensor | None) -> float:
    """Hessian-weighted output error when H is given, else the squared weight error (the fit's distortion)."""
    if H is not None:
        from pgolf.quant.hessian_math import output_error  # (only with Hessians: see hessian_math)

        return output_error(w.float(), w_hat.float(), H)
    return float((w.double() - w_hat.double()).pow(2).sum())


def pareto(options: Sequence[Option]) -> list[Option]:
    """Options not dominated in (bytes, err), sorted by bytes ascending (err strictly descending)."""
    out: list[Option] = []
    for o in sorted(options, key=lambda o: (o.nbytes, o.err)):
        if not out or o.err < out[-1].err:
            out.append(o)
    return out


def tensor_options(w: Tensor, method: str, params: Mapping[str, Any], grid: Sequence[tuple[int, float | None]],
                   H: Tensor | None, rate: Rate) -> list[Option]:
    """Quantize `w` at every grid point with the recipe's own method; Pareto front of (rate, distortion)."""
    results: list[tuple[int, float | None, QuantizedTensor, Mapping[str, Any]]] = []
    spec = get_method(method)
    if spec.batch is not None and H is not None and w.dim() == 2 and all(s is not None for _, s in grid):
        by_bits: dict[int, list[float]] = {}
        for b, s in grid:
            by_bits.setdefault(b, []).append(float(s))
        for b, sigmas in by_bits.items():
            results += [(b, s, qt, info) for s, (qt, info) in zip(sigmas, spec.batch(w, H, b, sigmas, params))]
    else:
        fn = spec.fn
        for b, s in grid:
            p = dict(params)
            if s is not None:
                p["clip_sigma"] = s
            qt, info = fn(w, bits=b, hessian=H, **p)
            results.append((b, s, qt, info))
    return pareto([Option(b, s, rate(qt), tensor_error(w, qt.dequantize(), H), qt, info)
                   for b, s, qt, info in results])


# ------------------------------------------------------------------------------------------------ allocation

def choose(fronts: Mapping[str, Sequence[Option]], lam: float) -> dict[str, int]:
    """Index of argmin err + λ·bytes on each tensor's front."""
    return {n: min(range(len(f)), key=lambda i: (f[i].err + lam * f[i].nbytes, f[i].nbytes))
            for n, f in fronts.items()}


def total_bytes(fronts: Mapping[str, Sequence[Option]], pick: Mapping[str, int]) -> int:
    return sum(fronts[n][i].nbytes for n, i in pick.items())


def total_err(fronts: Mapping[str, Sequence[Option]], pick: Mapping[str, int]) -> float:
    return sum(fronts[n][i].err for n, i in pick.items())


def allocate(fronts: Mapping[str, Sequence[Option]], target: int) -> tuple[dict[str, int], float | None]:
    """Minimise Σ err subject to Σ bytes ≤ target over one option per tensor → (pick, λ).

    Lagrangian bisection (convex-hull points), then greedy upgrades by error drop per byte while the slack allows.
    When nothing fits, returns the smallest option of every tensor with λ = None.
    """
    smallest = {n: 0 for n in fronts}
    if total_bytes(fronts, smallest) > target:
        return smallest, None
    best_err = {n: len(f) - 1 for n, f in fronts.items()}  # fronts are err-descending: last = least error
    if total_bytes(fronts, best_err) <= target:
        return best_err, 0.0
    errs = [o.err for f in fronts.values() for o in f if o.err > 0]
    sizes = [o.nbytes for f in fronts.values() for o in f]
    lo = 0.0  # does not fit
    hi = 10.0 * (max(errs) if errs else 1.0) / max(1, min(sizes))  # fits (every tensor at its smallest option)
    while total_bytes(fronts, choose(fronts, hi)) > target:
        hi *= 10
    for _ in range(100):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e6
        if total_bytes(fronts, choose(fronts, mid)) <= target:
            hi = mid
        else:
            lo = mid
        if lo > 0 and hi / lo < 1 + 1e-9:
            break
    pick = choose(fronts, hi)
    slack = target - total_bytes(fronts, pick)
    while True:  # greedy fill: best Δerr/Δbytes move that still fits
        best, best_gain = None, 0.0
        for n, f in fronts.items():
            cur = f[pick[n]]
            for j in range(pick[n] + 1, len(f)):
                db = f[j].nbytes - cur.nbytes
                if db > slack:
                    break
                gain = (cur.err - f[j].err) / max(db, 1)
                if gain > best_gain:
                    best, best_gain = (n, j, db), gain
        if best is None:
            break
        n, j, db = best
        pick[n] = j
        slack -= db
    return pick, hi


# ------------------------------------------------------------------------------------------------ the fit

def fit_to_budget(state_dict: Mapping[str, Tensor], recipe: QuantRecipe | str, *, target_model_bytes: int,
                  rate: Rate, encode: Encode, codec: str = "", hessians: Mapping[str, Tensor] | None = None,
                  sigma_multipliers: Sequence[float] = DEFAULT_SIGMA_MULTIPLIERS, bits_delta: int = 1,
                  tolerance_bytes: int | None = None, max_rounds: int = 8, progress: bool = False) -> FitResult:
    """Quantize with `recipe`, choosing per-tensor bits/σ so that the encoded artifact is ≤ target_model_bytes and
    as close to it as `tolerance_bytes` allows (default 0.1 % of the target), minimising the summed distortion.

    `rate(qt)` prices one tensor, `encode(state)` writes the whole artifact; `codec` only labels the report.
    Returns the quantized state, report rows (as `quantize_state_dict`'s, with the fitted bits/σ/errors), the encoded
    artifact and an info dict (target, bytes, slack, rounds, λ, predicted distortion before/after, choices).
    """
    t0 = time.perf_counter()
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe.validate()
    if target_model_bytes <= 0:
        raise FitError(f"the byte budget leaves {target_model_bytes} bytes for the model; nothing fits")
    if not sigma_multipliers or min(sigma_multipliers) <= 0:
        raise ValueError(f"sigma_multipliers {tuple(sigma_multipliers)} must be non-empty and positive")
    tol = int(tolerance_bytes if tolerance_bytes is not None else DEFAULT_TOLERANCE * target_model_bytes)
    hessians = hessians or {}
    if hessians:
        from pgolf.quant.hessian_math import collector_damping

        hessians = {n: collector_damping(H, recipe.calib_damp) for n, H in hessians.items()}
    weights = {n: t.detach().cpu().contiguous() for n, t in state_dict.items()}
    base_recipe = dataclasses.replace(recipe, lqer_top_k=0, calib_damp=0.0)  # its Hessians are damped above
    qs0, rows0 = quantize_state_dict(weights, base_recipe, hessians=hessians or None)
    rows = {r["name"]: dict(r) for r in rows0}

    # candidate fronts of every tensor whose knobs are free, in one distortion unit
    use_h = bool(hessians)
    names = [n for n, qt in qs0.tensors.items() if qt.method in METHODS and METHODS[qt.method].fit_bits
             and (not use_h or (n in hessians and weights[n].dim() == 2
                                and tuple(hessians[n].shape) == (weights[n].shape[1],) * 2))]
    items = names
    if progress:
        from pgolf.progress import track

        items = track(names, "fit candidates", enabled=progress, unit="tensor")
    fronts: dict[str, list[Option]] = {}
    for n in items:
        qt0 = qs0.tensors[n]
        rule = recipe.rule_for(n)
        sigma = rows[n].get("sigma")
        grid = get_method(qt0.method).fit_grid(qt0.bits, sigma, sigma_multipliers, bits_delta)
        fronts[n] = tensor_options(weights[n], qt0.method, rule.params, grid, hessians.get(n) if use_h else None,
                                   rate)
    t_cand = time.perf_counter() - t0

    def assemble(pick: Mapping[str, int]) -> tuple[dict[str, QuantizedTensor], dict[str, str]]:
        """The allocation's tensors with the recipe's LQER step applied, and the LQER labels."""
        return lqer_step({**qs0.tensors, **{n: fronts[n][i].qt for n, i in pick.items()}}, weights, recipe)

    def encode_tensors(tensors: Mapping[str, QuantizedTensor]) -> bytes:
        return encode(QuantizedState(dict(tensors), qs0.passthrough, qs0.dtypes))

    encoded: dict[tuple[int, ...], tuple[dict[str, QuantizedTensor], dict[str, str], bytes]] = {}

    def build(pick: Mapping[str, int]) -> tuple[dict[str, QuantizedTensor], dict[str, str], bytes]:
        """Assemble and encode an allocation; a pick seen in an earlier round is not encoded again."""
        key = tuple(pick[n] for n in fronts)
        if key not in encoded:
            tensors, lqer = assemble(pick)
            encoded[key] = (tensors, lqer, encode_tensors(tensors))
        return encoded[key]

    # the recipe's own choice: its bytes give the first estimate of what the rest of the artifact costs
    blob0 = encode_tensors(qs0.tensors)
    base_rates = {n: rate(qs0.tensors[n]) for n in fronts}
    base_err = sum(tensor_error(weights[n], qs0.tensors[n].dequantize(), hessians.get(n) if use_h else None)
                   for n in fronts)
    code_target = target_model_bytes - tol // 4 - (len(blob0) - sum(base_rates.values()))
    history: list[dict[str, Any]] = []
    best: tuple[int, dict[str, int], dict, dict, bytes, float | None] | None = None
    lam = None
    for rnd in range(max_rounds):
        pick, lam = allocate(fronts, code_target)
        predicted = total_bytes(fronts, pick)
        tensors, lqer, blob = build(pick)
        actual = len(blob)
        history.append({"round": rnd, "code_target": code_target, "predicted_codes": predicted, "bytes": actual,
                        "lambda": lam})
        from pgolf.progress import say

        say(f"fit round {rnd + 1}: {actual:,} model bytes, slack {target_model_bytes - actual:+,} "
            f"({100 * (target_model_bytes - actual) / target_model_bytes:+.3f} %)", enabled=progress)
        if actual <= target_model_bytes and (best is None or actual > best[0]):
            best = (actual, pick, tensors, lqer, blob, lam)
        if lam is None or lam == 0.0:
            break  # nothing fits / everything at its best already: more target cannot change the pick
        if actual <= target_model_bytes and target_model_bytes - actual <= tol:
            break
        # move the code target by the measured miss (aim a quarter of the tolerance below the target)
        code_target += target_model_bytes - tol // 4 - actual

    pruned = 0
    if best is None:  # even the smallest allocation is over: R0325 selective ±1 pruning with the real encoder
        pick = {n: 0 for n in fronts}
        tensors, lqer = assemble(pick)
        try:
            tensors, pruned = prune_ones_to_budget(tensors, lambda ts: len(encode_tensors(ts)), target_model_bytes)
        except ValueError as e:
            raise FitError(f"cannot fit {target_model_bytes:,} model bytes with recipe {recipe.name!r} and codec "
                           f"{codec!r}: {e}") from None
        blob = encode_tensors(tensors)
        best = (len(blob), pick, tensors, lqer, blob, None)
    actual, pick, tensors, lqer, blob, lam = best

    qs = QuantizedState(tensors=tensors, passthrough=qs0.passthrough, dtypes=qs0.dtypes)
    for n, qt in tensors.items():
        w = weights[n]
        H = hessians.get(n)
        r = rows[n]
        opt = fronts[n][pick[n]] if n in pick else None
        r.update(bits=qt.bits, mse=float((w.double() - qt.dequantize().double()).pow(2).mean()),
                 zlib_bytes=len(zlib.compress(qt.q.numpy().tobytes(), 9)), lqer=lqer.get(n))
        if opt is not None:
            r["sigma"] = opt.sigma
            if opt.info.get("damp") is not None:
                r.update(damp=opt.info.get("damp"), escalations=opt.info.get("escalations"))
        if H is not None and w.dim() == 2 and tuple(H.shape) == (w.shape[1],) * 2:
            r["hessian_err"] = tensor_error(w, qt.dequantize(), H)
    bits_hist: dict[int, int] = {}
    for n, i in pick.items():
        bits_hist[fronts[n][i].bits] = bits_hist.get(fronts[n][i].bits, 0) + fronts[n][i].qt.q.numel()
    info = {
        "target_model_bytes": target_model_bytes, "model_bytes": actual, "slack": target_model_bytes - actual,
        "tolerance_bytes": tol, "codec": codec, "distortion": "hessian" if use_h else "weight_sse",
        "fitted_tensors": len(fronts), "candidates": sum(len(f) for f in fronts.values()),
        "rounds": history, "lambda": lam, "pruned_ones": pruned,
        "baseline_model_bytes": len(blob0), "baseline_err": base_err,
        "fitted_err": sum(fronts[n][i].err for n, i in pick.items()),
        "bits_numel": {str(b): c for b, c in sorted(bits_hist.items())},
        "choices": {n: {"bits": fronts[n][i].bits, "sigma": fronts[n][i].sigma} for n, i in pick.items()},
        "candidate_seconds": round(t_cand, 3), "seconds": round(time.perf_counter() - t0, 3),
    }
    return FitResult(qs, [rows[n] for n in weights], blob, info)
