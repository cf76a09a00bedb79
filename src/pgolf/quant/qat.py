"""Late QAT aligned with the export quantizer: STE fake-quant of every tensor the recipe quantizes, export rule for rule.

    qat = install_qat(model, get_recipe("sdclip-rtn"))   # before torch.compile; off until switched on
    info = qat.switch_on(model)                           # train/loop.py: once the LR multiplier < qat_threshold

Forward weight: `lerp(w, Q(w), flag)` in value, the identity in gradient (straight-through estimator), with
Q the *export* rule of the recipe's method for that tensor. `flag` is a 0-d tensor read at run time, so
torch.compile cannot constant-fold it: the records' `CastedLinear._qat_enabled` class attribute was folded at the
first trace and their late QAT never ran (docs/techniques.md#qat). With flag = 0 the forward is bit-identical to
no QAT. The per-tensor SDClip σ and bit width are 0-d tensors too (filled in place when the Hessian
choices arrive), so a compiled graph never keeps a stale grid.

Which tensors: exactly those `plan.route_tensors` sends to a quantizer (the exporter's own routing: gates, the
passthrough size limit, the first matching rule), hooked two ways —
* `CastedLinear` (attention, MLP, bigram/VE projections, an untied lm_head): through `weight_fn`;
* `nn.Embedding` and plain `nn.Linear` weights (the tied `tok_emb` — lookup *and* tied LM head, since GPT.logits
  reads `tok_emb.weight` — the bigram and value-embedding tables, the int8 per-row attention/smear gates): the
  module's class is swapped for a subclass whose `weight` is a property returning the fake-quantized weight. The
  Parameter stays in `_parameters`, so state-dict names, optimizers and checkpoints see the plain fp32 master.
  Anything that groups parameters by `id(module.weight)` (GPT.optimizer_groups) must run inside `qat.unhooked(model)`.
Any other quantized tensor (a non-2-D tensor, or a parameter that is not a module's `weight`) is listed in
`qat.uncovered` with the reason and is not fake-quantized.

Alignment (`qat.tensors[name]` is True when the fake-quantized forward equals the dequantized artifact's):
* exact — `sdclip_rtn` (s = k·std(row)/cr rounded to fp16, clamp ±cr), `rtn` (row absmax), `int8_percentile`
  (BASE) and `gate_int8_row`: e.g. `sdclip-rtn` and `int8-baseline` are exact on every tensor, embedding included;
* same grid, not the same rounding — `sdclip_gptq` (the SDClip grid with the rule's k and bits, or the per-tensor
  σ / bits below; GPTQ's error feedback needs the final Hessians) and `gptq_lite` / `gptq_clip_search`
  (fake-quant on the row-max grid, pct = 1.0, one of the five candidates);
* LQER recipes (`lqer_top_k` > 0) add a rank-r correction to the top-k tensors chosen at export, so no tensor is
  marked exact there.

Per-tensor choices (recipes with `adaptive_clip` / `mixed_precision`): at switch-on `switch_on` runs a short
calibration (`calib_batches`, training tokens; `collect_hessians` on the plain model, flag still 0) and calls the
exporter's own `cross_tensor.cross_tensor_overrides` on the current weights, then fake-quantizes with those σ / bits.
The exporter recomputes Hessians and sensitivities on the *final* weights after training, so its choices can
differ from the QAT-time ones (σ is continuous in the sensitivity; a bit width can flip near a rank boundary).
`qat.summary()` (run.json train.qat) records the σ / bits QAT used so the two can be compared with the quantize
report; the exporter does not reuse them (that would change `quantize_state_dict`, which QAT does not own).

Not followed: `pack.budget` (quant/fit.py) re-picks σ / bits per tensor at export to meet a byte budget, after
training; QAT trains on the recipe's own grid. With `train.ema_decay` the exporter quantizes the EMA average of the
weights QAT trained (the fake-quant rule applied to those final weights is still the artifact's, as tested).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.quant.fake_quant import SDClipRule, absmax_fake, fp16_round, int8_percentile_fake, sdclip_fake  # noqa: F401
from pgolf.quant.hessian import collect_hessians
from pgolf.quant.methods import METHODS, fake_quant_rule
from pgolf.quant.plan import TensorPlan, cross_tensor_group, route_tensors
from pgolf.quant.recipes import QuantRecipe, get_recipe

EXACT_METHODS = frozenset(n for n, s in METHODS.items() if s.qat_exact)



class FakeQuantWeight:
    """A plain callable (adds nothing to the state dict): w ↦ lerp(w, Q(w), flag) in value, identity in gradient.

    Written as `lerp(w̄, Q(w̄), flag) + (w − w̄)` with w̄ = w.detach(): torch.lerp returns its end point exactly at
    weight 1 and its start exactly at weight 0, and w − w̄ = 0, so the value is bit-exactly Q(w) (on) or w (off)
    — `w + (Q(w) − w)` can be an ulp away from Q(w) — while the gradient is the identity (STE).
    """

    def __init__(self, rule: Callable[[Tensor], Tensor], flag: Tensor) -> None:
        self.rule, self.flag = rule, flag

    def __call__(self, w: Tensor) -> Tensor:
        wd = w.detach()
        return torch.lerp(wd, self.rule(wd), self.flag.to(w.dtype)) + (w - wd)


# ------------------------------------------------------------------------------------------------ module hooks

_FQ_CLASSES: dict[type, type] = {}


def _fake_quant_class(cls: type) -> type:
    """A subclass of `cls` whose `weight` is the fake-quantized Parameter (one subclass per base class)."""
    if cls not in _FQ_CLASSES:
        def weight(self: nn.Module) -> Tensor:
            return self._qat_weight_fn(self._parameters["weight"])

        _FQ_CLASSES[cls] = type(f"FakeQuant{cls.__name__}", (cls,),
                                {"weight": property(weight), "_qat_base": cls, "__module__": __name__})
    return _FQ_CLASSES[cls]


def _hook_property(m: nn.Module, fn: FakeQuantWeight) -> None:
    m._qat_weight_fn = fn  # a plain object: lands in __dict__, not in the state dict
    m.__class__ = _fake_quant_class(type(m))


def _unhook_property(m: nn.Module) -> None:
    m.__class__ = m._qat_base


@dataclass
class TensorQAT:
    """What QAT does to one tensor (run.json train.qat.tensors)."""

    method: str
    """The recipe's export method for the tensor."""
    bits: int
    sigma: float | None
    """SDClip k (None for non-SDClip rules)."""
    exact: bool
    """True when fake-quant = the artifact's dequantized tensor (exact rule, no LQER)."""
    hook: str
    """"weight_fn" (CastedLinear) or "property" (nn.Embedding / nn.Linear class swap)."""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "bits": self.bits, "sigma": self.sigma, "exact": self.exact, "hook": self.hook}


@dataclass
class QAT:
    flag: Tensor
    """0-d float tensor on the model's device: 1 = fake-quant on. Mutated in place, never rebound."""
    tensors: dict[str, bool] = field(default_factory=dict)
    """Parameter name → exactly aligned with the export rule."""
    on: bool = False
    """Host-side mirror of `flag` (no device sync to read it)."""
    recipe: QuantRecipe | None = None
    specs: dict[str, TensorQAT] = field(default_factory=dict)
    uncovered: dict[str, str] = field(default_factory=dict)
    """Tensors the exporter quantizes that QAT does not fake-quantize → why."""
    plan: dict[str, TensorPlan] = field(default_factory=dict)
    """plan.route_tensors over the model's state dict (the exporter's routing)."""
    rules: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    calib_batches: Callable[[], Iterable[Tensor]] | None = None
    """Token batches (B, T) for the switch-on calibration of adaptive-σ / mixed-bits recipes."""
    calibration: dict[str, Any] | None = None
    """Switch-on calibration record: source, tokens, batches, seconds."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The per-tensor {"clip_sigma", "bits"} QAT uses (cross_tensor.cross_tensor_overrides at switch-on)."""
    hooked: list[nn.Module] = field(default_factory=list)
    """Modules whose class was swapped (property hook)."""

    @property
    def enabled(self) -> bool:
        return self.on

    @property
    def needs_hessians(self) -> bool:
        """True when the recipe picks σ / bits per tensor from Hessians and some hooked tensor is affected."""
        r = self.recipe
        return bool(r is not None and (r.adaptive_clip or r.mixed_precision)
                    and any(n in self.specs for n in cross_tensor_group(self.plan)))

    def enable(self, on: bool = True) -> None:
        self.flag.fill_(1.0 if on else 0.0)
        self.on = on

    def calibrate(self, model: nn.Module, batches: Iterable[Tensor], source: str = "train") -> dict[str, Any]:
        """Hessians of the plain model (flag forced 0 meanwhile) → the exporter's per-tensor σ / bits, applied."""
        was_on = self.on
        self.enable(False)
        try:
            hs = collect_hessians(model, batches)
        finally:
            self.enable(was_on)
        from pgolf.quant.cross_tensor import cross_tensor_overrides  # only recipes with a cross-tensor step

        t0 = time.perf_counter()
        tensors = {n: t.detach() for n, t in model.state_dict().items()}
        overrides = cross_tensor_overrides(tensors, self.plan, self.recipe, hs.h)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            box = [overrides]
            dist.broadcast_object_list(box, src=0)  # every rank fake-quantizes on rank 0's grid
            overrides = box[0]
        self.apply_overrides(overrides)
        self.calibration = {"source": source, "tokens": hs.num_tokens, "batches": hs.num_batches,
                            "seconds": round(hs.seconds + time.perf_counter() - t0, 3)}
        return self.calibration

    def apply_overrides(self, overrides: dict[str, dict[str, Any]]) -> None:
        """Set the per-tensor σ / bits (names not hooked are ignored; they are not fake-quantized)."""
        for name, o in overrides.items():
            rule, spec = self.rules.get(name), self.specs.get(name)
            if not isinstance(rule, SDClipRule) or spec is None:
                continue
            rule.set(sigma=o.get("clip_sigma"), bits=o.get("bits"))
            spec.sigma, spec.bits = rule.sigma, rule.bits
        self.overrides = {n: dict(o) for n, o in overrides.items()}

    def switch_on(self, model: nn.Module) -> dict[str, Any]:
        """Calibrate first when the recipe needs Hessian choices, then enable. Returns a summary for the log."""
        if self.needs_hessians:
            if self.calib_batches is None:
                raise ValueError(f"recipe {self.recipe.name!r} picks SDClip σ / bits per tensor from Hessians "
                                 "(adaptive_clip / mixed_precision): QAT needs calibration batches "
                                 "(install_qat(..., calib_batches=...))")
            self.calibrate(model, self.calib_batches())
        self.enable()
        return {"tensors": len(self.tensors), "exact": sum(self.tensors.values()),
                "uncovered": len(self.uncovered), "overrides": len(self.overrides),
                "calib_s": self.calibration["seconds"] if self.calibration else 0.0}

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of what QAT did (run.json train.qat)."""
        return {"recipe": self.recipe.name if self.recipe else None, "enabled": self.on,
                "calibration": self.calibration,
                "tensors": {n: s.to_dict() for n, s in self.specs.items()}, "uncovered": dict(self.uncovered)}

    def state_dict(self) -> dict[str, Any]:
        """For checkpoints: a resumed run re-enables with the same σ / bits instead of recalibrating."""
        return {"on": self.on, "overrides": self.overrides, "calibration": self.calibration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.apply_overrides(state.get("overrides") or {})
        self.calibration = state.get("calibration")
        self.enable(bool(state.get("on")))

    @contextlib.contextmanager
    def unhooked(self, model: nn.Module) -> Iterator[None]:
        """Temporarily restore the plain `weight` attributes (for code that keys on id(module.weight))."""
        for m in self.hooked:
            _unhook_property(m)
        try:
            yield
        finally:
            for m in self.hooked:
                m.__class__ = _fake_quant_class(type(m))

    def remove(self, model: nn.Module) -> None:
        """Uninstall every hook: the forward is plain again and `module.weight` is the Parameter."""
        for m in model.modules():
            if isinstance(m, CastedLinear) and isinstance(m.weight_fn, FakeQuantWeight):
                m.weight_fn = None
        for m in self.hooked:
            _unhook_property(m)
        self.hooked = []


def install_qat(model: nn.Module, recipe: QuantRecipe | str, enabled: bool = False,
                calib_batches: Callable[[], Iterable[Tensor]] | None = None) -> QAT:
    """Install STE fake-quant on every tensor the recipe's exporter quantizes (rule = its export method); off.

    Routing is `plan.route_tensors` over `model.state_dict()`, so the passthrough limit, the gate pattern and the
    rule order are the exporter's. `calib_batches` feeds the switch-on calibration of adaptive-σ / mixed-bits
    recipes (see `QAT.switch_on`).
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe.validate()
    device = next(model.parameters()).device
    qat = QAT(flag=torch.tensor(1.0 if enabled else 0.0, device=device), on=enabled, recipe=recipe,
              calib_batches=calib_batches)
    qat.plan = route_tensors(model.state_dict(), recipe)
    quantized = {n: p for n, p in qat.plan.items() if p.quantized}
    owners: dict[str, nn.Module] = {}
    for mod_name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Embedding)) and isinstance(getattr(m, "weight", None), nn.Parameter):
            owners[f"{mod_name}.weight" if mod_name else "weight"] = m
    for name, p in quantized.items():
        m = owners.get(name)
        if m is None:
            qat.uncovered[name] = "not the weight of an nn.Linear / nn.Embedding: no fake-quant hook"
            continue
        if m.weight.dim() != 2:
            qat.uncovered[name] = f"{m.weight.dim()}-D tensor: QAT rules are per-row 2-D"
            continue
        method, bits, params = p.method, p.bits, dict(p.params)
        fn, exact = fake_quant_rule(method, bits, params, device)
        fq = FakeQuantWeight(fn, qat.flag)
        if isinstance(m, CastedLinear):
            m.weight_fn, hook = fq, "weight_fn"
        else:
            _hook_property(m, fq)
            qat.hooked.append(m)
            hook = "property"
        exact = exact and not recipe.lqer_top_k
        qat.rules[name] = fn
        qat.tensors[name] = exact
        qat.specs[name] = TensorQAT(method=method, bits=bits, hook=hook, exact=exact,
                                    sigma=p.sdclip_sigma)
    return qat
