"""PackConfig: artifact codec and the byte cap, counted as the challenge counts it (decimal bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CHALLENGE_BYTE_LIMIT = 16_000_000  # code + compressed model, decimal bytes (parameter-golf.md §6)


@dataclass(frozen=True)
class PackConfig:
    codec: Literal["zlib", "zstd", "lzma", "brotli"] = "zlib"
    """Compressor of the artifact payload: zlib-9 (BASE), zstd-22 (R0322), lzma-9 extreme (R0325), brotli-11."""
    byte_limit: int = CHALLENGE_BYTE_LIMIT
    allow_over_limit: bool = False
    """Write the artifact even when code + model bytes exceed byte_limit (the run is then not a valid submission)."""
