"""PackConfig: artifact codec and the byte cap, counted as the challenge counts it (decimal bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CHALLENGE_BYTE_LIMIT = 16_000_000  # code + compressed model, decimal bytes (parameter-golf.md §6)


@dataclass(frozen=True)
class PackConfig:
    codec: Literal["zlib", "zstd", "lzma", "brotli", "zlib+shuffle", "zstd+shuffle", "lzma+shuffle", "brotli+shuffle",
                   "rans"] = "zlib"
    """Compressor of the artifact payload: zlib-9 (BASE), zstd-22 (R0322), lzma-9 extreme (R0325), brotli-11; "+shuffle"
    stores 16/32-bit tensors as byte planes first (the records' `_byte_shuffle`, R0331+); "rans" entropy-codes each
    tensor's int8 codes with its own order-0 rANS model (within ~0.01 % of the entropy) and the rest with
    brotli-11 + shuffle — the smallest (pgolf.pack.container)."""
    byte_limit: int = CHALLENGE_BYTE_LIMIT
    allow_over_limit: bool = False
    """Write the artifact even when code + model bytes exceed byte_limit (the run is then not a valid submission)."""
