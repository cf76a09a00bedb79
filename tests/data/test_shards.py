"""Shards: exact challenge byte format, round trips, memory mapping, and errors that name file and sizes.

    python -m pytest tests/data/test_shards.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pgolf.data.shards import (
    HEADER_INTS, SHARD_MAGIC, SHARD_VERSION, ShardError, read_shard, shard_num_tokens, write_shard,
)


@pytest.mark.parametrize("tokens", [
    np.array([], dtype=np.int64),
    np.array([0, 1, 65535, 2, 65534], dtype=np.int64),
    np.arange(70_000, dtype=np.int64) % 65536,
    np.array([7, 8, 9], dtype=np.uint16),
])
def test_round_trip(tmp_path, tokens):
    path = tmp_path / "s.bin"
    write_shard(path, tokens)
    back = read_shard(path)
    assert back.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(back, tokens)
    assert shard_num_tokens(path) == len(tokens)
    assert not back.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == ["s.bin"]  # no temp file left behind


def test_byte_layout_is_the_challenge_format(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.array([1, 258, 65535]))
    raw = path.read_bytes()
    header = np.frombuffer(raw[: 4 * HEADER_INTS], dtype="<i4")
    assert header[:3].tolist() == [SHARD_MAGIC, SHARD_VERSION, 3] and not header[3:].any()
    assert raw[1024:] == bytes([1, 0, 2, 1, 255, 255])  # little-endian uint16
    assert len(raw) == 1024 + 2 * 3


def test_read_is_a_readonly_memmap(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(100))
    arr = read_shard(path)
    assert isinstance(arr, np.memmap) and Path(arr.filename) == path.resolve()
    with pytest.raises(ValueError):
        arr[0] = 5


def test_truncated_shard_names_file_and_sizes(tmp_path):
    path = tmp_path / "trunc.bin"
    write_shard(path, np.arange(100))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardError) as e:
        read_shard(path)
    msg = str(e.value)
    assert str(path) in msg and "1224" in msg and "1214" in msg and "truncated" in msg


def test_trailing_bytes_rejected(tmp_path):
    path = tmp_path / "long.bin"
    write_shard(path, np.arange(4))
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(ShardError, match="1032.*1034"):
        read_shard(path)


def test_short_header_rejected(tmp_path):
    path = tmp_path / "tiny.bin"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(ShardError, match="truncated header.*1024.*10"):
        read_shard(path)


def test_bad_magic_and_version(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(4))
    raw = bytearray(path.read_bytes())
    raw[0:4] = (12345).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=f"{path}.*bad magic: expected {SHARD_MAGIC}, got 12345"):
        read_shard(path)
    raw[0:4] = SHARD_MAGIC.to_bytes(4, "little")
    raw[4:8] = (2).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="version: expected 1, got 2"):
        shard_num_tokens(path)


def test_missing_file(tmp_path):
    with pytest.raises(ShardError, match="not found"):
        read_shard(tmp_path / "nope.bin")


@pytest.mark.parametrize("bad", [[-1, 3], [65536], [1.5]])
def test_write_rejects_out_of_range(tmp_path, bad):
    with pytest.raises(ShardError):
        write_shard(tmp_path / "s.bin", np.array(bad))
    assert not list(tmp_path.iterdir())
