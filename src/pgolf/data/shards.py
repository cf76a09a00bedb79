"""Token shards in the Parameter Golf challenge format: read, write, count.

A shard is a 1024-byte header of 256 little-endian int32 (magic 20240520, version 1, token count, zeros)
followed by that many little-endian uint16 token ids. This is byte-for-byte the format of the challenge's
`fineweb_{train,val}_%06d.bin` files (`write_datafile` / `load_data_shard` in openai/parameter-golf), so
shards written here load in the challenge's train_gpt.py and the challenge's shards load here.

    write_shard(path, tokens)      # atomic: pgolf.io.atomic_write
    read_shard(path) -> np.memmap  # read-only, dtype '<u2', validated against the header and the file size
    shard_num_tokens(path) -> int  # header only
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pgolf.io import atomic_write

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


class ShardError(ValueError):
    """A file is not a valid token shard (wrong magic/version, truncated, or inconsistent size)."""


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write `tokens` (any integer array, values in [0, 65536)) as a challenge-format shard, atomically."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(f"{path}: tokens must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ShardError(f"{path}: tokens must be integers, got dtype {arr.dtype}")
    if arr.size >= 2**31:
        raise ShardError(f"{path}: {arr.size} tokens do not fit the int32 header count (max {2**31 - 1})")
    if arr.size and arr.dtype != np.uint16:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= 2**16:
            raise ShardError(f"{path}: token ids must be in [0, 65536) for uint16 storage, got min {lo} max {hi}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    body = arr.astype(TOKEN_DTYPE, copy=False)
    atomic_write(path, lambda f: (f.write(header.tobytes()), f.write(body.tobytes())))


def _read_header(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file not found") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header: expected at least {HEADER_BYTES} bytes, file has {len(raw)}")
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic: expected {SHARD_MAGIC}, got {int(header[0])} (not a token shard?)")
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version: expected {SHARD_VERSION}, got {int(header[1])}")
    if int(header[2]) < 0:
        raise ShardError(f"{path}: negative token count {int(header[2])} in header")
    return header


def shard_num_tokens(path: str | os.PathLike) -> int:
    """Token count from the header (validates magic and version, not the file size)."""
    return int(_read_header(Path(path))[2])


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard's tokens read-only (dtype '<u2'); raises ShardError if the file is not a valid shard."""
    path = Path(path)
    num_tokens = int(_read_header(path)[2])
    expected = HEADER_BYTES + TOKEN_DTYPE.itemsize * num_tokens
    actual = path.stat().st_size
    if actual != expected:
        raise ShardError(
            f"{path}: size mismatch: header says {num_tokens} tokens so the file should be {expected} bytes "
            f"(1024 + 2*{num_tokens}), but it is {actual} bytes "
            f"({'truncated' if actual < expected else 'trailing data'})"
        )
    if num_tokens == 0:  # np.memmap cannot map zero bytes; an empty read-only array stands in
        empty = np.zeros(0, dtype=TOKEN_DTYPE)
        empty.setflags(write=False)
        return empty
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


def check_token_ids(paths: "list[str | os.PathLike]", vocab_size: int) -> None:
    """ShardError naming the shard, the offset and the vocabulary when a shard holds a token id ≥ vocab_size (an
    embedding lookup would fail with an IndexError deep inside the model). One vectorised pass per shard."""
    for path in paths:
        tokens = read_shard(path)
        if tokens.size and int(tokens.max()) >= vocab_size:
            offset = int(np.argmax(np.asarray(tokens) >= vocab_size))
            raise ShardError(f"{path}: token id {int(tokens[offset])} at offset {offset:,} is outside the "
                             f"vocabulary (model.vocab_size={vocab_size}: ids 0..{vocab_size - 1}); the shard was "
                             "made with another tokenizer")
