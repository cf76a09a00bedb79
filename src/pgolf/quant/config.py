"""QuantConfig: which recipe quantizes the trained weights (recipes live in quant/recipes.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantConfig:
    recipe: str = "int8-baseline"
    """Name of a registered recipe (`pgolf quantize --help` lists them) or a path to a recipe .toml file."""
