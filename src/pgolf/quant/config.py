"""QuantConfig: which recipe quantizes the trained weights (recipes live in quant/recipes.py) and how the GPTQ
calibration pass is fed (quant/calibration.py, parameter-golf.md §2.5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantConfig:
    recipe: str = "int8-baseline"
    """Name of a registered recipe (`pgolf quantize --help` lists them) or a path to a recipe .toml file."""
    calib_source: str = ""
    """Calibration tokens for Hessian recipes: train | val | selfgen | random; "" = the recipe's record default
    (train for PR #535 / R0405+, selfgen for R0325). Ignored by data-free recipes."""
    calib_seqs: int = 0
    """Calibration sequences; 0 = the recipe's default (64 for R0325/R0405, 16 for R0414/R0427)."""
    calib_seq_len: int = 0
    """Calibration sequence length; 0 = the recipe's (R0325 selfgen 2048), else the run's train_seq_len."""
    calib_batch_size: int = 8
    """Sequences per calibration forward (R0325 generation batch 8)."""
    calib_temperature: float = 0.0
    """selfgen sampling temperature; 0 = the recipe's (0.8)."""
    calib_seed: int = 0

    def __post_init__(self) -> None:
        if self.calib_source not in ("", "train", "val", "selfgen", "random"):
            raise ValueError(f"quant.calib_source={self.calib_source!r} must be train, val, selfgen or random")
        if min(self.calib_seqs, self.calib_seq_len) < 0 or self.calib_batch_size < 1 or self.calib_temperature < 0:
            raise ValueError("quant.calib_seqs/calib_seq_len must be ≥ 0, calib_batch_size ≥ 1, "
                             "calib_temperature ≥ 0")
