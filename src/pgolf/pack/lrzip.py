"""R0427's per-group code serializer as a reference codec: role groups, L1 similarity sort, transposition, lrzip.

R0427 (PR #1855, `_serialize_pergroup`) packs its int8 code tensors in seven role groups across layers
(GROUP_ORDER), reorders the rows of tok_emb / c_q / mlp.fc by a greedy L1 nearest-neighbour walk (the permutation
stored as uint16 and brotli'd), stores each 2-D tensor transposed (column-major) and compresses each group with
`lrzip -z -L 9`, the ZPAQ context-mixing back end of the external `lrzip` binary. This module rebuilds that pipeline
so pgolf can reproduce its bytes and measure its own codecs against it (bench/pack.py, BENCHMARKS.md "Packing").

    groups = code_groups(codes)                     # codes: {tensor name: 2-D int8 array}
    blob = encode_groups(codes)                     # needs `lrzip` on PATH (LrzipMissingError otherwise)
    assert all(np.array_equal(a, codes[n]) for n, a in decode_groups(blob, shapes).items())

Stream (encode_groups): b"PGRP", u8 version 1, u32 group count g, g × u32 byte lengths, then per group the lrzip
file bytes followed by brotli-11 of its permutations (u32 length prefix; uint16 each, tensor order). Tensors that
belong to no role group are not included (R0427 brotlis them with the rest of its artifact).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.pack.codecs import CodecError, compress, decompress
from pgolf.pack.layouts import similarity_order

GROUP_ORDER = ("tok_emb", "attn.c_k", "attn.c_q", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")
"""R0427's `_GROUP_ORDER` (roles, layers concatenated in name order within each)."""
SIMSORT = frozenset({"tok_emb", "attn.c_q", "mlp.fc"})
"""Roles whose rows R0427 reorders by similarity (`_SIMSORT_KEYS`)."""
LRZIP_ARGS = ("-z", "-L", "9")
_NICE = ("-N", "0")  # lrzip renices itself to 19 by default: slow on a busy machine, same bytes
MAGIC = b"PGRP"
_MAX_OUTPUT = 1 << 30


class LrzipMissingError(RuntimeError):
    """The external `lrzip` binary is not on PATH."""


class LrzipError(ValueError):
    """An lrzip group stream that does not decode (corrupt, truncated, oversized or inconsistent)."""


def lrzip_path() -> str | None:
    return shutil.which("lrzip")


def _require() -> str:
    path = lrzip_path()
    if path is None:
        raise LrzipMissingError("the lrzip-groups codec needs the `lrzip` binary on PATH (R0427's ZPAQ back end); "
                                "install it with `apt-get install lrzip` (Debian/Ubuntu) or `brew install lrzip`")
    return path


def _run(args: list[str], what: str) -> None:
    env = {**os.environ, "LRZIP": "NOCONFIG"}  # ignore any lrzip.conf: the bytes depend only on the arguments
    res = subprocess.run(args, capture_output=True, env=env, timeout=3600)  # noqa: S603 - fixed argv, no shell
    if res.returncode != 0:
        raise LrzipError(f"lrzip {what} failed (exit {res.returncode}): {res.stderr.decode(errors='replace')[:300]}")


def lrzip_compress(data: bytes, threads: int | None = None) -> bytes:
    """`lrzip -z -L 9` of data as a file (the .lrz bytes); threads=None leaves lrzip's own choice, as R0427 did."""
    exe = _require()
    with tempfile.TemporaryDirectory(prefix="pgolf-lrzip-") as d:
        src, dst = Path(d, "g.bin"), Path(d, "g.bin.lrz")
        src.write_bytes(data)
        extra = [] if threads is None else ["-p", str(threads)]
        _run([exe, *LRZIP_ARGS, *extra, *_NICE, "-q", "-f", "-o", str(dst), str(src)], "compress")
        return dst.read_bytes()


def lrzip_decompress(blob: bytes, max_size: int = _MAX_OUTPUT) -> bytes:
    """Inverse of lrzip_compress; the size in the .lrz header is checked against max_size before running lrzip."""
    exe = _require()
    if len(blob) < 14 or blob[:4] != b"LRZI":
        raise LrzipError("not an lrzip stream (missing the LRZI magic)")
    (size,) = struct.unpack_from("<Q", blob, 6)
    if size > max_size:
        raise LrzipError(f"lrzip stream declares {size:,} bytes, over the {max_size:,}-byte limit")
    with tempfile.TemporaryDirectory(prefix="pgolf-lrzip-") as d:
        src, dst = Path(d, "g.lrz"), Path(d, "g.bin")
        src.write_bytes(blob)
        _run([exe, "-d", *_NICE, "-q", "-f", "-o", str(dst), str(src)], "decompress")
        if dst.stat().st_size != size:
            raise LrzipError(f"lrzip produced {dst.stat().st_size:,} bytes, its header declares {size:,}")
        return dst.read_bytes()


def role(name: str) -> str | None:
    """R0427 group of a code tensor name (tok_emb.weight → tok_emb, blocks.3.mlp.fc.weight → mlp.fc), or None."""
    base = name.removesuffix(".weight")
    for r in GROUP_ORDER:
        if base == r or base.endswith("." + r):
            return r
    return None


@dataclass
class Group:
    role: str
    names: list[str]


def code_groups(codes: dict[str, np.ndarray]) -> list[Group]:
    """Non-empty role groups in GROUP_ORDER, tensors in their given order (only 2-D tensors join a group)."""
    out = []
    for r in GROUP_ORDER:
        names = [n for n, a in codes.items() if role(n) == r and np.ndim(a) == 2]
        if names:
            out.append(Group(r, names))
    return out


def group_layout(codes: dict[str, np.ndarray], group: Group) -> tuple[bytes, bytes]:
    """(raw group bytes: each tensor row-sorted if its role is simsorted, transposed, concatenated; brotli-11 of
    the uint16 permutations, b"" when none)."""
    parts, perms = [], []
    for n in group.names:
        m = np.asarray(codes[n])
        if group.role in SIMSORT:
            p = similarity_order(m)
            perms.append(p.astype("<u2"))
            m = m[p]
        parts.append(np.ascontiguousarray(m.T).astype(np.int8).tobytes())
    side = compress(b"".join(p.tobytes() for p in perms), "brotli") if perms else b""
    return b"".join(parts), side


def encode_groups(codes: dict[str, np.ndarray], threads: int | None = None) -> bytes:
    """The role groups of `codes` as one stream (see the module docstring); needs lrzip on PATH."""
    for n, a in codes.items():
        if np.asarray(a).dtype != np.int8:
            raise TypeError(f"{n}: lrzip-groups takes int8 codes, got {np.asarray(a).dtype}")
        if role(n) is not None and np.ndim(a) == 2 and np.shape(a)[0] > 1 << 16 and role(n) in SIMSORT:
            raise ValueError(f"{n}: {np.shape(a)[0]} rows do not fit R0427's uint16 permutation")
    chunks = []
    for g in code_groups(codes):
        raw, side = group_layout(codes, g)
        chunks.append(lrzip_compress(raw, threads) + side + struct.pack("<I", len(side)))
    return MAGIC + bytes([1]) + struct.pack(f"<I{len(chunks)}I", len(chunks), *map(len, chunks)) + b"".join(chunks)


def decode_groups(blob: bytes, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Inverse of encode_groups given the tensors' shapes (the same names, order and roles); LrzipError on bad input."""
    groups = code_groups({n: np.empty(s, dtype=np.int8) for n, s in shapes.items()})
    if blob[:5] != MAGIC + b"\x01" or len(blob) < 9:
        raise LrzipError("not a version-1 PGRP stream")
    (g,) = struct.unpack_from("<I", blob, 5)
    if g != len(groups) or len(blob) < 9 + 4 * g:
        raise LrzipError(f"stream holds {g} groups, the shapes describe {len(groups)}")
    lens = struct.unpack_from(f"<{g}I", blob, 9)
    pos = 9 + 4 * g
    if pos + sum(lens) != len(blob):
        raise LrzipError(f"group lengths sum to {sum(lens):,}, {len(blob) - pos:,} bytes follow")
    out: dict[str, np.ndarray] = {}
    for grp, m in zip(groups, lens):
        chunk = blob[pos : pos + m]
        pos += m
        if m < 4:
            raise LrzipError(f"group {grp.role}: {m} bytes is too short")
        (ns,) = struct.unpack_from("<I", chunk, m - 4)
        if ns > m - 4:
            raise LrzipError(f"group {grp.role}: permutation block of {ns:,} bytes runs past the group")
        dims = [tuple(shapes[n]) for n in grp.names]
        total = sum(r * c for r, c in dims)
        raw = lrzip_decompress(chunk[: m - 4 - ns], max_size=total)
        if len(raw) != total:
            raise LrzipError(f"group {grp.role}: {len(raw):,} code bytes, the shapes need {total:,}")
        sorted_rows = sum(r for r, _ in dims) if grp.role in SIMSORT else 0
        try:
            side = decompress(chunk[m - 4 - ns : m - 4], "brotli", max_size=2 * sorted_rows) if ns else b""
        except CodecError as e:
            raise LrzipError(f"group {grp.role}: permutations: {e}") from None
        if len(side) != 2 * sorted_rows:
            raise LrzipError(f"group {grp.role}: {len(side)} permutation bytes, expected {2 * sorted_rows}")
        off = poff = 0
        for n, (r, c) in zip(grp.names, dims):
            m2 = np.frombuffer(raw, dtype=np.int8, count=r * c, offset=off).reshape(c, r).T
            off += r * c
            if grp.role in SIMSORT:
                p = np.frombuffer(side, dtype="<u2", count=r, offset=poff).astype(np.int64)
                poff += 2 * r
                if not np.array_equal(np.sort(p), np.arange(r)):
                    raise LrzipError(f"{n}: stored row order is not a permutation of {r} rows")
                inv = np.empty(r, dtype=np.int64)
                inv[p] = np.arange(r)
                m2 = m2[inv]
            out[n] = np.ascontiguousarray(m2)
    return out
