"""The records' general-purpose compressors at the settings they used (docs/techniques.md#compression).

    blob = compress(raw, "brotli")
    raw = decompress(blob, "brotli", max_size=1 << 30)

zlib level 9 (BASE), zstd level 22 (R0322, `zstandard`), lzma preset 9|EXTREME (R0325 uses preset 9; EXTREME
trades time for a few bytes), brotli quality 11 (R0331+). `decompress` with `max_size` never produces more than
that many bytes (a corrupted or hostile stream cannot force a huge allocation), and every corrupt, truncated,
oversized or trailing-garbage input raises `CodecError`.

`COMPRESSORS` is a registry table (name → compress, bounded decompress): the single-file script of a run keeps only
the compressors its artifact codec uses (`pgolf.pack.container.codec_tables`).
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

ZLIB_LEVEL = 9
ZSTD_LEVEL = 22
LZMA_PRESET = 9 | lzma.PRESET_EXTREME
BROTLI_QUALITY = 11


class CodecError(ValueError):
    """A stream that does not decompress cleanly (corrupt, truncated, too large, or with trailing bytes)."""


def _steps(d, data: bytes, limit: int, zlib_api: bool) -> tuple[bytes, bool, int]:
    """zlib/lzma in 1 MiB steps: peak memory ≈ the output, not the 2× of one growing buffer."""
    out, pending = bytearray(), data
    while len(out) <= limit:
        step = min(1 << 20, limit + 1 - len(out))
        if zlib_api:
            piece = d.decompress(pending, step)
            pending = d.unconsumed_tail
        else:
            piece = d.decompress(pending, max_length=step)
            pending = b""
        out += piece
        if d.eof or (not piece and (not pending if zlib_api else d.needs_input)):
            break
    return bytes(out), d.eof, len(d.unused_data)


def _zstd(data: bytes, limit: int) -> tuple[bytes, bool, int]:
    import zstandard

    declared = zstandard.frame_content_size(data)
    if declared > limit:
        raise CodecError(f"zstd frame declares {declared:,} bytes, over the {limit:,}-byte limit")
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=limit + 1, allow_extra_data=False), True, 0


def _zstd_compress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)  # the frame header records the size


def _brotli(data: bytes, limit: int) -> tuple[bytes, bool, int]:
    import brotli

    d = brotli.Decompressor()
    return d.process(data, output_buffer_limit=limit + 1), d.is_finished(), 0


def _brotli_compress(data: bytes) -> bytes:
    import brotli

    return brotli.compress(data, quality=BROTLI_QUALITY)


COMPRESSORS = {
    "zlib": (lambda data: zlib.compress(data, level=ZLIB_LEVEL),
             lambda data, limit: _steps(zlib.decompressobj(), data, limit, True)),
    "zstd": (_zstd_compress, _zstd),
    "lzma": (lambda data: lzma.compress(data, preset=LZMA_PRESET),
             lambda data, limit: _steps(lzma.LZMADecompressor(), data, limit, False)),
    "brotli": (_brotli_compress, _brotli),
}
"""name → (compress(data), decompress(data, limit) → (output of at most limit + 1 bytes, stream complete, trailing
byte count))."""
CODECS: tuple[str, ...] = tuple(COMPRESSORS)


def _check(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {', '.join(CODECS)}")


def compress(data: bytes, codec: str) -> bytes:
    _check(codec)
    return COMPRESSORS[codec][0](data)


def decompress(data: bytes, codec: str, max_size: int | None = None) -> bytes:
    """Inverse of `compress`; raises CodecError on bad input or when the output would exceed `max_size` bytes."""
    _check(codec)
    limit = (1 << 62) if max_size is None else max_size
    try:
        out, complete, trailing = COMPRESSORS[codec][1](bytes(data), limit)
    except CodecError:
        raise
    except Exception as e:  # each library's own error type (zlib.error, LZMAError, ZstdError, brotli.error, ...)
        raise CodecError(f"{codec} stream is corrupt: {e}") from e
    if len(out) > limit:
        raise CodecError(f"{codec} stream decompresses to more than the {limit:,}-byte limit")
    if not complete:
        raise CodecError(f"{codec} stream is truncated")
    if trailing:
        raise CodecError(f"{codec} stream is followed by {trailing} unexpected trailing bytes")
    return out


def byte_shuffle(data: bytes, stride: int, inverse: bool = False) -> bytes:
    """The records' `_byte_shuffle` without its magic: byte k of every `stride`-byte element, for k = 0..stride-1
    (for fp16: all low bytes, then all high bytes); `inverse=True` undoes it. len(data) must be a multiple of
    stride."""
    if stride <= 1 or not data:
        return bytes(data)
    if len(data) % stride:
        raise ValueError(f"byte_shuffle: {len(data)} bytes is not a multiple of the stride {stride}")
    return np.frombuffer(data, dtype=np.uint8).reshape((stride, -1) if inverse else (-1, stride)).T.tobytes()


def byte_unshuffle(data: bytes, stride: int) -> bytes:
    """Inverse of `byte_shuffle`."""
    return byte_shuffle(data, stride, inverse=True)
