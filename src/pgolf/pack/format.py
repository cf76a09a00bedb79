"""Constants of the artifact format shared by the encoder (pack/container.py, pack/body.py) and the validator
(pack/validate.py).

Limits are what a reader accepts from an untrusted file; each is far above any artifact pgolf writes under the
16,000,000-byte cap, and together they bound the memory `pgolf eval | info | check-legal | pack` can be made to use
(bench/fuzz_artifact.py measures the peak).
"""

from __future__ import annotations

from typing import Any

import torch

MAGIC = b"PGOLF\0"
PREFIX = len(MAGIC) + 2
"""Bytes before a codec's stream: MAGIC, the u8 format version and the u8 codec id."""
FORMAT_ID = "pgolf-v1"  # the JSON header format (unchanged by container version 2)
MAX_BODY_BYTES = 256 << 20
"""Decompressed body plus decoded code streams: 256 MiB, 16× the 16 MB cap (a real artifact's body is < 40 MB)."""
MAX_EXPANSION = 128
EXPANSION_FLOOR = 32 << 20
"""A compressed stream may expand to at most max(32 MiB, 128 × its size) (and never past MAX_BODY_BYTES): real
bodies expand < 10× (int6 codes in int8 bytes, fp16 scales), a zlib bomb ~1000×."""
MAX_HEADER_BYTES = 4 << 20
"""JSON header: 4 MiB (a real header, tensor table plus run config, is ~20-60 KB)."""
MAX_NDIM = 8
MAX_MODEL_PARAMS = 1 << 27
"""Parameters of the model an artifact may describe: 134M (512 MiB in fp32), ~4× the largest record's 36M; the
model's memory is checked against this before anything is allocated."""
DTYPES: dict[str, torch.dtype] = {
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64,
}
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
KINDS = ("q", "scale", "extra", "passthrough")


class ArtifactError(ValueError):
    """The bytes are not a valid pgolf artifact (corrupt, truncated, unknown version/codec, inconsistent, or
    describing a model this pgolf refuses to build). The message names the field, its value and what was expected."""


def is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def itemsize(dtype: str) -> int:
    return DTYPES[dtype].itemsize


def short(v: Any, n: int = 60) -> str:
    """repr(v), cut to n characters: untrusted values are quoted in errors, never printed whole."""
    text = repr(v)
    return text if len(text) <= n else text[: n - 1] + "…"
