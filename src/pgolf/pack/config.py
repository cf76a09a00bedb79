"""PackConfig: artifact codec and the byte cap, counted as the challenge counts it (decimal bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CHALLENGE_BYTE_LIMIT = 16_000_000  # code + compressed model, decimal bytes (docs/techniques.md#rules)


@dataclass(frozen=True)
class PackConfig:
    codec: Literal["zlib", "zstd", "lzma", "brotli", "zlib+shuffle", "zstd+shuffle", "lzma+shuffle", "brotli+shuffle",
                   "rans", "rans-ctx"] = "rans-ctx"
    """Compressor of the artifact payload: zlib-9 (BASE), zstd-22 (R0322), lzma-9 extreme (R0325), brotli-11; "+shuffle"
    stores 16/32-bit tensors as byte planes first (the records' `_byte_shuffle`, R0331+); "rans" entropy-codes each
    tensor's int8 codes with its own order-0 rANS model (within ~0.01 % of the entropy); "rans-ctx" (the default, the
    smallest) codes each tensor with the best of order-0 rANS, row × column cluster context rANS and brotli-11 in
    either order, so it is never larger than brotli on any tensor. Both code the rest with brotli-11 + shuffle
    (pgolf.pack.container, pgolf.pack.context; bench/pack.py)."""
    byte_limit: int = CHALLENGE_BYTE_LIMIT
    allow_over_limit: bool = False
    """Write the artifact even when code + model bytes exceed byte_limit (the run is then not a valid submission)."""
    budget: int = 0
    """Fit the quantization to this many total bytes (code + model, decimal; e.g. 16000000): per-tensor bits and clip
    σ are chosen by measured bytes and Hessian-weighted error so the artifact lands within 0.1 % under it
    (pack/fit.py). 0 = off: the recipe's fixed choices."""
    fit_sigma_multipliers: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0, 1.12, 1.25, 1.4)
    """Multipliers of the recipe's SDClip σ tried per tensor when fitting a budget."""
    fit_bits_delta: int = 1
    """Bit widths tried per tensor when fitting: the recipe's bits ± this (within 2..8)."""

    def __post_init__(self) -> None:
        if self.budget < 0 or self.byte_limit <= 0:
            raise ValueError(f"pack.budget={self.budget} must be ≥ 0 and pack.byte_limit={self.byte_limit} > 0")
        if self.budget > self.byte_limit and not self.allow_over_limit:
            raise ValueError(f"pack.budget={self.budget:,} exceeds pack.byte_limit={self.byte_limit:,}; lower it or "
                             "set pack.allow_over_limit=true")
        if not self.fit_sigma_multipliers or min(self.fit_sigma_multipliers) <= 0:
            raise ValueError(f"pack.fit_sigma_multipliers={self.fit_sigma_multipliers} must be non-empty and > 0")
        if not 0 <= self.fit_bits_delta <= 6:
            raise ValueError(f"pack.fit_bits_delta={self.fit_bits_delta} must be in 0..6")
