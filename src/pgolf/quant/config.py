"""QuantConfig: which recipe quantizes the trained weights (recipes live in quant/recipes.py) and how the GPTQ
calibration pass is fed (quant/calibration.py, docs/techniques.md#calibration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Calibration:
    """The calibration pass a run actually uses: quant.calib_* over the recipe's defaults (resolved once, here)."""

    source: str
    seqs: int
    seq_len: int
    temperature: float
    batch_size: int
    seed: int


@dataclass(frozen=True)
class QuantConfig:
    recipe: str = "int8-baseline"
    """Name of a registered recipe (`pgolf quantize --help` lists them) or a path to a recipe .toml file."""
    calib_source: str = ""
    """Calibration tokens for Hessian recipes: train | val | selfgen | random; "" = the recipe's record default
    (train for PR #535 / R0405+, selfgen for R0325). Ignored by data-free recipes."""
    calib_seqs: int = 0
    """Calibration sequences; 0 = the recipe's (recipes.DEFAULT_CALIB_SEQS = 64 for every registered recipe)."""
    calib_seq_len: int = 0
    """Calibration sequence length; 0 = the recipe's (R0325 selfgen 2048), else the run's train_seq_len."""
    calib_batch_size: int = 8
    """Sequences per calibration forward (R0325 generation batch 8)."""
    calib_temperature: float = 0.0
    """selfgen sampling temperature; 0 = the recipe's (0.8)."""
    calib_seed: int = 0
    rule_overrides: str = ""
    """Per-role amendments of the recipe's rules, "ROLE.KNOB=VALUE,…" (quant/amend.py), e.g. "mlp.bits=5,
    attn.clip_sigma=13". Set on the command line as `--quant.mlp.bits 5 --quant.attn.clip_sigma 13`; KNOB is bits,
    method, or a parameter of the rule's method (clip_sigma, percentile, hessian_lambda, damp, …)."""

    def calibration_for(self, recipe: Any, train_seq_len: int, *, seqs: int = 0) -> Calibration:
        """This config's calibration for `recipe`: each quant.calib_* that is set wins over the recipe's value;
        `seqs` (e.g. train.qat_calib_seqs) wins over both; seq_len falls back to the run's train_seq_len."""
        n = seqs or self.calib_seqs or recipe.calib_seqs
        return Calibration(source=self.calib_source or recipe.calib_source, seqs=n,
                           seq_len=self.calib_seq_len or recipe.calib_seq_len or train_seq_len,
                           temperature=self.calib_temperature or recipe.calib_temperature,
                           batch_size=min(self.calib_batch_size, n), seed=self.calib_seed)

    def modules_not_run(self, qat: bool = False) -> tuple[str, ...]:
        """The optional quant/ modules a run of this config (late QAT on or off) never imports: each optional
        step's module when the recipe lacks the step. Each is imported only inside its step's branch, so the
        single-file script of the configuration leaves them out (pgolf.experiments.closure).

        lqer and lqer_storage (no `lqer_top_k`), hessian_math (a data-free recipe), cross_tensor (neither
        `adaptive_clip` nor `mixed_precision`), recipe_file (a registered recipe, not a .toml file), amend (that,
        and no `--quant.ROLE.KNOB` overrides), fake_quant (no QAT). tests/quant/test_optional_modules.py runs
        every registered recipe with these modules unimportable.
        """
        from pgolf.quant.recipes import RECIPES, recipe_for

        recipe = recipe_for(self)
        out = []
        if not recipe.lqer_top_k:
            out += ["pgolf.quant.lqer", "pgolf.quant.lqer_storage"]
        if not recipe.needs_hessians:
            out.append("pgolf.quant.hessian_math")
        if not (recipe.adaptive_clip or recipe.mixed_precision):
            out.append("pgolf.quant.cross_tensor")
        if self.recipe in RECIPES:
            out.append("pgolf.quant.recipe_file")
            if not self.rule_overrides:
                out.append("pgolf.quant.amend")
        if not qat:
            out.append("pgolf.quant.fake_quant")
        return tuple(out)

    @staticmethod
    def nested_override(values: dict, key: str, raw: object, where: str) -> None:
        """`quant.ROLE.KNOB` (a dotted key, or a [quant.ROLE] table) → one entry of `rule_overrides`."""
        from pgolf.quant.amend import parse_role_overrides
        from pgolf.quant.recipes import ROLES

        items = ([(f"{key}.{k}", v) for k, v in raw.items()] if isinstance(raw, dict) else [(key, raw)])
        for dotted, value in items:
            entry = f"{dotted}={value}"
            try:
                parse_role_overrides(entry, ROLES)
            except ValueError as e:
                raise ValueError(f"{e} (in {where})") from None
            values["rule_overrides"] = ",".join(filter(None, [values.get("rule_overrides", ""), entry]))

    def __post_init__(self) -> None:
        if self.calib_source not in ("", "train", "val", "selfgen", "random"):
            raise ValueError(f"quant.calib_source={self.calib_source!r} must be train, val, selfgen or random")
        if min(self.calib_seqs, self.calib_seq_len) < 0 or self.calib_batch_size < 1 or self.calib_temperature < 0:
            raise ValueError("quant.calib_seqs/calib_seq_len must be ≥ 0, calib_batch_size ≥ 1, "
                             "calib_temperature ≥ 0")
