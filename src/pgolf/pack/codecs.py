"""The records' general-purpose compressors at the settings they used (docs/techniques.md#compression).

    blob = compress(raw, "brotli")
    raw = decompress(blob, "brotli", max_size=1 << 30)

zlib level 9 (BASE), zstd level 22 (R0322, `zstandard`), lzma preset 9|EXTREME (R0325 uses preset 9; EXTREME
trades time for a few bytes), brotli quality 11 (R0331+). `decompress` with `max_size` never produces more than
that many bytes (a corrupted or hostile stream cannot force a huge allocation), and every corrupt, truncated,
oversized or trailing-garbage input raises `CodecError`.
"""

from __future__ import annotations

import lzma
import zlib

import brotli
import numpy as np
import zstandard

CODECS: tuple[str, ...] = ("zlib", "zstd", "lzma", "brotli")
ZLIB_LEVEL = 9
ZSTD_LEVEL = 22
LZMA_PRESET = 9 | lzma.PRESET_EXTREME
BROTLI_QUALITY = 11


class CodecError(ValueError):
    """A stream that does not decompress cleanly (corrupt, truncated, too large, or with trailing bytes)."""


def _check(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {', '.join(CODECS)}")


def compress(data: bytes, codec: str) -> bytes:
    _check(codec)
    if codec == "zlib":
        return zlib.compress(data, level=ZLIB_LEVEL)
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)  # frame header records the size
    if codec == "lzma":
        return lzma.compress(data, preset=LZMA_PRESET)
    return brotli.compress(data, quality=BROTLI_QUALITY)


def decompress(data: bytes, codec: str, max_size: int | None = None) -> bytes:
    """Inverse of `compress`; raises CodecError on bad input or when the output would exceed `max_size` bytes."""
    _check(codec)
    limit = (1 << 62) if max_size is None else max_size
    try:
        out, complete, trailing = _decompress(bytes(data), codec, limit)
    except CodecError:
        raise
    except (zlib.error, lzma.LZMAError, zstandard.ZstdError, brotli.error, EOFError, ValueError, MemoryError) as e:
        raise CodecError(f"{codec} stream is corrupt: {e}") from e
    if len(out) > limit:
        raise CodecError(f"{codec} stream decompresses to more than the {limit:,}-byte limit")
    if not complete:
        raise CodecError(f"{codec} stream is truncated")
    if trailing:
        raise CodecError(f"{codec} stream is followed by {trailing} unexpected trailing bytes")
    return out


def _decompress(data: bytes, codec: str, limit: int) -> tuple[bytes, bool, int]:
    """(output, stream complete, trailing byte count); output is at most limit + 1 bytes."""
    if codec in ("zlib", "lzma"):  # 1 MiB steps: peak memory ≈ the output, not the 2× of one growing buffer
        d = zlib.decompressobj() if codec == "zlib" else lzma.LZMADecompressor()
        out, pending = bytearray(), data
        while len(out) <= limit:
            step = min(1 << 20, limit + 1 - len(out))
            if codec == "zlib":
                piece = d.decompress(pending, step)
                pending = d.unconsumed_tail
            else:
                piece = d.decompress(pending, max_length=step)
                pending = b""
            out += piece
            if len(out) > limit:
                raise CodecError(f"{codec} stream decompresses to more than the {limit:,}-byte limit")
            if d.eof or (not piece and (not pending if codec == "zlib" else d.needs_input)):
                break
        return bytes(out), d.eof, len(d.unused_data)
    if codec == "zstd":
        declared = zstandard.frame_content_size(data)
        if declared > limit:
            raise CodecError(f"zstd frame declares {declared:,} bytes, over the {limit:,}-byte limit")
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=limit + 1, allow_extra_data=False)
        return out, True, 0
    d = brotli.Decompressor()
    out = d.process(data, output_buffer_limit=limit + 1)
    return out, d.is_finished(), 0


def byte_shuffle(data: bytes, stride: int) -> bytes:
    """The records' `_byte_shuffle` without its magic: byte k of every `stride`-byte element, for k = 0..stride-1
    (for fp16: all low bytes, then all high bytes). len(data) must be a multiple of stride."""
    if stride <= 1 or not data:
        return bytes(data)
    if len(data) % stride:
        raise ValueError(f"byte_shuffle: {len(data)} bytes is not a multiple of the stride {stride}")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, stride).T.tobytes()


def byte_unshuffle(data: bytes, stride: int) -> bytes:
    """Inverse of `byte_shuffle`."""
    if stride <= 1 or not data:
        return bytes(data)
    if len(data) % stride:
        raise ValueError(f"byte_unshuffle: {len(data)} bytes is not a multiple of the stride {stride}")
    return np.frombuffer(data, dtype=np.uint8).reshape(stride, -1).T.tobytes()
