"""Codecs: exact round trips, bounded decompression, and one error type for every bad stream.

    python -m pytest tests/pack/test_codecs.py -q
"""

from __future__ import annotations

import os

import pytest

from pgolf.pack.codecs import CODECS, CodecError, compress, decompress

DATA = b"parameter golf " * 500 + os.urandom(300)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("data", [b"", b"\x00", DATA])
def test_round_trip(codec, data):
    blob = compress(data, codec)
    assert decompress(blob, codec) == data
    assert decompress(blob, codec, max_size=len(data)) == data


@pytest.mark.parametrize("codec", CODECS)
def test_compression_is_deterministic_and_effective(codec):
    assert compress(DATA, codec) == compress(DATA, codec)
    assert len(compress(DATA, codec)) < len(DATA) // 3


@pytest.mark.parametrize("codec", CODECS)
def test_bad_streams_raise_codec_error(codec):
    blob = compress(DATA, codec)
    with pytest.raises(CodecError, match="limit"):
        decompress(blob, codec, max_size=len(DATA) - 1)
    with pytest.raises(CodecError):
        decompress(blob[: len(blob) // 2], codec)  # truncated
    with pytest.raises(CodecError):
        decompress(blob + b"junk", codec)  # trailing bytes
    with pytest.raises(CodecError):
        decompress(b"\xff" * 40, codec)  # garbage


def test_unknown_codec_lists_valid_ones():
    with pytest.raises(ValueError, match="zlib, zstd, lzma, brotli"):
        compress(b"x", "gzip")
    with pytest.raises(ValueError, match="valid codecs"):
        decompress(b"x", "lz4")
