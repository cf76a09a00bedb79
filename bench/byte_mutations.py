"""The byte-level mutations both fuzzers apply (bench/fuzz_artifact.py's "bytes" family, bench/fuzz_streams.py):
bit flips (anywhere, or in the first `head` bytes where headers live), truncation, insertion, deletion, overwrite,
and splicing the tail of another valid blob. Imported by those scripts (run from bench/, which is on sys.path)."""

from __future__ import annotations

import random

OPS = ("flip", "flip_head", "truncate", "insert", "delete", "overwrite", "splice")


def mutate_bytes(blob: bytes, rng: random.Random, others: list[bytes], head: int = 32) -> tuple[str, bytes]:
    """One random mutation of `blob`: (its name, the mutant)."""
    b = bytearray(blob)
    op = rng.choice(OPS)
    i = rng.randrange(len(b))
    if op == "flip":
        b[i] ^= rng.randrange(1, 256)
    elif op == "flip_head":
        b[rng.randrange(min(head, len(b)))] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        del b[i:]
    elif op == "insert":
        b[i:i] = rng.randbytes(rng.randrange(1, 16))
    elif op == "delete":
        del b[i : i + rng.randrange(1, 64)]
    elif op == "overwrite":
        n = rng.randrange(1, 32)
        b[i : i + n] = rng.randbytes(n)
    else:
        o = rng.choice(others)
        b = b[:i] + o[rng.randrange(len(o)) :]
    return op, bytes(b)
